"""Loads the compiled op library and reports what it was built with."""

from __future__ import annotations

import functools
import json

import torch

try:
    from . import _C  # noqa: F401  (importing registers the torch.ops.snnkernels ops)
except ImportError as exc:  # pragma: no cover - only without a build
    raise ImportError(
        "snnkernels' compiled extension (snnkernels._C) is missing or does not match this torch "
        f"({torch.__version__}). Rebuild it with `pip install --no-build-isolation -e .` in the "
        f"source tree. Original error: {exc}"
    ) from exc


@functools.lru_cache(maxsize=None)
def build_info() -> dict:
    """What the extension was compiled with, and the CPU paths it takes here: {'torch', 'cuda',
    'cuda_archs', 'openmp', 'event_max_density', 'event_min_width', 'narrow_max_width',
    'avx512', 'cpu_policy'}. linear_lif runs its synapse event-driven on the CPU when at most
    event_max_density[dtype] ('float32', 'float64') of x is nonzero and the layer has at least
    event_min_width neurons, and as row loops for layers of at most narrow_max_width neurons;
    'avx512' says whether the float32 AVX-512 kernels run in this process (a CPU with AVX-512F,
    SNNKERNELS_PORTABLE unset; docs/sparse.md). 'cpu_policy' gives the other CPU tuning
    thresholds in effect (chunk sizes and the like). Each threshold has a default and an
    environment variable that overrides it, read once per process (csrc/cpu/policy.h); a bad
    value makes the import fail with an error naming the variable.

    Returns:
        A dict parsed from the JSON the extension was compiled to report.
    """
    return json.loads(torch.ops.snnkernels.build_info())


# A constant, not a call: torch.compile traces check_device_supported, and cannot trace the op
# that returns build_info's string.
CUDA_BUILT: bool = build_info()["cuda"]


def check_device_supported(t: torch.Tensor, name: str) -> None:
    """A CUDA tensor given to a CPU-only build gets an error that says so."""
    if t.device.type == "cuda" and not CUDA_BUILT:
        raise RuntimeError(
            f"{name} is a CUDA tensor, but this snnkernels build is CPU-only "
            f"(built against torch {build_info()['torch']} without a CUDA toolkit). Rebuild with "
            "a CUDA toolkit and a CUDA build of torch: SNNKERNELS_CUDA=1 pip install "
            "--no-build-isolation -e ."
        )
    if t.device.type not in ("cpu", "cuda", "meta"):
        raise RuntimeError(f"{name} is on {t.device}; snnkernels supports cpu and cuda tensors")
