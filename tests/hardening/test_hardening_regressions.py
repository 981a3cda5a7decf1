"""Regression tests for the bugs the hardening tests (test_hardening_*.py) found; each test names
what failed before its fix. Missing argument checks found by the bad-input fuzz are regression
cases of the table in test_hardening_fuzz.py (ids ending in "-regression")."""

from __future__ import annotations

import warnings

import pytest
import snntorch
import torch

import snnkernels
from snnkernels import nn as knn
from snnkernels import reference
from snnkernels import sparse as sp

from helpers import FORWARD_TOL, GRAD_TOL, Case, assert_results_match, generator, run_lif

IMPLS = [pytest.param(snnkernels.lif, id="op"), pytest.param(reference.lif, id="reference")]


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("name", ["beta", "threshold", "graded_spikes_factor", "mem0"])
def test_argument_with_more_dims_than_the_batch(impl, name):
    """A parameter or mem0 with leading size-1 dims beyond x.shape[1:] (accepted by the
    validation, as broadcasting allows) gave the reference outputs of the parameter's rank
    ([T, 1, 1, N] for x [T, N]), and mem0 made both raise a RuntimeError from expand. Now the
    outputs have x's shape and the gradient has the argument's shape."""
    g = generator(0)
    x = (torch.randn(4, 6, generator=g, dtype=torch.float64) + 0.6).requires_grad_(True)
    value = (torch.rand(1, 1, 6, generator=g, dtype=torch.float64) * 0.5 + 0.5)
    base = dict(x=x, beta=0.8, threshold=1.0, mem0=None, graded_spikes_factor=1.0)
    plain = Case(**{**base, name: value[0, 0].clone().requires_grad_(True)})
    extra = Case(**{**base, name: value.clone().requires_grad_(True)})
    got, want = run_lif(impl, extra), run_lif(impl, plain)
    assert got.spk.shape == x.shape and got.mem.shape == x.shape
    assert got.grads[name].shape == (1, 1, 6)
    got.grads[name] = got.grads[name].reshape(6)
    assert_results_match(got, want, FORWARD_TOL[torch.float64], GRAD_TOL[torch.float64], name)


@pytest.mark.parametrize("impl", IMPLS)
def test_nonempty_parameter_broadcast_to_empty_neurons(impl):
    """x [1, 1, 2, 0] with a [2, 1] parameter (it broadcasts to the neuron shape [1, 2, 0]):
    the op passed the kernel an empty parameter and failed its check ("graded must be 1-D with a
    number of elements dividing 0"). Now: empty outputs and a zero gradient of shape [2, 1]."""
    x = torch.zeros(1, 1, 2, 0, dtype=torch.float64, requires_grad=True)
    graded = torch.ones(2, 1, dtype=torch.float64, requires_grad=True)
    beta = torch.full((2, 1), 0.5, dtype=torch.float64, requires_grad=True)
    spk, mem = impl(x, beta, 1.0, graded_spikes_factor=graded)
    assert spk.shape == mem.shape == x.shape
    gx, gb, gg = torch.autograd.grad((spk.sum() + mem.sum()), [x, beta, graded],
                                     allow_unused=True)
    assert gx.shape == x.shape
    for grad, leaf in ((gb, beta), (gg, graded)):
        assert grad is None or (grad.shape == leaf.shape and not grad.any())


@pytest.mark.parametrize("spec", [sp.TopK(k=1), sp.TopK(fraction=0.5, temporal=True),
                                  sp.ActiveWindow(0.3)], ids=["topk", "topk-temporal", "window"])
def test_linear_lif_sparse_without_neurons(spec):
    """linear_lif with N = 0 neurons and a mask: the backward passed row = 0 to the masked
    kernel ("row (neurons per row) must divide M = 0"). Now the gradients are zeros, as dense."""
    x = torch.randn(3, 2, 5, dtype=torch.float64, requires_grad=True)
    weight = torch.zeros(0, 5, dtype=torch.float64, requires_grad=True)
    bias = torch.zeros(0, dtype=torch.float64, requires_grad=True)
    spk, mem = snnkernels.linear_lif(x, weight, bias, 0.9, sparse=spec)
    assert spk.shape == mem.shape == (3, 2, 0)
    gx, gw, gb = torch.autograd.grad(spk.sum() + mem.sum(), [x, weight, bias])
    assert gx.shape == x.shape and not gx.any()
    assert gw.shape == (0, 5) and gb.shape == (0,)


