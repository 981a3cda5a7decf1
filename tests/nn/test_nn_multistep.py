"""Multi-step use of snnkernels.nn.Leaky / nn.LIF ([T, *batch] in one fused kernel call) equals
the single-step module looped over time: outputs at helpers.FORWARD_TOL, gradients (x, mem0,
every learnable parameter) at helpers.GRAD_TOL, in float32 and float64. Chunked sequences with
init_hidden continue exactly; torch.compile(fullgraph=True) sees through the module."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from snnkernels import nn as knn
from snnkernels import surrogate as S

from helpers import (FORWARD_TOL, GRAD_TOL, RESET_DELAYS, RESETS, SURROGATES, ParamMode,
                     Result, assert_results_match, make_case, upstream_weights)

SHAPE = (7, 3, 5)
PARAMS = ("beta", "threshold", "graded_spikes_factor")


def make_layer(case, cls=knn.Leaky, **options):
    """A layer whose beta / threshold / graded factor are copies of the case's, learnable."""
    kw = {k: getattr(case, k).detach().clone() for k in PARAMS}
    return cls(**kw, **{f"learn_{k}": True for k in PARAMS}, **options)


def grads_of(spk, mem, layer, x, mem0) -> Result:
    ws, wm = upstream_weights(spk.shape, spk.dtype, spk.device, seed=0)
    loss = (spk * ws).sum() + (mem * wm).sum()
    leaves = {"x": x, "mem0": mem0, **dict(layer.named_parameters())}
    grads = torch.autograd.grad(loss, list(leaves.values()))
    return Result(spk.detach(), mem.detach(), dict(zip(leaves, grads)))


def run_looped(case, **options) -> Result:
    c = case.fresh()
    layer = make_layer(c, **options)
    mem, spks, mems = c.mem0, [], []
    for xt in c.x.unbind(0):
        spk, mem = layer(xt, mem)
        spks.append(spk)
        mems.append(mem)
    return grads_of(torch.stack(spks), torch.stack(mems), layer, c.x, c.mem0)


def run_sequence(case, cls, **options) -> Result:
    c = case.fresh()
    layer = make_layer(c, cls, **options)
    call = layer if cls is knn.LIF else layer.forward_sequence
    spk, mem = call(c.x, c.mem0)
    return grads_of(spk, mem, layer, c.x, c.mem0)


@pytest.mark.parametrize("cls", [knn.Leaky, knn.LIF], ids=["forward_sequence", "LIF"])
@pytest.mark.parametrize("surrogate", [S.atan(), S.fast_sigmoid(), S.triangular(0.4)],
                         ids=["atan", "fast_sigmoid", "triangular"])
@pytest.mark.parametrize("reset_delay", RESET_DELAYS)
@pytest.mark.parametrize("reset_mechanism", RESETS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
def test_sequence_equals_steps_looped(dtype, reset_mechanism, reset_delay, surrogate, cls):
    # mem0 [B, N] (per_element layout) because the module's state is one value per neuron
    case = make_case(SHAPE, ParamMode("per_element", True), dtype=dtype, seed=4)
    case.mem0 = case.mem0.detach().requires_grad_(True)
    for k in PARAMS:  # per-neuron [N] parameters, as a layer usually has
        setattr(case, k, getattr(case, k)[0].detach())
    options = dict(spike_grad=surrogate, reset_mechanism=reset_mechanism,
                   reset_delay=reset_delay)
    expected = run_looped(case, **options)
    actual = run_sequence(case, cls, **options)
    assert_results_match(actual, expected, FORWARD_TOL[dtype], GRAD_TOL[dtype])


@settings(max_examples=40, deadline=None)
@given(shape=st.lists(st.integers(1, 4), min_size=2, max_size=4),
       layout=st.sampled_from(["0dim", "per_neuron", "per_element"]),
       reset_mechanism=st.sampled_from(RESETS), reset_delay=st.booleans(),
       surrogate=st.sampled_from([p.values[0] for p in SURROGATES]), seed=st.integers(0, 99))
def test_sequence_equals_steps_looped_any_shape(shape, layout, reset_mechanism, reset_delay,
                                                 surrogate, seed):
    """Random [T, *batch] shapes and parameter layouts, float64."""
    case = make_case(tuple(shape), ParamMode(layout, True), dtype=torch.float64, seed=seed)
    batch = tuple(shape[1:])
    case.mem0 = case.mem0.detach().expand(batch).clone().requires_grad_(True)
    options = dict(spike_grad=surrogate, reset_mechanism=reset_mechanism,
                   reset_delay=reset_delay)
    expected = run_looped(case, **options)
    actual = run_sequence(case, knn.LIF, **options)
    assert_results_match(actual, expected, FORWARD_TOL[torch.float64], GRAD_TOL[torch.float64])


def test_lif_chunks_continue_with_init_hidden():
    """Two calls on halves of a sequence give the same outputs as one call on all of it."""
    case = make_case(SHAPE, ParamMode("per_neuron", False), dtype=torch.float64, seed=2)
    whole = make_layer(case, knn.LIF, init_hidden=True, output=True)
    chunked = make_layer(case, knn.LIF, init_hidden=True)
    spk, mem = whole(case.x.detach())
    first = chunked(case.x.detach()[:3])
    second = chunked(case.x.detach()[3:])
    assert torch.equal(torch.cat([first, second]), spk)
    assert torch.equal(chunked.mem, mem[-1])


def test_step_mode_multi_on_leaky():
    x = torch.rand(4, 2, 3) * 2
    a = knn.Leaky(beta=0.6, step_mode="multi")
    b = knn.LIF(beta=0.6)
    for u, v in zip(a(x), b(x)):
        assert torch.equal(u, v)
    assert a(x)[0].shape == x.shape


def test_sequences_are_independent_without_init_hidden():
    layer = knn.LIF(beta=0.9)
    x = torch.rand(4, 2, 3) * 2
    first = layer(x)
    again = layer(x)
    for u, v in zip(first, again):
        assert torch.equal(u, v)


def test_empty_sequence():
    layer = knn.LIF(beta=0.5, init_hidden=True, output=True)
    spk, mem = layer(torch.zeros(0, 2, 3))
    assert spk.shape == mem.shape == (0, 2, 3)
    assert layer.mem.shape == (2, 3)


def test_compile_fullgraph():
    """A Linear + LIF stack compiled with fullgraph=True (aot_eager) equals eager, gradients
    included. The LIF updates its state buffer inside the compiled graph."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 6), knn.LIF(beta=0.8, learn_beta=True))
    x = torch.randn(5, 3, 4)

    def run(fn):
        model.zero_grad()
        spk, mem = fn(x)
        (spk.sum() + mem.pow(2).sum()).backward()
        return [spk, mem] + [p.grad.clone() for p in model.parameters()]

    eager = run(model)
    compiled = run(torch.compile(model, backend="aot_eager", fullgraph=True))
    for a, b in zip(compiled, eager):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)


def test_compile_fullgraph_with_hidden_state():
    """init_hidden: the state attribute is updated inside the compiled graph; chunks continue
    as in eager mode."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 6), knn.LIF(beta=0.8, init_hidden=True))
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True)
    x = torch.randn(6, 3, 4)
    expected = torch.cat([model(x[:3]), model(x[3:])])
    expected_mem = model[1].mem
    model[1].reset_mem()
    actual = torch.cat([compiled(x[:3]), compiled(x[3:])])
    torch.testing.assert_close(actual, expected, rtol=0, atol=0)
    torch.testing.assert_close(model[1].mem, expected_mem, rtol=0, atol=0)
