"""snnkernels: fused CPU/CUDA kernels for spiking neural networks, snnTorch-compatible."""

from . import reference, surrogate
from ._extension import build_info
from .lif import lif

__all__ = ["lif", "reference", "surrogate", "build_info"]
__version__ = "0.1.0"
