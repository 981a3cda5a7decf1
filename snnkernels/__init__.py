"""snnkernels: fused CPU/CUDA kernels for spiking neural networks, snnTorch-compatible."""

from . import cpu_cache, mechanism, reference, sparse, surrogate
from ._extension import build_info
from .lif import lif, lif_constant
from . import models, nn, utils  # drop-in layers (snnTorch-compatible), models, state helpers
from .convert import convert
from .linear_lif import linear_lif

__all__ = ["lif", "lif_constant", "linear_lif", "reference", "sparse", "surrogate", "build_info", "cpu_cache",
           "mechanism"]
__version__ = "0.1.0"
