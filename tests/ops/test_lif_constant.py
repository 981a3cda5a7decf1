"""snnkernels.lif_constant (one current held over T steps; the CPU kernel recomputes the membrane
in its backward) against the reference on the expanded current: spikes bit-identical, gradients
within GRAD_TOL (helpers.py; float64: relative 1e-10). Also opcheck, edge cases, bad input and
thread determinism."""

from __future__ import annotations

import pytest
import torch

import snnkernels
from snnkernels import _args, reference
from snnkernels import surrogate as S

from helpers import FORWARD_TOL, GRAD_TOL, RESET_DELAYS, RESETS, SURROGATES, assert_close

STEPS, BATCH, N = 9, 3, 70  # N > 64: more than one chunk of the trajectory with few threads


def make_inputs(dtype, device, per_neuron: bool, seed: int):
    g = torch.Generator().manual_seed(seed)

    def rand(*shape, scale=1.0, shift=0.0):
        return (torch.rand(*shape, generator=g, dtype=torch.float64) * scale + shift).to(
            device, dtype)

    x = (torch.randn(BATCH, N, generator=g, dtype=torch.float64) * 0.8 + 0.35).to(device, dtype)
    if not per_neuron:
        return dict(x=x.requires_grad_(), beta=0.85, threshold=0.9, mem0=None, graded=1.0)
    return dict(x=x.requires_grad_(), beta=rand(N, scale=0.7, shift=0.25).requires_grad_(),
                threshold=rand(N, scale=0.8, shift=0.5).requires_grad_(),
                mem0=(rand(BATCH, N, scale=1.0, shift=-0.3)).requires_grad_(),
                graded=rand(N, scale=1.0, shift=0.5).requires_grad_())


def run(fn_is_kernel: bool, inputs, **kw):
    """Spikes and the gradients of a random-weighted loss on them, w.r.t. every tensor input."""
    x = inputs["x"]
    args = (inputs["beta"], inputs["threshold"], inputs["mem0"])
    if fn_is_kernel:
        spk = snnkernels.lif_constant(x, STEPS, *args, graded_spikes_factor=inputs["graded"],
                                      **kw)
    else:
        spk, _ = reference.lif(x.expand(STEPS, *x.shape), *args,
                               graded_spikes_factor=inputs["graded"], **kw)
    weight = torch.randn(spk.shape, generator=torch.Generator().manual_seed(99),
                         dtype=torch.float64).to(spk.device, spk.dtype)
    leaves = {k: v for k, v in inputs.items() if isinstance(v, torch.Tensor) and v.requires_grad}
    grads = torch.autograd.grad((spk * weight).sum(), list(leaves.values()))
    return spk, dict(zip(leaves, grads))


@pytest.mark.parametrize("per_neuron", [False, True], ids=["scalar", "per_neuron"])
@pytest.mark.parametrize("surrogate", SURROGATES[::2])
@pytest.mark.parametrize("reset_delay", RESET_DELAYS)
@pytest.mark.parametrize("reset_mechanism", RESETS)
def test_matches_reference_on_the_expanded_current(device, dtype, reset_mechanism, reset_delay,
                                                   surrogate, per_neuron):
    if dtype not in FORWARD_TOL:
        pytest.skip("half types: covered through snnkernels.lif (the CUDA path calls it)")
    kw = dict(surrogate=surrogate, reset_mechanism=reset_mechanism, reset_delay=reset_delay)
    inputs = make_inputs(dtype, device, per_neuron, seed=RESETS.index(reset_mechanism))
    spk, grads = run(True, inputs, **kw)
    spk_ref, grads_ref = run(False, inputs, **kw)  # the same dtype, as test_lif_reference_parity
    assert 0.05 < spk.float().mean().item() < 0.95, "inputs should make some neurons spike"
    assert_close(spk, spk_ref, FORWARD_TOL[dtype], "spk")
    for name, g in grads.items():
        expected = grads_ref[name]
        assert expected.abs().max() > 0, f"{name}: the test needs a nonzero gradient"
        # a parameter's gradient sums terms that can cancel: its floor is relative to a bound
        # on their magnitude, as helpers.summand_scale does (x's gradient is summed over the
        # steps already, so it bounds the terms of each current element)
        k = inputs["x"].numel() // expected.numel()
        scale = None if name == "x" else max(expected.abs().max().item(),
                                             k * grads_ref["x"].abs().max().item())
        assert_close(g, expected, GRAD_TOL[dtype], f"grad {name}", scale=scale)


