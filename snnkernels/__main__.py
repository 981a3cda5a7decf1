"""`python -m snnkernels <command>`, the same as the `snnkernels` console script."""

import sys

from .cli import main

sys.exit(main())
