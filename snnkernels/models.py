"""TabularSNN: the spiking MLP the study trains on tabular data (docs/study.md).

x [B, F] -> encoder -> [T, B, F] -> (Linear -> LIF) per hidden layer -> Linear -> readout.
Each layer runs over the whole sequence at once: one matmul on [T*B, F], then one fused LIF
call on [T, B, H] (on the CPU one snnkernels.linear_lif call for the layers after the first,
see SpikingLinear.from_input). The model keeps no hidden state between calls (every forward
starts from zero membranes), so a changed batch size, .to(device / dtype) and replicas need
nothing special, and torch.compile(fullgraph=True) sees one graph.
"""

from __future__ import annotations

import copy
import numbers

import torch
from torch import nn

from . import _args
from . import mechanism as _mechanism
from . import sparse as _sparse
from .lif import lif, lif_constant
from .linear_lif import linear_lif
from .nn import autocast as _autocast
from .nn import spike_grad as _spike_grad

ENCODERS = ("direct", "rate")
READOUTS = ("spike_count", "membrane")
# The seeds torch.Generator.manual_seed accepts (a negative one is taken modulo 2^64).
_SEED_MIN, _SEED_END = -(2**63), 2**64


class SpikingLinear(nn.Module):
    """nn.Linear followed by a LIF neuron over all T steps: [T, B, F] -> spikes, membrane
    [T, B, H]. beta and threshold are per-layer floats, or per-neuron [H] Parameters when
    learnable. sparse: None or a mask from snnkernels.sparse for this layer's backward.
    constant_kernel: False makes a dense layer's from_constant run the fused LIF on the
    expanded current, the kernel a sparse layer runs (like-for-like timing, study/throughput.py).

    Args:
        in_features: F, the input width (nn.Linear's in_features).
        out_features: H, the number of neurons (nn.Linear's out_features).
        beta: the decay: a real number or a tensor as snnkernels.lif's beta; with learn_beta a
            real number or a one-element tensor (its float() fills the [H] Parameter).
        threshold: as beta (learn_threshold for the Parameter).
        surrogate: None or a snnkernels.surrogate object (TabularSNN translates snnTorch's).
        reset_mechanism: "subtract" | "zero" | "none".
        reset_delay: as snnkernels.lif's.
        learn_beta: make beta a learnable [H] Parameter (torch's default dtype and device).
        learn_threshold: make threshold a learnable [H] Parameter.
        sparse: None or snnkernels.sparse.TopK / ActiveWindow (rows of H neurons).

    Raises:
        TypeError: in_features or out_features not an int (a bool included); with learn_beta
            (learn_threshold) beta (threshold) not a real number or one-element tensor;
            sparse of an unknown kind.
        ValueError: in_features or out_features negative; a TopK k larger than out_features.

    The other arguments are checked at the call, with snnkernels.lif's and linear_lif's
    errors (a bad surrogate, reset_mechanism, reset_delay, beta or threshold).
    """

    constant_kernel = True

    def __init__(self, in_features, out_features, *, beta, threshold, surrogate,
                 reset_mechanism, reset_delay, learn_beta=False, learn_threshold=False,
                 sparse=None):
        super().__init__()
        for name, value in (("in_features", in_features), ("out_features", out_features)):
            if isinstance(value, bool) or not isinstance(value, numbers.Integral):
                raise TypeError(f"SpikingLinear: {name} must be an int, got {value!r}")
            if value < 0:
                raise ValueError(f"SpikingLinear: {name} must be >= 0, got {value}")
        _sparse.resolve(sparse, out_features)  # a wrong spec fails here, not at the first call
        self.sparse = sparse
        self.linear = nn.Linear(in_features, out_features)
        self.beta = _learnable(beta, "beta", out_features) if learn_beta else beta
        self.threshold = (_learnable(threshold, "threshold", out_features)
                          if learn_threshold else threshold)
        self.surrogate = surrogate
        self.reset_mechanism = reset_mechanism
        self.reset_delay = reset_delay

    def forward(self, current):
        """The fused LIF (snnkernels.lif, zero initial membrane) on the synaptic current.

        Args:
            current: the synaptic current `[T, B, H]` (already through self.linear); dtypes and
                devices as snnkernels.lif's x (under torch.autocast a CPU half input is run in
                float32).

        Returns:
            (spk, mem), both `[T, B, H]`.

        Raises:
            TypeError: as snnkernels.lif.
            ValueError: as snnkernels.lif.
            RuntimeError: as snnkernels.lif.
        """
        return lif(_autocast.kernel_input(current), self.beta, self.threshold,
                   surrogate=self.surrogate, reset_mechanism=self.reset_mechanism,
                   reset_delay=self.reset_delay, sparse=self.sparse)

    def from_constant(self, current, steps):
        """Spikes [steps, B, H] for the current [B, H] (already through self.linear) held over
        `steps` steps. Dense on the CPU: snnkernels.lif_constant (the backward recomputes the
        membrane instead of saving [steps, B, H] of it, and sums the current's gradient over
        time itself). Otherwise the fused LIF on the expanded current.

        Args:
            current: the synaptic current `[B, H]`, a tensor; dtypes and devices as
                snnkernels.lif's x.
            steps: the number of time steps, an int >= 0.

        Returns:
            The spikes `[steps, B, H]`.

        Raises:
            TypeError: as snnkernels.lif_constant / snnkernels.lif.
            ValueError: steps not an int >= 0 (a bool included), on every path; otherwise as
                snnkernels.lif_constant / snnkernels.lif.
            RuntimeError: as snnkernels.lif.
        """
        _args.check_steps(steps)  # the expand path below would pass a bad steps to torch
        if (self.sparse is None and self.constant_kernel and current.device.type == "cpu"
                and not torch.is_autocast_enabled("cpu")):
            return lif_constant(current, steps, self.beta, self.threshold,
                                surrogate=self.surrogate, reset_mechanism=self.reset_mechanism,
                                reset_delay=self.reset_delay)
        return self(current.expand(steps, *current.shape))[0]

    def from_input(self, x):
        """The layer on its input: sparse, and dense on the CPU, the fused
        snnkernels.linear_lif (its synaptic backward touches only the kept entries; on the CPU
        its GEMMs write into the output cache instead of fresh pages). Otherwise (CUDA, or
        autocast, which casts nn.Linear's inputs): self.linear, then the fused LIF.

        Args:
            x: the layer's input `[T, B, F]`, of self.linear's dtype and device.

        Returns:
            (spk, mem), both `[T, B, H]`.

        Raises:
            TypeError: as snnkernels.linear_lif.
            ValueError: as snnkernels.linear_lif (on the dense CUDA / autocast path a wrong F
                is nn.Linear's RuntimeError).
            RuntimeError: as snnkernels.linear_lif.
        """
        dense_elsewhere = x.device.type != "cpu" or torch.is_autocast_enabled(x.device.type)
        if self.sparse is None and dense_elsewhere:
            return self(self.linear(x))
        return linear_lif(x, self.linear.weight, self.linear.bias, self.beta, self.threshold,
                          surrogate=self.surrogate, reset_mechanism=self.reset_mechanism,
                          reset_delay=self.reset_delay, sparse=self.sparse)


