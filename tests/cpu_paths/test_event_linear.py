"""The event-driven synapse for spike inputs (csrc/cpu/spike_linear_cpu.cpp): spike_linear and
spike_weight_grad against the dense matmuls (float64, rel. 1e-12: another summation order;
float32 against the float64 matmul within GRAD_TOL), and linear_lif choosing it from x's density,
with the same results as snnkernels.reference.linear_lif (tests/helpers.py tolerances) and the
same bits for any thread count. float32 runs the kernels' AVX-512 path on CPUs that have it; a
subprocess with SNNKERNELS_PORTABLE=1 runs the portable path, and both must give the same bits."""

from __future__ import annotations

import pytest
import torch

import snnkernels
from snnkernels import reference
from snnkernels import sparse as sp

from helpers import GRAD_TOL, Tol, assert_close, generator, run_portable
from linear_cases import layer_inputs, run_layer

ops = torch.ops.snnkernels
THRESHOLDS = snnkernels.build_info()["event_max_density"]
THRESHOLD = THRESHOLDS["float64"]  # the float64 tests' inputs
MIN_WIDTH = snnkernels.build_info()["event_min_width"]
MATMUL_TOL = Tol(1e-12, 1e-12)


def spikes(rows, features, density, seed=0, graded=False, dtype=torch.float64):
    g = generator(seed)
    x = (torch.rand(rows, features, generator=g, dtype=torch.float64) < density).to(dtype)
    if graded:  # any mostly-zero input, not only 0/1
        x = x * torch.randn(rows, features, generator=g, dtype=torch.float64).to(dtype)
    return x


@pytest.mark.parametrize("density", [0.0, 0.01, 0.2, 1.0])
@pytest.mark.parametrize("graded", [False, True])
@pytest.mark.parametrize("rows, features, n", [(37, 70, 45), (1, 1, 1), (16, 3, 130)])
def test_spike_linear_equals_addmm(density, graded, rows, features, n):
    x = spikes(rows, features, density, graded=graded)
    g = generator(3)
    w = torch.randn(n, features, generator=g, dtype=torch.float64)
    b = torch.randn(n, generator=g, dtype=torch.float64)
    assert_close(ops.spike_linear(x, w, b), torch.addmm(b, x, w.t()), MATMUL_TOL, "with bias")
    assert_close(ops.spike_linear(x, w, None), x @ w.t(), MATMUL_TOL, "without bias")


@pytest.mark.parametrize("density", [0.0, 0.03, 0.5])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("rows", [53, 300])  # 300: two row parts (192 + 108), added in order
def test_spike_weight_grad_equals_matmul(density, dtype, rows):
    x = spikes(rows, 77, density, graded=True, dtype=dtype)
    grad = torch.randn(rows, 29, generator=generator(4), dtype=torch.float64).to(dtype)
    tol = MATMUL_TOL if dtype == torch.float64 else GRAD_TOL[torch.float32]  # sums: cancellation
    grad_weight, grad_bias = ops.spike_weight_grad(grad, x, True)
    assert_close(grad_weight, grad.t() @ x, tol, "grad_weight")
    assert_close(grad_bias, grad.sum(0), tol, "grad_bias")
    alone, no_bias = ops.spike_weight_grad(grad, x)
    assert torch.equal(alone, grad_weight) and no_bias.numel() == 0


def test_empty_shapes():
    w = torch.randn(4, 3, dtype=torch.float64)
    assert ops.spike_linear(torch.zeros(0, 3, dtype=torch.float64), w, None).shape == (0, 4)
    assert ops.spike_linear(torch.zeros(2, 0, dtype=torch.float64),
                            torch.zeros(4, 0, dtype=torch.float64), None).abs().sum() == 0
    no_rows = ops.spike_weight_grad(torch.randn(0, 4, dtype=torch.float64),
                                    torch.zeros(0, 3, dtype=torch.float64), True)
    assert torch.equal(no_rows[0], torch.zeros(4, 3, dtype=torch.float64))
    assert torch.equal(no_rows[1], torch.zeros(4, dtype=torch.float64))
    for dtype in (torch.float64, torch.float32):  # no features: the bias sums alone
        grad = torch.randn(70, 5, generator=generator(5), dtype=dtype)
        weight, bias = ops.spike_weight_grad(grad, torch.zeros(70, 0, dtype=dtype), True)
        assert weight.shape == (5, 0)
        assert_close(bias, grad.sum(0), GRAD_TOL[dtype], "bias without features")


