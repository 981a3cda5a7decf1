"""Shapes and values at the edges: T = 1, odd and prime sizes, sizes around the CPU kernel's
chunk of 256 neurons, multi-dim batches, non-contiguous inputs, empty tensors, NaN, and the
strict > of the spike at U == threshold. Compared with the reference (helpers.check_against_
reference; tolerances in helpers.py)."""

from __future__ import annotations

import pytest
import torch

import snnkernels
from snnkernels import reference
from snnkernels import surrogate as S
from snnkernels.sparse import ActiveWindow, TopK

from helpers import (FORWARD_TOL, GRAD_TOL, RESETS, Case, ParamMode, assert_close,
                     assert_same_bits, check_against_reference, make_case, run_lif)

PER_NEURON = ParamMode("per_neuron", True)
PER_ELEMENT = ParamMode("per_element", True)

# (shape, whether the shape is big enough for the spiking-regime guard)
SHAPES = [
    pytest.param((1, 3, 4), False, id="T1"),
    pytest.param((1, 1, 1), False, id="T1-B1-N1"),
    pytest.param((3, 5, 7), True, id="T3-B5-N7"),
    pytest.param((2, 1, 257), True, id="N257"),          # one full chunk + 1 neuron
    pytest.param((3, 2, 1000), True, id="N1000"),        # M = 2000: chunks, last one partial
    pytest.param((4, 3, 255), True, id="N255-M765"),     # neurons straddle chunk boundaries
    pytest.param((5, 300), True, id="2d-x"),             # x [T, N]
    pytest.param((13,), True, id="1d-x"),                # x [T]: one neuron, batch ()
]


@pytest.mark.parametrize("upstream", ["weighted_both", "both_sum"])
@pytest.mark.parametrize("mode", [PER_NEURON, PER_ELEMENT], ids=["per_neuron", "per_element"])
@pytest.mark.parametrize("reset_delay", [True, False])
@pytest.mark.parametrize("shape, regime", SHAPES)
def test_sizes(device, dtype, shape, regime, reset_delay, mode, upstream):
    """both_sum: the broadcast upstream gradient also when it is a single element (T=1, M=1)."""
    case = make_case(shape, mode, dtype, device, seed=len(shape) + shape[-1])
    check_against_reference(case, dtype, str(shape), regime=regime, surrogate=S.sigmoid(slope=5),
                            reset_mechanism="subtract", reset_delay=reset_delay,
                            upstream=upstream)


@pytest.mark.parametrize("reset_mechanism", RESETS)
def test_multi_dim_batch(device, dtype, reset_mechanism):
    """x [T, B, C, N] with parameters over the trailing dims ([C, N], [N]), over non-trailing
    dims ([B, 1, N]: broadcast, expanded per element) and 0-dim."""
    t, b, c, n = 4, 2, 3, 5
    base = make_case((t, b, c, n), ParamMode("per_element", True), dtype, device, seed=21)
    case = Case(x=base.x,
                beta=base.beta[0].detach().clone().requires_grad_(True),              # [C, N]
                threshold=base.threshold[0, 0].detach().clone().requires_grad_(True),  # [N]
                mem0=base.mem0[:, :1].detach().clone().requires_grad_(True),           # [B, 1, N]
                graded_spikes_factor=base.graded_spikes_factor[0, 0, 0].detach().clone()
                .requires_grad_(True))                                               # 0-dim
    check_against_reference(case, dtype, "[T, B, C, N]", reset_mechanism=reset_mechanism,
                            reset_delay=False)


def non_contiguous_views(x: torch.Tensor) -> dict:
    """Views of other strides holding x's values (x: [T, B, N])."""
    t, b, n = x.shape
    wide = torch.zeros(t, b, 2 * n, dtype=x.dtype, device=x.device)
    wide[:, :, ::2] = x
    return {
        "transposed": x.transpose(0, 1).contiguous().transpose(0, 1),  # strides (N, T*N, 1)
        "sliced": wide[:, :, ::2],                                     # stride 2 in N
        "neuron-major": x.permute(2, 0, 1).contiguous().permute(1, 2, 0),
    }


@pytest.mark.parametrize("layout", ["transposed", "sliced", "neuron-major"])
def test_non_contiguous_input(device, dtype, layout):
    """A non-contiguous x (and non-contiguous parameters / mem0) is accepted and gives the
    same bits as its contiguous copy, for outputs and gradients."""
    case = make_case((6, 4, 300), ParamMode("per_element", True), dtype, device, seed=4)
    x_view = non_contiguous_views(case.x.detach())[layout]
    assert not x_view.is_contiguous() and torch.equal(x_view, case.x.detach())
    beta = torch.stack([case.beta.detach(), case.beta.detach()], dim=-1)[..., 0]
    assert not beta.is_contiguous()
    strided = Case(x=x_view.requires_grad_(True), beta=beta.requires_grad_(True),
                   threshold=case.threshold, mem0=case.mem0.detach().t().contiguous().t()
                   .requires_grad_(True), graded_spikes_factor=case.graded_spikes_factor)
    kwargs = dict(surrogate=S.atan(alpha=3), reset_mechanism="zero", reset_delay=False)
    # fresh() copies with .clone(), which keeps strides: check it did
    assert not strided.fresh().x.is_contiguous()
    assert_same_bits(run_lif(snnkernels.lif, strided, **kwargs),
                     run_lif(snnkernels.lif, case, **kwargs), layout)
    check_against_reference(strided, dtype, layout, **kwargs)


