"""TopK's row selection in the CPU masked backward, on rows built to be hard: many ties, all
equal, NaN, -0.0, candidate sets larger than the AVX-512 pick handles (its fallback), wide rows
and k from 1 to N - 1. With T = 1, reset_delay, no reset, the straight-through surrogate and no
membrane gradient, the current gradient g_h equals grad_spk, so a row's selection can be set
exactly. Expected: the k largest |v| (NaN ranks as +inf), ties to the lower index.

The float32 selection has an AVX-512 path and a portable one (SNNKERNELS_PORTABLE=1); the
same checks run in a subprocess with the portable path, and both must give the same bits."""

from __future__ import annotations

import pytest
import torch

from snnkernels import reference
from snnkernels import surrogate as S

from helpers import run_portable

ROWS_SEED = 11


def hard_rows(n: int, dtype: torch.dtype) -> torch.Tensor:
    """[rows, n] rows of several kinds, each a few times."""
    g = torch.Generator().manual_seed(ROWS_SEED + n)
    rows = [
        torch.randn(n, generator=g),  # generic
        torch.randint(-2, 3, (n,), generator=g).float(),  # five values: ties everywhere
        torch.full((n,), 0.5),  # all equal
        torch.randn(n, generator=g) * (torch.rand(n, generator=g) < 0.05),  # mostly zeros
        torch.randn(n, generator=g).abs().sort().values,  # ascending: the top at the end
        torch.where(torch.rand(n, generator=g) < 0.5, 1.0, -1.0),  # +-1: ties across signs
    ]
    spiky = torch.randn(n, generator=g)
    spiky[torch.randint(0, n, (3,), generator=g)] = float("nan")
    rows.append(spiky)
    signed_zero = torch.zeros(n)
    signed_zero[::2] = -0.0
    signed_zero[torch.randint(0, n, (2,), generator=g)] = 1e-30
    rows.append(signed_zero)
    return torch.stack(rows).to(dtype)


def expected_indices(rows: torch.Tensor, k: int) -> torch.Tensor:
    """Ascending indices of the k largest |v| per row (NaN first, ties to the lower index)."""
    key = rows.abs().double().nan_to_num(nan=float("inf"))
    order = torch.sort(-key, dim=1, stable=True).indices[:, :k]
    return order.sort(dim=1).values.to(torch.int32)


def select(rows: torch.Tensor, k: int):
    """The masked backward's compact output (ELL values and indices) for rows as g_h."""
    n = rows.shape[1]
    m = rows.numel()
    dtype = rows.dtype
    sg = S.straight_through_estimator()
    mem = torch.zeros(1, m, dtype=dtype)
    one = torch.ones(1, dtype=dtype)
    out = torch.ops.snnkernels.lif_backward_masked(
        rows.reshape(1, m), None, mem, torch.empty(0, dtype=dtype), None, one * 0.9, one, one,
        sg.kind, *sg.constants(), 2, True, False, 1, n, k, 0.0, False, True)
    return out[5], out[6]


CASES = [(n, k) for n in (17, 40, 1024, 1000) for k in (1, 2, 10, n // 3, n - 1)]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("n,k", CASES)
def test_selection_is_the_stable_topk(n, k, dtype):
    rows = hard_rows(n, dtype)
    values, indices = select(rows, k)
    expected = expected_indices(rows, k)
    assert torch.equal(indices, expected), "other entries kept"
    kept = rows.gather(1, expected.long())
    assert torch.equal(values.nan_to_num(nan=7.0), kept.nan_to_num(nan=7.0))


def test_portable_path_gives_the_same_bits(tmp_path):
    """The selection with SNNKERNELS_PORTABLE=1 (a subprocess) equals this process's."""
    portable = run_portable(tmp_path, "test_topk_selection",
                            "[select(hard_rows(n, d), k) for d in (torch.float32, torch.float64)"
                            " for n, k in CASES]")
    here = [select(hard_rows(n, d), k) for d in (torch.float32, torch.float64) for n, k in CASES]
    assert len(portable) == len(here)
    for (pv, pi), (hv, hi) in zip(portable, here):
        assert torch.equal(pi, hi)
        assert torch.equal(pv.view(-1).nan_to_num(nan=7.0), hv.view(-1).nan_to_num(nan=7.0))

@pytest.mark.parametrize("k", [1, 5, 16, 17])
def test_reference_topk_keep_is_the_stable_topk(k):
    rows = hard_rows(17, torch.float64)
    kept = reference.topk_keep(rows, k)
    assert torch.equal(kept.nonzero()[:, 1].view(-1, k).to(torch.int32),
                       expected_indices(rows, k))


@pytest.mark.parametrize("grad, k, exc, text", [
    (torch.randn(2, 4), 0, ValueError, r"k must be in \[1, N\] with N = grad.shape\[-1\] = 4, "
                                       r"got 0"),
    (torch.randn(2, 4), 5, ValueError, r"k must be in \[1, N\] .* got 5"),
    (torch.randn(2, 4), -1, ValueError, r"k must be in \[1, N\] .* got -1"),
    (torch.randn(2, 4), True, TypeError, r"k must be an int, got bool"),
    (torch.randn(2, 4), 2.0, TypeError, r"k must be an int, got float"),
    (torch.tensor(1.0), 1, ValueError, r"grad must be at least 1-dim"),
    (torch.ones(4, dtype=torch.long), 1, TypeError, r"grad must be a floating-point tensor, "
                                                    r"got dtype torch.int64"),
    ([1.0, 2.0], 1, TypeError, r"grad must be a floating-point tensor, got list"),
], ids=["k-0", "k-above-N", "k-negative", "k-bool", "k-float", "grad-0-dim", "grad-int",
        "grad-list"])
def test_reference_topk_keep_bad_arguments(grad, k, exc, text):
    with pytest.raises(exc, match=r"topk_keep: " + text):
        reference.topk_keep(grad, k)