class TabularSNN(nn.Module):
    """A feed-forward SNN classifier for tabular features.

    `forward(x [B, in_features]) -> logits [B, num_classes]`; with `record=True` also the list
    of each layer's spikes `[T, B, width]` (hidden layers, then the output layer). x must be a
    floating-point tensor of the parameters' dtype (another floating dtype under autocast) on
    their device, CPU or CUDA (a CUDA build); a wrong shape or device is a ValueError, a wrong
    dtype a TypeError. The model keeps no state between calls.

    Args:
        in_features: the number of input features F, an int >= 1.
        hidden: the widths of the spiking hidden layers, a sequence of ints >= 1.
        num_classes: the output layer's width, an int >= 1.
        T: the number of time steps, an int >= 1.
        encoder: "direct" (default): the features are the input current at every step (the
            first layer's matmul is done once and broadcast over T). "rate": Bernoulli spikes
            with probability clamp(x, 0, 1) at each step (as snntorch.spikegen.rate: scale
            features into [0, 1] first), drawn from a generator seeded with `seed` (one per
            device; reseed() restarts it). The gradient passes straight through the sampling
            (d spikes / d p = 1), so attacks can differentiate it.
        readout: "spike_count" (default): logits = spike counts of a LIF output layer over T.
            "membrane": logits = the mean over T of the membrane of a non-resetting leaky
            integrator output layer (reset_mechanism "none"), a smooth readout.
        surrogate: for every layer; None (atan(alpha=2.0)), snnkernels.surrogate.* or one of
            snntorch.surrogate's factories.
        sparse: None (dense BPTT) or snnkernels.sparse.TopK / ActiveWindow, applied to the
            backward of every hidden layer (the output layer, num_classes wide, stays dense).
            Layers after the first run snnkernels.linear_lif, so their synaptic backward
            touches only the kept entries; the first layer's synapse with the direct encoder is
            one [B, F] matmul broadcast over T, whose backward is already small. The forward is
            unchanged. The sparse backward runs on the CPU and on CUDA.
        beta: every neuron's decay, a float.
        threshold: every neuron's threshold, a float.
        learn_beta: make beta a learnable per-neuron Parameter in each layer.
        learn_threshold: make threshold a learnable per-neuron Parameter in each layer.
        reset_mechanism: "subtract" | "zero" | "none" (hidden layers, and the output layer with
            the spike-count readout).
        reset_delay: as snnkernels.lif's.
        seed: the rate encoder's seed, an int in [-2^63, 2^64) (what
            torch.Generator.manual_seed takes; not a bool).

    Inside snnkernels.mechanism.record() the layers count under their submodule names
    ("layers.0", ..., "output").

    Raises:
        ValueError: a width, in_features, num_classes or T that is not a positive int; an
            unknown encoder, readout or reset_mechanism; a TopK k larger than a hidden width;
            a surrogate from snntorch.surrogate with a negative or non-finite parameter; seed
            outside [-2^63, 2^64).
        TypeError: hidden not iterable, beta or threshold not a real number, reset_delay not
            a bool, seed not an int, surrogate or sparse of an unknown kind.
    """

    def __init__(self, in_features: int, hidden=(128,), num_classes: int = 2, T: int = 8, *,
                 encoder="direct", readout="spike_count", surrogate=None, sparse=None,
                 beta=0.9, threshold=1.0, learn_beta=False, learn_threshold=False,
                 reset_mechanism="subtract", reset_delay=True, seed: int = 0):
        super().__init__()
        try:
            hidden = tuple(hidden)
        except TypeError as e:
            raise TypeError(f"TabularSNN: hidden must be a sequence of layer widths, got "
                            f"{hidden!r}") from e
        for name, value in [("in_features", in_features), ("num_classes", num_classes),
                            ("T", T), *((f"hidden[{i}]", h) for i, h in enumerate(hidden))]:
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"TabularSNN: {name} must be a positive int, got {value!r}")
        if encoder not in ENCODERS:
            raise ValueError(f"TabularSNN: encoder must be one of {ENCODERS}, got {encoder!r}")
        if readout not in READOUTS:
            raise ValueError(f"TabularSNN: readout must be one of {READOUTS}, got {readout!r}")
        for name, value in (("beta", beta), ("threshold", threshold)):
            if isinstance(value, bool) or not isinstance(value, numbers.Real):
                raise TypeError(f"TabularSNN: {name} must be a float, got {value!r}")
        _args.check_reset(reset_mechanism, reset_delay)
        seed = _check_seed(seed, "TabularSNN")
        self.in_features, self.num_classes, self.T = in_features, num_classes, T
        self.encoder, self.readout, self.seed = encoder, readout, seed
        self.sparse = sparse
        sg = _spike_grad.resolve(surrogate, name="surrogate")
        neuron = dict(beta=beta, threshold=threshold, surrogate=sg, reset_delay=reset_delay,
                      learn_beta=learn_beta, learn_threshold=learn_threshold)
        widths = (in_features,) + hidden
        self.layers = nn.ModuleList(
            SpikingLinear(i, o, reset_mechanism=reset_mechanism, sparse=sparse, **neuron)
            for i, o in zip(widths[:-1], widths[1:]))
        out_reset = reset_mechanism if readout == "spike_count" else "none"
        self.output = SpikingLinear(widths[-1], num_classes, reset_mechanism=out_reset, **neuron)
        self._generators: dict = {}

    def forward(self, x, record: bool = False):
        """The logits of a batch, from zero membranes.

        Args:
            x: the features `[B, in_features]`, a floating-point tensor of the parameters'
                dtype (another floating dtype under autocast) on their device.
            record: also return every layer's spikes.

        Returns:
            The logits `[B, num_classes]`; with record=True the tuple (logits, spikes), spikes
                the list of each layer's spikes `[T, B, width]` (hidden layers, then the output
                layer).

        Raises:
            ValueError: x not a tensor of shape `[B, in_features]`, x on another device than
                the model.
            TypeError: x not floating-point, or (outside autocast) not of the parameters'
                dtype; a dtype the device's kernel does not take.
            RuntimeError: a CUDA x given to a CPU-only build.
        """
        if not isinstance(x, torch.Tensor) or x.dim() != 2 or x.shape[1] != self.in_features:
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"TabularSNN expects x of shape [batch, {self.in_features}], "
                             f"got {shape}")
        _check_input(x, self.output.linear.weight)
        layers = list(self.layers) + [self.output]
        names = [f"layers.{i}" for i in range(len(self.layers))] + ["output"]
        with _mechanism.layer(names[0]):
            if self.encoder == "direct":
                # the same current at every step: one matmul on [B, F], held over T
                spk = layers[0].from_constant(layers[0].linear(x), self.T)
            else:
                spk, mem = layers[0].from_input(self._rate_encode(x))
        spikes = [spk]
        for name, layer in zip(names[1:], layers[1:]):
            with _mechanism.layer(name):
                spk, mem = layer.from_input(spikes[-1])  # one matmul on [T*B, width]
            spikes.append(spk)
        logits = spikes[-1].sum(0) if self.readout == "spike_count" else mem.mean(0)
        return (logits, spikes) if record else logits

    def _rate_encode(self, x):
        p = x.clamp(0, 1).expand(self.T, *x.shape)
        sample = _bernoulli(p.detach(), self._generator(x.device))
        return p + (sample - p).detach()  # the sample's value, p's gradient

    def _generator(self, device) -> torch.Generator:
        key = str(device)
        if key not in self._generators:
            self._generators[key] = torch.Generator(device=device).manual_seed(self.seed)
        return self._generators[key]

    def dense_copy(self, surrogate=None) -> "TabularSNN":
        """A deep copy that differentiates densely (sparse=None everywhere), with `surrogate`
        (as the constructor's) in every layer when given, else the trained one. The forward is
        the same as this model's. For attacks, which must never see the training-time mask.

        Args:
            surrogate: None (keep each layer's), or as the constructor's surrogate.

        Returns:
            The new TabularSNN (this model is unchanged).

        Raises:
            TypeError: surrogate of an unknown kind.
            ValueError: a surrogate from snntorch.surrogate with a negative or non-finite
                parameter.
        """
        twin = copy.deepcopy(self)
        twin.sparse = None
        sg = None if surrogate is None else _spike_grad.resolve(surrogate, name="surrogate")
        for layer in list(twin.layers) + [twin.output]:
            layer.sparse = None
            if sg is not None:
                layer.surrogate = sg
        return twin

    def reseed(self, seed=None) -> None:
        """Restarts the rate encoder's random stream (from `seed`, or the constructor's).

        Args:
            seed: None (the current self.seed), or the new seed, an int in [-2^63, 2^64) (not
                a bool), as the constructor's.

        Raises:
            TypeError: seed not None or an int.
            ValueError: seed outside [-2^63, 2^64).
        """
        if seed is not None:
            self.seed = _check_seed(seed, "TabularSNN.reseed")
        self._generators.clear()

    def extra_repr(self) -> str:
        return (f"T={self.T}, encoder={self.encoder!r}, readout={self.readout!r}, "
                f"sparse={self.sparse!r}")


