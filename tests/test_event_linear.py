"""The event-driven synapse for spike inputs (csrc/cpu/spike_linear_cpu.cpp): spike_linear and
spike_weight_grad against the dense matmuls (float64, rel. 1e-12: another summation order), and
linear_lif choosing it from x's density, with the same results as snnkernels.reference.linear_lif
(tests/helpers.py tolerances) and the same bits for any thread count."""

from __future__ import annotations

import pytest
import torch

import snnkernels
from snnkernels import reference
from snnkernels import sparse as sp

from helpers import GRAD_TOL, Tol, assert_close, generator
from test_linear_lif import layer_inputs, run_layer

ops = torch.ops.snnkernels
THRESHOLD = snnkernels.build_info()["event_max_density"]
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
def test_spike_weight_grad_equals_matmul(density, dtype):
    x = spikes(53, 77, density, graded=True, dtype=dtype)
    grad = torch.randn(53, 29, generator=generator(4), dtype=torch.float64).to(dtype)
    tol = MATMUL_TOL if dtype == torch.float64 else GRAD_TOL[torch.float32]  # sums: cancellation
    assert_close(ops.spike_weight_grad(grad, x), grad.t() @ x, tol, "grad_weight")


def test_empty_shapes():
    w = torch.randn(4, 3, dtype=torch.float64)
    assert ops.spike_linear(torch.zeros(0, 3, dtype=torch.float64), w, None).shape == (0, 4)
    assert ops.spike_linear(torch.zeros(2, 0, dtype=torch.float64),
                            torch.zeros(4, 0, dtype=torch.float64), None).abs().sum() == 0
    assert torch.equal(ops.spike_weight_grad(torch.randn(0, 4, dtype=torch.float64),
                                             torch.zeros(0, 3, dtype=torch.float64)),
                       torch.zeros(4, 3, dtype=torch.float64))


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
    torch.library.opcheck(ops.spike_weight_grad, (torch.randn(9, 6, dtype=torch.float64), x))


def test_rule():
    event_driven = torch.ops.snnkernels.event_driven
    n = 1000
    at_threshold = torch.zeros(n)
    at_threshold[: int(THRESHOLD * n)] = 1
    above = at_threshold.clone()
    above[int(THRESHOLD * n)] = 1
    assert event_driven(at_threshold) and not event_driven(above)
    assert not event_driven(torch.zeros(0))


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


def test_narrow_layer_on_spikes_uses_gemm():
    """Spikes into a layer narrower than event_min_width (e.g. a 2-class readout): GEMMs."""
    inputs = layer_inputs(t=6, b=5, f=300, n=MIN_WIDTH - 1)
    inputs["x"] = spikes(30, 300, THRESHOLD / 2, seed=5).view(6, 5, 300)
    called = ops_called(lambda: run_layer(snnkernels.linear_lif, inputs))
    assert "snnkernels::spike_linear" not in called
    assert "snnkernels::spike_weight_grad" not in called
    assert "snnkernels::linear_dense_backward" in called


def test_same_bits_for_any_thread_count(restore_num_threads):
    x = spikes(64, 500, THRESHOLD / 2, seed=6, graded=True)
    w = torch.randn(70, 500, generator=generator(7), dtype=torch.float64)
    grad = torch.randn(64, 70, generator=generator(8), dtype=torch.float64)
    results = []
    for threads in (1, 2):
        torch.set_num_threads(threads)
        results.append((ops.spike_linear(x, w, None), ops.spike_weight_grad(grad, x)))
    assert torch.equal(results[0][0], results[1][0])
    assert torch.equal(results[0][1], results[1][1])
