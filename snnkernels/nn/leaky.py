"""snnkernels.nn.Leaky: a drop-in for snntorch.Leaky (1.0.0) that runs the fused kernel, in
single-step mode (snnTorch's `spk, mem = lif(x_t, mem)`) or multi-step mode (a whole [T, ...]
sequence in one kernel call); and snnkernels.nn.LIF, the same module in multi-step mode.

Differences from snnTorch (documented in docs/nn.md, none silent):
- inhibition and state_quant raise NotImplementedError; spike_grad must be a surrogate the
  kernels know (ours or snnTorch's factories of the same names), else TypeError.
- Hidden state is recreated as zeros on the input's device and dtype when its shape does not
  match (snnTorch: input's dtype, but the old state's device). It is a plain attribute
  converted by .to() etc., not a buffer, so DDP does not broadcast rank 0's state.
- Setting `reset_mechanism` (or loading reset_mechanism_val from a checkpoint) changes the
  whole update; snnTorch 1.0.0 keeps the subtract/zero/none state function chosen at
  construction and only updates the reset_delay=False path.
- Spikes have the input's dtype (snnTorch's surrogates return float32 spikes for any input).
- A beta outside [0, 1] at construction warns (both clamp it in the forward, gradient 0 there).
"""

from __future__ import annotations

import warnings

import torch
from torch import nn

from .. import surrogate as _surrogate
from ..lif import lif
from . import autocast as _autocast
from . import spike_grad as _spike_grad

RESET_MECHANISMS = ("subtract", "zero", "none")  # index = reset_mechanism_val, as snnTorch's
STEP_MODES = ("single", "multi")