def test_bad_inputs_name_the_argument():
    x = torch.zeros(5, 3)
    with pytest.raises(RuntimeError, match="weight"):
        ops.spike_linear(x, torch.zeros(4, 2), None)
    with pytest.raises(RuntimeError, match="bias"):
        ops.spike_linear(x, torch.zeros(4, 3), torch.zeros(5))
    with pytest.raises(RuntimeError, match="x"):
        ops.spike_linear(torch.zeros(5, 3, dtype=torch.int32), torch.zeros(4, 3), None)
    with pytest.raises(RuntimeError, match="same R"):
        ops.spike_weight_grad(torch.zeros(4, 2), x)


def test_opcheck():
    x = spikes(9, 11, 0.1)
    w = torch.randn(6, 11, dtype=torch.float64)
    torch.library.opcheck(ops.spike_linear, (x, w, torch.randn(6, dtype=torch.float64)))
    for need_bias in (False, True):
        torch.library.opcheck(ops.spike_weight_grad,
                              (torch.randn(9, 6, dtype=torch.float64), x, need_bias))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
def test_rule(dtype):
    event_driven = torch.ops.snnkernels.event_driven
    threshold = THRESHOLDS[str(dtype).removeprefix("torch.")]
    n = 1000
    at_threshold = torch.zeros(n, dtype=dtype)
    at_threshold[: int(threshold * n)] = 1
    above = at_threshold.clone()
    above[int(threshold * n)] = 1
    assert event_driven(at_threshold) and not event_driven(above)
    assert not event_driven(torch.zeros(0, dtype=dtype))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16, torch.bfloat16],
                         ids=["float64", "float32", "float16", "bfloat16"])
def test_rule_counts_signed_zero_as_zero_and_nan_as_nonzero(dtype):
    event_driven = torch.ops.snnkernels.event_driven
    assert event_driven(torch.full((3000,), -0.0, dtype=dtype))
    assert not event_driven(torch.full((3000,), float("nan"), dtype=dtype))
    assert not event_driven(torch.full((3000,), -1e-3, dtype=dtype))


def ops_called(fn):
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        fn()
    return {e.name for e in prof.events()}


@pytest.mark.parametrize("spec", [None, sp.TopK(k=3), sp.ActiveWindow(0.2)],
                         ids=["dense", "topk3", "window0.2"])
def test_linear_lif_on_spikes_matches_reference(spec):
    """Below the density threshold linear_lif runs spike_linear (and, dense, spike_weight_grad),
    with the reference's results."""
    inputs = layer_inputs(t=6, b=5, f=300, n=MIN_WIDTH)
    inputs["x"] = spikes(30, 300, THRESHOLD / 2, seed=5).view(6, 5, 300)
    inputs["weight"] = inputs["weight"] * 8  # enough current from few spikes to fire
    called = ops_called(lambda: run_layer(snnkernels.linear_lif, inputs, sparse=spec))
    assert "snnkernels::spike_linear" in called
    assert ("snnkernels::spike_weight_grad" in called) == (spec is None)
    spk, mem, grads = run_layer(snnkernels.linear_lif, inputs, sparse=spec)
    spk_r, mem_r, grads_r = run_layer(reference.linear_lif, inputs, sparse=spec)
    assert 0.05 < spk_r.mean() < 0.95, "inputs give too few or too many spikes"
    assert_close(spk, spk_r, Tol(0.0), "spk")
    assert_close(mem, mem_r, Tol(1e-12, 1e-6), "mem")
    for name in grads_r:
        assert_close(grads[name], grads_r[name], GRAD_TOL[torch.float64], f"grad {name}")


