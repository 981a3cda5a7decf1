"""Maps a `spike_grad` argument (ours, or one of snnTorch's surrogate closures) to a Surrogate
the fused kernels run, with the same parameters. snnTorch's factories return a closure `inner`
that keeps its parameters in closure cells, e.g. atan(alpha) -> 'atan.<locals>.inner' with
co_freevars ('alpha',); the factory name and argument names match ours one to one."""

from __future__ import annotations

import numbers

import torch

from .. import surrogate as S

# snnTorch's surrogate_disable=True makes the spike a plain (x > 0).float(): no gradient flows
# through any spike. atan with alpha = 0 has sigma'(z) = 0 everywhere: the same gradients, also
# inside the reset_delay=False reset, where the spike feeds back into the membrane.
DISABLED = S.atan(alpha=0.0)


def resolve(spike_grad, surrogate_disable: bool = False,
            name: str = "spike_grad") -> S.Surrogate:
    """None -> atan(alpha=2.0) (snnTorch's default); a snnkernels Surrogate passes; one of
    snnTorch's surrogate closures is translated; anything else is a TypeError naming the
    caller's argument `name`."""
    if surrogate_disable:
        return DISABLED
    if spike_grad is None:
        return S.DEFAULT
    if isinstance(spike_grad, S.Surrogate):
        return spike_grad
    recognized = from_snntorch(spike_grad)
    if recognized is not None:
        return recognized
    supported = ", ".join(f"{s}(...)" for s in S.SURROGATE_IDS)
    raise TypeError(
        f"{name}={spike_grad!r} is not supported by the fused kernels. Supported: None "
        f"(atan(alpha=2.0)), snnkernels.surrogate.{{{supported}}} and snntorch.surrogate's "
        f"factories of the same names. Other callables (snntorch.surrogate.SSO, LSO, SFS, "
        "custom_surrogate, your own functions) are not"
        + (": keep snntorch.Leaky for those layers." if name == "spike_grad" else ".")
    )


def from_snntorch(fn):
    """The Surrogate for one of snnTorch's surrogate closures, or None if fn is not one."""
    qualname = getattr(fn, "__qualname__", "")
    if getattr(fn, "__module__", None) != "snntorch.surrogate" or not qualname.endswith(
        ".<locals>.inner"
    ):
        return None
    name = qualname.split(".")[0]
    if name not in S.SURROGATE_IDS:
        return None
    cells = fn.__closure__ or ()
    params = {k: _number(c.cell_contents, k) for k, c in zip(fn.__code__.co_freevars, cells)}
    return getattr(S, name)(**params)


def _number(value, name: str) -> float:
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return float(value)
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        return float(value)
    raise TypeError(f"snntorch surrogate parameter {name}={value!r} is not a real number")
