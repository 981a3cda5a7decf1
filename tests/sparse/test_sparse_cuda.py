"""The sparse-gradient path on CUDA (csrc/cuda/lif_masked_cuda.cu, csrc/cuda/linear_sparse_cuda.cu)
against the CPU kernels, which tests/sparse/test_sparse_lif.py and tests/ops/test_linear_lif.py check
against the reference.

Tolerances: with the default ATan surrogate (no exp) the CUDA kernels do the CPU's arithmetic
in the CPU's order (nvcc --fmad=false, the CPU build -ffp-contract=off), so for the same inputs
the masked dL/dx, the compact forms (values, indices, row_ptr), grad_mem0 and the sparse
synaptic backward are compared bit for bit. The parameter gradients are summed over neurons in a
different fixed order on each device (column_sums vs reduce_periodic, both in double): compared
with a tolerance of a few ulps. The half types are computed in float32 from the same rounded
inputs, so they equal the CPU's float32 result rounded once. End to end through lif / linear_lif
(where CPU and CUDA GEMMs or the forward differ in the last bits): the reference tolerances.

Every test skips (with tests/conftest.py's reason) without a GPU or in a build without CUDA;
benchmarks/gpu_check.sh runs them on a GPU machine.
"""

from __future__ import annotations

import pytest
import torch

import snnkernels
from snnkernels import sparse as sp
from snnkernels import surrogate as S

from conftest import CUDA_SKIP

pytestmark = pytest.mark.skipif(CUDA_SKIP is not None, reason=CUDA_SKIP or "")

OP = torch.ops.snnkernels
device = "cuda"  # every test here compares CUDA with the CPU
MASKS = [
    pytest.param(dict(mask=1, k=5, temporal=False), id="topk5"),
    pytest.param(dict(mask=1, k=5, temporal=True), id="topk5-temporal"),
    pytest.param(dict(mask=1, k=1, temporal=False), id="topk1"),
    pytest.param(dict(mask=1, k=1, temporal=True), id="topk1-temporal"),
    pytest.param(dict(mask=1, k=40, temporal=False), id="topk-all"),
    pytest.param(dict(mask=1, k=40, temporal=True), id="topk-all-temporal"),
    pytest.param(dict(mask=2, width=0.3), id="window0.3"),
]
RESETS = [(0, True), (0, False), (1, True), (1, False), (2, True)]


def to(args, device, dtype=None):
    out = []
    for a in args:
        if isinstance(a, torch.Tensor):
            a = a.to(device)
            if dtype is not None and a.is_floating_point():
                a = a.to(dtype)
        out.append(a)
    return out


def masked_args(shape=(8, 4, 40), *, mask, k=0, width=0.0, temporal=False, compact=False,
                reset=0, reset_delay=True, dtype=torch.float64, seed=0, per_neuron=True,
                surrogate=None, grad_mem=True, mem0=True):
    """lif_backward_masked's arguments on the CPU: a forward of random currents, random upstream
    gradients. Parameters in the accumulation type."""
    t, b, n = shape
    m = b * n
    g = torch.Generator().manual_seed(seed)
    acc = torch.float64 if dtype == torch.float64 else torch.float32
    x = (torch.rand(t, m, generator=g, dtype=torch.float64) * 1.2).to(dtype)
    p = n if per_neuron else 1
    beta = (0.5 + 0.5 * torch.rand(p, generator=g, dtype=torch.float64)).to(acc)
    thr = (0.8 + 0.4 * torch.rand(p, generator=g, dtype=torch.float64)).to(acc)
    graded = torch.ones(1, dtype=acc)
    m0 = (torch.rand(m, generator=g, dtype=torch.float64) * 0.5).to(dtype) if mem0 else None
    sg = surrogate or S.atan()
    _, mem, pre = OP.lif_forward(x, m0, beta, thr, graded, sg.kind, *sg.constants(), reset,
                                 reset_delay)
    gs = torch.randn(t, m, generator=g, dtype=torch.float64).to(dtype)
    gm = torch.randn(t, m, generator=g, dtype=torch.float64).to(dtype) if grad_mem else None
    return [gs, gm, mem, pre, m0, beta, thr, graded, sg.kind, *sg.constants(), reset,
            reset_delay, True, mask, max(n, 1), k, width, temporal, compact]


