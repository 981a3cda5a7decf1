"""snnkernels.lif: the fused multi-step leaky integrate-and-fire neuron."""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import torch

from . import _args, _extension, _ops
from . import sparse as _sparse
from . import surrogate as _surrogate

CPU_DTYPES = (torch.float32, torch.float64)
CUDA_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)


def lif(
    x,
    beta,
    threshold=1.0,
    mem0=None,
    *,
    surrogate=None,
    reset_mechanism="subtract",
    reset_delay=True,
    graded_spikes_factor=1.0,
    sparse=None,
):
    """Runs a leaky integrate-and-fire neuron over all T steps of x in one fused kernel, and its
    surrogate-gradient BPTT backward in another. Computes what snnTorch 1.0.0's Leaky computes
    when called once per time step (docs/semantics.md, "The neuron").

    Args:
        x: the input current `[T, *batch]`, time-major; float32/float64 on CPU,
            float32/float16/bfloat16/float64 on CUDA (float32 arithmetic inside for the half
            types). Any strides (non-contiguous input is copied once; a CPU input broadcast over
            T, like `x.expand(T, ...)`, is read in place).
        beta: the decay; a real number, or a floating-point tensor (any floating dtype)
            broadcastable to x.shape[1:] on x's device (a 0-dim tensor may also be on the CPU);
            differentiable when a tensor requires grad. Clamped to [0, 1] in the forward (its
            gradient is 0 outside).
        threshold: the firing threshold; as beta (not clamped).
        mem0: the initial membrane (zeros when None): a floating-point tensor broadcastable to
            x.shape[1:], on x's device (also when 0-dim), cast to x's dtype; differentiable.
        surrogate: None (atan(alpha=2.0), snnTorch's default) or an object from
            snnkernels.surrogate.
        reset_mechanism: "subtract" | "zero" | "none".
        reset_delay: as snnTorch's: True resets at the next step, False in the same step.
        graded_spikes_factor: the spike's value; as threshold (not clamped).
        sparse: None (dense, exact BPTT) or a mask from snnkernels.sparse (TopK, ActiveWindow),
            applied inside the fused backward to the rows of the last dimension of x; x's
            gradient is then the masked one. CPU and CUDA (same results: float32/float64 bit
            for bit with the default surrogate; see docs/sparse.md).

    Returns:
        The tuple (spk, mem) of the spikes and the membrane at every step, both shaped like x
            and of x's dtype and device.

    Raises:
        TypeError: x not a floating-point tensor, a dtype the device's kernel does not take,
            a parameter that is not a real number or floating-point tensor (a bool included),
            mem0 not None or a floating-point tensor, surrogate or sparse of an unknown kind,
            reset_delay not a bool.
        ValueError: a 0-dim x, a parameter or mem0 that does not broadcast to x.shape[1:] or
            is on another device, an unknown reset_mechanism, with sparse= a TopK k larger than
            the row x.shape[-1] or a row longer than 2^31.
        RuntimeError: a CUDA x given to a CPU-only build, or x on a device other than cpu,
            cuda or meta.
    """
    neuron = _Neuron.checked(x, beta, threshold, graded_spikes_factor, mem0, surrogate,
                             reset_mechanism, reset_delay)
    mask = _sparse.resolve(sparse, x.shape[-1] if x.dim() >= 2 else 1)
    check_kernel_input(x, "lif")

    steps, batch = x.shape[0], tuple(x.shape[1:])
    m = 1
    for s in batch:
        m *= s
    args = (_kernel_layout(x.reshape(steps, m)), *neuron.kernel_args(batch, m, x))
    if mask is None:
        spk, mem, _ = _ops.lif_forward(*args)
    else:
        spk, mem, _ = _ops.lif_forward_masked(*args, *mask.args())
    return spk.view(x.shape), mem.view(x.shape)


