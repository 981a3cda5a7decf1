"""snnkernels.convert(model): swaps every snntorch.Leaky in a model for a snnkernels.nn.Leaky
that snnTorch still recognises as its Leaky (snnkernels.nn.converted.ConvertedLeaky), keeping
its parameters (the same Parameter objects, so an optimizer built before conversion keeps
working), buffers, hidden state and settings. A converted model loads snnTorch
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
    snnkernels.nn.converted.ConvertedLeaky (a snnkernels.nn.Leaky that snnTorch's
    utils.reset / reset_hidden / detach_hidden also reach); returns `model` (or the replacement
    when `model` itself is a Leaky). Layers the kernels cannot run exactly (inhibition,
    state_quant, an unsupported spike_grad, subclasses of Leaky) and snnTorch's other neurons
    are kept as they are, with a warning naming them. Layers already converted are left alone.
    A model without any snntorch.Leaky is returned unchanged, with a warning.

    Args:
        model: a torch.nn.Module (a snntorch.Leaky itself included); its submodules are
            visited recursively.

    Returns:
        `model`, converted in place; or, when `model` is itself a convertible snntorch.Leaky,
            its replacement.

    Raises:
        TypeError: model is not a torch.nn.Module.
        ImportError: snntorch is not installed.

    Warns:
        UserWarning: layers kept unconverted (named), or no snntorch.Leaky in the model.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"snnkernels.convert: model must be a torch.nn.Module, got "
                        f"{type(model).__name__}")
    try:
        import snntorch  # noqa: F401  (the conversion's helpers import it again)
    except ImportError as e:
        raise ImportError("snnkernels.convert needs snntorch installed (it converts its "
                          "Leaky layers)") from e
    found = _Found()
    new = _convert_tree(model, "<model>", found)
    if found.kept:
        warnings.warn("snnkernels.convert: kept these snnTorch neurons unconverted (they still "
                      "run in snnTorch): " + "; ".join(found.kept), stacklevel=2)
    if not (found.converted or found.kept or found.already):
        warnings.warn("snnkernels.convert: the model has no snntorch.Leaky layer; nothing "
                      "was converted", stacklevel=2)
    return new


class _Found:
    """What a conversion met: layers converted, layers converted before, layers kept (why)."""

    def __init__(self):
        self.converted = 0
        self.already = 0
        self.kept: list[str] = []


def _convert_tree(module: nn.Module, path: str, found: _Found) -> nn.Module:
    """`module`'s replacement when it is a convertible snntorch.Leaky; else `module`, whose
    children (unless it is a neuron) are converted in place."""
    import snntorch

    if isinstance(module, _leaky.Leaky):
        found.already += 1
    elif type(module) is snntorch.Leaky:
        reason = _unsupported(module)
        if reason is None:
            found.converted += 1
            from .nn.converted import unregister
            unregister(module)  # snnTorch's instance list would keep it alive forever
            return _converted(module)
        found.kept.append(f"{path}: {reason}")
    elif isinstance(module, snntorch.Leaky):
        found.kept.append(f"{path}: {type(module).__name__} is a subclass of snntorch.Leaky "
                          "with its own forward")
    elif _is_neuron(module):
        found.kept.append(f"{path}: {type(module).__name__} (only snntorch.Leaky is "
                          "converted)")
    else:
        prefix = "" if path == "<model>" else path + "."
        for name, child in list(module.named_children()):
            new = _convert_tree(child, prefix + name, found)
            if new is not child:
                setattr(module, name, new)
    return module


def _is_neuron(module: nn.Module) -> bool:
    """snnTorch's neurons: SpikingNeuron's subclasses, and LeakyParallel, which is not one."""
    import snntorch

    return isinstance(module, snntorch.SpikingNeuron) or \
        type(module).__module__.startswith("snntorch._neurons")


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
    """The ConvertedLeaky equivalent of one snntorch.Leaky, sharing its parameters, buffers
    and state (the same tensors), in its train/eval mode. convert() builds each layer it
    converts the same way; unlike convert(), it does not remove `layer` from snnTorch's
    instance list.

    Args:
        layer: a snntorch.Leaky (the exact class) that convert() would convert. What convert()
            keeps with a warning is refused here with an error.

    Returns:
        The new snnkernels.nn.converted.ConvertedLeaky.

    Raises:
        TypeError: layer is not a snntorch.Leaky, or is a subclass of it (its own dynamics,
            e.g. snntorch.DeltaLeaky) or another neuron (e.g. snntorch.Synaptic); a spike_grad
            the kernels do not support.
        ValueError: a setting the kernels cannot run exactly (inhibition=True, state_quant, a
            reset_mechanism changed after construction), named in the message; a
            snntorch.surrogate spike_grad with a negative or non-finite parameter.
        ImportError: snntorch is not installed.
    """
    import snntorch

    if type(layer) is not snntorch.Leaky:
        raise TypeError(f"from_snntorch: layer must be a snntorch.Leaky (exactly: its "
                        f"subclasses and snnTorch's other neurons compute something else), got "
                        f"{type(layer).__module__}.{type(layer).__qualname__}")
    if not layer.surrogate_disable:
        _spike_grad.resolve(layer.spike_grad)  # the kernels' TypeError, naming spike_grad
    reason = _unsupported(layer)  # the rule convert() keeps a layer by
    if reason is not None:
        raise ValueError(f"from_snntorch: the kernels cannot run this layer exactly "
                         f"({reason}); convert() keeps such a layer as snntorch.Leaky")
    return _converted(layer)


def _converted(layer) -> _leaky.Leaky:
    """from_snntorch's result for a layer already known to convert exactly (convert() checks it
    by the same rule before calling this)."""
    from .nn.converted import ConvertedLeaky

    learnable = {k: isinstance(getattr(layer, k), nn.Parameter)
                 for k in ("beta", "threshold", "graded_spikes_factor")}
    new = ConvertedLeaky(
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