def test_dense_input_uses_gemm():
    inputs = layer_inputs(t=3, b=4, f=20, n=MIN_WIDTH)
    assert "snnkernels::spike_linear" not in ops_called(
        lambda: run_layer(snnkernels.linear_lif, inputs))


def test_backward_takes_the_forward_path():
    """linear_lif_forward's `event` output says which synapse it ran; linear_dense_backward given
    it takes that path without counting x again (here against the rule on x, to show it obeys
    the flag), and without it decides from x."""
    x_spikes = spikes(30, 300, THRESHOLD / 2, seed=5)
    x_dense = torch.randn(30, 300, generator=generator(6), dtype=torch.float64)
    w = torch.randn(MIN_WIDTH, 300, generator=generator(7), dtype=torch.float64)
    b = torch.randn(MIN_WIDTH, generator=generator(8), dtype=torch.float64)
    grad = torch.randn(30, MIN_WIDTH, generator=generator(9), dtype=torch.float64)
    one = torch.ones(1, dtype=torch.float64)
    for x, event in ((x_spikes, True), (x_dense, False)):
        out = ops.linear_lif_forward(x.view(6, 5, 300), w, b, one, one, one, 0, 2.0, 0.0, 0, True,
                                     0, 0, 0.0, False)
        assert out[3].dtype == torch.bool and out[3].tolist() == [event]
    flag = {v: torch.tensor([v]) for v in (True, False)}
    for x, event in ((x_spikes, None), (x_dense, flag[True]), (x_spikes, flag[False]),
                     (x_dense, None)):
        weight_path = event.item() if event is not None else x is x_spikes
        called = ops_called(lambda: ops.linear_dense_backward(grad, x, w, True, True, True, event))
        assert ("snnkernels::spike_weight_grad" in called) == weight_path
        dx, dw, db = ops.linear_dense_backward(grad, x, w, True, True, True, event)
        assert_close(dw, grad.t() @ x, MATMUL_TOL, "grad_weight")
        assert_close(db, grad.sum(0), MATMUL_TOL, "grad_bias")
        assert_close(dx, grad @ w, MATMUL_TOL, "grad_x")
    for bad in (torch.tensor([1]), torch.tensor([True, False])):
        with pytest.raises(RuntimeError, match="event"):
            ops.linear_dense_backward(grad, x_spikes, w, True, True, True, bad)


def test_narrow_layer_on_spikes_uses_gemm():
    """Spikes into a layer narrower than event_min_width (e.g. a 2-class readout): GEMMs."""
    inputs = layer_inputs(t=6, b=5, f=300, n=MIN_WIDTH - 1)
    inputs["x"] = spikes(30, 300, THRESHOLD / 2, seed=5).view(6, 5, 300)
    called = ops_called(lambda: run_layer(snnkernels.linear_lif, inputs))
    assert "snnkernels::spike_linear" not in called
    assert "snnkernels::spike_weight_grad" not in called
    assert "snnkernels::linear_dense_backward" in called


def test_same_bits_for_any_thread_count(restore_num_threads):
    x = spikes(300, 500, THRESHOLD / 2, seed=6, graded=True)  # spike_weight_grad: two row parts
    w = torch.randn(70, 500, generator=generator(7), dtype=torch.float64)
    grad = torch.randn(300, 70, generator=generator(8), dtype=torch.float64)
    results = []
    for threads in (1, 2, 3):  # 3: a thread's features straddle the two parts
        torch.set_num_threads(threads)
        results.append((ops.spike_linear(x, w, None), *ops.spike_weight_grad(grad, x, True)))
    for other in results[1:]:
        for a, b in zip(results[0], other):
            assert torch.equal(a, b)


