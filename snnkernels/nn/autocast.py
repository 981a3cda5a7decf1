"""Inputs under torch.autocast: autocast may hand the LIF a dtype the kernel does not take on
that device (bfloat16 / float16 on the CPU, where the kernels are float32 / float64). Inside an
autocast region such an input is upcast to float32, as autocast itself does for its "float32"
ops; outside one it is left alone, so the kernel's dtype error still reports a real mistake."""

from __future__ import annotations

import torch

from ..lif import CPU_DTYPES, CUDA_DTYPES


def kernel_input(x: torch.Tensor) -> torch.Tensor:
    supported = CUDA_DTYPES if x.device.type == "cuda" else CPU_DTYPES
    if x.dtype in supported or not torch.is_autocast_enabled(x.device.type):
        return x
    return x.float()
