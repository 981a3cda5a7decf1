"""Inputs and a gradient run for linear_lif-shaped layers, shared by the tests of
snnkernels.linear_lif and of its CPU paths (event-driven and narrow synapses)."""

from __future__ import annotations

import math

import torch

from helpers import generator


def layer_inputs(t=6, b=5, f=9, n=40, dtype=torch.float64, seed=0, bias=True, learn=True):
    g = generator(seed)

    def rand(*shape, scale=1.0, shift=0.0):
        return (torch.randn(shape, generator=g, dtype=torch.float64) * scale + shift).to(dtype)

    x = rand(t, b, f)
    weight = rand(n, f, scale=1.0 / math.sqrt(f))
    return dict(x=x, weight=weight, bias=rand(n, scale=0.3, shift=0.4) if bias else None,
                beta=(rand(n, scale=0.1, shift=0.8) if learn else 0.85),
                threshold=(rand(scale=0.1, shift=1.0) if learn else 1.0))


def run_layer(fn, inputs, seed=1, **kwargs):
    leaves = {k: v.detach().clone().requires_grad_(True) for k, v in inputs.items()
              if isinstance(v, torch.Tensor)}
    args = {**inputs, **leaves}
    spk, mem = fn(args.pop("x"), args.pop("weight"), args.pop("bias"), args.pop("beta"),
                  args.pop("threshold"), **kwargs)
    g = generator(seed)
    ws = torch.randn(spk.shape, generator=g, dtype=torch.float64).to(spk.dtype)
    wm = torch.randn(spk.shape, generator=g, dtype=torch.float64).to(spk.dtype)
    loss = (spk * ws).sum() + 0.3 * (mem * wm).sum()
    grads = torch.autograd.grad(loss, list(leaves.values()))
    return spk.detach(), mem.detach(), dict(zip(leaves, grads))