class Leaky(nn.Module):
    """First-order leaky integrate-and-fire neuron, snnTorch's constructor and call conventions.

    step_mode="single" (default): forward(x_t, mem=None) takes one time step [*batch].
    step_mode="multi": forward(x, mem=None) takes a time-major sequence [T, *batch] and returns
    spikes and membrane at every step ([T, *batch]); `mem` is then the initial membrane
    [*batch]. forward_sequence(x, mem) runs a sequence in either mode.
    Without init_hidden: returns (spk, mem). With init_hidden: returns spk (or (spk, mem) with
    output=True) and keeps the state in self.mem; passing mem is then a TypeError.
    State across calls without init_hidden: a single step with mem=None continues from the
    stored state (snnTorch's behaviour); a sequence with mem=None starts from zeros.
    As in snnTorch, the state (passed or stored) restarts from zeros when its shape differs
    from the input's neuron shape; e.g. init_leaky() returns an empty tensor for that purpose.

    Args:
        beta: decay; a number, a sequence or a tensor broadcastable to the neuron shape.
        threshold: as beta.
        spike_grad: None (atan(alpha=2.0)), snnkernels.surrogate.* or one of snntorch.surrogate's
            factories of the same names.
        surrogate_disable: spikes pass no gradient (as snnTorch's).
        init_hidden: keep the state in self.mem instead of taking and returning it.
        inhibition: not supported (NotImplementedError).
        learn_beta: beta becomes a Parameter.
        learn_threshold: threshold becomes a Parameter.
        reset_mechanism: "subtract" | "zero" | "none".
        state_quant: not supported (NotImplementedError).
        output: with init_hidden, also return the membrane.
        graded_spikes_factor: the spike's value; as beta.
        learn_graded_spikes_factor: graded_spikes_factor becomes a Parameter.
        reset_delay: True resets at the next step, False in the same step (a bool).
        step_mode: "single" or "multi" (keyword only).

    Raises:
        NotImplementedError: inhibition or state_quant.
        ValueError: an unknown reset_mechanism or step_mode; a spike_grad from
            snntorch.surrogate whose parameter is negative or not finite.
        TypeError: reset_delay not a bool, a parameter that is not a number, a sequence of
            numbers or a tensor, an unsupported spike_grad. Calls raise the errors listed
            under forward and forward_sequence.
    """

    def __init__(
        self,
        beta,
        threshold=1.0,
        spike_grad=None,
        surrogate_disable=False,
        init_hidden=False,
        inhibition=False,
        learn_beta=False,
        learn_threshold=False,
        reset_mechanism="subtract",
        state_quant=False,
        output=False,
        graded_spikes_factor=1.0,
        learn_graded_spikes_factor=False,
        reset_delay=True,
        *,
        step_mode="single",
    ):
        # Not super(): in ConvertedLeaky the next class in the MRO is snntorch.Leaky, whose
        # constructor must not run (it would build snnTorch's own state and buffers).
        nn.Module.__init__(self)
        if inhibition:
            raise NotImplementedError(
                "snnkernels.nn.Leaky: inhibition=True is not supported by the fused kernels; "
                "keep snntorch.Leaky for this layer")
        if state_quant:
            raise NotImplementedError(
                "snnkernels.nn.Leaky: state_quant is not supported by the fused kernels; "
                "keep snntorch.Leaky for this layer")
        if not isinstance(reset_mechanism, str) or reset_mechanism not in RESET_MECHANISMS:
            raise ValueError("reset_mechanism must be set to either 'subtract', 'zero', or 'none'.")
        if not isinstance(reset_delay, bool):
            raise TypeError(f"reset_delay must be a bool, got {type(reset_delay).__name__}")
        if not isinstance(step_mode, str) or step_mode not in STEP_MODES:
            raise ValueError(f"step_mode must be one of {STEP_MODES}, got {step_mode!r}")

        self.surrogate_disable = surrogate_disable
        self.spike_grad = spike_grad  # resolved by the property setter below
        self.init_hidden = init_hidden
        self.inhibition = inhibition
        self.output = output
        self.state_quant = state_quant
        self.reset_delay = reset_delay
        self.step_mode = step_mode
        # Registration order as snnTorch's, so state_dict keys come in the same order.
        self._register("threshold", threshold, learn_threshold)
        self._register("graded_spikes_factor", graded_spikes_factor, learn_graded_spikes_factor)
        self.register_buffer("reset_mechanism_val",
                             torch.as_tensor(RESET_MECHANISMS.index(reset_mechanism)))
        self._reset_mechanism = reset_mechanism
        self._register("beta", beta, learn_beta)
        _warn_if_outside_unit_interval(self.beta)
        # The hidden state is a plain attribute, not a buffer (snnTorch: a non-persistent
        # buffer): DDP broadcasts buffers from rank 0 at every forward, which would overwrite
        # each rank's state with rank 0's. _apply below still converts it like a buffer.
        self.mem = torch.zeros(0)

    def _register(self, name: str, value, learnable: bool) -> None:
        """A parameter when learnable, else a buffer (as snnTorch: no copy of a tensor). An
        integer value is kept as given (snnTorch does; the forward casts it), except when
        learnable, where it becomes the default float dtype (snnTorch raises there)."""
        if not isinstance(value, torch.Tensor):
            try:
                value = torch.as_tensor(value)
            except (TypeError, ValueError, RuntimeError) as e:
                raise TypeError(f"snnkernels.nn.Leaky: {name} must be a number, a sequence of "
                                f"numbers or a tensor, got {type(value).__name__}") from e
        if learnable and not (value.is_floating_point() or value.is_complex()):
            value = value.to(torch.get_default_dtype())
        if learnable:
            setattr(self, name, nn.Parameter(value))
        else:
            self.register_buffer(name, value)

    # ---- attributes users touch ------------------------------------------------------------

    @property
    def spike_grad(self):
        """What was given (None means atan(alpha=2.0)); self.surrogate is what the kernel runs.
        Setting it resolves the new value as the constructor does.

        Raises:
            TypeError: set to a spike_grad the kernels do not support.
            ValueError: set to a snntorch.surrogate factory's result with a negative or
                non-finite parameter.
        """
        return self._spike_grad

    @spike_grad.setter
    def spike_grad(self, value) -> None:
        self.surrogate = _spike_grad.resolve(value, self.surrogate_disable)
        self._spike_grad = value

    def __getstate__(self):
        state = super().__getstate__()
        if not isinstance(state["_spike_grad"], (type(None), _surrogate.Surrogate)):
            # snnTorch's surrogates are closures, which pickle cannot save (torch.save of a
            # whole model): the kernel's equivalent is saved instead.
            state["_spike_grad"] = self.surrogate
        return state

    @property
    def reset_mechanism(self) -> str:
        """"subtract", "zero" or "none"; setting it changes the update and the
        reset_mechanism_val buffer (on that buffer's device).

        Raises:
            ValueError: set to anything else.
        """
        return self._reset_mechanism

    @reset_mechanism.setter
    def reset_mechanism(self, value: str) -> None:
        if not isinstance(value, str) or value not in RESET_MECHANISMS:
            raise ValueError("reset_mechanism must be set to either 'subtract', 'zero', or 'none'.")
        self.reset_mechanism_val = torch.as_tensor(
            RESET_MECHANISMS.index(value), device=self.reset_mechanism_val.device)
        self._reset_mechanism = value

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        # A checkpoint's reset_mechanism_val decides the mechanism (snnTorch reads it too).
        self._reset_mechanism = RESET_MECHANISMS[int(self.reset_mechanism_val)]

    def _apply(self, fn, recurse=True):
        """.to() / .double() / .cuda() / ... convert the hidden state with the module."""
        super()._apply(fn, recurse)
        self.mem = fn(self.mem)
        return self

    def reset_mem(self) -> torch.Tensor:
        """Sets the stored state self.mem to zeros of its shape, dtype and device.

        Returns:
            The new self.mem.
        """
        self.mem = torch.zeros_like(self.mem)
        return self.mem

    def init_leaky(self) -> torch.Tensor:
        """Deprecated in snnTorch, use reset_mem.

        Returns:
            The new, zeroed self.mem (as reset_mem).
        """
        return self.reset_mem()

    def detach_hidden(self) -> None:
        """Cuts the stored state from the graph (truncated BPTT)."""
        self.mem = self.mem.detach()

    def extra_repr(self) -> str:
        return (f"surrogate={self.surrogate!r}, reset_mechanism={self.reset_mechanism!r}, "
                f"reset_delay={self.reset_delay}, init_hidden={self.init_hidden}, "
                f"step_mode={self.step_mode!r}")

    # ---- forward ---------------------------------------------------------------------------

    def forward(self, input_, mem=None):
        """One time step (step_mode="single"), or a whole sequence (step_mode="multi": the
        same as forward_sequence(input_, mem)).

        Args:
            input_: single-step, the input current of one step `[*batch]` (a 0-dim tensor is
                one neuron); float32/float64 on CPU, also float16/bfloat16 on CUDA (under
                torch.autocast an input of another floating dtype is run in float32).
            mem: the membrane to start from `[*batch]`, a tensor on input_'s device (stored as
                self.mem); None continues from self.mem (single-step; step_mode="multi" starts
                from zeros without init_hidden). A state whose shape is not the neuron
                shape is replaced by zeros (a passed non-empty one with a warning). Must be
                None with init_hidden.

        Returns:
            (spk, mem), both `[*batch]`, of the kernel's dtype (input_'s) and input_'s device;
                with init_hidden spk alone, or (spk, mem) with output=True.

        Raises:
            TypeError: input_ or mem not a tensor, mem passed with init_hidden, a mem of the
                neuron shape that is not floating-point; input_'s and the parameters' errors of
                snnkernels.lif (x standing for input_).
            ValueError: a non-empty mem on another device than input_; the parameters'
                broadcast and device errors of snnkernels.lif (against the neuron shape).
            RuntimeError: a CUDA input_ given to a CPU-only build.

        Warns:
            UserWarning: input_.shape[1:] is the non-empty stored state's shape (input_ looks
                like a [T, ...] sequence; it is run as one step); mem's shape is not the neuron
                shape.
        """
        if self.step_mode == "multi":
            return self.forward_sequence(input_, mem)
        _check_tensor(input_)
        if self._looks_like(input_.shape[1:]):
            warnings.warn(
                f"snnkernels.nn.Leaky (single-step mode): input of shape {tuple(input_.shape)} "
                f"looks like a [T, ...] sequence for the state of shape {tuple(self.mem.shape)}; "
                "it is run as ONE step with dim 0 as a batch dim. Use forward_sequence(x) or "
                "step_mode='multi' for sequences.", stacklevel=2)
        mem0 = self._initial_mem(input_.shape, input_, mem)
        spk, mem_out = self._run(input_.unsqueeze(0), mem0)
        self.mem = _own_tensor(mem_out[0])
        return self._outputs(spk[0], self.mem)

    def forward_sequence(self, x, mem=None):
        """Runs x [T, *batch] through the fused kernel from the initial membrane mem [*batch]
        (zeros when None; with init_hidden, the stored state). Returns spikes and membrane at
        every step; with init_hidden, self.mem keeps the last membrane for the next call.

        Args:
            x: the input current `[T, *batch]`, time-major, at least 1-dim; dtypes and devices
                as forward's input_.
            mem: the initial membrane `[*batch]`, a tensor on x's device (stored as self.mem);
                a mem of another shape is replaced by zeros, with a warning. Must be None with
                init_hidden.

        Returns:
            (spk, mem), both `[T, *batch]`, of the kernel's dtype (x's) and x's device; with
                init_hidden spk alone, or (spk, mem) with output=True.

        Raises:
            TypeError: x or mem not a tensor, mem passed with init_hidden, a mem of the
                neuron shape that is not floating-point; x's and the parameters' errors of
                snnkernels.lif.
            ValueError: a 0-dim x, a non-empty mem on another device than x; the parameters'
                broadcast and device errors of snnkernels.lif.
            RuntimeError: a CUDA x given to a CPU-only build.

        Warns:
            UserWarning: x (2-dim or more) has the shape of the non-empty stored state, i.e.
                looks like one step (it is run as a sequence over dim 0); mem's shape is not
                x.shape[1:].
        """
        _check_tensor(x)
        if x.dim() < 1:
            raise ValueError("forward_sequence expects a time-major input [T, *batch], got a "
                             "0-dim tensor")
        if x.dim() >= 2 and self._looks_like(x.shape):
            warnings.warn(
                f"snnkernels.nn.Leaky (multi-step): input of shape {tuple(x.shape)} has the "
                f"shape of the state, i.e. looks like ONE step; it is run as a sequence over "
                "dim 0. Use step_mode='single' to feed one step at a time.", stacklevel=2)
        if mem is None and not self.init_hidden:
            # Each sequence starts from zeros: continuing from the previous call's state is
            # what init_hidden is for (and keeping it would hold that call's graph alive).
            mem = x.new_zeros(x.shape[1:])
        mem0 = self._initial_mem(x.shape[1:], x, mem)
        spk, mem_out = self._run(x, mem0)
        if self.init_hidden:
            self.mem = _own_tensor(mem_out[-1]) if x.shape[0] > 0 else mem0
        return self._outputs(spk, mem_out)

    def _looks_like(self, shape) -> bool:
        return self.mem.numel() > 0 and tuple(shape) == tuple(self.mem.shape)

    def _initial_mem(self, shape, x, mem):
        """The membrane to start from: as snnTorch, a passed or stored state whose shape is not
        the neuron shape is replaced by zeros (created here, on x's device and dtype)."""
        if mem is not None:
            if self.init_hidden:
                raise TypeError(
                    "`mem` should not be passed as an argument while `init_hidden=True`")
            _check_tensor(mem, "mem")
            if mem.numel() > 0 and mem.device != x.device:
                raise ValueError(f"mem is on {mem.device} but the input is on {x.device}")
            if tuple(mem.shape) == tuple(shape) and not mem.is_floating_point():
                # lif would refuse it too, but as its own argument mem0
                raise TypeError(f"mem must be a floating-point tensor, got dtype {mem.dtype}")
            if mem.numel() > 0 and tuple(mem.shape) != tuple(shape):
                warnings.warn(
                    f"snnkernels.nn.Leaky: mem of shape {tuple(mem.shape)} does not match the "
                    f"neuron shape {tuple(shape)}; starting from zeros (as snnTorch does)",
                    stacklevel=3)
            self.mem = mem
        if tuple(self.mem.shape) != tuple(shape):
            return torch.zeros(shape, dtype=x.dtype, device=x.device)
        # e.g. a DataParallel replica, which starts from the root module's state
        return self.mem.to(x.device)

    def _run(self, x, mem0):
        x = _autocast.kernel_input(x)
        return lif(x, _floating(self.beta, x), _floating(self.threshold, x), mem0,
                   surrogate=self.surrogate, reset_mechanism=self._reset_mechanism,
                   reset_delay=self.reset_delay,
                   graded_spikes_factor=_floating(self.graded_spikes_factor, x))

    def _outputs(self, spk, mem):
        if self.init_hidden and not self.output:
            return spk
        return spk, mem