def _learnable(value, name: str, width: int) -> nn.Parameter:
    """The [width] Parameter filled with `value`; float() alone would accept a numeric str and
    raise an error that does not name the argument."""
    if isinstance(value, bool) or not (isinstance(value, numbers.Real) or (
            isinstance(value, torch.Tensor) and value.numel() == 1)):
        raise TypeError(f"SpikingLinear: {name} must be a real number (or a one-element tensor) "
                        f"with learn_{name}=True, got {type(value).__name__}")
    return nn.Parameter(torch.full((width,), float(value)))


def _check_seed(seed, where: str) -> int:
    """seed as torch.Generator.manual_seed takes it, checked now: a bad one would otherwise fail
    at the first rate-encoded forward, inside torch."""
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise TypeError(f"{where}: seed must be an int, got {seed!r}")
    if not _SEED_MIN <= seed < _SEED_END:
        raise ValueError(f"{where}: seed must be in [-2**63, 2**64) (torch.Generator's range), "
                         f"got {seed}")
    return int(seed)


def _check_input(x, weight) -> None:
    """x's dtype and device against the model's (torch's own error would not name x). Under
    autocast the first Linear casts x itself, so another floating dtype is fine there."""
    if not x.is_floating_point():
        raise TypeError(f"TabularSNN: x must be a floating-point tensor, got dtype {x.dtype}")
    if x.device != weight.device:
        raise ValueError(f"TabularSNN: x is on {x.device} but the model is on {weight.device}")
    if x.dtype != weight.dtype and not torch.is_autocast_enabled(x.device.type):
        raise TypeError(f"TabularSNN: x has dtype {x.dtype} but the model's parameters are "
                        f"{weight.dtype}: convert x, or the model with .to(dtype)")


@torch.compiler.disable
def _bernoulli(p, generator):
    # Dynamo cannot trace a torch.Generator argument: a graph break here (so the rate encoder
    # compiles, but not with fullgraph=True) keeps the seeded stream identical to eager.
    return torch.bernoulli(p, generator=generator)