def lif_constant(
    x,
    steps,
    beta,
    threshold=1.0,
    mem0=None,
    *,
    surrogate=None,
    reset_mechanism="subtract",
    reset_delay=True,
    graded_spikes_factor=1.0,
):
    """The spikes of a LIF neuron driven by the same input current x at each of `steps` steps:
    `lif(x.expand(steps, *x.shape), ...)[0]`, computed without the membrane (a direct encoder's
    first layer, where the input features are the current at every step).

    On the CPU (float32/float64) one fused kernel writes only the spikes, and the backward
    recomputes the membrane from x instead of saving it: nothing `[steps, *batch]` is kept for
    the backward, and no `[steps, *batch]` grad_x is written and summed. Elsewhere (CUDA) it calls
    snnkernels.lif on the expanded current.

    Args:
        x: the current `[*batch]` (a 0-dim x is one neuron), a floating-point tensor; dtypes
            and devices as snnkernels.lif's.
        steps: the number of time steps, an int >= 0 (a Python int, not a bool).
        beta: as snnkernels.lif's, with x.shape in place of x.shape[1:].
        threshold: as beta (not clamped).
        mem0: as snnkernels.lif's, broadcastable to x.shape.
        surrogate: as snnkernels.lif's.
        reset_mechanism: as snnkernels.lif's.
        reset_delay: as snnkernels.lif's.
        graded_spikes_factor: as threshold.

    Returns:
        The spikes `[steps, *batch]`, of x's dtype and device; x's gradient is summed over the
            steps.

    Raises:
        TypeError: x not a floating-point tensor, a dtype the device's kernel does not take;
            a parameter, mem0, surrogate or reset_delay of the wrong type (as snnkernels.lif).
        ValueError: steps not an int >= 0; a parameter or mem0 that does not broadcast to
            x.shape or is on another device, an unknown reset_mechanism (as snnkernels.lif).
        RuntimeError: a CUDA x given to a CPU-only build, or x on a device other than cpu,
            cuda or meta.
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a torch.Tensor (the input current), got {type(x).__name__}")
    _args.check_steps(steps)
    # the argument checks take the [T, *batch] input the current stands for
    neuron = _Neuron.checked(x.unsqueeze(0), beta, threshold, graded_spikes_factor, mem0,
                             surrogate, reset_mechanism, reset_delay, shape_name="x.shape")
    check_kernel_input(x, "lif_constant")
    if x.device.type != "cpu":
        return lif(x.expand(steps, *x.shape), neuron.beta, neuron.threshold, neuron.mem0,
                   surrogate=neuron.surrogate, reset_mechanism=reset_mechanism,
                   reset_delay=reset_delay, graded_spikes_factor=neuron.graded)[0]
    batch = tuple(x.shape)
    spk = _ops.lif_constant_forward(x.reshape(-1).contiguous(), steps,
                                    *neuron.kernel_args(batch, x.numel(), x))
    return spk.view(steps, *batch)


class _Neuron(NamedTuple):
    """The neuron arguments lif and lif_constant share, validated against x [T, *batch]."""

    beta: object
    threshold: object
    graded: object
    mem0: object
    surrogate: object
    reset_id: int
    reset_delay: bool

    @classmethod
    def checked(cls, x, beta, threshold, graded_spikes_factor, mem0, surrogate, reset_mechanism,
                reset_delay, shape_name: str = "x.shape[1:]") -> "_Neuron":
        _args.check_x(x)
        beta = _args.check_neuron_param(beta, "beta", x, shape_name)
        threshold = _args.check_neuron_param(threshold, "threshold", x, shape_name)
        graded = _args.check_neuron_param(graded_spikes_factor, "graded_spikes_factor", x,
                                          shape_name)
        mem0 = _args.check_mem0(mem0, x, shape_name)
        reset_id = _args.check_reset(reset_mechanism, reset_delay)
        return cls(beta, threshold, graded, mem0, _surrogate.resolve(surrogate), reset_id,
                   reset_delay)

    def kernel_args(self, batch: tuple, m: int, x) -> tuple:
        """The ops' arguments after x: (mem0, beta, threshold, graded, surrogate kind, p0, p1,
        reset id, reset_delay), for m neurons of shape batch."""
        acc = torch.float64 if x.dtype == torch.float64 else torch.float32
        mem0 = (None if self.mem0 is None
                else self.mem0.to(x.dtype).expand(batch).reshape(m).contiguous())
        params = (_as_kernel_param(p, batch, m, acc, x.device)
                  for p in (self.beta, self.threshold, self.graded))
        return (mem0, *params, self.surrogate.kind, *self.surrogate.constants(), self.reset_id,
                self.reset_delay)


def check_kernel_input(x, fn: str) -> None:
    """Device, build and dtype checks shared by lif and linear_lif (a sparse mask runs wherever
    the dense op does: check_device_supported refuses CUDA tensors in a CPU-only build)."""
    _extension.check_device_supported(x, "x")
    allowed = CUDA_DTYPES if x.device.type == "cuda" else CPU_DTYPES
    if x.dtype not in allowed:
        raise TypeError(
            f"x has dtype {x.dtype}; on {x.device.type} snnkernels.{fn} supports "
            f"{', '.join(str(d) for d in allowed)}"
        )


def _kernel_layout(x2):
    """x as [T, M] the kernels read: contiguous, or on the CPU one contiguous row broadcast over
    T (stride 0, e.g. x.expand(T, ...) of a constant current), which the CPU kernel reads in
    place instead of T copies (1-3 ms at T=25, M=131072, most of it faulting in the copy)."""
    if (x2.device.type == "cpu" and x2.shape[0] > 1 and x2.stride(0) == 0
            and (x2.shape[1] <= 1 or x2.stride(1) == 1)):
        return x2
    return x2.contiguous()


def _as_kernel_param(value, batch: tuple, m: int, acc: torch.dtype, device) -> torch.Tensor:
    """The kernels take a parameter as P values, neuron n using value n % P. A scalar is P = 1,
    a tensor over the trailing neuron dims (e.g. [N] for x [T, B, N]) is P = N, anything else
    is expanded to every neuron (P = M). Keeping P small keeps the gradient reduction inside the
    kernel (deterministic) and avoids materializing an expanded copy."""
    if not isinstance(value, torch.Tensor):
        return constant_param(value, acc, device)
    value = value.to(device=device, dtype=acc)
    shape = list(value.shape)
    while shape and shape[0] == 1:
        shape.pop(0)
    if value.numel() == 1:
        return value.reshape(1)
    if value.numel() == 0 or m == 0:
        # No neurons (a 0-size dim in x.shape[1:], which a non-empty parameter may broadcast
        # to, e.g. [2, 1] to [2, 0]): the kernels need P >= 1. The sum keeps the tensor in the
        # graph, so its gradient is zeros of its shape, not None.
        return value.sum().reshape(1)
    if tuple(shape) == batch[len(batch) - len(shape):]:
        return value.reshape(-1).contiguous()
    return value.expand(batch).reshape(m).contiguous()


def constant_param(value, dtype: torch.dtype, device) -> torch.Tensor:
    """A Python-number parameter as the kernels' one-value tensor. Eager calls reuse one tensor
    per (value, dtype, device) (the kernels only read it; TabularSNN's forward at B = 1 took
    328-329 us instead of 335-339 making them anew); under torch.compile it is made in the graph."""
    if torch.compiler.is_compiling():
        return torch.full((1,), value, dtype=dtype, device=device)
    value = float(value)
    return _cached_constant(value, math.copysign(1.0, value), dtype, torch.device(device))


@functools.lru_cache(maxsize=256)
def _cached_constant(value: float, sign: float, dtype: torch.dtype, device) -> torch.Tensor:
    # `sign` keeps -0.0 apart from 0.0 (equal as keys). Made outside inference mode: an inference
    # tensor could not be saved for a later call's backward.
    with torch.inference_mode(False):
        return torch.full((1,), value, dtype=dtype, device=device)