class LIF(Leaky):
    """Leaky in multi-step mode: forward(x [T, *batch], mem=None) -> (spk, mem), both
    [T, *batch], one fused kernel call per sequence (Leaky.forward_sequence). Same constructor
    as Leaky, with step_mode="multi" by default.

    Args:
        beta: as Leaky's.
        *args: Leaky's other positional arguments, in its order (threshold, spike_grad, ...).
        **kwargs: Leaky's keyword arguments; step_mode defaults to "multi".

    Raises:
        NotImplementedError: as Leaky's.
        ValueError: as Leaky's.
        TypeError: as Leaky's.
    """

    def __init__(self, beta, *args, **kwargs):
        kwargs.setdefault("step_mode", "multi")
        super().__init__(beta, *args, **kwargs)


def _own_tensor(view: torch.Tensor) -> torch.Tensor:
    """A copy of a view of the kernel's output: the stored state must not be a view, because
    snnTorch's idioms detach it in place (`snn.Leaky.detach_hidden()`, `mem.detach_()`), which
    torch refuses on views."""
    return view.clone()


def _floating(value, x):
    """An integer parameter tensor (e.g. threshold=1, kept as an int64 buffer as in snnTorch,
    where type promotion makes it float) in x's dtype; anything else unchanged (a bool tensor
    is refused by snnkernels.lif with an error naming the parameter)."""
    if isinstance(value, torch.Tensor) and not value.is_floating_point() and \
            value.dtype != torch.bool and not value.is_complex():
        return value.to(x.dtype)
    return value


def _check_tensor(value, name: str = "input") -> None:
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")


def _warn_if_outside_unit_interval(beta: torch.Tensor) -> None:
    if beta.is_meta or beta.is_complex() or beta.dtype == torch.bool:
        return  # no values to look at (meta), or a dtype snnkernels.lif refuses by name
    with torch.no_grad():
        outside = beta.numel() > 0 and bool(((beta < 0) | (beta > 1)).any())
    if outside:
        warnings.warn(
            "snnkernels.nn.Leaky: beta has values outside [0, 1]; the forward clamps it to "
            "[0, 1] (as snnTorch does) and its gradient is 0 where it is clamped", stacklevel=3)
