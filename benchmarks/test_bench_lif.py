"""LIF forward and forward+backward: the fused CPU op vs the pure-PyTorch reference vs
snnTorch's Leaky called once per step. T=25, B=256, float32, defaults (subtract reset, reset
delay, atan surrogate, beta 0.9, threshold 1.0)."""

from __future__ import annotations

import pytest
import snntorch
import torch

import snnkernels

BETA = 0.9


def fused_lif(x):
    return snnkernels.lif(x, BETA)


def reference_lif(x):
    return snnkernels.reference.lif(x, BETA)


_leaky = snntorch.Leaky(beta=BETA)


def snntorch_lif(x):
    mem = _leaky.init_leaky()
    spks, mems = [], []
    # unbind, not x[t]: indexing makes autograd allocate a full-size zero gradient per step
    # (select_backward), which is ~100x slower and not how snnTorch users write the loop.
    for xt in x.unbind(0):
        spk, mem = _leaky(xt, mem)
        spks.append(spk)
        mems.append(mem)
    return torch.stack(spks), torch.stack(mems)


IMPLS = {"fused": fused_lif, "reference": reference_lif, "snntorch": snntorch_lif}

# Measured rounds per (implementation, N) in full mode; the loops at N=4096 take ~1 s a call.
# (n itself is parametrized by conftest: fewer sizes under --lif-quick.)
ROUNDS = {
    "fused": {256: 50, 1024: 30, 4096: 15},
    "reference": {256: 20, 1024: 10, 4096: 6},
    "snntorch": {256: 20, 1024: 10, 4096: 6},
}
QUICK_ROUNDS = 3


def _run(benchmark, fn, impl, n, quick):
    rounds = QUICK_ROUNDS if quick else ROUNDS[impl][n]
    benchmark.group = f"N={n}"
    # fn returns nothing: each call's outputs are freed before the next, as in a training loop.
    benchmark.pedantic(fn, rounds=rounds, warmup_rounds=0 if quick else 1, iterations=1)


@pytest.mark.parametrize("impl", list(IMPLS))
def test_lif_forward(benchmark, lif_inputs, record_bandwidth, quick, impl, n):
    inputs = lif_inputs(n)
    lif, x = IMPLS[impl], inputs.x

    def forward():
        lif(x)

    _run(benchmark, forward, impl, n, quick)
    record_bandwidth(impl, "fwd", inputs, inputs.spike_rate(fused_lif))


@pytest.mark.parametrize("impl", list(IMPLS))
def test_lif_forward_backward(benchmark, lif_inputs, record_bandwidth, quick, impl, n):
    inputs = lif_inputs(n)
    lif = IMPLS[impl]
    x = inputs.x.detach().requires_grad_()
    grads = (inputs.grad_spk, inputs.grad_mem)

    def forward_backward():
        spk, mem = lif(x)
        # autograd.grad, not .backward(): no accumulation into x.grad across rounds.
        torch.autograd.grad((spk, mem), x, grads)

    _run(benchmark, forward_backward, impl, n, quick)
    record_bandwidth(impl, "fwd+bwd", inputs, inputs.spike_rate(fused_lif))
