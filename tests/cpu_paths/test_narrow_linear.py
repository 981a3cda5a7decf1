"""The narrow-layer synapse (csrc/cpu/narrow_linear.h: layers of at most 4 neurons, e.g. a classifier
readout, run as row loops instead of GEMMs on the CPU): linear_lif against the reference,
linear_dense_backward against float64 matmuls (GRAD_TOL in helpers.py: float64 relative 1e-10),
the same bits on 1 and 2 threads, and empty inputs."""

from __future__ import annotations

import pytest
import torch

import snnkernels
from snnkernels import reference

from helpers import GRAD_TOL, Tol, assert_close, generator
from linear_cases import layer_inputs, run_layer

NARROW_MAX = snnkernels.build_info()["narrow_max_width"]  # csrc/cpu/policy.h


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("f", [7, 16, 70])  # shorter than, equal to, and past the 16 lanes
@pytest.mark.parametrize("n", [1, 2, NARROW_MAX, NARROW_MAX + 1])  # the last: GEMMs
def test_linear_lif_matches_reference(n, f, dtype):
    # learnable beta and threshold in float64 only: with one neuron their float32 gradients are
    # sums of 42 terms that cancel to ~1e-5 relative (the sum order is the kernel's own)
    inputs = layer_inputs(t=6, b=7, f=f, n=n, dtype=dtype, seed=n + f,
                          learn=dtype == torch.float64)
    spk, mem, grads = run_layer(snnkernels.linear_lif, inputs)
    spk_r, mem_r, grads_r = run_layer(reference.linear_lif, inputs)
    assert 0.05 < spk_r.mean() < 0.95, "inputs give too few or too many spikes"
    assert_close(spk, spk_r, Tol(0.0), "spk")
    # the current sums F products in another order than the reference's matmul: in float32 the
    # membrane then differs by rounding relative to the terms, not to a value that cancelled
    # (seen: 1.2e-7 on 0.036 with terms of order 1), so its floor is that of GRAD_TOL
    assert_close(mem, mem_r, GRAD_TOL[dtype], "mem")
    for name in grads_r:
        assert grads_r[name].abs().sum() > 0, f"grad {name} is zero: weak test"
        assert_close(grads[name], grads_r[name], GRAD_TOL[dtype], f"grad {name}")


@pytest.mark.parametrize("rows", [1, 255, 257, 20000])  # one block, and up to the 64-block cap
@pytest.mark.parametrize("n", range(1, NARROW_MAX + 1))
def test_dense_backward_matches_matmuls(rows, n):
    g = generator(rows + n)
    grad = torch.randn(rows, n, generator=g, dtype=torch.float64)
    x = torch.randn(rows, 37, generator=g, dtype=torch.float64)
    w = torch.randn(n, 37, generator=g, dtype=torch.float64)
    dx, dw, db = torch.ops.snnkernels.linear_dense_backward(grad, x, w, True, True, True)
    tol = GRAD_TOL[torch.float64]
    assert_close(dx, grad @ w, tol, "dx")
    assert_close(dw, grad.t() @ x, tol, "dW")
    assert_close(db, grad.sum(0), tol, "db")
    # each output alone, as autograd asks when only one input needs a gradient
    for need in range(3):
        flags = [i == need for i in range(3)]
        only = torch.ops.snnkernels.linear_dense_backward(grad, x, w, *flags)
        assert torch.equal(only[need], (dx, dw, db)[need])
        assert all(only[i].numel() == 0 for i in range(3) if i != need)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
def test_same_bits_for_any_thread_count(restore_num_threads, dtype):
    inputs = layer_inputs(t=25, b=40, f=70, n=2, dtype=dtype, seed=3)  # 1000 rows: 4 blocks
    results = []
    for threads in (1, 2, 1):
        torch.set_num_threads(threads)
        results.append(run_layer(snnkernels.linear_lif, inputs))
    for spk, mem, grads in results[1:]:
        assert torch.equal(spk, results[0][0]) and torch.equal(mem, results[0][1])
        for key, value in grads.items():
            assert torch.equal(value, results[0][2][key]), f"grad {key}"


@pytest.mark.parametrize("t, b, f, n", [(0, 3, 5, 2), (4, 0, 5, 2), (4, 3, 0, 2), (4, 3, 5, 0)])
def test_empty_dimensions(t, b, f, n):
    x = torch.randn(t, b, f, dtype=torch.float64, requires_grad=True)
    w = torch.randn(n, f, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(n, dtype=torch.float64, requires_grad=True)
    spk, mem = snnkernels.linear_lif(x, w, bias, 0.9)
    spk_r, mem_r = reference.linear_lif(x, w, bias, 0.9)
    assert torch.equal(spk, spk_r) and torch.allclose(mem, mem_r)
    grads = torch.autograd.grad((spk + mem).sum(), (x, w, bias))
    grads_r = torch.autograd.grad((spk_r + mem_r).sum(), (x, w, bias))
    for got, want in zip(grads, grads_r):
        assert got.shape == want.shape and torch.allclose(got, want)


def test_float32_matches_float64():
    """The float32 current against the same sums in float64 (GRAD_TOL[float32])."""
    g = generator(6)
    one32, one64 = torch.ones(1), torch.ones(1, dtype=torch.float64)
    for f in (7, 70, 130):
        x = torch.randn(3, 9, f, generator=g)
        w, bias = torch.randn(2, f, generator=g), torch.randn(2, generator=g)
        args = (0, 2.0, 0.0, 2, True, 0, 0, 0.0, False)
        _, got, _, _ = torch.ops.snnkernels.linear_lif_forward(x, w, bias, one32 * 0, one32,
                                                              one32, *args)
        want = x.double().reshape(-1, f) @ w.double().t() + bias.double()
        assert_close(got.double().reshape(want.shape), want, GRAD_TOL[torch.float32], f"F={f}")
