"""Fake (meta) implementations and autograd for the compiled ops, so torch.library.opcheck and
torch.compile(fullgraph=True) see through them. The kernels themselves are in csrc/."""

from __future__ import annotations

import functools

import torch

from . import _extension  # noqa: F401  (loads the library that defines the ops)
from . import mechanism as _mechanism
from .sparse import MASK_IDS as _MASK_IDS

_lib = torch.ops.snnkernels


@torch.library.register_fake("snnkernels::lif_forward")
def _lif_forward_fake(x, mem0, beta, threshold, graded, surrogate, p0, p1, reset, reset_delay):
    pre = x.new_empty((0,)) if reset_delay else torch.empty_like(x)
    return torch.empty_like(x), torch.empty_like(x), pre


@torch.library.register_fake("snnkernels::lif_backward")
def _lif_backward_fake(grad_spk, grad_mem, mem, pre_reset, mem0, beta, threshold, graded,
                       surrogate, p0, p1, reset, reset_delay, param_grads):
    def param_grad(p):
        return torch.empty_like(p) if param_grads else p.new_empty((0,))

    return (
        torch.empty_like(mem),
        mem.new_empty((mem.shape[1],)),
        param_grad(beta),
        param_grad(threshold),
        param_grad(graded),
    )


def _setup_context(ctx, inputs, output):
    x, mem0, beta, threshold, graded, surrogate, p0, p1, reset, reset_delay = inputs
    _, mem, pre = output
    ctx.save_for_backward(mem, pre, mem0, beta, threshold, graded)
    ctx.args = (surrogate, p0, p1, reset, reset_delay)
    # An unused output (often mem) then reaches the backward as None, which the kernel reads as
    # zero, instead of as a materialized [T, M] tensor of zeros.
    ctx.set_materialize_grads(False)


def _compact_grad(grad):
    """An upstream gradient broadcast from one value (e.g. from .sum()) is passed as that value
    instead of being materialized as a full [T, M] tensor; on the CPU, one broadcast over the T
    steps (e.g. from spk.sum(0)) as its [M] row expanded over T, which the kernels read in place
    (the CUDA kernels take a contiguous [T, M])."""
    if grad is None:
        return None
    if grad.numel() > 1 and all(s == 0 for s in grad.stride()):
        return grad.reshape(-1)[:1]
    if grad.device.type == "cpu" and grad.dim() == 2 and grad.shape[0] > 1 and grad.stride(0) == 0:
        return grad[0].contiguous().expand(grad.shape)
    return grad.contiguous()


def _needed(needs, *grads):
    """Autograd's return value: each gradient where its input needs one, else None, then None
    for the remaining (non-tensor) inputs."""
    return tuple(g if need else None for g, need in zip(grads, needs)) + (None,) * (
        len(needs) - len(grads))


def _backward(ctx, grad_spk, grad_mem, _grad_pre):
    mem, pre, mem0, beta, threshold, graded = ctx.saved_tensors
    surrogate, p0, p1, reset, reset_delay = ctx.args
    needs = ctx.needs_input_grad
    param_grads = needs[2] or needs[3] or needs[4]
    gx, gmem0, gbeta, gthr, ggraded = _lib.lif_backward(
        _compact_grad(grad_spk), _compact_grad(grad_mem), mem, pre, mem0, beta, threshold,
        graded, surrogate, p0, p1, reset, reset_delay, param_grads,
    )
    _count_current_gradient(ctx, gx)
    return _needed(needs, gx, gmem0, gbeta, gthr, ggraded)


def _gradient_counter(ctx):
    """Where to count δI for snnkernels.mechanism: a function of (δI, entries=None) when this
    op's forward was recorded and the recording is still open, else None."""
    key = getattr(ctx, "mechanism_layer", None)
    if key is None or _mechanism.current is None:
        return None
    return functools.partial(_mechanism.current.current_gradient, key)


def _count_current_gradient(ctx, grad):
    count = _gradient_counter(ctx)
    if count is not None:
        count(grad)


torch.library.register_autograd("snnkernels::lif_forward", _backward, setup_context=_setup_context)


@torch.library.register_fake("snnkernels::lif_constant_forward")
def _lif_constant_forward_fake(x, steps, mem0, beta, threshold, graded, surrogate, p0, p1, reset,
                               reset_delay):
    return x.new_empty((steps, x.shape[0]))


