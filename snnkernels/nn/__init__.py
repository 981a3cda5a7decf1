"""Drop-in spiking layers that run the fused kernels: Leaky (snntorch.Leaky's interface,
single- or multi-step), LIF (multi-step, time-major) and LinearLIF (Linear + LIF, with sparse
gradient training)."""

from .leaky import LIF, Leaky
from .linear_lif import LinearLIF

__all__ = ["Leaky", "LIF", "LinearLIF"]