def assert_outputs_equal(actual, expected, param_rtol):
    names = ["grad_x", "grad_mem0", "grad_beta", "grad_thr", "grad_graded", "values", "indices",
             "row_ptr"]
    for name, a, e in zip(names, actual, expected):
        a = a.cpu()
        assert a.shape == e.shape and a.dtype == e.dtype, (name, a.shape, e.shape)
        if name in ("grad_beta", "grad_thr", "grad_graded"):
            torch.testing.assert_close(a, e, rtol=param_rtol, atol=param_rtol, equal_nan=True,
                                       msg=name)
        else:
            assert torch.equal(a.isnan(), e.isnan()) if a.is_floating_point() else True, name
            assert torch.equal(a.nan_to_num(), e.nan_to_num()) if a.is_floating_point() else \
                torch.equal(a, e), f"{name} differs from the CPU"


@pytest.mark.parametrize("compact", [False, True])
@pytest.mark.parametrize("reset,reset_delay", RESETS)
@pytest.mark.parametrize("spec", MASKS)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_masked_backward_matches_cpu_bits(spec, reset, reset_delay, compact, dtype):
    args = masked_args(**spec, reset=reset, reset_delay=reset_delay, compact=compact, dtype=dtype)
    expected = OP.lif_backward_masked(*args)
    actual = OP.lif_backward_masked(*to(args, device))
    assert_outputs_equal(actual, expected, 1e-12 if dtype == torch.float64 else 1e-5)


@pytest.mark.parametrize("spec", MASKS)
@pytest.mark.parametrize("half", [torch.float16, torch.bfloat16])
def test_half_types_are_the_float32_result_rounded(spec, half):
    """CUDA computes the half types in float32 from the rounded saved tensors: the CPU float32
    kernel on the same (rounded, then widened) inputs gives the same result before its rounding."""
    args = masked_args(**spec, compact=True, dtype=torch.float32)
    rounded = to(args, "cpu", half)  # the half inputs ...
    params = [5, 6, 7]  # ... but parameters stay float32 (the accumulation type)
    for i in params:
        rounded[i] = args[i]
    widened = to(rounded, "cpu", torch.float32)
    for i in params:
        widened[i] = args[i]
    expected = list(OP.lif_backward_masked(*widened))
    for i in (0, 1, 5):  # grad_x, grad_mem0, values: rounded once to the half type
        expected[i] = expected[i].to(half)
    actual = OP.lif_backward_masked(*[a.to(device) if isinstance(a, torch.Tensor) else a
                                      for a in rounded])
    assert_outputs_equal(actual, expected, 1e-5)


@pytest.mark.parametrize("surrogate", [S.sigmoid(), S.spike_rate_escape(), S.fast_sigmoid()],
                         ids=["sigmoid", "spike_rate_escape", "fast_sigmoid"])
def test_exp_surrogates_match_cpu_closely(surrogate):
    """expf / exp round differently on the GPU in the last bit: close, and (float64) the same
    TopK entries survive."""
    for spec in (dict(mask=1, k=5), dict(mask=1, k=5, temporal=True), dict(mask=2, width=0.3)):
        args = masked_args(**spec, surrogate=surrogate, dtype=torch.float64)
        expected = OP.lif_backward_masked(*args)
        actual = OP.lif_backward_masked(*to(args, device))
        torch.testing.assert_close(actual[0].cpu(), expected[0], rtol=1e-12, atol=1e-12)
        assert torch.equal(actual[0].cpu() != 0, expected[0] != 0)