@pytest.mark.parametrize("reset_delay", [True, False])
def test_input_broadcast_over_time(device, dtype, reset_delay):
    """x = c.expand(T, ...), a constant current (stride 0 over T; the CPU kernel reads it in
    place): the same bits as its contiguous copy for outputs and every gradient, and the
    reference's values."""
    g = torch.Generator().manual_seed(9)
    current = (torch.randn(4, 300, generator=g, dtype=torch.float64) * 1.5 + 0.6).to(dtype)
    beta0 = torch.rand(300, generator=g, dtype=torch.float64).to(dtype) * 0.3 + 0.65
    results = []
    for fn, materialize in ((snnkernels.lif, False), (snnkernels.lif, True), (reference.lif, True)):
        c = current.clone().to(device).requires_grad_(True)
        beta = beta0.clone().to(device).requires_grad_(True)
        x = c.expand(7, 4, 300)
        x = x.contiguous() if materialize else x
        spk, mem = fn(x, beta, reset_delay=reset_delay, reset_mechanism="zero")
        loss = (spk * torch.linspace(-1, 1, 300, dtype=dtype, device=device)).sum() + (
            mem * mem).sum() * 0.1
        results.append((spk, mem, *torch.autograd.grad(loss, [c, beta])))
    (in_place, copied, ref) = results
    assert 0.05 < ref[0].mean() < 0.95, "inputs give too few or too many spikes"
    tols = (FORWARD_TOL[dtype], FORWARD_TOL[dtype], GRAD_TOL[dtype], GRAD_TOL[dtype])
    for name, a, b, r, tol in zip(("spk", "mem", "grad c", "grad beta"), in_place, copied, ref,
                                  tols):
        assert torch.equal(a, b), f"{name}: broadcast input differs from its copy"
        assert_close(a, r, tol, name)


@pytest.mark.parametrize("sparse", [None, TopK(k=5), TopK(k=5, temporal=True),
                                    ActiveWindow(width=0.4)],
                         ids=["dense", "topk", "topk_temporal", "window"])
def test_upstream_gradient_broadcast_over_time(device, dtype, sparse):
    """A loss on spk.sum(0) and mem.sum(0) sends gradients that are one row broadcast over T
    (stride 0; on the CPU the kernels read that row in place instead of a [T, M] copy): the same
    bits as the same values given contiguous, for lif (dense and masked), linear_lif and
    lif_constant, and the reference's values."""
    g = torch.Generator().manual_seed(11)
    x0 = (torch.randn(6, 3, 40, generator=g, dtype=torch.float64) * 1.2 + 0.5).to(dtype)
    w0 = (torch.randn(40, 40, generator=g, dtype=torch.float64) * 0.3).to(dtype)
    row_spk = torch.randn(3, 40, generator=g, dtype=torch.float64).to(dtype)
    row_mem = torch.randn(3, 40, generator=g, dtype=torch.float64).to(dtype)
    row_spk, row_mem = row_spk.to(device), row_mem.to(device)

    def loss(spk, mem, contiguous):
        outs = [(spk, row_spk)] + ([] if mem is None else [(mem, row_mem)])
        if contiguous:  # the same values, materialized: the gradient arrives contiguous
            return sum((out * row.expand(out.shape).contiguous()).sum() for out, row in outs)
        return sum((out.sum(0) * row).sum() for out, row in outs)

    def grads(fn, contiguous):
        x = x0.clone().to(device).requires_grad_(True)
        w = w0.clone().to(device).requires_grad_(True)
        spk, mem = fn(x, w)
        return torch.autograd.grad(loss(spk, mem, contiguous), [x, w])

    calls = {
        "lif": (lambda x, w: snnkernels.lif(x @ w.t(), 0.85, sparse=sparse),
                lambda x, w: reference.lif(x @ w.t(), 0.85, sparse=sparse)),
        "linear_lif": (lambda x, w: snnkernels.linear_lif(x, w, None, 0.85, sparse=sparse),
                       lambda x, w: reference.lif(x @ w.t(), 0.85, sparse=sparse)),
    }
    if sparse is None:  # lif_constant: only spikes, of the current at step 0
        calls["lif_constant"] = (
            lambda x, w: (snnkernels.lif_constant(x[0] @ w.t(), 6, 0.85), None),
            lambda x, w: (reference.lif((x[0] @ w.t()).expand(6, 3, 40), 0.85)[0], None))
    for name, (fn, ref_fn) in calls.items():
        in_place, copied, ref = grads(fn, False), grads(fn, True), grads(ref_fn, False)
        for what, a, b, r in zip(("grad x", "grad w"), in_place, copied, ref):
            assert torch.equal(a, b), f"{name} {what}: broadcast != contiguous"
            assert_close(a, r, GRAD_TOL[dtype], f"{name} {what}")


