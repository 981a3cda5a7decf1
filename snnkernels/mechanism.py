"""snnkernels.mechanism: what the spiking layers did, counted inside the ops.

    with snnkernels.mechanism.record() as rec:
        loss = loss_fn(model(x), y)
        loss.backward()
    rec.layers()  # {"layers.0": LayerMetrics(spike_rate=..., grad_current_density=..., ...)}

While a recording is open, the autograd functions of snnkernels.lif (dense and masked),
snnkernels.lif_constant and snnkernels.linear_lif (dense, sparse synaptic and event paths; CPU
and CUDA) count, per layer:
- spike_rate: the fraction of (step, neuron) entries of the forward's spikes that are nonzero;
- grad_current_density: the fraction of entries of the current gradient δI_t = dL/dI_t (one per
  step, sample and neuron) that are nonzero, as the backward formed it: for a sparse mask
  (snnkernels.sparse) what the mask let through, for a dense layer how sparse the exact gradient
  already is. lif_constant's δI is the gradient of each step's copy of the current, the same
  entries snnkernels.lif reports for the expanded current;
- active_window_fraction: for a layer trained with sparse=ActiveWindow(width), the fraction of
  membranes h_t with |h_t - threshold| < width (where the mask lets a gradient through). None for
  the other layers: they have no window to be inside of.
The counts are device tensors summed without a host sync until layers() is read. With no
recording open the ops do nothing extra (one check of a module global per call). Under
torch.compile nothing is counted.

Layers are identified by name: an op called inside `with snnkernels.mechanism.layer(name):`
counts under that name (snnkernels.models.TabularSNN names its layers "layers.0", ...,
"output", as its submodules). An op called outside any named layer counts under
"<op>#<n>", n numbering such calls from the start of the recording, so every call is its own
entry: name the layers when recording more than one forward pass. A forward counts when it runs
inside the recording, its backward when both it and its forward do.

The recording is process-wide (CUDA backward passes run on autograd's own threads); one at a time.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Optional

import torch

# The open recording, or None. The ops read it on every call.
current: Optional["Recording"] = None
_layer_name: Optional[str] = None
_NO_LAYER = contextlib.nullcontext()


@dataclass(frozen=True)
class LayerMetrics:
    """One layer's counts as fractions in [0, 1]; None where nothing of that kind was counted
    (no backward ran inside the recording, or the layer has no active window). Made by
    Recording.layers(); the arguments are kept as attributes.

    Args:
        spike_rate: the fraction of nonzero forward spikes, or None.
        grad_current_density: the fraction of nonzero current-gradient entries δI, or None.
        active_window_fraction: the fraction of membranes inside the ActiveWindow, or None.
    """

    spike_rate: Optional[float]
    grad_current_density: Optional[float]
    active_window_fraction: Optional[float]


class _Counter:
    """A running fraction: nonzero counts as device tensors (no sync), totals as ints."""

    def __init__(self):
        self.hits, self.total = [], 0

    def add(self, hits: torch.Tensor, total: int) -> None:
        self.hits.append(hits)
        self.total += total

    def fraction(self) -> Optional[float]:
        if self.total == 0:
            return None
        return sum(int(h) for h in self.hits) / self.total


class Recording:
    """The counts of one record() block, per layer in the order of their first forward."""

    def __init__(self):
        self._layers: dict = {}
        self._unnamed = 0

    def layers(self) -> dict:
        """The counts so far (reading them syncs with the device).

        Returns:
            {layer name: LayerMetrics}, in the order the layers first ran.
        """
        return {name: LayerMetrics(*(c.fraction() for c in counters))
                for name, counters in self._layers.items()}

    def layer_key(self, op: str) -> str:
        """The name a forward of `op` counts under (see the module docstring); called by the
        ops, which then pass it to spikes, current_gradient and active_window.

        Args:
            op: the op's name, e.g. "lif_forward", used when no layer() name is open.

        Returns:
            The layer() name in effect, else "<op>#<n>".
        """
        if _layer_name is not None:
            key = _layer_name
        else:
            key = f"{op}#{self._unnamed}"
            self._unnamed += 1
        self._layers.setdefault(key, (_Counter(), _Counter(), _Counter()))
        return key

    def spikes(self, key: str, spk: torch.Tensor) -> None:
        """Counts the spikes of one forward.

        Args:
            key: the layer's key, from layer_key.
            spk: the layer's spikes, a tensor on any device (nonzero entries count).
        """
        self._layers[key][0].add(torch.count_nonzero(spk), spk.numel())

    def current_gradient(self, key: str, grad: torch.Tensor, entries: Optional[int] = None):
        """Counts the nonzero entries of one backward's current gradient.

        Args:
            key: the layer's key, from layer_key.
            grad: δI densely, or a compact form holding its entries (zeros where not kept);
                a tensor on any device.
            entries: how many entries δI has (None: grad.numel(), when dense).
        """
        self._layers[key][1].add(torch.count_nonzero(grad),
                                 grad.numel() if entries is None else entries)

    def active_window(self, key: str, h: torch.Tensor, threshold: torch.Tensor,
                      width: float) -> None:
        """Counts the membranes inside the active window |h - threshold| < width.

        Args:
            key: the layer's key, from layer_key.
            h: the membranes before the step's reset `[T, M]`.
            threshold: the kernels' P threshold values, neuron n using value n % P (P divides
                M), on h's device.
            width: the ActiveWindow's width.
        """
        if h.numel() == 0:
            return
        p = threshold.numel()
        inside = (h.reshape(-1, p) - threshold.reshape(p)).abs() < width
        self._layers[key][2].add(torch.count_nonzero(inside), h.numel())


@contextlib.contextmanager
def record():
    """Opens a recording (see the module docstring), a context manager.

    Yields:
        The Recording; read it with layers() (during or after the block).

    Raises:
        RuntimeError: a recording is already open.
    """
    global current
    if current is not None:
        raise RuntimeError("snnkernels.mechanism.record(): a recording is already open")
    current = Recording()
    try:
        yield current
    finally:
        current = None


def layer(name: str):
    """The context inside which ops count under `name` (while recording; else it does
    nothing).

    Args:
        name: the layer's name, a non-empty str.

    Returns:
        A context manager.

    Raises:
        ValueError: name not a non-empty str.
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"snnkernels.mechanism.layer: name must be a non-empty str, got "
                         f"{name!r}")
    if current is None or torch.compiler.is_compiling():
        return _NO_LAYER
    return _named(name)


@contextlib.contextmanager
def _named(name: str):
    global _layer_name
    outer, _layer_name = _layer_name, name
    try:
        yield
    finally:
        _layer_name = outer
