"""TabularSNN's last hidden layer and a narrow readout as one autograd node (CPU, eager).

As two linear_lif calls, the hidden layer's forward writes its spikes [T, B, H] and the readout
reads them back; in the backward the readout writes the gradient of those spikes and the hidden
layer reads it back. Here:
- forward: the op linear_lif_readout_forward sums the readout's current from each step's spikes
  inside the hidden LIF kernel, while they are in cache;
- backward: the hidden layer's LIF backward (dense or masked) forms the spikes' gradient a row at
  a time from the readout's current gradient [T * B, C] and weight [C, H] (the op
  lif_backward_readout), so it is never stored.
Measured in bench_tabular's 128 x 2 step (torch profiler, this project's 2-core CPU): the
readout's synaptic backward 85 us instead of 160-172, the hidden LIF backward 0.30-0.35 ms
instead of 0.26-0.27 (it forms the gradient), and the two forwards 0.38 ms instead of
0.31 + 0.13. The step's median, interleaved processes of 200 steps: 3.80-3.89 ms against
3.93-4.02 with the backward alone fused, and 3.79-3.83 (one 4.04) against 3.85-4.11 with the
forward fused too. Every result has the bits of the two separate calls (tests/test_readout.py).
"""

from __future__ import annotations

import torch

from . import _extension, _ops
from .linear_lif import op_args

_lib = torch.ops.snnkernels
# Readouts of at most this many neurons: those whose input gradient the separate calls form
# with the same sums (linear_dense_backward's narrow-layer loops, csrc/narrow_linear.h).
NARROW_MAX_WIDTH = _extension.build_info()["narrow_max_width"]
# linear_lif_forward's arguments after x (op_args): weight, bias, beta, threshold, graded,
# surrogate, p0, p1, reset, reset_delay, then the mask's four
_ARGS = 14


def fusable(x, hidden, readout) -> bool:
    """Whether hidden_and_readout runs these two SpikingLinear layers on x [T, B, F]: on the
    CPU, recording a graph outside torch.compile and autocast, a dense narrow readout."""
    return (torch.is_grad_enabled() and not torch.compiler.is_compiling()
            and x.device.type == "cpu" and x.dtype in (torch.float32, torch.float64)
            and not torch.is_autocast_enabled("cpu") and readout.sparse is None
            and readout.linear.out_features <= NARROW_MAX_WIDTH)


def hidden_and_readout(x, hidden, readout):
    """(hidden spikes, readout spikes, readout membrane), each [T, B, width]: what
    hidden.from_input(x) and then readout.from_input(its spikes) return."""
    steps, batch, _ = x.shape
    spikes_like = x.new_empty(()).expand(steps, batch, hidden.linear.out_features)
    args = _layer_args(x, hidden) + _layer_args(spikes_like, readout)
    return _HiddenAndReadout.apply(x.contiguous(), *args)


def _layer_args(x, layer) -> tuple:
    return op_args(x, layer.linear.weight, layer.linear.bias, layer.beta, layer.threshold,
                   layer.surrogate, layer.reset_mechanism, layer.reset_delay, layer.sparse)


def _flat(grad, steps):
    """An upstream gradient [T, B, N] as the kernels' [T, B * N] (None stays None)."""
    return None if grad is None else _ops._compact_grad(grad.reshape(steps, -1))


class _HiddenAndReadout(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, *args):
        hidden, readout = args[:_ARGS], args[_ARGS:]
        steps, batch, _ = x.shape
        n, c = hidden[0].shape[0], readout[0].shape[0]
        # below the Autograd keys: straight to the kernels (see _ops._eager). The readout's
        # current is summed from the hidden spikes while they are in cache.
        with torch._C._AutoDispatchBelowAutograd():
            spk, mem, pre, event, current_o = _lib.linear_lif_readout_forward(
                x, *hidden[:10], readout[0], readout[1])
            spk_o, mem_o, pre_o = _lib.lif_forward(current_o.view(steps, batch * c), None,
                                                   *readout[2:10])
        ctx.save_for_backward(x, mem, pre, event, spk, mem_o, pre_o, *hidden[:5], *readout[:5])
        # (surrogate, p0, p1, reset, reset_delay) of each layer, and the hidden layer's mask
        ctx.args = (hidden[5:10], readout[5:10], hidden[10:])
        ctx.set_materialize_grads(False)
        return (spk.view(steps, batch, n), spk_o.view(steps, batch, c),
                mem_o.view(steps, batch, c))

    @staticmethod
    def backward(ctx, grad_spk, grad_spk_o, grad_mem_o):
        x, mem, pre, event, spk, mem_o, pre_o, *params = ctx.saved_tensors
        weight, _, beta, threshold, graded = params[:5]
        weight_o, _, beta_o, threshold_o, graded_o = params[5:]
        hidden_args, readout_args, mask_args = ctx.args
        needs = ctx.needs_input_grad  # x, then the two layers' _ARGS each
        steps, batch, _ = x.shape
        rows, n, c = steps * batch, weight.shape[0], weight_o.shape[0]
        # the readout: its LIF backward, then its weight and bias gradients
        gi_o, _, gbeta_o, gthr_o, ggraded_o = _lib.lif_backward(
            _flat(grad_spk_o, steps), _flat(grad_mem_o, steps), mem_o, pre_o, None, beta_o,
            threshold_o, graded_o, *readout_args, any(needs[1 + _ARGS + 2:1 + _ARGS + 5]))
        other = grad_spk is not None  # the hidden spikes feed more than the readout
        gx_o, gw_o, gb_o = _lib.linear_dense_backward(
            gi_o.view(rows, c), spk.view(rows, n), weight_o, other, needs[1 + _ARGS],
            needs[2 + _ARGS])
        # the hidden layer, as linear_lif's backward: from the sum autograd would have formed
        # when its spikes feed something else too, else from the readout's gradient
        spikes_grad = (_ops._compact_grad(grad_spk.reshape(steps, batch * n)
                                          + gx_o.view(steps, batch * n)) if other else None)
        hidden_grads = _ops.linear_lif_grads(
            x, weight, mem, pre, beta, threshold, graded, event, hidden_args, mask_args,
            needs[:6], spikes_grad, None,
            readout=None if other else (gi_o.view(rows, c), weight_o))
        grads = hidden_grads + (None,) * (_ARGS - 5) + (gw_o, gb_o, gbeta_o, gthr_o, ggraded_o)
        return _ops._needed(needs, *grads)
