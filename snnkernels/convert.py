"""snnkernels.convert(model): swaps every snntorch.Leaky in a model for snnkernels.nn.Leaky,
keeping its parameters (the same Parameter objects, so an optimizer built before conversion
keeps working), buffers, hidden state and settings. A converted model loads snnTorch
checkpoints: the state_dict keys are the same."""

from __future__ import annotations

import warnings

from torch import nn

from .nn import leaky as _leaky
from .nn import spike_grad as _spike_grad

# snnTorch 1.0.0 picks its update at construction (Leaky.state_function) and does not change it
# when reset_mechanism is set later; ours follows reset_mechanism. A layer where the two
# disagree has a behaviour we cannot reproduce: it is kept (see _unsupported).
_STATE_FUNCTIONS = {"_base_sub": "subtract", "_base_zero": "zero", "_base_int": "none"}


def convert(model: nn.Module) -> nn.Module:
    """Replaces, in place, every snntorch.Leaky (exact type) in `model` by an equivalent
    snnkernels.nn.Leaky; returns `model` (or the replacement when `model` itself is a Leaky).
    Layers the kernels cannot run exactly (inhibition, state_quant, an unsupported spike_grad,
    subclasses of Leaky) are kept as they are, with a warning naming them. A model without any
    snntorch.Leaky is returned unchanged, with a warning.

    Raises:
        TypeError: model is not a torch.nn.Module.
        ImportError: snntorch is not installed.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"snnkernels.convert: model must be a torch.nn.Module, got "
                        f"{type(model).__name__}")
    try:
        import snntorch
    except ImportError as e:
        raise ImportError("snnkernels.convert needs snntorch installed (it converts its "
                          "Leaky layers)") from e
    kept: list[str] = []
    if type(model) is snntorch.Leaky:
        new = _convert_or_keep(model, "<model>", kept)
        _warn_kept(kept)
        return new
    count = _convert_children(model, "", snntorch.Leaky, kept)
    _warn_kept(kept)
    if count == 0 and not kept:
        warnings.warn("snnkernels.convert: the model has no snntorch.Leaky layer; nothing "
                      "was converted", stacklevel=2)
    return model


def _convert_children(parent: nn.Module, prefix: str, leaky_type, kept: list) -> int:
    count = 0
    for name, child in list(parent.named_children()):
        path = prefix + name
        if type(child) is leaky_type:
            new = _convert_or_keep(child, path, kept)
            if new is not child:
                setattr(parent, name, new)
                count += 1
        elif isinstance(child, leaky_type):
            kept.append(f"{path}: {type(child).__name__} is a subclass of snntorch.Leaky with "
                        "its own forward")
        else:
            count += _convert_children(child, path + ".", leaky_type, kept)
    return count


def _convert_or_keep(layer, path: str, kept: list) -> nn.Module:
    reason = _unsupported(layer)
    if reason is not None:
        kept.append(f"{path}: {reason}")
        return layer
    return from_snntorch(layer)


def _unsupported(layer):
    """Why `layer` (a snntorch.Leaky) cannot be converted exactly, or None."""
    if layer.inhibition:
        return "inhibition=True"
    if layer.state_quant:
        return "state_quant"
    if not layer.surrogate_disable:
        try:
            _spike_grad.resolve(layer.spike_grad)
        except TypeError:
            return f"spike_grad {layer.spike_grad!r} is not one the kernels support"
    if _STATE_FUNCTIONS.get(layer.state_function.__name__) != layer.reset_mechanism:
        return ("reset_mechanism was changed after construction, which snnTorch 1.0.0 only "
                "half applies")
    return None


def from_snntorch(layer) -> _leaky.Leaky:
    """The snnkernels.nn.Leaky equivalent of one snntorch.Leaky (assumed supported)."""
    learnable = {k: isinstance(getattr(layer, k), nn.Parameter)
                 for k in ("beta", "threshold", "graded_spikes_factor")}
    new = _leaky.Leaky(
        beta=layer.beta.detach(), threshold=layer.threshold.detach(),
        spike_grad=None if layer.surrogate_disable else layer.spike_grad,
        surrogate_disable=layer.surrogate_disable, init_hidden=layer.init_hidden,
        learn_beta=learnable["beta"], learn_threshold=learnable["threshold"],
        reset_mechanism=layer.reset_mechanism, output=layer.output,
        graded_spikes_factor=layer.graded_spikes_factor.detach(),
        learn_graded_spikes_factor=learnable["graded_spikes_factor"],
        reset_delay=layer.reset_delay)
    for name in ("threshold", "graded_spikes_factor", "reset_mechanism_val", "beta", "mem"):
        setattr(new, name, getattr(layer, name))  # the very same tensors / Parameters
    return new.train(layer.training)


def _warn_kept(kept: list) -> None:
    if kept:
        warnings.warn("snnkernels.convert: kept these snntorch layers unconverted (the fused "
                      "kernels cannot run them exactly): " + "; ".join(kept), stacklevel=3)
