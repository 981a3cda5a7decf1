"""Large tensors: 64-bit indexing, and clear errors where a 32-bit index remains.

Audit (csrc/, at the time of writing): the CPU kernels (lif_cpu.cpp,
linear_sparse_cpu.cpp, lif_cpu_common.h) and the CUDA kernels (lif_cuda.cu) compute every
element offset as int64_t (t * M + n, r * k + j, row * F + f; CUDA: int64_t(blockIdx.x) *
kThreads + threadIdx.x). Three int32 indices remain, all in the sparse path, each now guarded
before any kernel runs (snnkernels.sparse.MAX_ROW / MAX_ROWS) and at the op boundary:
- a neuron's index within its row (TopK selection, ELL and CSR indices): at most 2^31 neurons
  in a row (x.shape[-1], or linear_lif's N) — ValueError in snnkernels.sparse.resolve, and a
  TORCH_CHECK in lif_backward_masked;
- linear_lif's sparse synaptic backward indexes the T * B rows with int32: at most 2^31 - 1
  rows — ValueError in snnkernels.linear_lif (before the forward), and the existing TORCH_CHECK
  in linear_sparse_backward.
(CUDA grid sizes are unsigned: ceil(M / 256) blocks, which would need M > 2^39 neurons per time
step to overflow, i.e. over 2 TiB per step; not reachable.)

The fast tests use tensors with a zero-size dim, so dims beyond 2^31 cost no memory. The real
size test (T * M > 2^31 elements, forward and backward) is marked `large` and skipped unless
SNNKERNELS_LARGE_TESTS=1: float32 needs 8 GiB per [T, M] tensor and the test holds four
(x, spk, mem, grad_x), so it wants about 40 GiB of free memory (a GPU with 40 GB for cuda).
"""

from __future__ import annotations

import os

import pytest
import torch

import snnkernels
from snnkernels import sparse as sp

BIG = 2**31 + 5          # just over the int32 range
HUGE = 2**40

@pytest.mark.parametrize("shape", [(HUGE, 0), (0, HUGE), (BIG, 0, 3), (0, 3, BIG), (2, 0, BIG)],
                         ids=["T-2^40", "M-2^40", "T-2^31", "N-2^31", "B-0-N-2^31"])
def test_dims_beyond_int32_without_elements(shape):
    """Sizes beyond int32 pass through the Python wrapper, the op and autograd untruncated.
    (The backward is run where the neuron count M = prod(x.shape[1:]) is small: it allocates
    per-neuron [M] buffers, e.g. the initial membrane's gradient, even for T = 0.)"""
    x = torch.empty(shape, requires_grad=True)
    beta = torch.full(shape[-1:], 0.9, requires_grad=True) if shape[-1] < 2**31 else 0.9
    spk, mem = snnkernels.lif(x, beta)
    assert spk.shape == mem.shape == x.shape
    if shape[0] > 0:  # M = 0 here
        (spk.sum() + mem.sum()).backward()
        assert x.grad.shape == x.shape


def test_linear_lif_rows_beyond_int32_dense():
    """Dense linear_lif has no row limit: T * B = 2^31 rows (zero features and neurons)."""
    x = torch.empty(2**16, 2**15, 0, requires_grad=True)
    spk, mem = snnkernels.linear_lif(x, torch.empty(0, 0), None, 0.9)
    assert spk.shape == (2**16, 2**15, 0)
    spk.sum().backward()


@pytest.mark.parametrize("spec", [sp.TopK(k=1), sp.TopK(fraction=0.1, temporal=True),
                                  sp.ActiveWindow(0.2)], ids=["topk", "topk-temporal", "window"])
def test_sparse_row_limit(spec):
    """2^31 neurons in a row is the most the int32 indices address: accepted; one more is a
    ValueError that names the row and the limit, from lif and linear_lif alike."""
    for n in (2**31, 2**31 - 1):
        spk, _ = snnkernels.lif(torch.empty(0, 2, n), 0.9, sparse=spec)
        assert spk.shape == (0, 2, n)
    for n in (2**31 + 1, HUGE):
        with pytest.raises(ValueError, match=rf"a row of {n} neurons .*int32.*at most 2\^31"):
            snnkernels.lif(torch.empty(0, 2, n), 0.9, sparse=spec)
    with pytest.raises(ValueError, match=r"a row of 2147483649 neurons .*linear_lif's N"):
        snnkernels.linear_lif(torch.empty(0, 2, 0), torch.empty(2**31 + 1, 0), None, 0.9,
                              sparse=spec)