@torch.library.register_fake("snnkernels::lif_constant_backward")
def _lif_constant_backward_fake(grad_spk, x, steps, mem0, beta, threshold, graded, surrogate, p0,
                                p1, reset, reset_delay, param_grads):
    def param_grad(p):
        return torch.empty_like(p) if param_grads else p.new_empty((0,))

    return (torch.empty_like(x), torch.empty_like(x), param_grad(beta), param_grad(threshold),
            param_grad(graded))


def _setup_constant_context(ctx, inputs, output):
    x, steps, mem0, beta, threshold, graded, surrogate, p0, p1, reset, reset_delay = inputs
    ctx.save_for_backward(x, mem0, beta, threshold, graded)
    ctx.args = (surrogate, p0, p1, reset, reset_delay)
    ctx.steps = steps
    ctx.set_materialize_grads(False)


def _constant_backward(ctx, grad_spk):
    x, mem0, beta, threshold, graded = ctx.saved_tensors
    needs = ctx.needs_input_grad
    param_grads = needs[3] or needs[4] or needs[5]
    gx, gmem0, gbeta, gthr, ggraded = _lib.lif_constant_backward(
        _compact_grad(grad_spk), x, ctx.steps, mem0, beta, threshold, graded, *ctx.args,
        param_grads)
    if _gradient_counter(ctx) is not None:
        _count_constant_current_gradient(ctx, grad_spk, x, mem0, beta, threshold, graded)
    return _needed(needs, gx, None, gmem0, gbeta, gthr, ggraded)


def _count_constant_current_gradient(ctx, grad_spk, x, mem0, beta, threshold, graded):
    """lif_constant's backward sums δI over the steps inside the kernel; the per-step δI that
    snnkernels.lif would report for the expanded current is recomputed (only while recording)
    by the dense LIF ops on the current broadcast over the steps."""
    current = x.expand(ctx.steps, x.shape[0])
    if current.device.type != "cpu":
        current = current.contiguous()
    with torch._C._AutoDispatchBelowAutograd():
        _, mem, pre = _lib.lif_forward(current, mem0, beta, threshold, graded, *ctx.args)
        per_step = _lib.lif_backward(_compact_grad(grad_spk), None, mem, pre, mem0, beta,
                                     threshold, graded, *ctx.args, False)[0]
    _count_current_gradient(ctx, per_step)


torch.library.register_autograd("snnkernels::lif_constant_forward", _constant_backward,
                                setup_context=_setup_constant_context)


# --------------------------------------------------------------------------------------------
# Sparse-gradient training (snnkernels.sparse): the LIF with a masked backward, the fused
# linear + LIF layer, and the synaptic backward from a compact gradient.
# --------------------------------------------------------------------------------------------


@torch.library.register_fake("snnkernels::lif_forward_masked")
def _lif_forward_masked_fake(x, mem0, beta, threshold, graded, surrogate, p0, p1, reset,
                             reset_delay, mask, row, k, width, temporal):
    return _lif_forward_fake(x, mem0, beta, threshold, graded, surrogate, p0, p1, reset,
                             reset_delay)