def test_ties_nan_and_negative_zero_select_like_the_cpu():
    """Rows longer than a block (N = 1000 > 256 threads) full of ties: integer-valued upstream
    gradients with many equal magnitudes, NaN and -0.0; temporal and not, several k."""
    t, b, n = 3, 2, 1000
    g = torch.Generator().manual_seed(5)
    for k in (1, 7, 256, 257, 999, 1000):
        for temporal in (False, True):
            args = masked_args((t, b, n), mask=1, k=k, temporal=temporal, compact=True,
                               reset=2, dtype=torch.float32, grad_mem=True)
            # reset "none", reset_delay, beta = 0 and g_spk = 0: g_h = g_mem exactly, so the
            # upstream g_mem sets the magnitudes (ties, NaN, -0.0).
            gm = torch.randint(-3, 4, (t, b * n), generator=g).to(torch.float32)
            gm[0, :5] = float("nan")
            gm[1, 10:20] = -0.0
            args[0] = torch.zeros_like(gm)
            args[1] = gm
            args[4] = None
            args[5] = torch.zeros(1)  # beta = 0: no carry, g_h = g_mem exactly
            expected = OP.lif_backward_masked(*args)
            actual = OP.lif_backward_masked(*to(args, device))
            assert_outputs_equal(actual, expected, 1e-5)


@pytest.mark.parametrize("spec", MASKS)
@pytest.mark.parametrize("shape", [(0, 4, 40), (8, 0, 40), (8, 4, 0), (1, 1, 1)],
                         ids=["T0", "B0", "N0", "one"])
def test_empty_and_tiny(spec, shape):
    spec = dict(spec)
    if spec["mask"] == 1:
        spec["k"] = max(1, min(spec["k"], shape[2]))
    for compact in (False, True):
        args = masked_args(shape, **spec, compact=compact, per_neuron=False)
        expected = OP.lif_backward_masked(*args)
        actual = OP.lif_backward_masked(*to(args, device))
        assert_outputs_equal(actual, expected, 1e-12)


@pytest.mark.parametrize("spec", MASKS)
def test_same_bits_twice(spec):
    args = to(masked_args(**spec, compact=True, dtype=torch.float32), device)
    first, second = OP.lif_backward_masked(*args), OP.lif_backward_masked(*args)
    for a, b in zip(first, second):
        assert torch.equal(a, b)


