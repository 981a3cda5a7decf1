"""snnkernels.lif(..., sparse=...): the masks of snnkernels.sparse applied inside the fused
backward, against the reference (snnkernels.reference.lif with the same mask), plus the
properties the issue names: k = N is dense, k = 1 works, a huge ActiveWindow is dense with a
leak-only recursion, same bits twice and for any thread count, and the compact outputs."""

from __future__ import annotations

import pytest
import torch

import snnkernels
from snnkernels import reference
from snnkernels import sparse as sp
from snnkernels import surrogate as S

from helpers import (FORWARD_TOL, GRAD_TOL, RESETS, SURROGATES, ParamMode, assert_results_match,
                     assert_same_bits, make_case, run_lif)

SHAPE = (8, 4, 40)  # [T, B, N]
SPECS = [
    pytest.param(sp.TopK(k=5), id="topk5"),
    pytest.param(sp.TopK(fraction=0.1), id="topk-frac0.1"),
    pytest.param(sp.TopK(k=5, temporal=True), id="topk5-temporal"),
    pytest.param(sp.ActiveWindow(0.2), id="window0.2"),
    pytest.param(sp.ActiveWindow(0.5), id="window0.5"),
]
CPU_DTYPES = pytest.mark.parametrize("dtype", [torch.float64, torch.float32],
                                     ids=["float64", "float32"])


def check(case, dtype, **kwargs):
    actual = run_lif(snnkernels.lif, case, **kwargs)
    expected = run_lif(reference.lif, case, **kwargs)
    assert_results_match(actual, expected, FORWARD_TOL[dtype], GRAD_TOL[dtype])
    if dtype == torch.float64:  # the mask itself: the same entries survive
        assert torch.equal(actual.grads["x"] != 0, expected.grads["x"] != 0), "masks differ"
    return actual, expected


@CPU_DTYPES
@pytest.mark.parametrize("reset_delay", [True, False])
@pytest.mark.parametrize("reset_mechanism", RESETS)
@pytest.mark.parametrize("spec", SPECS)
def test_matches_reference(spec, reset_mechanism, reset_delay, dtype):
    case = make_case(SHAPE, ParamMode("per_neuron", True), dtype, seed=3)
    actual, _ = check(case, dtype, sparse=spec, reset_mechanism=reset_mechanism,
                      reset_delay=reset_delay)
    kept = (actual.grads["x"] != 0).double().mean().item()
    assert 0 < kept < 0.9, f"mask kept {kept:.0%}: weak test"


@pytest.mark.parametrize("spec", [SPECS[0], SPECS[2], SPECS[3]])
@pytest.mark.parametrize("surrogate", SURROGATES)
def test_every_surrogate(surrogate, spec):
    case = make_case(SHAPE, ParamMode("mixed", True), torch.float64, seed=4)
    check(case, torch.float64, sparse=spec, surrogate=surrogate, reset_delay=False)


@pytest.mark.parametrize("temporal", [False, True])
@pytest.mark.parametrize("reset_delay", [True, False])
def test_k_equal_n_is_dense(reset_delay, temporal):
    case = make_case(SHAPE, ParamMode("per_element", True), torch.float64, seed=5)
    dense = run_lif(snnkernels.lif, case, reset_delay=reset_delay)
    for spec in (sp.TopK(k=SHAPE[-1], temporal=temporal), sp.TopK(fraction=1.0, temporal=temporal)):
        assert_same_bits(run_lif(snnkernels.lif, case, reset_delay=reset_delay, sparse=spec), dense,
                         f"{spec}")


@pytest.mark.parametrize("temporal", [False, True])
def test_k_one(temporal):
    case = make_case(SHAPE, ParamMode("float", False), torch.float64, seed=6)
    actual, _ = check(case, torch.float64, sparse=sp.TopK(k=1, temporal=temporal))
    per_row = (actual.grads["x"] != 0).sum(-1)
    assert per_row.max() == 1 and per_row.sum() > 0


@pytest.mark.parametrize("reset_mechanism", RESETS)
def test_huge_window_is_dense_with_leak_only_recursion(reset_mechanism):
    case = make_case(SHAPE, ParamMode("per_neuron", True), torch.float64, seed=7)
    huge = sp.ActiveWindow(1e30)
    # reset_delay=True: the reset is detached anyway, so this is exactly the dense backward.
    assert_same_bits(run_lif(snnkernels.lif, case, reset_mechanism=reset_mechanism, sparse=huge),
                     run_lif(snnkernels.lif, case, reset_mechanism=reset_mechanism), "delay")
    # reset_delay=False: dense BPTT with the same-step reset detached (the reference's spelling),
    # which differs from the exact dense gradient.
    kwargs = dict(reset_mechanism=reset_mechanism, reset_delay=False)
    actual, _ = check(case, torch.float64, sparse=huge, **kwargs)
    assert (actual.grads["x"] != 0).all()
    if reset_mechanism != "none":
        exact = run_lif(snnkernels.lif, case, **kwargs)
        assert not torch.allclose(actual.grads["x"], exact.grads["x"])


def det_case(dtype):
    return make_case((6, 16, 300), ParamMode("mixed", True), dtype, seed=8)  # M = 4800


