"""The CPU op vs snnTorch 1.0.0 itself (the arbiter of the semantics, docs/semantics.md): Leaky
looped over time, `for xt in x.unbind(0): spk, mem = leaky(xt, mem)`, in float32, with every
parameter learnable; and each surrogate's derivative vs snnTorch's autograd Function.

Tolerances (helpers.SNNTORCH_*): spikes identical, membrane relative error <= 1e-6, gradients
|a - b| <= 1e-5 |b| + 1e-6 max|b| (max over the summed terms for parameters, see
helpers.summand_scale).

snnTorch's sigmoid backward computes k e^{-kz} / (e^{-kz} + 1)^2, which is inf / inf = NaN in
float32 once -kz > ~88 (z < -3.5 at k = 25); snnkernels computes the same function from |z|,
which never overflows. The LIF parity inputs keep z > -3.5 (asserted: snnTorch's gradients are
finite), and test_sigmoid_stable_where_snntorch_overflows documents the difference.
"""

from __future__ import annotations

import pytest
import snntorch
import snntorch.surrogate as sts
import torch

import snnkernels
from snnkernels import reference
from snnkernels import surrogate as S

from helpers import (RESET_DELAYS, RESETS, SNNTORCH_FORWARD_TOL, SNNTORCH_GRAD_TOL, Result,
                     assert_close, assert_results_match, assert_spiking_regime, generator)
from snntorch_cases import B, N, SURROGATE_PAIRS, T, leaf, parity_inputs

def run_snntorch(inp, spike_grad, reset_mechanism, reset_delay) -> Result:
    leaky = snntorch.Leaky(
        beta=leaf(inp["beta"]), threshold=leaf(inp["threshold"]), spike_grad=spike_grad,
        learn_beta=True, learn_threshold=True, reset_mechanism=reset_mechanism,
        graded_spikes_factor=leaf(inp["graded_spikes_factor"]), learn_graded_spikes_factor=True,
        reset_delay=reset_delay)
    x, mem0 = leaf(inp["x"]), leaf(inp["mem0"])
    mem = mem0
    spks, mems = [], []
    for xt in x.unbind(0):
        spk, mem = leaky(xt, mem)
        spks.append(spk)
        mems.append(mem)
    spk, mem = torch.stack(spks), torch.stack(mems)
    loss = (spk * inp["w_spk"]).sum() + (mem * inp["w_mem"]).sum()
    params = [leaky.beta, leaky.threshold, leaky.graded_spikes_factor]
    grads = torch.autograd.grad(loss, [x, mem0, *params])
    names = ["x", "mem0", "beta", "threshold", "graded_spikes_factor"]
    return Result(spk.detach(), mem.detach(), dict(zip(names, grads)))


def run_ours(fn, inp, surrogate, reset_mechanism, reset_delay) -> Result:
    x, mem0 = leaf(inp["x"]), leaf(inp["mem0"])
    beta, thr, graded = (leaf(inp[k]) for k in ("beta", "threshold", "graded_spikes_factor"))
    spk, mem = fn(x, beta, thr, mem0, surrogate=surrogate, reset_mechanism=reset_mechanism,
                  reset_delay=reset_delay, graded_spikes_factor=graded)
    loss = (spk * inp["w_spk"]).sum() + (mem * inp["w_mem"]).sum()
    grads = torch.autograd.grad(loss, [x, mem0, beta, thr, graded])
    names = ["x", "mem0", "beta", "threshold", "graded_spikes_factor"]
    return Result(spk.detach(), mem.detach(), dict(zip(names, grads)))


@pytest.mark.parametrize("impl", [snnkernels.lif, reference.lif], ids=["op", "reference"])
@pytest.mark.parametrize("per_neuron", [True, False], ids=["per_neuron", "scalar"])
@pytest.mark.parametrize("theirs, ours, kwargs", SURROGATE_PAIRS)
@pytest.mark.parametrize("reset_delay", RESET_DELAYS)
@pytest.mark.parametrize("reset_mechanism", RESETS)
def test_matches_snntorch_leaky(reset_mechanism, reset_delay, theirs, ours, kwargs, per_neuron,
                                impl):
    inp = parity_inputs(seed=RESETS.index(reset_mechanism) + 3 * reset_delay, per_neuron=per_neuron)
    expected = run_snntorch(inp, theirs(**kwargs), reset_mechanism, reset_delay)
    assert_spiking_regime(expected.spk)
    for name, g in expected.grads.items():
        assert torch.isfinite(g).all(), f"snnTorch's grad {name} is not finite: bad test inputs"
    actual = run_ours(impl, inp, ours(**kwargs), reset_mechanism, reset_delay)
    assert_results_match(actual, expected, SNNTORCH_FORWARD_TOL, SNNTORCH_GRAD_TOL, "vs snnTorch")


@pytest.mark.parametrize("theirs, ours, kwargs", SURROGATE_PAIRS)
def test_surrogate_derivative_matches_snntorch(theirs, ours, kwargs):
    """sigma'(z) on a dense grid (including z = 0 exactly, where triangular and heaviside
    switch), as the kernel evaluates it: a single step with threshold 0 and no leak, so
    U = x, z = x, and d spk / d x = sigma'(z); and as the reference's Surrogate.grad does."""
    z = torch.cat([torch.linspace(-3.0, 3.0, 601), torch.tensor([0.0, 1.0, -0.0])])
    z_sn = z.clone().requires_grad_(True)
    (grad_sn,) = torch.autograd.grad(theirs(**kwargs)(z_sn).sum(), z_sn)
    assert torch.isfinite(grad_sn).all()

    x = z.clone().reshape(1, -1).requires_grad_(True)
    spk, _ = snnkernels.lif(x, 0.0, 0.0, surrogate=ours(**kwargs))
    assert torch.equal(spk[0], (z > 0).float()), "forward must be H(z), strict >"
    (grad_op,) = torch.autograd.grad(spk.sum(), x)
    assert_close(grad_op[0], grad_sn, SNNTORCH_GRAD_TOL, "kernel sigma'(z)")
    assert_close(ours(**kwargs).grad(z), grad_sn, SNNTORCH_GRAD_TOL, "Surrogate.grad(z)")


def test_sigmoid_stable_where_snntorch_overflows():
    """Documents the one deliberate difference: for z < -3.5 at k = 25 snnTorch's float32
    sigmoid derivative is NaN; ours is finite and within 1e-6 of the peak value k/4 of the exact
    value (which is below 1e-37 there, so only an absolute comparison means anything)."""
    z = torch.tensor([-4.0, -6.0, -10.0])  # float64 e^{-kz} squared is still finite here
    z_sn = z.clone().requires_grad_(True)
    (grad_sn,) = torch.autograd.grad(sts.sigmoid()(z_sn).sum(), z_sn)
    assert grad_sn.isnan().all(), "snnTorch's sigmoid no longer overflows: update this test"
    zd = z.double()
    exact = 25 * torch.exp(-25 * zd) / (torch.exp(-25 * zd) + 1) ** 2
    x = z.reshape(1, -1).requires_grad_(True)
    spk, _ = snnkernels.lif(x, 0.0, 0.0, surrogate=S.sigmoid())
    (grad_op,) = torch.autograd.grad(spk.sum(), x)
    for what, got in (("kernel", grad_op[0]), ("Surrogate.grad", S.sigmoid().grad(z))):
        assert torch.isfinite(got).all() and (got >= 0).all(), f"{what}: {got}"
        assert (got.double() - exact).abs().max() <= 1e-6 * 25 / 4, f"{what}: {got} vs {exact}"
