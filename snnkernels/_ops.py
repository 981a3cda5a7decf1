"""Fake (meta) implementations and autograd for the compiled ops, so torch.library.opcheck and
torch.compile(fullgraph=True) see through them. The kernels themselves are in csrc/."""

from __future__ import annotations

import torch

from . import _extension  # noqa: F401  (loads the library that defines the ops)

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
    instead of being materialized as a full [T, M] tensor."""
    if grad is None:
        return None
    if grad.numel() > 1 and all(s == 0 for s in grad.stride()):
        return grad.reshape(-1)[:1]
    return grad.contiguous()


def _backward(ctx, grad_spk, grad_mem, _grad_pre):
    mem, pre, mem0, beta, threshold, graded = ctx.saved_tensors
    surrogate, p0, p1, reset, reset_delay = ctx.args
    needs = ctx.needs_input_grad
    param_grads = needs[2] or needs[3] or needs[4]
    gx, gmem0, gbeta, gthr, ggraded = _lib.lif_backward(
        _compact_grad(grad_spk), _compact_grad(grad_mem), mem, pre, mem0, beta, threshold,
        graded, surrogate, p0, p1, reset, reset_delay, param_grads,
    )
    return (
        gx,
        gmem0 if needs[1] else None,
        gbeta if needs[2] else None,
        gthr if needs[3] else None,
        ggraded if needs[4] else None,
        None, None, None, None, None,
    )


torch.library.register_autograd("snnkernels::lif_forward", _backward, setup_context=_setup_context)
