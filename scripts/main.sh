#!/usr/bin/env bash
# The main job: set up, then run the study (`snnkernels study`, default preset: breast_cancer,
# wine and digits bundled with scikit-learn; <= 15 minutes on 2 CPU cores). Extra arguments go
# to the command, e.g. `bash scripts/main.sh --preset quick`. Writes runs/<preset>/.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
VENV=${SNNKERNELS_VENV:-.venv}
# Two cells at a time, one thread each: the attacks are bound by per-call overhead, so this
# halves the wall time on 2 cores; a --jobs among the arguments overrides it.
"$VENV/bin/snnkernels" study --jobs 2 "$@"