@pytest.mark.parametrize("spec", SPECS)
@CPU_DTYPES
def test_same_bits_twice_and_for_any_thread_count(restore_num_threads, dtype, spec):
    case = det_case(dtype)
    kwargs = dict(sparse=spec, reset_delay=False, surrogate=S.fast_sigmoid(slope=5))
    results = {}
    for threads in sorted({1, 2, restore_num_threads}):
        torch.set_num_threads(threads)
        results[threads] = run_lif(snnkernels.lif, case, **kwargs)
    results["again"] = run_lif(snnkernels.lif, case, **kwargs)
    for name, result in results.items():
        assert_same_bits(result, results[1], f"{name} vs 1 thread")


def backward_op_args(mask, k=0, width=0.0, temporal=False, compact=False, dtype=torch.float64):
    """Direct lif_backward_masked arguments for x [T, B, N] = SHAPE, N the row."""
    g = torch.Generator().manual_seed(9)
    t, b, n = SHAPE
    x = torch.randn(t, b * n, generator=g, dtype=dtype) * 0.8 + 0.45
    one = lambda v: torch.full((1,), v, dtype=dtype)  # noqa: E731
    beta, thr, graded = one(0.8), one(1.0), one(1.0)
    sg = S.atan()
    _, mem, pre = torch.ops.snnkernels.lif_forward(x, None, beta, thr, graded, sg.kind,
                                                    *sg.constants(), 0, True)
    gs = torch.randn(t, b * n, generator=g, dtype=dtype)
    return (gs, None, mem, pre, None, beta, thr, graded, sg.kind, *sg.constants(), 0, True, False,
            mask, n, k, width, temporal, compact)


@pytest.mark.parametrize("temporal", [False, True])
def test_topk_compact_is_the_dense_mask_in_ell(temporal):
    op = torch.ops.snnkernels.lif_backward_masked
    dense = op(*backward_op_args(1, k=4, temporal=temporal))
    compact = op(*backward_op_args(1, k=4, temporal=temporal, compact=True))
    values, indices, row_ptr = compact[5:]
    rows = SHAPE[0] * SHAPE[1]
    assert values.shape == (rows, 4) and indices.shape == (rows, 4)
    assert indices.dtype == torch.int32 and row_ptr.numel() == 0 and compact[0].numel() == 0
    assert (indices[:, 1:] > indices[:, :-1]).all(), "indices ascend within a row"
    scattered = torch.zeros(rows, SHAPE[2], dtype=values.dtype)
    scattered.scatter_(1, indices.long(), values)
    assert torch.equal(scattered.view_as(dense[0]), dense[0])
    for a, b in zip(compact[1:5], dense[1:5]):
        assert torch.equal(a, b)


def test_window_compact_is_the_active_set_in_csr():
    op = torch.ops.snnkernels.lif_backward_masked
    args = backward_op_args(2, width=0.3)
    dense = op(*args)
    values, indices, row_ptr = op(*backward_op_args(2, width=0.3, compact=True))[5:]
    mem = args[2]
    active = ((mem - 1.0).abs() < 0.3).view(-1, SHAPE[2])
    assert torch.equal(row_ptr[1:] - row_ptr[:-1], active.sum(1))
    rows = torch.repeat_interleave(torch.arange(active.shape[0]), row_ptr[1:] - row_ptr[:-1])
    assert torch.equal(active.nonzero(), torch.stack([rows, indices.long()], 1))
    scattered = torch.zeros_like(active, dtype=values.dtype)
    scattered[rows, indices.long()] = values
    assert torch.equal(scattered.view_as(dense[0]), dense[0])


def test_sparse_none_is_the_dense_op():
    case = make_case(SHAPE, ParamMode("per_neuron", True), torch.float64, seed=10)
    assert_same_bits(run_lif(snnkernels.lif, case, sparse=None), run_lif(snnkernels.lif, case))


def test_opcheck_masked_ops():
    args = list(backward_op_args(1, k=4))
    for compact in (False, True):
        args[-1] = compact
        torch.library.opcheck(torch.ops.snnkernels.lif_backward_masked.default, tuple(args))
    t, b, n = SHAPE
    g = torch.Generator().manual_seed(11)
    x = (torch.randn(t, b * n, generator=g, dtype=torch.float64) + 0.5).requires_grad_()
    mem0 = torch.randn(b * n, generator=g, dtype=torch.float64).requires_grad_()
    p = lambda v: torch.full((n,), v, dtype=torch.float64, requires_grad=True)  # noqa: E731
    sg = S.fast_sigmoid(slope=4)
    for mask in ((1, n, 3, 0.0, False), (1, n, 3, 0.0, True), (2, n, 0, 0.3, False)):
        torch.library.opcheck(torch.ops.snnkernels.lif_forward_masked.default,
                              (x, mem0, p(0.8), p(1.0), p(1.0), sg.kind, *sg.constants(), 0,
                               False, *mask))


def test_window_compact_opcheck():
    # The CSR size is data-dependent: the fake implementation returns an unbacked size.
    torch.library.opcheck(torch.ops.snnkernels.lif_backward_masked.default,
                          backward_op_args(2, width=0.3, compact=True),
                          test_utils=("test_schema", "test_faketensor"))