def sparse_synaptic_args(kind, r=50, n=40, f=70, k=6, dtype=torch.float64, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(r, f, generator=g, dtype=torch.float64).to(dtype)
    w = torch.randn(n, f, generator=g, dtype=torch.float64).to(dtype)
    if kind == "ell":
        idx = torch.stack([torch.randperm(n, generator=g)[:k].sort().values for _ in range(r)])
        values = torch.randn(r, k, generator=g, dtype=torch.float64).to(dtype)
        row_ptr = torch.empty(0, dtype=torch.int64)
    else:
        active = torch.rand(r, n, generator=g) < 0.2
        active[min(3, r - 1)] = False  # an empty row
        counts = active.sum(1)
        row_ptr = torch.cat([torch.zeros(1, dtype=torch.int64), counts.cumsum(0)])
        idx = active.nonzero()[:, 1]
        values = torch.randn(idx.numel(), generator=g, dtype=torch.float64).to(dtype)
    return values, idx.to(torch.int32), row_ptr, x, w


@pytest.mark.parametrize("kind", ["ell", "csr"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("need", [(True, True, True), (True, False, False),
                                  (False, True, False), (False, False, True)],
                         ids=["all", "x", "weight", "bias"])
def test_sparse_synaptic_backward_matches_cpu_bits(kind, dtype, need):
    args = sparse_synaptic_args(kind, dtype=dtype)
    expected = OP.linear_sparse_backward(*args, *need)
    actual = OP.linear_sparse_backward(*to(args, device), *need)
    for a, e in zip(actual, expected):
        assert torch.equal(a.cpu(), e)


@pytest.mark.parametrize("half", [torch.float16, torch.bfloat16])
def test_sparse_synaptic_backward_half(half):
    args = sparse_synaptic_args("ell", dtype=torch.float32)
    rounded = [a.to(half) if a.is_floating_point() else a for a in args]
    widened = [a.float() if a.is_floating_point() else a for a in rounded]
    expected = OP.linear_sparse_backward(*widened, True, True, True)
    actual = OP.linear_sparse_backward(*to(rounded, device), True, True, True)
    for a, e in zip(actual, expected):
        assert torch.equal(a.cpu(), e.to(half))


@pytest.mark.parametrize("shape", [(0, 70), (50, 0)], ids=["R0", "F0"])
def test_sparse_synaptic_backward_empty(shape):
    for kind in ("ell", "csr"):
        r, f = shape
        values, idx, row_ptr, x, w = sparse_synaptic_args(kind, r=max(r, 1), f=max(f, 1))
        x = torch.zeros(r, f, dtype=x.dtype)
        w = torch.zeros(w.shape[0], f, dtype=w.dtype)
        if r == 0:
            values, idx = values[:0], idx[:0]
            row_ptr = torch.zeros(1, dtype=torch.int64) if kind == "csr" else row_ptr
        args = [values, idx, row_ptr, x, w]
        expected = OP.linear_sparse_backward(*args, True, True, True)
        actual = OP.linear_sparse_backward(*to(args, device), True, True, True)
        for a, e in zip(actual, expected):
            assert torch.equal(a.cpu(), e)


SPECS = [
    pytest.param(sp.TopK(k=5), id="topk5"),
    pytest.param(sp.TopK(k=5, temporal=True), id="topk5-temporal"),
    pytest.param(sp.ActiveWindow(0.3), id="window0.3"),
]


@pytest.mark.parametrize("spec", SPECS)
def test_lif_end_to_end_matches_cpu(spec):
    g = torch.Generator().manual_seed(3)
    x = torch.rand(8, 4, 40, generator=g, dtype=torch.float64) * 1.2
    beta = torch.full((40,), 0.8, dtype=torch.float64, requires_grad=True)
    grads = {}
    for dev in ("cpu", device):
        # detach(): on the CPU .to() returns the tensor itself, whose requires_grad_ would make
        # the CUDA copy a non-leaf
        xd = x.detach().to(dev).requires_grad_(True)
        bd = beta.detach().to(dev).requires_grad_(True)
        spk, mem = snnkernels.lif(xd, bd, sparse=spec)
        (spk.sum() + (mem * mem).sum()).backward()
        grads[str(dev)] = (xd.grad.cpu(), bd.grad.cpu())
    (gx_cpu, gb_cpu), (gx_cuda, gb_cuda) = grads["cpu"], grads[str(device)]
    torch.testing.assert_close(gx_cuda, gx_cpu, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(gb_cuda, gb_cpu, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("spec", SPECS)
def test_linear_lif_end_to_end_matches_cpu(spec):
    g = torch.Generator().manual_seed(4)
    x = torch.rand(6, 5, 30, generator=g, dtype=torch.float64)
    w = torch.randn(40, 30, generator=g, dtype=torch.float64) * 0.3
    b = torch.randn(40, generator=g, dtype=torch.float64) * 0.1
    grads = {}
    for dev in ("cpu", device):
        leaves = [t.detach().to(dev).requires_grad_(True) for t in (x, w, b)]
        spk, mem = snnkernels.linear_lif(*leaves, 0.9, sparse=spec)
        (spk.sum() + (mem * mem).sum()).backward()
        grads[str(dev)] = [t.grad.cpu() for t in leaves]
    for a, e in zip(grads[str(device)], grads["cpu"]):
        torch.testing.assert_close(a, e, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_linear_lif_sparse_runs_in_every_cuda_dtype(dtype):
    x = torch.rand(4, 3, 16, device=device, dtype=dtype, requires_grad=True)
    w = (torch.randn(32, 16, device=device) * 0.3).to(dtype).requires_grad_(True)
    for spec in (sp.TopK(k=4), sp.TopK(k=4, temporal=True), sp.ActiveWindow(0.3)):
        spk, mem = snnkernels.linear_lif(x, w, None, 0.9, sparse=spec)
        (spk.float().sum() + mem.float().pow(2).sum()).backward()
        assert x.grad.isfinite().all() and w.grad.isfinite().all()
        x.grad = w.grad = None
