"""Hidden-state helpers for models built from snnkernels.nn layers."""

from __future__ import annotations

from torch import nn

from .nn.leaky import Leaky


def reset(model: nn.Module) -> nn.Module:
    """Sets the hidden state of every spiking layer in `model` to zeros (snnkernels.nn.Leaky,
    and any other module with a reset_mem() method, e.g. snnTorch's neurons); returns model.
    Use between independent sequences with init_hidden=True.

    Args:
        model: any torch.nn.Module; its submodules are visited recursively.

    Returns:
        `model` itself, its spiking layers' state zeroed.

    Raises:
        TypeError: model is not a torch.nn.Module.
    """
    for module in _modules(model, "reset"):
        if callable(getattr(module, "reset_mem", None)):
            module.reset_mem()
    return model


def detach(model: nn.Module) -> nn.Module:
    """Cuts the hidden state of every snnkernels.nn.Leaky in `model` from the autograd graph
    (truncated BPTT); returns model.

    Args:
        model: any torch.nn.Module; its submodules are visited recursively.

    Returns:
        `model` itself, with each Leaky's state detached.

    Raises:
        TypeError: model is not a torch.nn.Module.
    """
    for module in _modules(model, "detach"):
        if isinstance(module, Leaky):
            module.detach_hidden()
    return model


def _modules(model, fn: str):
    """model.modules(), once model is known to be a module (a TypeError naming it otherwise)."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"snnkernels.utils.{fn}: model must be a torch.nn.Module, got "
                        f"{type(model).__name__}")
    return model.modules()