# float32 cases for the AVX-512 path's edges: rows beyond a 64-row tile, features beyond a 64-bit
# word and not a multiple of 16, outputs beyond a 128-wide register block and not a multiple of
# 16, one output; spikes, graded values, and NaN / -0.0 in x.
FLOAT32_CASES = [(6400, 128, 128), (130, 70, 45), (65, 200, 300), (64, 16, 1), (3, 1, 17),
                 (200, 129, 129)]


def float32_case(rows, features, n, kind, seed=0):
    g = generator(seed)
    x = spikes(rows, features, 0.2, seed=seed, dtype=torch.float32)
    if kind == "graded":
        x = x * torch.randn(rows, features, generator=g)
    elif kind == "special":
        x[0, :] = -0.0
        x[-1, -1] = float("nan")
        x[rows // 2, :: 3] = 1.0
    w = torch.randn(n, features, generator=g)
    b = torch.randn(n, generator=g)
    grad = torch.randn(rows, n, generator=g)
    return x, w, b, grad


def float32_results():
    out = []
    for shape in FLOAT32_CASES:
        for kind in ("spikes", "graded", "special"):
            x, w, b, grad = float32_case(*shape, kind)
            out += [ops.spike_linear(x, w, b), ops.spike_linear(x, w, None),
                    *ops.spike_weight_grad(grad, x, True)]
    return out


@pytest.mark.parametrize("kind", ["spikes", "graded"])
@pytest.mark.parametrize("shape", FLOAT32_CASES, ids=lambda s: "x".join(map(str, s)))
def test_float32_equals_float64_matmul(shape, kind):
    x, w, b, grad = float32_case(*shape, kind)
    d = torch.float64
    tol = GRAD_TOL[torch.float32]
    assert_close(ops.spike_linear(x, w, b).to(d), torch.addmm(b.to(d), x.to(d), w.to(d).t()), tol,
                 "spike_linear")
    grad_weight, grad_bias = ops.spike_weight_grad(grad, x, True)
    # Sums over up to 6400 rows: float32 rounding follows the magnitude of what is summed, so the floor
    # is relative to the largest sum of |terms| (as helpers.summand_scale does for parameters).
    g, xd = grad.to(d), x.to(d)
    assert_close(grad_weight.to(d), g.t() @ xd, tol, "spike_weight_grad",
                 scale=(g.abs().t() @ xd.abs()).max().item())
    assert_close(grad_bias.to(d), g.sum(0), tol, "spike_weight_grad's bias",
                 scale=g.abs().sum(0).max().item())


def test_float32_nan_and_signed_zero():
    """NaN in x reaches exactly its outputs (its row forward, its column in dW); -0.0 is no event."""
    x, w, b, grad = float32_case(65, 200, 300, "special")
    out = ops.spike_linear(x, w, b)
    dw = ops.spike_weight_grad(grad, x)[0]
    assert out[-1].isnan().all() and not out[:-1].isnan().any()
    assert dw[:, -1].isnan().all() and not dw[:, :-1].isnan().any()
    assert torch.equal(out[0], b)  # a row of -0.0: the bias alone


def test_portable_path_gives_the_same_bits(tmp_path):
    """The float32 results with SNNKERNELS_PORTABLE=1 (a subprocess) equal this process's."""
    portable = run_portable(tmp_path, "test_event_linear", "float32_results()")
    here = float32_results()
    assert len(portable) == len(here)
    for p, h in zip(portable, here):
        assert torch.equal(p.nan_to_num(nan=7.0), h.nan_to_num(nan=7.0))


def test_float32_same_bits_for_any_thread_count(restore_num_threads):
    results = []
    for threads in (1, 2):
        torch.set_num_threads(threads)
        results.append(float32_results())
    for a, b in zip(*results):
        assert torch.equal(a.nan_to_num(nan=7.0), b.nan_to_num(nan=7.0))