@pytest.mark.parametrize("reset_delay", RESET_DELAYS)
def test_few_neurons_long_sequence(reset_delay):
    """Fewer neurons than one 64-neuron chunk over many steps (the backward's chunk is then the
    3 neurons, not 64): the reference on the expanded current, float64."""
    x = torch.tensor([0.3, 0.95, 1.7], dtype=torch.float64, requires_grad=True)
    beta = torch.tensor([0.9, 0.7, 0.95], dtype=torch.float64, requires_grad=True)
    kw = dict(reset_mechanism="zero", reset_delay=reset_delay)
    spk = snnkernels.lif_constant(x, 300, beta, 1.0, **kw)
    spk_r, _ = reference.lif(x.expand(300, 3), beta, 1.0, **kw)
    weight = torch.linspace(-1.0, 1.0, 900, dtype=torch.float64).view(300, 3)
    grads = torch.autograd.grad((spk * weight).sum(), (x, beta))
    grads_r = torch.autograd.grad((spk_r * weight).sum(), (x, beta))
    assert_close(spk, spk_r, FORWARD_TOL[torch.float64], "spk")
    for name, g, g_r in zip(("x", "beta"), grads, grads_r):
        assert g_r.abs().max() > 0
        assert_close(g, g_r, GRAD_TOL[torch.float64], f"grad {name}")


def constant_op_inputs(reset_delay):
    g = torch.Generator().manual_seed(4)
    x = (torch.randn(12, generator=g, dtype=torch.float64) + 0.4).requires_grad_(True)
    mem0 = (torch.randn(12, generator=g, dtype=torch.float64) * 0.3).requires_grad_(True)
    beta = torch.full((4,), 0.8, dtype=torch.float64, requires_grad=True)
    thr = torch.full((1,), 0.9, dtype=torch.float64, requires_grad=True)
    graded = torch.ones(1, dtype=torch.float64)
    sg = S.fast_sigmoid(slope=5)
    return (x, 6, mem0, beta, thr, graded, sg.kind, *sg.constants(),
            _args.RESET_IDS["subtract"], reset_delay)


@pytest.mark.parametrize("reset_delay", RESET_DELAYS)
def test_opcheck(reset_delay):
    torch.library.opcheck(torch.ops.snnkernels.lif_constant_forward.default,
                          constant_op_inputs(reset_delay))


def test_same_bits_on_one_and_two_threads(restore_num_threads):
    x = torch.randn(64, 300, dtype=torch.float32) + 0.4
    results = []
    for threads in (1, 2):
        torch.set_num_threads(threads)
        xi = x.clone().requires_grad_()
        beta = torch.full((300,), 0.9, requires_grad=True)
        spk = snnkernels.lif_constant(xi, 25, beta)
        gx, gb = torch.autograd.grad((spk * torch.linspace(-1, 1, 300)).sum(), (xi, beta))
        results.append((spk, gx, gb))
    for a, b in zip(*results):
        assert torch.equal(a, b)


def test_empty_steps_and_neurons():
    x = torch.randn(3, 4, requires_grad=True)
    spk = snnkernels.lif_constant(x, 0, 0.9)
    assert spk.shape == (0, 3, 4)
    (gx,) = torch.autograd.grad(spk.sum(), x, allow_unused=True, materialize_grads=True)
    assert torch.equal(gx, torch.zeros_like(x))
    empty = torch.randn(3, 0, requires_grad=True)
    assert snnkernels.lif_constant(empty, 5, 0.9).shape == (5, 3, 0)


def test_nan_current_matches_lif():
    x = torch.tensor([[0.5, float("nan"), 1.5]], dtype=torch.float64)
    spk = snnkernels.lif_constant(x, 4, 0.9)
    spk_lif, _ = snnkernels.lif(x.expand(4, 1, 3), 0.9)
    torch.testing.assert_close(spk, spk_lif, equal_nan=True, rtol=0, atol=0)


@pytest.mark.parametrize("steps, error", [(-1, ValueError), (2.0, ValueError),
                                          (True, ValueError)])
def test_bad_steps(steps, error):
    with pytest.raises(error, match="steps"):
        snnkernels.lif_constant(torch.randn(2, 3), steps, 0.9)


def test_bad_current_and_parameters():
    with pytest.raises(TypeError, match="x must be a torch.Tensor"):
        snnkernels.lif_constant([1.0, 2.0], 3, 0.9)
    with pytest.raises(TypeError, match="floating-point"):
        snnkernels.lif_constant(torch.ones(2, 3, dtype=torch.int64), 3, 0.9)
    # the neuron shape is x.shape here (x is one step's current), not x.shape[1:]
    with pytest.raises(ValueError, match=r"beta of shape \(4,\) does not broadcast to the "
                                         r"neuron shape x\.shape = \(2, 3\)"):
        snnkernels.lif_constant(torch.randn(2, 3), 3, torch.rand(4))
    with pytest.raises(ValueError, match=r"mem0 of shape \(5,\) does not broadcast to "
                                         r"x\.shape = \(2, 3\)"):
        snnkernels.lif_constant(torch.randn(2, 3), 3, 0.9, mem0=torch.zeros(5))
    with pytest.raises(ValueError, match="reset_mechanism"):
        snnkernels.lif_constant(torch.randn(2, 3), 3, 0.9, reset_mechanism="soft")
