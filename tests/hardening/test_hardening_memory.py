"""Memory: repeated forward + backward keeps the resident set size flat (no leak in the kernels,
the autograd glue or the compact sparse gradients), and every tensor an op saves for backward
is released once the backward has run (or the graph is dropped).

RSS is read from /proc/self/statm (Linux; skipped elsewhere). 10,000 iterations of a small lif
step and a linear_lif step with TopK and ActiveWindow, forward and backward, after 1,000
warm-up iterations; RSS is sampled every 1,000 iterations. One leaked [8, 4, 64] float32 tensor
per iteration would add 80 MiB; the test allows 24 MiB of slack for allocator noise and fails on
steady growth."""

from __future__ import annotations

import gc
import os
import weakref

import pytest
import torch

import snnkernels
from snnkernels import models
from snnkernels import nn as knn
from snnkernels import sparse as sp

from helpers import generator

PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
MIB = 1 << 20


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="needs /proc (Linux)")
@pytest.mark.skipif("ASAN_OPTIONS" in os.environ,
                    reason="under AddressSanitizer freed memory sits in its quarantine (RSS grows)")
def test_rss_is_stable_over_10k_forward_backward_iterations(restore_num_threads):
    # One intra-op thread: a leak does not depend on it, and on a loaded 2-core machine every
    # parallel region of two threads waits for a descheduled thread (10x slower).
    torch.set_num_threads(1)
    g = generator(0)
    x = (torch.randn(8, 4, 64, generator=g) * 0.8 + 0.45).requires_grad_(True)
    beta = torch.full((64,), 0.8, requires_grad=True)
    xl = torch.randn(8, 4, 32, generator=g, requires_grad=True)
    weight = (torch.randn(64, 32, generator=g) / 32**0.5).requires_grad_(True)
    bias = torch.full((64,), 0.4, requires_grad=True)
    topk, window = sp.TopK(k=6), sp.ActiveWindow(0.3)

    def step(i: int) -> None:
        spk, mem = snnkernels.lif(x, beta, reset_delay=bool(i % 2))
        (spk.sum() + mem.sum()).backward()
        spk, mem = snnkernels.linear_lif(xl, weight, bias, 0.9, sparse=topk if i % 2 else window)
        (spk.sum() + 0.3 * mem.sum()).backward()
        for t in (x, beta, xl, weight, bias):
            t.grad = None

    for i in range(1000):
        step(i)
    gc.collect()
    samples = [rss_bytes()]
    for block in range(9):
        for i in range(1000):
            step(i)
        gc.collect()
        samples.append(rss_bytes())
    growth = [(s - samples[0]) / MIB for s in samples]
    assert max(growth) < 24, f"RSS grew by {max(growth):.1f} MiB (MiB per 1000 iterations: {growth})"
    # no steady growth: the second half grows no more than allocator noise over the first half
    assert growth[-1] - growth[4] < 8, f"RSS keeps growing: {growth}"


class SavedCounter:
    """saved_tensors_hooks that wrap every tensor an autograd node saves in a Holder, keeping a
    weak reference to each Holder: the live count is how many saved tensors the graph still
    holds. The Holder keeps t.detach() (same memory, no grad_fn): holding a saved *output*
    itself would make a cycle (holder -> output -> its grad_fn -> holder) that only exists
    because of the hook and that Python's gc cannot see through."""

    class Holder:
        def __init__(self, t):
            self.t = t

    def __init__(self):
        self.refs = []

    def pack(self, t):
        h = self.Holder(t.detach())
        self.refs.append(weakref.ref(h))
        return h

    @staticmethod
    def unpack(h):
        return h.t

    def hooks(self):
        return torch.autograd.graph.saved_tensors_hooks(self.pack, self.unpack)

    def live(self) -> int:
        gc.collect()
        return sum(r() is not None for r in self.refs)


def _lif(reset_delay, sparse=None):
    def run():
        x = (torch.randn(6, 3, 40) + 0.5).requires_grad_(True)
        beta = torch.full((40,), 0.8, requires_grad=True)
        mem0 = torch.zeros(3, 40, requires_grad=True)
        return snnkernels.lif(x, beta, 1.0, mem0, reset_delay=reset_delay, sparse=sparse)
    return run


def _linear(sparse):
    def run():
        x = torch.randn(6, 3, 20, requires_grad=True)
        w = torch.randn(40, 20, requires_grad=True)
        return snnkernels.linear_lif(x, w, torch.zeros(40, requires_grad=True), 0.9,
                                     sparse=sparse, reset_delay=False)
    return run


def _module(layer, x):
    def run():
        return layer(x)
    return run


CALLS = {
    "lif-delay": _lif(True),
    "lif-no-delay": _lif(False),
    "lif-topk": _lif(False, sp.TopK(k=4, temporal=True)),
    "lif-window": _lif(True, sp.ActiveWindow(0.2)),
    "linear_lif-dense": _linear(None),
    "linear_lif-topk": _linear(sp.TopK(k=4)),
    "linear_lif-window": _linear(sp.ActiveWindow(0.3)),
    "nn.LIF": _module(knn.LIF(0.9, learn_beta=True), torch.rand(5, 2, 8, requires_grad=True)),
    "nn.LinearLIF": _module(knn.LinearLIF(8, 6, sparse=sp.TopK(k=2)), torch.rand(5, 2, 8)),
    "TabularSNN": _module(models.TabularSNN(8, hidden=(6,)), torch.rand(3, 8)),
}


def _loss(out):
    tensors = out if isinstance(out, (tuple, list)) else (out,)
    return sum(t.float().sum() for t in tensors if t.requires_grad)


@pytest.mark.parametrize("name", list(CALLS))
def test_saved_tensors_are_freed_after_backward(name):
    counter = SavedCounter()
    with counter.hooks():
        out = CALLS[name]()
        loss = _loss(out)
    saved = counter.live()
    assert saved > 0, "the hooks saw no saved tensor: weak test"
    loss.backward()
    del loss
    assert counter.live() == 0, f"{counter.live()} of {saved} saved tensors outlive the backward"
    # the outputs themselves (kept by the caller) are not what keeps them
    assert out is not None


@pytest.mark.parametrize("name", ["lif-no-delay", "linear_lif-topk"])
def test_saved_tensors_are_freed_with_the_graph(name):
    """Without a backward, dropping the outputs drops the graph and what it saved."""
    counter = SavedCounter()
    with counter.hooks():
        out = CALLS[name]()
        loss = _loss(out)
    assert counter.live() > 0
    del out, loss
    assert counter.live() == 0
