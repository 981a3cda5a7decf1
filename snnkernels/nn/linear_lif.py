"""LinearLIF: a Linear layer followed by LIF neurons over all T steps, as one module running
snnkernels.linear_lif (one GEMM for all steps, the fused LIF, and with `sparse=` a synaptic
backward that touches only the surviving gradient entries; CPU and CUDA)."""

from __future__ import annotations

import math
import numbers

import torch
from torch import nn

from .. import _args
from .. import sparse as _sparse
from .. import surrogate as _surrogate
from ..linear_lif import linear_lif


class LinearLIF(nn.Module):
    """x [T, B, in_features] -> (spk, mem), both [T, B, out_features], from a zero membrane.

    Weight and bias are initialized as nn.Linear's. beta / threshold: floats, or per-neuron
    [out_features] Parameters when learn_beta / learn_threshold. surrogate, reset_mechanism,
    reset_delay, sparse: as snnkernels.linear_lif (sparse=None is exact dense BPTT); the
    forward's input must have the parameters' dtype and device (errors as linear_lif's).

    Args:
        in_features: F, a Python int >= 1.
        out_features: N, a Python int >= 1.
        beta: the decay, a real number (or a one-element floating-point tensor), stored as a
            float.
        threshold: the threshold, as beta.
        bias: whether the layer has a bias, a bool.
        surrogate: as snnkernels.lif's.
        reset_mechanism: as snnkernels.lif's.
        reset_delay: as snnkernels.lif's.
        sparse: None or snnkernels.sparse.TopK / ActiveWindow.
        learn_beta: make beta a learnable [out_features] Parameter.
        learn_threshold: make threshold a learnable [out_features] Parameter.
        device: where the parameters are created (as nn.Linear's).
        dtype: a floating-point dtype for the parameters (as nn.Linear's).

    Raises:
        ValueError: in_features or out_features not a positive int, an unknown
            reset_mechanism, a TopK k larger than out_features.
        TypeError: bias or reset_delay not a bool, beta or threshold not a real number or
            one-element floating-point tensor, dtype not a floating-point torch.dtype,
            surrogate or sparse of an unknown kind.
    """

    def __init__(self, in_features: int, out_features: int, beta: float = 0.9,
                 threshold: float = 1.0, *, bias: bool = True, surrogate=None,
                 reset_mechanism: str = "subtract", reset_delay: bool = True, sparse=None,
                 learn_beta: bool = False, learn_threshold: bool = False, device=None,
                 dtype=None):
        super().__init__()
        for name, value in (("in_features", in_features), ("out_features", out_features)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"LinearLIF: {name} must be a positive int, got {value!r}")
        # a wrong setting fails here, not at the first call
        if not isinstance(bias, bool):
            raise TypeError(f"LinearLIF: bias must be a bool (as nn.Linear's), got "
                            f"{type(bias).__name__}")
        for name, value in (("beta", beta), ("threshold", threshold)):
            if not _is_scalar(value):
                raise TypeError(f"LinearLIF: {name} must be a float, got {value!r}")
        _sparse.resolve(sparse, out_features)
        _surrogate.resolve(surrogate)
        _args.check_reset(reset_mechanism, reset_delay)
        if dtype is not None and not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
            raise TypeError(f"LinearLIF: dtype must be a floating-point torch.dtype, got {dtype!r}")
        factory = dict(device=device, dtype=dtype)
        self.in_features, self.out_features = in_features, out_features
        self.weight = nn.Parameter(torch.empty(out_features, in_features, **factory))
        self.bias = nn.Parameter(torch.empty(out_features, **factory)) if bias else None
        self.beta = (nn.Parameter(torch.full((out_features,), float(beta), **factory))
                     if learn_beta else float(beta))
        self.threshold = (nn.Parameter(torch.full((out_features,), float(threshold), **factory))
                          if learn_threshold else float(threshold))
        self.surrogate, self.sparse = surrogate, sparse
        self.reset_mechanism, self.reset_delay = reset_mechanism, reset_delay
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """nn.Linear's initialization."""
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            bound = 1 / math.sqrt(self.in_features)
            nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x):
        """Runs snnkernels.linear_lif on x with this layer's parameters and settings.

        Args:
            x: the input `[T, B, in_features]`, of the parameters' dtype and device.

        Returns:
            (spk, mem), both `[T, B, out_features]`, of x's dtype and device.

        Raises:
            TypeError: x not a tensor or not of the parameters' dtype, a dtype the device's
                kernel does not take.
            ValueError: x not `[T, B, in_features]`, x on another device than the
                parameters; with sparse=, more than 2^31 - 1 rows `T * B`.
            RuntimeError: a CUDA x given to a CPU-only build.
        """
        return linear_lif(x, self.weight, self.bias, self.beta, self.threshold,
                          surrogate=self.surrogate, reset_mechanism=self.reset_mechanism,
                          reset_delay=self.reset_delay, sparse=self.sparse)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}, sparse={self.sparse!r}")


def _is_scalar(value) -> bool:
    """A real number (not a bool) or a one-element floating-point tensor."""
    if isinstance(value, torch.Tensor):
        return value.numel() == 1 and value.is_floating_point()
    return isinstance(value, numbers.Real) and not isinstance(value, bool)
