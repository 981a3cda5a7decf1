"""snnkernels.lif vs the executable spec snnkernels.reference.lif: forward values and every
gradient, over device x dtype x reset x reset_delay x surrogate x parameter mode, and over the
kinds of upstream gradient. Tolerances: see FORWARD_TOL / GRAD_TOL in helpers.py."""

from __future__ import annotations

import pytest
import torch

import snnkernels
from snnkernels import _args
from snnkernels import surrogate as S

from helpers import (FORWARD_TOL, PARAM_MODES, RESET_DELAYS, RESETS, SURROGATES, UPSTREAMS,
                     Case, ParamMode, assert_close, check_against_reference, make_case, run_lif)

SHAPE = (5, 3, 4)  # [T, B, N]: small, the grid is large


@pytest.mark.parametrize("mode", PARAM_MODES)
@pytest.mark.parametrize("surrogate", SURROGATES)
@pytest.mark.parametrize("reset_delay", RESET_DELAYS)
@pytest.mark.parametrize("reset_mechanism", RESETS)
def test_matches_reference(device, dtype, reset_mechanism, reset_delay, surrogate, mode):
    case = make_case(SHAPE, mode, dtype, device, seed=2 * RESETS.index(reset_mechanism) + reset_delay)
    check_against_reference(case, dtype, f"{mode.id}", surrogate=surrogate,
                            reset_mechanism=reset_mechanism, reset_delay=reset_delay)


@pytest.mark.parametrize("upstream", sorted(UPSTREAMS))
@pytest.mark.parametrize("reset_delay", RESET_DELAYS)
@pytest.mark.parametrize("reset_mechanism", RESETS)
def test_upstream_gradient_kinds(device, dtype, reset_mechanism, reset_delay, upstream):
    """Loss on spikes only, on the membrane only (the other output's gradient is zero or None),
    and losses whose upstream gradient is broadcast from one value (spk.sum())."""
    case = make_case(SHAPE, ParamMode("mixed", True), dtype, device, seed=3)
    check_against_reference(case, dtype, upstream, upstream=upstream,
                            surrogate=S.fast_sigmoid(slope=5), reset_mechanism=reset_mechanism,
                            reset_delay=reset_delay)


@pytest.mark.parametrize("reset_delay", RESET_DELAYS)
@pytest.mark.parametrize("reset_mechanism", RESETS)
def test_default_arguments(device, dtype, reset_mechanism, reset_delay):
    """threshold, mem0, surrogate, graded_spikes_factor left at their defaults."""
    case = make_case(SHAPE, ParamMode("per_neuron", True), dtype, device, seed=5)
    case = Case(x=case.x, beta=case.beta)
    check_against_reference(case, dtype, "defaults", reset_mechanism=reset_mechanism,
                            reset_delay=reset_delay)


@pytest.mark.parametrize("reset_delay", RESET_DELAYS)
@pytest.mark.parametrize("reset_mechanism", RESETS)
def test_beta_outside_unit_interval_is_clamped(device, dtype, reset_mechanism, reset_delay):
    """beta is clamped to [0, 1] in the forward; its gradient is 0 strictly outside [0, 1] and
    passes at the end points 0 and 1 (torch.clamp's convention)."""
    case = make_case(SHAPE, ParamMode("per_neuron", True), dtype, device, seed=7)
    beta = torch.tensor([-0.3, 0.0, 1.0, 1.4], dtype=dtype, device=device, requires_grad=True)
    case.beta = beta
    check_against_reference(case, dtype, "clamped beta", reset_mechanism=reset_mechanism,
                            reset_delay=reset_delay)
    grad = run_lif(snnkernels.lif, case, reset_mechanism=reset_mechanism,
                   reset_delay=reset_delay).grads["beta"]
    assert grad[0] == 0 and grad[3] == 0, "beta outside [0, 1] must get no gradient"
    # beta' = 1 (and 0) are in the clamp's pass-through range: those must carry gradient
    assert grad[2] != 0


@pytest.mark.parametrize("reset_delay", RESET_DELAYS)
@pytest.mark.parametrize("reset_mechanism", ["subtract", "zero"])
@pytest.mark.parametrize("which", ["spk", "mem"])
def test_op_backward_with_none_upstream_gradient(which, reset_mechanism, reset_delay):
    """At the op level an unused output's gradient can arrive as None: it must mean zeros.
    (Through snnkernels.lif autograd materializes zeros instead, so call the op directly.)"""
    torch.manual_seed(11)
    t, m = 6, 300  # more than one chunk of 256 neurons
    x = torch.randn(t, m, dtype=torch.float64) + 0.5
    mem0 = torch.randn(m, dtype=torch.float64) * 0.5
    beta = torch.rand(m, dtype=torch.float64) * 0.6 + 0.3
    thr = torch.full((1,), 0.9, dtype=torch.float64)
    graded = torch.rand(1, dtype=torch.float64) + 0.5
    sg = S.atan()
    consts = (sg.kind, *sg.constants(), _args.RESET_IDS[reset_mechanism], reset_delay)
    spk, mem, pre = torch.ops.snnkernels.lif_forward(x, mem0, beta, thr, graded, *consts)
    g = torch.randn(t, m, dtype=torch.float64)
    zeros = torch.zeros_like(g)
    grads = (None, g) if which == "spk" else (g, None)
    dense = (zeros, g) if which == "spk" else (g, zeros)
    got = torch.ops.snnkernels.lif_backward(*grads, mem, pre, mem0, beta, thr, graded, *consts,
                                            True)
    want = torch.ops.snnkernels.lif_backward(*dense, mem, pre, mem0, beta, thr, graded, *consts,
                                             True)
    for name, a, b in zip(("x", "mem0", "beta", "threshold", "graded"), got, want):
        assert_close(a, b, FORWARD_TOL[torch.float64], f"grad {name} with grad_{which}=None")
    # both None: every gradient is zero
    got = torch.ops.snnkernels.lif_backward(None, None, mem, pre, mem0, beta, thr, graded,
                                            *consts, True)
    for name, a in zip(("x", "mem0", "beta", "threshold", "graded"), got):
        assert torch.equal(a, torch.zeros_like(a)), f"grad {name} with no upstream gradient"