@torch.library.register_fake("snnkernels::lif_backward_masked")
def _lif_backward_masked_fake(grad_spk, grad_mem, mem, pre_reset, mem0, beta, threshold, graded,
                              surrogate, p0, p1, reset, reset_delay, param_grads, mask, row, k,
                              width, temporal, compact):
    dense = _lif_backward_fake(grad_spk, grad_mem, mem, pre_reset, mem0, beta, threshold, graded,
                               surrogate, p0, p1, reset, reset_delay, param_grads)
    empty_rows = mem.new_empty((0,), dtype=torch.int64)
    if not compact:
        return (*dense, mem.new_empty((0,)), mem.new_empty((0,), dtype=torch.int32), empty_rows)
    rows = mem.shape[0] * (mem.shape[1] // row)
    grad_x = mem.new_empty((0,))
    if mask == 1:  # TopK: ELL
        return (grad_x, *dense[1:], mem.new_empty((rows, k)),
                mem.new_empty((rows, k), dtype=torch.int32), empty_rows)
    nnz = torch.library.get_ctx().new_dynamic_size()  # ActiveWindow: CSR of the active entries
    return (grad_x, *dense[1:], mem.new_empty((nnz,)), mem.new_empty((nnz,), dtype=torch.int32),
            mem.new_empty((rows + 1,), dtype=torch.int64))


@torch.library.register_fake("snnkernels::linear_lif_forward")
def _linear_lif_forward_fake(x, weight, bias, beta, threshold, graded, surrogate, p0, p1, reset,
                             reset_delay, mask, k, width, temporal):
    current = x.new_empty((x.shape[0], x.shape[1] * weight.shape[0]))
    event = x.new_empty((1 if x.device.type == "cpu" else 0,), dtype=torch.bool)
    return (*_lif_forward_fake(current, None, beta, threshold, graded, surrogate, p0, p1, reset,
                               reset_delay), event)


@torch.library.register_fake("snnkernels::spike_linear")
def _spike_linear_fake(x, weight, bias):
    return x.new_empty((x.shape[0], weight.shape[0]))


@torch.library.register_fake("snnkernels::spike_weight_grad")
def _spike_weight_grad_fake(grad, x, need_bias=False):
    return (x.new_empty((grad.shape[1], x.shape[1])),
            x.new_empty((grad.shape[1] if need_bias else 0,)))


@torch.library.register_fake("snnkernels::linear_dense_backward")
def _linear_dense_backward_fake(grad, x, weight, need_x, need_weight, need_bias, event=None):
    n, f = weight.shape
    return (x.new_empty((x.shape[0] if need_x else 0, f)),
            x.new_empty((n if need_weight else 0, f)),
            x.new_empty((n if need_bias else 0,)))


@torch.library.register_fake("snnkernels::linear_sparse_backward")
def _linear_sparse_backward_fake(values, indices, row_ptr, x, weight, need_x, need_weight,
                                 need_bias):
    n, f = weight.shape
    return (x.new_empty((x.shape[0] if need_x else 0, f)),
            x.new_empty((n if need_weight else 0, f)),
            x.new_empty((n if need_bias else 0,)))


def _setup_masked_context(ctx, inputs, output):
    _setup_context(ctx, inputs[:10], output)
    ctx.mask = tuple(inputs[10:])  # (mask, row, k, width, temporal)


def _masked_backward(ctx, grad_spk, grad_mem, _grad_pre):
    mem, pre, mem0, beta, threshold, graded = ctx.saved_tensors
    needs = ctx.needs_input_grad
    param_grads = needs[2] or needs[3] or needs[4]
    gx, gmem0, gbeta, gthr, ggraded, *_ = _lib.lif_backward_masked(
        _compact_grad(grad_spk), _compact_grad(grad_mem), mem, pre, mem0, beta, threshold,
        graded, *ctx.args, param_grads, *ctx.mask, False,
    )
    _count_current_gradient(ctx, gx)
    return _needed(needs, gx, gmem0, gbeta, gthr, ggraded)


torch.library.register_autograd("snnkernels::lif_forward_masked", _masked_backward,
                                setup_context=_setup_masked_context)


def _setup_linear_context(ctx, inputs, output):
    x, weight, bias, beta, threshold, graded, surrogate, p0, p1, reset, reset_delay = inputs[:11]
    _, mem, pre, event = output  # event: the synapse's path, which the dense backward reuses
    ctx.save_for_backward(x, weight, mem, pre, beta, threshold, graded, event)
    ctx.args = (surrogate, p0, p1, reset, reset_delay)
    ctx.mask = tuple(inputs[11:])  # (mask, k, width, temporal); mask 0: dense
    ctx.set_materialize_grads(False)


def _linear_backward(ctx, grad_spk, grad_mem, _grad_pre, _grad_event):
    grads = linear_lif_grads(*ctx.saved_tensors, ctx.args, ctx.mask, ctx.needs_input_grad,
                             _compact_grad(grad_spk), _compact_grad(grad_mem),
                             count=_gradient_counter(ctx))
    return _needed(ctx.needs_input_grad, *grads)


def linear_lif_grads(x, weight, mem, pre, beta, threshold, graded, event, args, mask_args, needs,
                     grad_spk, grad_mem, count=None):
    """The gradients of linear_lif_forward's x, weight, bias, beta, threshold and graded (None
    where needs, its needs_input_grad, says so for x), from the kernels' gradients of the spikes
    and membrane [T, B * N] (or None). count(δI, entries): called with the current gradient
    (dense, or its compact entries and how many δI has)."""
    param_grads = needs[3] or needs[4] or needs[5]
    steps, batch, features = x.shape
    n = weight.shape[0]
    x2 = x.reshape(steps * batch, features)
    mask, k, width, temporal = mask_args
    if mask == 0 or n == 0:  # dense (or no neurons, nothing to mask): LIF backward, GEMMs
        gi, _, gbeta, gthr, ggraded = _lib.lif_backward(
            grad_spk, grad_mem, mem, pre, None, beta, threshold, graded, *args, param_grads)
        if count is not None:
            count(gi)
        gx, gw, gb = _lib.linear_dense_backward(gi.view(steps * batch, n), x2, weight,
                                                needs[0], needs[1], needs[2], event)
    else:  # masked: the compact current gradient, then the sparse synaptic backward
        _, _, gbeta, gthr, ggraded, values, indices, row_ptr = _lib.lif_backward_masked(
            grad_spk, grad_mem, mem, pre, None, beta, threshold, graded, *args, param_grads,
            mask, n, k, width, temporal, True)
        if count is not None:
            count(values, steps * batch * n)
        gx, gw, gb = _lib.linear_sparse_backward(values, indices, row_ptr, x2, weight,
                                                 needs[0], needs[1], needs[2])
    gx = gx.view(steps, batch, features) if needs[0] else None
    return gx, gw, gb, gbeta, gthr, ggraded


torch.library.register_autograd("snnkernels::linear_lif_forward", _linear_backward,
                                setup_context=_setup_linear_context)


# --------------------------------------------------------------------------------------------
# Eager calls. torch.library's autograd wrapper (torch 2.11 to 2.13) rebuilds the op's argument
# list from its schema on every call (torch._library.utils.fill_defaults: about 40 us here, a
# quarter of a small lif call's forward + backward, and most of a single-step nn.Leaky call).
# Eager calls that record a graph go through a torch.autograd.Function with the same
# setup_context and backward instead; under torch.compile, or with no graph to record, the op is
# called itself, so compiled graphs keep the op and its fake kernel.
# --------------------------------------------------------------------------------------------


def _eager(op, setup_context, backward, observe):
    """The eager call of op; observe(recording, key, args, output) counts its forward for
    snnkernels.mechanism while a recording is open."""

    def forward(ctx, *args):
        # Grad mode is off in here, but the op would still enter torch.library's autograd
        # kernel (Python: ~40 us a call); below the Autograd keys it goes to the kernel itself.
        with torch._C._AutoDispatchBelowAutograd():
            output = op(*args)
        setup_context(ctx, args, output)
        if _mechanism.current is not None:
            ctx.mechanism_layer = _observe(_mechanism.current, args, output)
        return output

    def _observe(recording, args, output):
        key = recording.layer_key(name)
        observe(recording, key, args, output)
        return key

    name = op._name.split("::")[-1]
    # forward(ctx, ...) rather than a separate setup_context: Function.apply then skips binding
    # the arguments with inspect.signature (another ~50 us per call)
    function = type(f"{op._name}_autograd", (torch.autograd.Function,), {
        "forward": staticmethod(forward), "backward": staticmethod(backward)})

    def call(*args):
        if torch.compiler.is_compiling():
            return op(*args)
        if not torch.is_grad_enabled():
            output = op(*args)
            if _mechanism.current is not None:
                _observe(_mechanism.current, args, output)
            return output
        return function.apply(*args)

    return call


def _observe_dense(recording, key, args, output):
    recording.spikes(key, output[0])


def _observe_masked(recording, key, mask, width, threshold, reset_delay, output):
    """Spikes, and with an ActiveWindow mask the membranes h_t it tests: the returned membrane
    with reset_delay, else the saved pre-reset one."""
    spk, mem, pre = output[:3]
    recording.spikes(key, spk)
    if mask == _MASK_IDS["active_window"]:
        recording.active_window(key, mem if reset_delay else pre, threshold, width)


def _observe_lif_masked(recording, key, args, output):
    # args: x, mem0, beta, threshold, graded, surrogate, p0, p1, reset, reset_delay, then the
    # mask's (mask, row, k, width, temporal)
    _observe_masked(recording, key, args[10], args[13], args[3], args[9], output)


def _observe_linear_lif(recording, key, args, output):
    # args: x, weight, bias, beta, threshold, graded, surrogate, p0, p1, reset, reset_delay,
    # then the mask's (mask, k, width, temporal); mask 0 is dense
    _observe_masked(recording, key, args[11], args[13], args[4], args[10], output)


def _observe_constant(recording, key, args, output):
    recording.spikes(key, output)


lif_forward = _eager(_lib.lif_forward.default, _setup_context, _backward, _observe_dense)
lif_forward_masked = _eager(_lib.lif_forward_masked.default, _setup_masked_context,
                            _masked_backward, _observe_lif_masked)
linear_lif_forward = _eager(_lib.linear_lif_forward.default, _setup_linear_context,
                            _linear_backward, _observe_linear_lif)
lif_constant_forward = _eager(_lib.lif_constant_forward.default, _setup_constant_context,
                              _constant_backward, _observe_constant)
