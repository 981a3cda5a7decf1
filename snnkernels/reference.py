"""The executable specification: the LIF neuron of ../shared/SPEC.md written as a readable
time loop in plain PyTorch, gradients by autograd. The fused kernels are tested against it.
It follows snnTorch 1.0.0's Leaky step by step (the same operations in the same order)."""

from __future__ import annotations

import torch

from . import _args
from . import surrogate as _surrogate


class _SurrogateSpike(torch.autograd.Function):
    """H(z) forward (strict >), sigma'(z) backward."""

    @staticmethod
    def forward(ctx, z, surrogate):
        ctx.save_for_backward(z)
        ctx.surrogate = surrogate
        return (z > 0).to(z.dtype)

    @staticmethod
    def backward(ctx, grad):
        (z,) = ctx.saved_tensors
        return grad * ctx.surrogate.grad(z), None


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
):
    """Same signature and results as snnkernels.lif; see its docstring."""
    _args.check_x(x)
    beta = _args.check_neuron_param(beta, "beta", x)
    threshold = _args.check_neuron_param(threshold, "threshold", x)
    graded = _args.check_neuron_param(graded_spikes_factor, "graded_spikes_factor", x)
    mem0 = _args.check_mem0(mem0, x)
    _args.check_reset(reset_mechanism, reset_delay)
    sg = _surrogate.resolve(surrogate)

    def spike(z):
        return _SurrogateSpike.apply(z, sg)

    beta_c = torch.as_tensor(beta, dtype=x.dtype, device=x.device).clamp(0, 1)
    thr = torch.as_tensor(threshold, dtype=x.dtype, device=x.device)
    g = torch.as_tensor(graded, dtype=x.dtype, device=x.device)
    batch = x.shape[1:]  # not x[0]: that fails for T = 0
    mem = x.new_zeros(batch) if mem0 is None else mem0.to(x.dtype).expand(batch)
    spikes, membranes = [], []
    for xt in x.unbind(0):
        reset = spike(mem - thr).detach()
        if reset_mechanism == "subtract":
            mem = beta_c * mem + xt - reset * thr
        elif reset_mechanism == "zero":
            mem = beta_c * ((1 - reset) * mem) + xt
        else:
            mem = beta_c * mem + xt
        fired = spike(mem - thr)
        if not reset_delay:
            do_reset = fired - reset  # snnTorch writes spk / graded - reset: the same value
            if reset_mechanism == "subtract":
                mem = mem - do_reset * thr
            elif reset_mechanism == "zero":
                mem = mem - do_reset * mem
        spikes.append(fired * g)
        membranes.append(mem)
    if not spikes:  # T = 0: empty outputs that are still in the graph, so backward runs
        return x * 0, x * 0
    return torch.stack(spikes), torch.stack(membranes)
