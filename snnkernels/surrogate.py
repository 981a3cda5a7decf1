"""Surrogate gradients: the forward of a spike is always H(U - threshold) (strict >); the
backward replaces H' by sigma'(z), z = U - threshold. Formulas and defaults are snnTorch 1.0.0's
(docs/semantics.md, "Surrogate gradients"); each factory here has the name and arguments of its
snnTorch twin, and raises TypeError for a parameter that is not a real number and ValueError for
one that is negative, infinite or NaN.

One deliberate difference: sigmoid's sigma' is computed as k e^{-k|z|} / (1 + e^{-k|z|})^2, which
is the same function, but never overflows; snnTorch's e^{-kz} form returns NaN in float32 for
z < -3.5 at k = 25.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

import torch

# Ids shared with csrc/lif_math.h (enum class Surrogate).
SURROGATE_IDS = {
    "atan": 0,
    "fast_sigmoid": 1,
    "sigmoid": 2,
    "spike_rate_escape": 3,
    "triangular": 4,
    "straight_through_estimator": 5,
    "heaviside": 6,
}

# The parameters each formula reads, in its factory's argument order.
_PARAMS = {
    "atan": ("alpha",),
    "fast_sigmoid": ("slope",),
    "sigmoid": ("slope",),
    "spike_rate_escape": ("beta", "slope"),
    "triangular": ("threshold",),
    "straight_through_estimator": (),
    "heaviside": (),
}


@dataclass(frozen=True)
class Surrogate:
    """A surrogate spike gradient: its snnTorch name and user-facing parameters. Made by the
    factories below (atan, fast_sigmoid, ...), not directly; immutable and hashable.

    Args:
        name: the snnTorch factory's name, e.g. "fast_sigmoid" (kept as the attribute name).
        params: ((parameter name, value), ...) in the factory's argument order (kept as the
            attribute params).

    Raises:
        ValueError: name not one of the factories' names; params missing a parameter the
            formula needs, or giving one it does not take (or twice); a parameter negative,
            infinite or NaN.
        TypeError: params not a tuple of (str, value) pairs; a parameter not a real number
            (a bool included).
    """

    name: str
    params: tuple[tuple[str, float], ...] = ()

    def __post_init__(self):
        # Checked here, not when the kernels read kind / constants(): a KeyError deep inside
        # snnkernels.lif would not say which argument was wrong.
        if not isinstance(self.name, str) or self.name not in SURROGATE_IDS:
            raise ValueError(f"Surrogate: name must be one of {', '.join(SURROGATE_IDS)}, got "
                             f"{self.name!r}")
        if not isinstance(self.params, tuple) or not all(
                isinstance(p, tuple) and len(p) == 2 and isinstance(p[0], str)
                for p in self.params):
            raise TypeError(f"Surrogate: params must be a tuple of (name, value) pairs, got "
                            f"{self.params!r}")
        keys = [k for k, _ in self.params]
        expected = _PARAMS[self.name]
        missing = [k for k in expected if k not in keys]
        unknown = [k for k in keys if k not in expected]
        if missing or unknown or len(set(keys)) != len(keys):
            raise ValueError(
                f"Surrogate({self.name!r}): params must give exactly "
                f"{', '.join(expected) or 'no parameters'}; got {', '.join(keys) or 'none'}"
                + (f" (missing: {', '.join(missing)})" if missing else "")
                + (f" (unknown: {', '.join(unknown)})" if unknown else ""))
        # floats from here on, so equal parameters give equal (and equally hashed) surrogates
        object.__setattr__(self, "params", tuple((k, _check(k, v, factory=self.name))
                                                 for k, v in self.params))

    @property
    def kind(self) -> int:
        """The id the kernels take (csrc/lif_math.h, enum class Surrogate)."""
        return SURROGATE_IDS[self.name]

    def param(self, key: str) -> float:
        """The value of parameter `key`.

        Args:
            key: a parameter name, e.g. "alpha".

        Returns:
            Its value, a float.

        Raises:
            KeyError: this surrogate has no parameter `key`.
        """
        return dict(self.params)[key]

    def constants(self) -> tuple[float, float]:
        """(p0, p1) as the kernels take them (see csrc/lif_math.h), computed in double once.

        Returns:
            The tuple (p0, p1) of Python floats (0.0 where unused).
        """
        if self.name == "atan":
            alpha = self.param("alpha")
            return alpha / 2.0, math.pi / 2.0 * alpha
        if self.name in ("fast_sigmoid", "sigmoid"):
            return self.param("slope"), 0.0
        if self.name == "spike_rate_escape":
            return self.param("beta"), self.param("slope")
        if self.name == "triangular":
            return self.param("threshold"), 0.0
        return 0.0, 0.0

    def grad(self, z: torch.Tensor) -> torch.Tensor:
        """sigma'(z) in plain torch: the reference implementation's formula.

        Args:
            z: U - threshold, a floating-point tensor of any shape, dtype and device.

        Returns:
            sigma'(z), of z's shape, dtype and device.
        """
        p0, p1 = self.constants()
        if self.name == "atan":
            return p0 / (1.0 + (p1 * z) ** 2)
        if self.name == "fast_sigmoid":
            return 1.0 / (p0 * z.abs() + 1.0) ** 2
        if self.name == "sigmoid":
            e = torch.exp(-p0 * z.abs())
            return p0 * e / (e + 1.0) ** 2
        if self.name == "spike_rate_escape":
            return p1 * torch.exp(-p0 * (z - 1.0).abs())
        if self.name == "triangular":
            # Build the constant in z's dtype: torch.where on two Python scalars would give the
            # default dtype (float32) and round p0 before the cast, off by ~1e-8 in float64.
            p = torch.full_like(z, p0)
            return torch.where(z >= 0, -p, p)
        if self.name == "straight_through_estimator":
            return torch.ones_like(z)
        return (z > 0).to(z.dtype)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v}" for k, v in self.params)
        return f"snnkernels.surrogate.{self.name}({args})"


def _check(name: str, value, *, factory: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{factory}(): {name} must be a real number, got {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{factory}(): {name} must be finite and >= 0, got {value}")
    return value


def atan(alpha: float = 2.0) -> Surrogate:
    """sigma'(z) = (alpha/2) / (1 + (pi/2 * alpha * z)^2). snnTorch's default spike_grad.

    Args:
        alpha: the sharpness, a finite real number >= 0.

    Raises:
        TypeError, ValueError: alpha not a real number (TypeError), or negative, infinite or
            NaN (ValueError).
    """
    return Surrogate("atan", (("alpha", alpha),))


def fast_sigmoid(slope: float = 25) -> Surrogate:
    """sigma'(z) = 1 / (slope * |z| + 1)^2.

    Args:
        slope: the sharpness k, a finite real number >= 0.

    Raises:
        TypeError, ValueError: slope not a real number (TypeError), or negative, infinite or
            NaN (ValueError).
    """
    return Surrogate("fast_sigmoid", (("slope", slope),))


def sigmoid(slope: float = 25) -> Surrogate:
    """sigma'(z) = slope * e^{-slope z} / (e^{-slope z} + 1)^2, evaluated in a form that never
    overflows (docs/semantics.md).

    Args:
        slope: the logistic's sharpness k, a finite real number >= 0.

    Raises:
        TypeError, ValueError: slope not a real number (TypeError), or negative, infinite or
            NaN (ValueError).
    """
    return Surrogate("sigmoid", (("slope", slope),))


def spike_rate_escape(beta: float = 1, slope: float = 25) -> Surrogate:
    """sigma'(z) = slope * exp(-beta * |z - 1|), peaking at z = 1.

    Args:
        beta: the decay of the peak, a finite real number >= 0.
        slope: the height of the peak, a finite real number >= 0.

    Raises:
        TypeError, ValueError: beta or slope not a real number (TypeError), or negative,
            infinite or NaN (ValueError).
    """
    return Surrogate("spike_rate_escape", (("beta", beta), ("slope", slope)))


def triangular(threshold: float = 1) -> Surrogate:
    """sigma'(z) = +threshold where z < 0, -threshold where z >= 0 (snnTorch's code, sign flip
    included, reproduced for parity).

    Args:
        threshold: the gradient's magnitude on either side, a finite real number >= 0.

    Raises:
        TypeError, ValueError: threshold not a real number (TypeError), or negative, infinite or
            NaN (ValueError).
    """
    return Surrogate("triangular", (("threshold", threshold),))


def straight_through_estimator() -> Surrogate:
    """sigma'(z) = 1."""
    return Surrogate("straight_through_estimator")


def heaviside() -> Surrogate:
    """sigma'(z) = H(z): the gradient passes only where the neuron fired."""
    return Surrogate("heaviside")


DEFAULT = atan()


def resolve(surrogate) -> Surrogate:
    """None -> atan(alpha=2.0); a Surrogate passes.

    Raises:
        TypeError: anything else.
    """
    if surrogate is None:
        return DEFAULT
    if isinstance(surrogate, Surrogate):
        return surrogate
    raise TypeError(
        "surrogate must be None or one of snnkernels.surrogate."
        f"{{{', '.join(SURROGATE_IDS)}}}(...), got {surrogate!r}"
    )