@pytest.mark.parametrize("shape", [(0, 3, 4), (3, 0, 4), (3, 4, 0), (0,)],
                         ids=["T0", "B0", "N0", "T0-1d"])
@pytest.mark.parametrize("mode", [ParamMode("0dim", True), PER_NEURON, PER_ELEMENT],
                         ids=["0dim", "per_neuron", "per_element"])
@pytest.mark.parametrize("reset_delay", [True, False])
def test_empty(device, dtype, shape, mode, reset_delay):
    """Empty outputs of x's shape and dtype; backward runs and gives zero gradients (of the
    inputs' shapes) to every input; the reference agrees."""
    if len(shape) == 1:
        mode = ParamMode("0dim", True)
    case = make_case(shape, mode, dtype, device)
    got = run_lif(snnkernels.lif, case, upstream="weighted_both", reset_delay=reset_delay)
    assert got.spk.shape == shape and got.mem.shape == shape
    assert got.spk.dtype == dtype and got.spk.device == case.x.device
    for name, leaf in case.leaves().items():
        grad = got.grads[name]
        assert grad.shape == leaf.shape, name
        assert torch.equal(grad, torch.zeros_like(leaf)), f"grad {name} of an empty run"
    check_against_reference(case, dtype, f"empty {shape}", regime=False, reset_delay=reset_delay)


def test_nan_input_propagates(device, dtype):
    """A NaN input makes that neuron's membrane NaN from that step on (NaN never fires: spikes
    stay 0, never NaN) and its gradients NaN; no other neuron is affected; no crash."""
    case = make_case((6, 3, 5), PER_NEURON, dtype, device, seed=8)
    clean = run_lif(snnkernels.lif, case)
    x = case.x.detach().clone()
    x[2, 1, 3] = float("nan")
    nan_case = Case(**{**case.args(), "x": x.requires_grad_(True)})
    got, _ = check_against_reference(nan_case, dtype, "NaN input", regime=False)
    assert not got.spk.isnan().any() and (got.spk[2:, 1, 3] == 0).all()
    assert got.mem[2:, 1, 3].isnan().all() and not got.mem[:2, 1, 3].isnan().any()
    assert got.grads["x"][:3, 1, 3].isnan().all(), "gradient flows back through the NaN"
    other = torch.ones_like(got.mem, dtype=torch.bool)
    other[:, 1, 3] = False
    assert torch.equal(got.spk[other], clean.spk[other])
    assert torch.equal(got.mem[other], clean.mem[other])
    assert torch.equal(got.grads["x"][other], clean.grads["x"][other])


@pytest.mark.parametrize("reset_delay", [True, False])
def test_membrane_equal_to_threshold_does_not_fire(device, dtype, reset_delay):
    """H is a strict >: U == threshold gives no spike, the next representable value above it
    does; the reset signal of the next step follows the same rule. (Thresholds are powers of
    two, so thr * (1 + eps) is exactly the next value up in every dtype.)"""
    thr = torch.tensor([0.5, 0.5, 1.0, 1.0], dtype=dtype, device=device)
    above = thr * (1 + torch.finfo(dtype).eps)
    assert (above > thr).all()
    x = torch.stack([torch.where(torch.arange(4, device=device) % 2 == 1, above, thr),
                     torch.zeros(4, dtype=dtype, device=device)])
    spk, mem = snnkernels.lif(x, 0.5, thr, reset_delay=reset_delay)
    assert spk[0].tolist() == [0.0, 1.0, 0.0, 1.0]
    ref_spk, ref_mem = reference.lif(x, 0.5, thr, reset_delay=reset_delay)
    assert torch.equal(spk, ref_spk) and torch.equal(mem, ref_mem)
    if reset_delay:
        # step 1: mem_0 == thr does not trigger the reset; mem_0 > thr subtracts thr
        assert torch.equal(mem[1, [0, 2]], 0.5 * thr[[0, 2]])
        assert torch.equal(mem[1, [1, 3]], 0.5 * above[[1, 3]] - thr[[1, 3]])
    else:
        assert torch.equal(mem[0, [0, 2]], thr[[0, 2]])
        assert torch.equal(mem[0, [1, 3]], above[[1, 3]] - thr[[1, 3]])


def test_parameters_in_another_dtype(device, dtype):
    """Parameters and mem0 in another float dtype than x are accepted (rounded to x's compute
    type, as the reference does); outputs have x's dtype and each gradient its input's."""
    other = torch.float64 if dtype != torch.float64 else torch.float32
    case = make_case((4, 3, 6), PER_NEURON, dtype, device, seed=12)
    mixed = Case(x=case.x, beta=case.beta.detach().to(other).requires_grad_(True),
                 threshold=case.threshold, mem0=case.mem0.detach().to(other).requires_grad_(True),
                 graded_spikes_factor=case.graded_spikes_factor)
    got, _ = check_against_reference(mixed, dtype, "mixed dtypes")
    assert got.spk.dtype == dtype and got.mem.dtype == dtype and got.grads["x"].dtype == dtype
    assert got.grads["beta"].dtype == other and got.grads["mem0"].dtype == other
