"""Drop-in spiking layers that run the fused kernels: Leaky (snntorch.Leaky's interface,
single- or multi-step) and LIF (multi-step, time-major)."""

from .leaky import LIF, Leaky

__all__ = ["Leaky", "LIF"]
