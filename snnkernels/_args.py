"""Validation of the arguments every public LIF entry point shares (the fused op and the
reference), so both raise the same clear errors naming the argument."""

from __future__ import annotations

import numbers

import torch

RESET_IDS = {"subtract": 0, "zero": 1, "none": 2}  # shared with csrc/lif_math.h (enum Reset)


def check_x(x) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a torch.Tensor of shape [T, *batch], got {type(x).__name__}")
    if x.dim() == 0:
        raise ValueError("x must have a leading time dimension: shape [T, *batch], got a 0-dim tensor")
    if not x.is_floating_point():
        raise TypeError(f"x must be a floating-point tensor, got dtype {x.dtype}")


def check_steps(steps) -> None:
    """A number of time steps: a Python int >= 0 (not a bool)."""
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise ValueError(f"steps must be an int >= 0, got {steps!r}")


def check_neuron_param(value, name: str, x: torch.Tensor, shape_name: str = "x.shape[1:]"):
    """A Python number, or a tensor broadcastable to x.shape[1:] on x's device (a 0-dim CPU
    tensor is also accepted, as torch accepts CPU scalars). shape_name: what the caller's user
    knows that neuron shape as (x stands for another input in lif_constant and linear_lif)."""
    if isinstance(value, bool):
        raise TypeError(f"{name} must be a float or a tensor, got bool")
    if isinstance(value, numbers.Real):
        return float(value)
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a float or a tensor, got {type(value).__name__}")
    if not value.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {value.dtype}")
    batch = tuple(x.shape[1:])
    if not broadcasts_to(tuple(value.shape), batch):
        raise ValueError(
            f"{name} of shape {tuple(value.shape)} does not broadcast to the neuron shape "
            f"{shape_name} = {batch}"
        )
    if value.device != x.device and not (value.dim() == 0 and value.device.type == "cpu"):
        raise ValueError(f"{name} is on {value.device} but x is on {x.device}")
    return drop_leading_ones(value, batch)


def check_mem0(mem0, x: torch.Tensor, shape_name: str = "x.shape[1:]"):
    if mem0 is None:
        return None
    if not isinstance(mem0, torch.Tensor):
        raise TypeError(f"mem0 must be None or a tensor, got {type(mem0).__name__}")
    if not mem0.is_floating_point():
        raise TypeError(f"mem0 must be a floating-point tensor, got dtype {mem0.dtype}")
    batch = tuple(x.shape[1:])
    if not broadcasts_to(tuple(mem0.shape), batch):
        raise ValueError(
            f"mem0 of shape {tuple(mem0.shape)} does not broadcast to {shape_name} = {batch}"
        )
    if mem0.device != x.device:
        raise ValueError(f"mem0 is on {mem0.device} but x is on {x.device}")
    return drop_leading_ones(mem0, batch)


def drop_leading_ones(value: torch.Tensor, batch: tuple) -> torch.Tensor:
    """A view of `value` without the leading size-1 dims it has beyond len(batch) (accepted by
    broadcasts_to), so results keep x's shape instead of growing to the parameter's rank."""
    extra = value.dim() - len(batch)
    return value.reshape(value.shape[extra:]) if extra > 0 else value


def check_reset(reset_mechanism, reset_delay) -> int:
    if not isinstance(reset_mechanism, str) or reset_mechanism not in RESET_IDS:
        raise ValueError(
            f"reset_mechanism must be one of {sorted(RESET_IDS)}, got {reset_mechanism!r}"
        )
    if not isinstance(reset_delay, bool):
        raise TypeError(f"reset_delay must be a bool, got {type(reset_delay).__name__}")
    return RESET_IDS[reset_mechanism]


def broadcasts_to(shape: tuple, target: tuple) -> bool:
    """True when `shape` broadcasts to exactly `target` (the target never grows)."""
    if len(shape) > len(target):
        return all(s == 1 for s in shape[: len(shape) - len(target)]) and broadcasts_to(
            shape[len(shape) - len(target) :], target
        )
    return all(s == 1 or s == t for s, t in zip(reversed(shape), reversed(target)))


def check_linear(x, weight, bias) -> None:
    """linear_lif's x [T, B, F], weight [N, F], bias [N] or None: same dtype and device."""
    check_x(x)
    if x.dim() != 3:
        raise ValueError(f"x must be [T, B, F] for linear_lif, got shape {tuple(x.shape)}")
    if not isinstance(weight, torch.Tensor):
        raise TypeError(f"weight must be a torch.Tensor [N, F], got {type(weight).__name__}")
    if weight.dim() != 2:
        raise ValueError(f"weight must be [N, F], got shape {tuple(weight.shape)}")
    if weight.shape[1] != x.shape[2]:
        raise ValueError(
            f"weight has {weight.shape[1]} input features (weight.shape[1]) but x has "
            f"{x.shape[2]} (x.shape[2]): weight must be [N, F] for x [T, B, F]"
        )
    tensors = {"weight": weight}
    if bias is not None:
        if not isinstance(bias, torch.Tensor):
            raise TypeError(f"bias must be None or a tensor [N], got {type(bias).__name__}")
        if tuple(bias.shape) != (weight.shape[0],):
            raise ValueError(f"bias must have shape [N] = ({weight.shape[0]},), got "
                             f"{tuple(bias.shape)}")
        tensors["bias"] = bias
    for name, t in tensors.items():
        if t.dtype != x.dtype:
            raise TypeError(f"{name} has dtype {t.dtype} but x has {x.dtype}")
        if t.device != x.device:
            raise ValueError(f"{name} is on {t.device} but x is on {x.device}")


def check_layer_params(x: torch.Tensor, n: int, beta, threshold):
    """linear_lif's beta and threshold checked as check_neuron_param's, against the neuron
    shape [B, N] of its current I = x W^T + b (not x's [B, F]); returns them as it does."""
    like = x.new_empty((1,)).expand(x.shape[0], x.shape[1], n)  # I's shape, one element
    return (check_neuron_param(beta, "beta", like, "[B, N]"),
            check_neuron_param(threshold, "threshold", like, "[B, N]"))
