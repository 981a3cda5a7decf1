"""Property-based tests (hypothesis) of every public op against the executable spec
(snnkernels.reference): snnkernels.lif, snnkernels.linear_lif, the sparse masks
(snnkernels.sparse.TopK / ActiveWindow, through both ops) and the layers (nn.Leaky single step
vs multi-step, nn.LIF, nn.LinearLIF).

Hypothesis draws shapes (T = 1 and T = 0 included, odd and prime sizes, empty batches, 0 to 3
batch dims), dtypes, parameter layouts (float, 0-dim, per-neuron, per-element, broadcast with
leading ones), beta inside and outside [0, 1] (its exact ends included), thresholds (negative
and zero included), graded factors, every surrogate with random parameters, every reset
mechanism, both reset delays, which inputs are learnable, and sparse specs (k, fraction,
temporal, width). Tensor values come from torch generators seeded by a drawn integer.

Tolerances are those of tests/helpers.py (FORWARD_TOL / GRAD_TOL). The sparse comparisons run
in float64: TopK selects by |gradient|, and the kernel's hand-written backward differs from
autograd's in the last bits, which in float32 can flip the choice between two near-equal
entries (a legitimate difference, not a bug).

Stable CI: every test uses CI_SETTINGS (derandomize=True, no example database, no deadline), so
the same examples run on every machine and every run. SNNKERNELS_PROPERTY_EXAMPLES=<n> scales
the number of examples of each test to n (for a longer local search; derandomized too).
"""

from __future__ import annotations

import math
import os
import warnings

import pytest
import torch
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import snnkernels
from snnkernels import nn as knn
from snnkernels import reference
from snnkernels import sparse as sp
from snnkernels import surrogate as S

from helpers import (FORWARD_TOL, GRAD_TOL, RESETS, Case, Result, Tol, assert_close,
                     assert_results_match, generator, run_lif, upstream_weights)

# Examples per test in CI (1,900 in all): the whole file takes about 25 s on the 2-core CI
# machine (a few ms per example), well under a minute when the machine is loaded.
CI_EXAMPLES = {"lif": 600, "lif_sparse": 400, "topk_dense": 150, "linear_lif": 400,
               "leaky": 200, "linear_module": 150}
_SCALE = os.environ.get("SNNKERNELS_PROPERTY_EXAMPLES")


