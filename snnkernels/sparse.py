"""Sparse-gradient masks for the fused LIF backward (docs/semantics.md, "Sparse gradient masks").

Pass one as `sparse=` to snnkernels.lif or snnkernels.linear_lif; `sparse=None` is the exact,
dense backward. The forward is never changed. Both masks act on the current gradient
δI_t = dL/dx_t that leaves the neuron toward its synapses, per (time step, sample) row of the N
neurons of the last dimension of x:

- `TopK(k=None, fraction=None, temporal=False)` (meProp, Sun et al. 2017): of every row of δI
  keep the k entries of largest |δI| and zero the others; ties go to the lower neuron index
  (deterministic). Give k directly or as a fraction of N: `k = max(1, round(fraction * N))`.
  The recursion through time stays exact (it uses the unmasked dL/dh); with temporal=True the
  mask is applied to dL/dh_t itself, h_t being the membrane before the step's own reset, so the
  masked entries also leave the carry through time and the beta / threshold-reset gradient
  terms (the threshold's spike term, `-g_spk * graded * sigma'`, comes before h and is not
  masked).
- `ActiveWindow(width=0.2)` (Perez-Nieves & Goodman 2021, "Sparse Spiking Gradient Descent"):
  a neuron is active at step t when |h_t - threshold| < width. sigma'(h_t - threshold) is
  replaced by 0 where inactive (everywhere it appears); dL/dh_t is multiplied by the activity
  (0 or 1), so an inactive neuron passes no gradient to its input current, its previous
  membrane, beta or the threshold's reset term, and δI is zero exactly where inactive (the set
  of active entries is known after the forward); the gradient goes through time through the
  leak only: the reset is detached in the backward (with reset_delay=True it already is; with
  reset_delay=False the same-step reset `D_t = S_t/g - R_t` is detached too, so the recursion
  `dL/du_{t-1} = beta' * keep * dL/dh_t` is the leak alone, keep = 1 - R_t for the zero reset).
  A huge width therefore equals dense BPTT with that leak-only recursion (for
  reset_delay=True: exactly the dense backward).

The fused backward applies the mask in the same pass over time that computes δI (no second pass
over a dense gradient). snnkernels.lif returns the masked δI densely (autograd needs a dense
tensor); snnkernels.linear_lif consumes it in compact form (TopK: ELL, values and int32 indices
`[T * B, k]`; ActiveWindow: CSR of the active entries) so its synaptic backward touches only the
surviving entries.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass
from typing import Optional

# Ids shared with csrc/lif_math.h (enum class Mask).
MASK_IDS = {"none": 0, "topk": 1, "active_window": 2}
# The compact gradients index a neuron within its row with int32 (csrc/cpu/lif_cpu.cpp,
# csrc/cuda/lif_masked_cuda.cu), and linear_lif's sparse synaptic backward indexes the T * B rows
# with int32 (csrc/cpu/linear_sparse_cpu.cpp; the CUDA version checks the same limit): the
# limits, checked before any kernel runs.
MAX_ROW = 2**31
MAX_ROWS = 2**31 - 1


def _is_real(v) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool)


@dataclass(frozen=True)
class TopK:
    """Keep the k largest-magnitude entries of every (time step, sample) row of δI.

    Args:
        k: how many entries to keep per row, an integer >= 1 (numbers.Integral, not a bool;
            at most the row's N neurons, checked at the call).
        fraction: instead of k, the share of the row to keep, a real number in (0, 1]:
            `k = max(1, round(fraction * N))`.
        temporal: a bool. False (default): the recursion through time uses the unmasked
            gradient. True: the mask is applied to dL/dh_t, so dropped entries also leave the
            carry through time.

    Raises:
        ValueError: both or neither of k and fraction, k < 1, fraction outside (0, 1] or NaN;
            at the call, k larger than the row.
        TypeError: k not an integer, fraction not a real number (a bool included), temporal
            not a bool.
    """

    k: Optional[int] = None
    fraction: Optional[float] = None
    temporal: bool = False

    def __post_init__(self):
        if (self.k is None) == (self.fraction is None):
            raise ValueError("TopK: give exactly one of k and fraction "
                             f"(got k={self.k!r}, fraction={self.fraction!r})")
        if self.k is not None:
            if not isinstance(self.k, numbers.Integral) or isinstance(self.k, bool):
                raise TypeError(f"TopK: k must be an int, got {type(self.k).__name__}")
            if self.k <= 0:
                raise ValueError(f"TopK: k must be >= 1, got {self.k}")
        else:
            if not _is_real(self.fraction):
                raise TypeError(f"TopK: fraction must be a real number, got "
                                f"{type(self.fraction).__name__}")
            if not (0.0 < float(self.fraction) <= 1.0):  # also rejects NaN
                raise ValueError(f"TopK: fraction must be in (0, 1], got {self.fraction}")
        if not isinstance(self.temporal, bool):
            raise TypeError(f"TopK: temporal must be a bool, got {type(self.temporal).__name__}")

    def k_for(self, n: int) -> int:
        """k for rows of n neurons.

        Args:
            n: the number of neurons in a row, an int.

        Returns:
            k as given, or `max(1, round(fraction * n))` for a fraction.

        Raises:
            ValueError: k given and k > n.
        """
        if self.k is None:
            return max(1, round(float(self.fraction) * n))
        if self.k > n:
            raise ValueError(f"TopK: k = {self.k} is larger than the N = {n} neurons of a row "
                             "(the last dimension of x)")
        return int(self.k)


@dataclass(frozen=True)
class ActiveWindow:
    """Surrogate and gradient only where |U - threshold| < width; through time by the leak.

    Args:
        width: the half-width of the active window around the threshold, a real number > 0.

    Raises:
        TypeError: width not a real number (a bool included).
        ValueError: width <= 0 or NaN.
    """

    width: float = 0.2

    def __post_init__(self):
        if not _is_real(self.width):
            raise TypeError(f"ActiveWindow: width must be a real number, got "
                            f"{type(self.width).__name__}")
        if not float(self.width) > 0.0:  # also rejects NaN
            raise ValueError(f"ActiveWindow: width must be > 0, got {self.width}")


@dataclass(frozen=True)
class KernelMask:
    """A mask as the ops take it (the trailing arguments of lif_forward_masked)."""

    kind: int
    row: int
    k: int = 0
    width: float = 0.0
    temporal: bool = False

    def args(self) -> tuple:
        return (self.kind, self.row, self.k, self.width, self.temporal)


def resolve(sparse, n: int) -> Optional[KernelMask]:
    """None -> None (dense); TopK / ActiveWindow -> KernelMask for rows of n neurons; anything
    else is a TypeError naming `sparse`."""
    if sparse is None:
        return None
    if n > MAX_ROW and isinstance(sparse, (TopK, ActiveWindow)):
        raise ValueError(
            f"sparse=: a row of {n} neurons (x.shape[-1]; linear_lif's N) is too long: the "
            f"compact gradient indexes the neurons of a row with int32, so at most 2^31 = "
            f"{MAX_ROW}")
    row = max(n, 1)  # an empty neuron dim: nothing to select, but the kernels need row >= 1
    if isinstance(sparse, TopK):
        return KernelMask(MASK_IDS["topk"], row, k=sparse.k_for(n) if n else 1,
                          temporal=sparse.temporal)
    if isinstance(sparse, ActiveWindow):
        return KernelMask(MASK_IDS["active_window"], row, width=float(sparse.width))
    raise TypeError("sparse must be None, snnkernels.sparse.TopK(...) or "
                    f"snnkernels.sparse.ActiveWindow(...), got {sparse!r}")