def test_leaky_integer_parameters_like_snntorch():
    """snntorch.Leaky(beta=1, threshold=1) works (its int64 buffers promote); ours raised
    "threshold must be a floating-point tensor". Now integer parameters are cast to the input's
    dtype, learnable ones become float Parameters, and snnkernels.convert of such a layer runs."""
    x = torch.rand(6, 3, 4) * 1.5
    theirs = snntorch.Leaky(beta=1, threshold=1)
    ours = knn.Leaky(beta=1, threshold=1)
    assert ours.beta.dtype == torch.int64  # kept as given, as snnTorch keeps it
    mem_t = mem_o = None
    for xt in x:
        spk_t, mem_t = theirs(xt) if mem_t is None else theirs(xt, mem_t)
        spk_o, mem_o = ours(xt) if mem_o is None else ours(xt, mem_o)
        assert torch.equal(spk_o, spk_t)
        torch.testing.assert_close(mem_o, mem_t, rtol=1e-6, atol=1e-6)
    floats = knn.LIF(beta=1.0, threshold=1.0)
    for a, b in zip(knn.LIF(beta=1, threshold=1)(x), floats(x)):
        assert torch.equal(a, b)
    learn = knn.LIF(beta=1, threshold=2, learn_beta=True, learn_threshold=True)
    assert learn.beta.dtype == learn.threshold.dtype == torch.get_default_dtype()
    spk, _ = learn(x)
    spk.sum().backward()
    assert learn.threshold.grad is not None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        converted = snnkernels.convert(torch.nn.Sequential(snntorch.Leaky(beta=1, threshold=1)))
    spk_c, _ = converted[0](x[0])
    spk_t, _ = snntorch.Leaky(beta=1, threshold=1)(x[0])
    assert torch.equal(spk_c, spk_t)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("n", [3, 40, 100, 1000], ids=lambda n: f"N{n}")
@pytest.mark.parametrize("op", ["lif", "linear_lif"])
def test_topk_with_a_negative_zero_gradient(op, n, dtype):
    """A gradient entry of -0.0 (here: a neuron that fires with the zero reset, reset_delay=False
    and sigma' = 0, under a negative upstream gradient) made TopK keep it over every real entry:
    the selection ranked |g| by its bits and math_abs(-0.0) is -0.0 (sign bit set); on the
    histogram path (k * 32 > N) it also incremented a bin past the end of the histogram. N = 3
    and 40 take the histogram path, 100 and 1000 the block-maximum path (k = 1)."""
    x = torch.full((2, 3, n), 0.2, dtype=dtype)
    x[:, :, 0] = 2.0
    w = torch.linspace(0.1, 0.5, n, dtype=dtype).expand(2, 3, n).clone()
    w[:, :, 0] = -1.0
    kwargs = dict(surrogate=snnkernels.surrogate.atan(alpha=0.0), reset_mechanism="zero",
                  reset_delay=False, sparse=sp.TopK(k=1))
    grads = []
    for impl in ((snnkernels.lif, reference.lif) if op == "lif"
                 else (snnkernels.linear_lif, reference.linear_lif)):
        leaf = x.clone().requires_grad_(True)
        args = (leaf, 0.9) if op == "lif" else (leaf, torch.eye(n, dtype=dtype), None, 0.9)
        spk, mem = impl(*args, **kwargs)
        ((spk + mem) * w).sum().backward()
        grads.append(leaf.grad)
    got, want = grads
    assert int(want.abs().argmax(-1).min()) == n - 1  # the reference keeps the largest, 0.5
    assert torch.equal(got, want)
