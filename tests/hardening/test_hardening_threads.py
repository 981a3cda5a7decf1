"""Thread safety: the ops called concurrently from Python threads give the same bits as the same
calls made one after another. 4 threads x 50 calls each of: snnkernels.lif forward + backward
(dense, learnable per-neuron / scalar / per-element parameters), snnkernels.lif with a TopK mask,
snnkernels.linear_lif with TopK and with ActiveWindow (the compact gradient and the sparse
synaptic backward), all with torch's intra-op threads on as well, so at::parallel_for regions
are entered from several Python threads at once. The kernels keep no global state (per-call
scratch only; the debug-poison flag is set once, before the threads start)."""

from __future__ import annotations

import threading

import pytest
import torch

import snnkernels
from snnkernels import sparse as sp
from snnkernels import surrogate as S

from helpers import generator

THREADS, CALLS = 4, 50


def lif_call(i: int, sparse=None):
    g = generator(i)
    dtype = torch.float64 if i % 2 else torch.float32
    x = (torch.randn(5, 4, 300, generator=g, dtype=torch.float64) * 0.8 + 0.45).to(dtype)
    beta = (torch.rand(300, generator=g, dtype=torch.float64) * 0.6 + 0.3).to(dtype)
    threshold = torch.tensor(1.0 + 0.01 * i, dtype=dtype)
    mem0 = torch.randn(4, 300, generator=g, dtype=torch.float64).to(dtype)
    leaves = [t.requires_grad_(True) for t in (x, beta, threshold, mem0)]
    spk, mem = snnkernels.lif(x, beta, threshold, mem0, surrogate=S.fast_sigmoid(slope=5),
                              reset_mechanism=("subtract", "zero", "none")[i % 3],
                              reset_delay=bool(i % 4 < 2), sparse=sparse)
    w = torch.randn(spk.shape, generator=g, dtype=torch.float64).to(dtype)
    grads = torch.autograd.grad((spk * w).sum() + (mem * w).sum(), leaves)
    return [spk.detach(), mem.detach(), *grads]


def linear_call(i: int, sparse):
    g = generator(1000 + i)
    dtype = torch.float64 if i % 2 else torch.float32
    x = torch.randn(5, 8, 70, generator=g, dtype=torch.float64).to(dtype)
    weight = (torch.randn(150, 70, generator=g, dtype=torch.float64) / 70**0.5).to(dtype)
    bias = (torch.randn(150, generator=g, dtype=torch.float64) * 0.3 + 0.4).to(dtype)
    beta = (torch.rand(150, generator=g, dtype=torch.float64) * 0.4 + 0.5).to(dtype)
    leaves = [t.requires_grad_(True) for t in (x, weight, bias, beta)]
    spk, mem = snnkernels.linear_lif(x, weight, bias, beta, 1.0, sparse=sparse,
                                     reset_delay=bool(i % 2))
    w = torch.randn(spk.shape, generator=g, dtype=torch.float64).to(dtype)
    grads = torch.autograd.grad((spk * w).sum() + 0.3 * (mem * w).sum(), leaves)
    return [spk.detach(), mem.detach(), *grads]


WORKLOADS = {
    "lif-dense": lambda i: lif_call(i),
    "lif-topk": lambda i: lif_call(i, sp.TopK(k=7, temporal=bool(i % 2))),
    "linear_lif-topk": lambda i: linear_call(i, sp.TopK(fraction=0.1)),
    "linear_lif-window": lambda i: linear_call(i, sp.ActiveWindow(0.3)),
}


def test_concurrent_calls_give_the_sequential_bits():
    sequential = {(name, i): fn(i) for name, fn in WORKLOADS.items() for i in range(CALLS)}
    start = threading.Barrier(THREADS)
    errors, mismatches = [], []

    def worker(k: int):
        try:
            start.wait()
            for j in range(CALLS):
                i = (j + 13 * k) % CALLS  # each thread in another order
                for name, fn in WORKLOADS.items():
                    got = fn(i)
                    want = sequential[(name, i)]
                    if not all(torch.equal(a, b) for a, b in zip(got, want)):
                        mismatches.append((k, name, i))
        except BaseException as e:  # noqa: BLE001  (re-raised in the main thread)
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
        assert not t.is_alive(), "a worker thread hung"
    if errors:
        raise errors[0]
    assert not mismatches, f"{len(mismatches)} concurrent calls differ, e.g. {mismatches[:5]}"


@pytest.mark.parametrize("threads", [1, 2])
def test_concurrent_calls_with_intra_op_threads(restore_num_threads, threads):
    """The same with torch's intra-op thread count pinned (1: no parallel regions; 2: each
    call's parallel_for splits its work while other Python threads run theirs)."""
    torch.set_num_threads(threads)
    want = {i: WORKLOADS["linear_lif-topk"](i) for i in range(8)}
    results = {}

    def worker(i):
        results[i] = [WORKLOADS["linear_lif-topk"](i) for _ in range(5)]

    pool = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in pool:
        t.start()
    for t in pool:
        t.join(timeout=120)
    for i, runs in results.items():
        for got in runs:
            assert all(torch.equal(a, b) for a, b in zip(got, want[i])), f"call {i}"
    assert len(results) == 8