@pytest.mark.parametrize("spec", [sp.TopK(k=1), sp.ActiveWindow(0.2)], ids=["topk", "window"])
def test_sparse_linear_lif_rows_limit(spec):
    """linear_lif with sparse=: at most 2^31 - 1 rows (T * B), checked before the forward (the
    GEMM would otherwise run first); exactly 2^31 - 1 is accepted."""
    ok = torch.empty(2**31 - 1, 1, 0, requires_grad=True)
    spk, _ = snnkernels.linear_lif(ok, torch.empty(0, 0), None, 0.9, sparse=spec)
    spk.sum().backward()
    assert ok.grad.shape == ok.shape
    for shape in ((2**16, 2**15, 0), (1, 2**31, 0), (HUGE, 1, 0)):
        # N = 3 neurons: a forward before the check would allocate T * B * 3 floats
        with pytest.raises(ValueError, match=r"T \* B = \d+ rows.*int32.*at most 2\^31 - 1"):
            snnkernels.linear_lif(torch.empty(shape), torch.empty(3, 0), None, 0.9, sparse=spec)


def test_op_boundary_checks_of_int32_indices():
    """Direct torch.ops callers get the same limits as TORCH_CHECK errors (zero time steps, so
    the [0, M] tensors are empty; the checks come before the [M] buffers are allocated)."""
    one = torch.ones(1)
    mem = torch.empty(0, 2**31 + 2)
    with pytest.raises(RuntimeError, match=r"row \(neurons per row\) must be at most 2\^31"):
        torch.ops.snnkernels.lif_backward_masked(None, None, mem, mem, None, one, one, one, 0,
                                                 1.0, 1.0, 0, True, False, 1, 2**31 + 2, 1, 0.0,
                                                 False, False)
    values = torch.empty(0, 1)
    with pytest.raises(RuntimeError, match=r"at most 2\^31 - 1 rows"):
        torch.ops.snnkernels.linear_sparse_backward(
            values, torch.empty(0, 1, dtype=torch.int32), torch.empty(0, dtype=torch.int64),
            torch.empty(2**31, 0), torch.empty(3, 0), True, True, True)


@pytest.mark.large
@pytest.mark.skipif(os.environ.get("SNNKERNELS_LARGE_TESTS") != "1",
                    reason="needs ~40 GiB of memory (GPU memory for cuda): "
                           "set SNNKERNELS_LARGE_TESTS=1")
@pytest.mark.parametrize("reset_delay", [True, False])
def test_lif_beyond_2_31_elements(device, reset_delay):
    """T * M = 2^31 + 128 float32 elements: forward and backward. Neurons are independent, so
    the first and the last 128 neurons (the last ones lie past element 2^31) must equal the op
    run on those neurons alone; the debug poison (conftest) turns an element a kernel forgot to
    write into NaN."""
    steps, m = 2, 2**30 + 64
    kinds = torch.arange(7, dtype=torch.float32, device=device) * 0.7   # 7 kinds of neuron
    pattern = kinds.repeat((m + 6) // 7)[:m]
    x = pattern.expand(steps, m).contiguous().requires_grad_(True)
    del pattern
    spk, mem = snnkernels.lif(x, 0.8, reset_delay=reset_delay)
    for part in (slice(0, 128), slice(m - 128, m)):
        x_part = x.detach()[:, part].clone().requires_grad_(True)
        spk_p, mem_p = snnkernels.lif(x_part, 0.8, reset_delay=reset_delay)
        assert torch.equal(spk[:, part], spk_p) and torch.equal(mem[:, part], mem_p)
        assert spk_p.any(), "weak test: no spikes"
    assert not mem[-1].isnan().any() and not spk[-1].isnan().any()
    del mem
    spk.sum().backward()
    x_tail = x.detach()[:, m - 128:].clone().requires_grad_(True)
    snnkernels.lif(x_tail, 0.8, reset_delay=reset_delay)[0].sum().backward()
    assert torch.equal(x.grad[:, m - 128:], x_tail.grad)
    assert not x.grad[-1].isnan().any()
