"""ConvertedLeaky: what snnkernels.convert puts in place of a snntorch.Leaky. It runs the fused
kernel (it is a snnkernels.nn.Leaky) and is also a snntorch.Leaky, so snnTorch's own state
idioms reach it without patching snnTorch: `snntorch.utils.reset(net)` looks for snnTorch's
classes among a model's children and then resets every Leaky listed in the class-level
`snntorch.SpikingNeuron.instances`; `snn.Leaky.reset_hidden()` / `detach_hidden()` walk the same
list. This module imports snnTorch; snnkernels imports it only from convert().
"""

from __future__ import annotations

import inspect
import weakref

import snntorch
import torch

from .leaky import Leaky


class _LayerHandle:
    """What snnTorch's instance list holds for a ConvertedLeaky: a weak reference, so the list
    does not keep dead layers alive. While the layer lives the handle passes snnTorch's
    `isinstance(entry, Leaky)` (through __class__) and forwards `mem`; once it is gone it passes
    no isinstance check, so snnTorch's loops skip it, and the next registration drops it. It is
    never removed from the list at the moment the layer dies: that can happen inside snnTorch's
    index-based loops (a garbage collection), which would then skip a layer."""

    __slots__ = ("_layer",)

    def __init__(self, layer: Leaky):
        self._layer = weakref.ref(layer)

    @property
    def __class__(self):
        layer = self._layer()
        if layer is None:
            raise AttributeError("the layer is gone")  # isinstance() is then False
        return type(layer)

    @property
    def alive(self) -> bool:
        return self._layer() is not None

    @property
    def mem(self) -> torch.Tensor:
        return self._layer().mem

    @mem.setter
    def mem(self, value: torch.Tensor) -> None:
        self._layer().mem = value

    def __repr__(self) -> str:
        layer = self._layer()
        return f"<snnkernels handle of {'a dead layer' if layer is None else repr(layer)}>"


def _register(layer: Leaky) -> None:
    """Lists `layer` where snnTorch's constructor lists its neurons (SpikingNeuron.instances)."""
    instances = snntorch.SpikingNeuron.instances
    instances[:] = [e for e in instances if not (type(e) is _LayerHandle and not e.alive)]
    instances.append(_LayerHandle(layer))


def unregister(layer) -> None:
    """Drops `layer` (a snnTorch neuron replaced by a conversion) from SpikingNeuron.instances,
    so that the list does not keep it, its state and that state's graph alive."""
    instances = snntorch.SpikingNeuron.instances
    instances[:] = [e for e in instances if e is not layer]


class _ClassOrLayerMethod:
    """Called on the class, snnTorch's class-level method (acts on every Leaky in the process,
    as `snn.Leaky.reset_hidden()` does); called on a layer, the method for that layer only."""

    def __init__(self, on_class, on_layer):
        self.on_class = on_class
        self.on_layer = on_layer

    def __get__(self, layer, owner=None):
        if layer is None:
            return self.on_class.__get__(None, owner)
        return self.on_layer.__get__(layer, owner)


class ConvertedLeaky(Leaky, snntorch.Leaky):
    """A snnkernels.nn.Leaky that snnTorch recognises as its own Leaky (see the module doc).
    Same constructor and behaviour as snnkernels.nn.Leaky; in addition it is listed in
    snntorch.SpikingNeuron.instances (weakly), also after copy.deepcopy or torch.load of a
    whole model, and
    - `ConvertedLeaky.reset_hidden()` / `detach_hidden()` (on the class) are snnTorch's: every
      Leaky, snnTorch's and converted, in every network;
    - `layer.reset_hidden()` / `layer.detach_hidden()` (on a layer) act on that layer only."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        _register(self)

    def __setstate__(self, state):
        super().__setstate__(state)
        _register(self)  # unpickling and deepcopy do not run __init__

    reset_hidden = _ClassOrLayerMethod(inspect.getattr_static(snntorch.Leaky, "reset_hidden"),
                                       Leaky.reset_mem)
    detach_hidden = _ClassOrLayerMethod(inspect.getattr_static(snntorch.Leaky, "detach_hidden"),
                                        Leaky.detach_hidden)