def ci_settings(name: str) -> settings:
    return settings(derandomize=True, database=None, deadline=None, print_blob=True,
                    max_examples=int(_SCALE) if _SCALE else CI_EXAMPLES[name],
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


# ---------------------------------------------------------------------------------------------
# Strategies
# ---------------------------------------------------------------------------------------------

# Sizes: odd, prime, 1 and (rarely) 0; T = 1 often, T = 0 rarely.
SIZES = st.sampled_from([2, 3, 5, 7, 11, 13, 17, 2, 3, 4, 5, 6, 7, 9, 12, 1, 1, 0])
STEPS = st.sampled_from([2, 3, 4, 5, 7, 9, 3, 5, 1, 1, 1, 0])
SEEDS = st.integers(0, 2**31 - 1)


def finite(lo, hi):
    return st.floats(lo, hi, allow_nan=False, allow_infinity=False)


@st.composite
def surrogates(draw):
    """Every factory, with random parameters (0 included, where allowed)."""
    name = draw(st.sampled_from(sorted(S.SURROGATE_IDS)))
    if name == "atan":
        return S.atan(alpha=draw(finite(0.0, 8.0)))
    if name == "fast_sigmoid":
        return S.fast_sigmoid(slope=draw(finite(0.0, 50.0)))
    if name == "sigmoid":
        return S.sigmoid(slope=draw(finite(0.0, 50.0)))
    if name == "spike_rate_escape":
        return S.spike_rate_escape(beta=draw(finite(0.0, 4.0)), slope=draw(finite(0.0, 30.0)))
    if name == "triangular":
        return S.triangular(threshold=draw(finite(0.0, 2.0)))
    return getattr(S, name)()


@st.composite
def broadcast_shapes(draw, batch: tuple):
    """A shape that broadcasts to `batch`: a suffix of it with some dims set to 1, sometimes
    with leading ones (0-dim included)."""
    keep = draw(st.integers(0, len(batch)))
    shape = [s if draw(st.booleans()) else 1 for s in batch[len(batch) - keep:]]
    lead = draw(st.integers(0, 1)) if keep == len(batch) else 0
    return tuple([1] * lead + shape)


VALUE_RANGES = {
    # beta: inside [0, 1], outside it (clamped in the forward, gradient 0 there) and the ends
    "beta": [(0.2, 0.95), (-0.6, 1.6), (0.0, 0.0), (1.0, 1.0)],
    "threshold": [(0.5, 1.5), (-0.5, 2.0), (0.0, 0.0)],
    "graded_spikes_factor": [(0.5, 1.5), (-1.0, 2.0)],
}


@st.composite
def neuron_param(draw, name: str, batch: tuple, dtype):
    """A float, or a tensor broadcasting to batch, for beta / threshold / graded factor;
    tensors require grad at random."""
    lo, hi = draw(st.sampled_from(VALUE_RANGES[name]))
    if draw(st.integers(0, 3)) == 0:
        return float(draw(finite(lo, hi))) if lo != hi else lo
    shape = draw(broadcast_shapes(batch))
    g = generator(draw(SEEDS))
    value = torch.rand(shape, generator=g, dtype=torch.float64) * (hi - lo) + lo
    if name == "beta" and draw(st.booleans()):  # some exact 0 and 1 entries among the others
        ends = torch.randint(0, 3, shape, generator=g)
        value = torch.where(ends == 0, 0.0, torch.where(ends == 1, 1.0, value))
    return value.to(dtype).requires_grad_(draw(st.booleans()))


@st.composite
def lif_cases(draw, dtype=None, min_batch_dims=0, steps=STEPS):
    dtype = dtype or draw(st.sampled_from([torch.float64, torch.float32]))
    t = draw(steps)
    batch = tuple(draw(st.lists(SIZES, min_size=min_batch_dims, max_size=3)))
    g = generator(draw(SEEDS))
    shift, scale = draw(finite(0.1, 1.2)), draw(finite(0.1, 1.5))
    x = (torch.randn((t,) + batch, generator=g, dtype=torch.float64) * scale + shift)
    mem0 = None
    if draw(st.booleans()):
        mem0 = (torch.randn(draw(broadcast_shapes(batch)), generator=g, dtype=torch.float64)
                .to(dtype).requires_grad_(draw(st.booleans())))
    params = {k: draw(neuron_param(k, batch, dtype)) for k in VALUE_RANGES}
    return Case(x=x.to(dtype).requires_grad_(True), mem0=mem0, **params)


@st.composite
def sparse_specs(draw, n: int):
    """TopK by k (1..N) or by fraction, temporal or not; ActiveWindow of a random width (a huge
    one included)."""
    kind = draw(st.sampled_from(["k", "fraction", "window"]))
    if kind == "k":
        return sp.TopK(k=draw(st.integers(1, max(n, 1))), temporal=draw(st.booleans()))
    if kind == "fraction":
        return sp.TopK(fraction=draw(st.floats(0.01, 1.0)), temporal=draw(st.booleans()))
    return sp.ActiveWindow(draw(st.sampled_from([0.05, 0.2, 0.5, 1.0, 1e30])
                                | st.floats(1e-3, 3.0)))


lif_options = st.fixed_dictionaries({
    "surrogate": surrogates(),
    "reset_mechanism": st.sampled_from(RESETS),
    "reset_delay": st.booleans(),
})
UPSTREAMS = st.sampled_from(["weighted_both", "spk_sum", "mem_only", "spk_only"])


# ---------------------------------------------------------------------------------------------
# snnkernels.lif
# ---------------------------------------------------------------------------------------------


def check_lif(case: Case, dtype, upstream, seed, **kwargs) -> tuple:
    actual = run_lif(snnkernels.lif, case, upstream=upstream, seed=seed, **kwargs)
    expected = run_lif(reference.lif, case, upstream=upstream, seed=seed, **kwargs)
    assert actual.spk.shape == case.x.shape and actual.mem.shape == case.x.shape
    assert actual.spk.dtype == dtype and actual.mem.dtype == dtype
    assert_results_match(actual, expected, FORWARD_TOL[dtype], GRAD_TOL[dtype], f"{kwargs}")
    assert "x" in actual.grads
    describe(expected.spk)
    return actual, expected


def describe(spk: torch.Tensor) -> None:
    """Hypothesis statistics (--hypothesis-show-statistics): how many examples are empty and
    how many fire at all, so a weak strategy shows."""
    if spk.numel() == 0:
        event("empty")
    else:
        rate = (spk != 0).double().mean().item()
        event("no spike" if rate == 0 else "all spike" if rate == 1 else "some spike")


@ci_settings("lif")
@given(case=lif_cases(), options=lif_options, upstream=UPSTREAMS, seed=SEEDS)
def test_lif_matches_reference(case, options, upstream, seed):
    """Forward and every gradient (x, mem0, learnable beta / threshold / graded) of the fused
    op equal the reference: float64 forward bit-identical, gradients at GRAD_TOL."""
    check_lif(case, case.x.dtype, upstream, seed, **options)


@ci_settings("lif_sparse")
@given(data=st.data(), case=lif_cases(dtype=torch.float64, min_batch_dims=1),
       options=lif_options, seed=SEEDS)
def test_lif_sparse_matches_reference(data, case, options, seed):
    """The masks through snnkernels.lif: the same outputs, the same masked gradients and the same
    surviving entries as the reference with the same mask; a row keeps at most k entries."""
    n = case.x.shape[-1]
    spec = data.draw(sparse_specs(n), label="sparse")
    actual, expected = check_lif(case, torch.float64, "weighted_both", seed, sparse=spec,
                                 **options)
    gx, gx_ref = actual.grads["x"], expected.grads["x"]
    if isinstance(spec, sp.TopK) and gx.numel():
        k = spec.k_for(n)
        assert int((gx != 0).sum(-1).max()) <= k, "a row keeps more than k entries"
        if not spec.temporal:  # the entries that survive are the reference's
            assert torch.equal(gx != 0, gx_ref != 0), "TopK kept other entries"


@ci_settings("topk_dense")
@given(case=lif_cases(dtype=torch.float64, min_batch_dims=1), options=lif_options,
       temporal=st.booleans(), by_fraction=st.booleans())
def test_topk_of_all_neurons_is_dense(case, options, temporal, by_fraction):
    """TopK(k = N) and TopK(fraction=1) keep every entry: the same bits as sparse=None."""
    n = case.x.shape[-1]
    spec = sp.TopK(fraction=1.0, temporal=temporal) if by_fraction else sp.TopK(
        k=max(n, 1), temporal=temporal)
    dense = run_lif(snnkernels.lif, case, **options)
    masked = run_lif(snnkernels.lif, case, sparse=spec, **options)
    assert_results_match(masked, dense, Tol(0.0), Tol(0.0), f"{spec}")


# ---------------------------------------------------------------------------------------------
# snnkernels.linear_lif
# ---------------------------------------------------------------------------------------------


@st.composite
def linear_cases(draw, dtype=torch.float64):
    t, b = draw(STEPS), draw(SIZES)
    f = draw(st.sampled_from([1, 2, 3, 5, 7, 13, 64, 70, 0]))  # 64 / 70: a full column block
    n = draw(SIZES)
    g = generator(draw(SEEDS))

    def rand(*shape, scale=1.0, shift=0.0):
        return (torch.randn(shape, generator=g, dtype=torch.float64) * scale + shift).to(dtype)

    inputs = {"x": rand(t, b, f, scale=draw(finite(0.3, 2.0)), shift=draw(finite(-0.2, 0.6))),
              "weight": rand(n, f, scale=1.0 / math.sqrt(max(f, 1))),
              "bias": rand(n, scale=0.3, shift=0.4) if draw(st.booleans()) else None}
    neurons = (b, n)
    for name in ("beta", "threshold"):
        inputs[name] = draw(neuron_param(name, neurons, dtype))
    learn = {k for k in ("x", "weight", "bias") if draw(st.booleans())} | {"weight"}
    return inputs, learn


def run_linear(fn, inputs, learn, seed, **kwargs) -> Result:
    leaves = {k: v.detach().clone().requires_grad_(True) for k, v in inputs.items()
              if isinstance(v, torch.Tensor) and (k in learn or v.requires_grad)}
    args = {**inputs, **leaves}
    spk, mem = fn(args["x"], args["weight"], args["bias"], args["beta"], args["threshold"],
                  **kwargs)
    ws, wm = upstream_weights(spk.shape, spk.dtype, spk.device, seed)
    loss = (spk * ws).sum() + 0.3 * (mem * wm).sum()
    grads = torch.autograd.grad(loss, list(leaves.values()), allow_unused=True)
    grads = {k: torch.zeros_like(leaves[k]) if v is None else v for k, v in zip(leaves, grads)}
    return Result(spk.detach(), mem.detach(), grads)


def check_linear(actual: Result, expected: Result, dtype, what=""):
    """linear_lif's current comes from another GEMM than the reference's matmul, or for a layer
    of at most 4 neurons from row loops (csrc/cpu/narrow_linear.h): another summation order, so the
    membrane is compared at 1e-12 (float64) instead of bit-exactly, with a floor of 1e-2 of its
    largest magnitude: a current that cancels to ~1e-4 of its terms carries their rounding
    (seen: 4.4e-16 on 2.1e-4 with terms of order 1). Spikes must still be identical."""
    assert_close(actual.spk, expected.spk, Tol(0.0), f"{what} spk")
    mem_tol = Tol(1e-12, 1e-2) if dtype == torch.float64 else FORWARD_TOL[dtype]
    assert_close(actual.mem, expected.mem, mem_tol, f"{what} mem")
    assert set(actual.grads) == set(expected.grads)
    for name, b in expected.grads.items():
        assert_close(actual.grads[name], b, GRAD_TOL[dtype], f"{what} grad {name}")


@ci_settings("linear_lif")
@given(data=st.data(), case=linear_cases(), options=lif_options, seed=SEEDS,
       dense=st.booleans())
def test_linear_lif_matches_reference(data, case, options, seed, dense):
    """snnkernels.linear_lif, dense and with a random mask (the sparse synaptic backward from the
    compact ELL / CSR gradient), vs reference.linear_lif: outputs and the gradients of x,
    weight, bias and learnable beta / threshold."""
    inputs, learn = case
    n = inputs["weight"].shape[0]
    spec = None if dense else data.draw(sparse_specs(n), label="sparse")
    kwargs = dict(options, sparse=spec)
    actual = run_linear(snnkernels.linear_lif, inputs, learn, seed, **kwargs)
    expected = run_linear(reference.linear_lif, inputs, learn, seed, **kwargs)
    check_linear(actual, expected, torch.float64, f"{kwargs}")
    describe(expected.spk)


# ---------------------------------------------------------------------------------------------
# Layers: nn.Leaky (single step vs multi-step), nn.LIF, nn.LinearLIF
# ---------------------------------------------------------------------------------------------


def layer_from(case: Case, cls, **options):
    """A layer whose beta / threshold / graded factor are the case's (learnable where the case's
    tensors require grad; floats stay floats)."""
    kw = {}
    for name in ("beta", "threshold", "graded_spikes_factor"):
        v = getattr(case, name)
        if isinstance(v, torch.Tensor):
            kw[name] = v.detach().clone()
            kw[f"learn_{name}"] = v.requires_grad
        else:
            kw[name] = v
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # beta outside [0, 1] warns (documented)
        return cls(**kw, **options)


def layer_result(spk, mem, layer, x, mem0, seed) -> Result:
    ws, wm = upstream_weights(spk.shape, spk.dtype, spk.device, seed)
    loss = (spk * ws).sum() + (mem * wm).sum()
    leaves = {"x": x, "mem0": mem0, **dict(layer.named_parameters())}
    leaves = {k: v for k, v in leaves.items() if v is not None}
    grads = torch.autograd.grad(loss, list(leaves.values()), allow_unused=True)
    grads = {k: torch.zeros_like(leaves[k]) if g is None else g for k, g in zip(leaves, grads)}
    return Result(spk.detach(), mem.detach(), grads)


@ci_settings("leaky")
@given(case=lif_cases(min_batch_dims=1, steps=st.sampled_from([1, 2, 3, 5])),
       options=st.fixed_dictionaries({"spike_grad": surrogates(),
                                      "reset_mechanism": st.sampled_from(RESETS),
                                      "reset_delay": st.booleans()}),
       seed=SEEDS)
def test_leaky_single_step_equals_multi_step(case, options, seed):
    """nn.Leaky called once per step (snnTorch's loop) equals nn.LIF on the whole sequence and
    Leaky.forward_sequence, and both equal reference.lif: outputs and gradients of the input,
    the initial membrane and every learnable parameter."""
    dtype = case.x.dtype
    batch = tuple(case.x.shape[1:])
    mem0 = torch.randn(batch, generator=generator(seed), dtype=torch.float64).to(dtype)

    def looped():
        c = case.fresh()
        layer = layer_from(c, knn.Leaky, **options)
        x, m0 = c.x, mem0.clone().requires_grad_(True)
        mem, spks, mems = m0, [], []
        for xt in x.unbind(0):
            spk, mem = layer(xt, mem)
            spks.append(spk)
            mems.append(mem)
        return layer_result(torch.stack(spks), torch.stack(mems), layer, x, m0, seed)

    def sequence(cls, via_forward_sequence=False):
        c = case.fresh()
        layer = layer_from(c, cls, **options)
        x, m0 = c.x, mem0.clone().requires_grad_(True)
        spk, mem = (layer.forward_sequence if via_forward_sequence else layer)(x, m0)
        return layer_result(spk, mem, layer, x, m0, seed)

    expected = looped()
    for actual, what in ((sequence(knn.LIF), "LIF"),
                         (sequence(knn.Leaky, True), "Leaky.forward_sequence")):
        assert_results_match(actual, expected, FORWARD_TOL[dtype], GRAD_TOL[dtype], what)
    # and the module equals the spec, given the layer's own parameter tensors (a float given to
    # the constructor becomes a float32 tensor there, as in snnTorch)
    c = case.fresh()
    layer = layer_from(c, knn.Leaky, **options)
    ref = Case(x=c.x, beta=layer.beta, threshold=layer.threshold,
               graded_spikes_factor=layer.graded_spikes_factor,
               mem0=mem0.clone().requires_grad_(True))
    spec = run_lif(reference.lif, ref, seed=seed, surrogate=options["spike_grad"],
                   reset_mechanism=options["reset_mechanism"], reset_delay=options["reset_delay"])
    assert_close(expected.spk, spec.spk, Tol(0.0), "looped Leaky vs reference: spk")
    assert_close(expected.mem, spec.mem, FORWARD_TOL[dtype], "looped Leaky vs reference: mem")


@ci_settings("linear_module")
@given(data=st.data(), case=linear_cases(), options=lif_options, seed=SEEDS,
       learn=st.fixed_dictionaries({"learn_beta": st.booleans(),
                                    "learn_threshold": st.booleans()}),
       use_sparse=st.booleans())
def test_linear_lif_module_matches_reference(data, case, options, seed, learn, use_sparse):
    """nn.LinearLIF (its own weight, bias and per-neuron Parameters) equals reference.linear_lif
    on the same tensors, dense or with a mask."""
    inputs, _ = case
    n, f = inputs["weight"].shape
    if n == 0 or f == 0:
        with pytest.raises(ValueError, match="must be a positive int"):
            knn.LinearLIF(f, n)
        return
    beta = data.draw(finite(-0.5, 1.5), label="beta")
    threshold = data.draw(finite(-0.5, 2.0), label="threshold")
    spec = data.draw(sparse_specs(n), label="sparse") if use_sparse else None
    layer = knn.LinearLIF(f, n, beta, threshold, bias=inputs["bias"] is not None, sparse=spec,
                          dtype=torch.float64, **options, **learn)
    with torch.no_grad():
        layer.weight.copy_(inputs["weight"])
        if layer.bias is not None:
            layer.bias.copy_(inputs["bias"])
    x = inputs["x"].clone().requires_grad_(True)
    spk, mem = layer(x)
    actual = layer_result(spk, mem, layer, x, None, seed)
    params = {k: v.detach().clone().requires_grad_(True) for k, v in layer.named_parameters()}
    x_ref = inputs["x"].clone().requires_grad_(True)
    spk_r, mem_r = reference.linear_lif(x_ref, params["weight"], params.get("bias"),
                                        params.get("beta", layer.beta),
                                        params.get("threshold", layer.threshold), sparse=spec,
                                        **options)
    expected = layer_result(spk_r, mem_r, _Params(params), x_ref, None, seed)
    check_linear(actual, expected, torch.float64, f"{options} sparse={spec}")


class _Params:
    """A stand-in with named_parameters() for layer_result."""

    def __init__(self, params):
        self.params = params

    def named_parameters(self):
        return self.params.items()
