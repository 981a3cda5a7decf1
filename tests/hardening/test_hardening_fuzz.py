"""Bad-input fuzzing of every public entry point: snnkernels.lif, snnkernels.linear_lif, the
sparse specs (TopK, ActiveWindow), nn.Leaky / nn.LIF / nn.LinearLIF (constructor and forward),
snnkernels.convert and models.TabularSNN (constructor and forward).

Two parts:
1. A table (CASES): each row calls one entry point with one wrong type, shape, dtype, device,
   NaN / inf value, or huge / negative size, and states the outcome: either an exception of the
   given type whose message names the argument (Raises), or a documented result (Returns, with
   where it is documented). Rows whose id ends in "-regression" failed before this file existed
   (an error that did not name the argument, or a wrong exception type) and were fixed.
2. A hypothesis fuzz (test_random_garbage): random argument values of random types for every
   entry point, mixed with valid ones; the call (and a backward when it returns tensors that
   require grad) must either raise TypeError / ValueError / RuntimeError (NotImplementedError
   included) or return tensors of the documented shape. Never another exception, a crash or a
   hang. Sizes are kept either small or absurd (>= 2^40 elements: the allocation fails at once),
   never in between, so the fuzz cannot allocate gigabytes on a shared machine.

Devices: "meta" stands in for a second device (the CPU build cannot make CUDA tensors; the
CUDA-tensor-on-a-CPU-build path is tested in test_lif_bad_inputs.py with a stand-in object).
At the end of the module the number of cases tried is written to the terminal.

Documented results used below:
- NaN / inf values propagate through the arithmetic and never select a code path or an address
  (SECURITY.md); NaN never fires (its spikes are 0) and its membrane stays NaN from that step on
  (tests/ops/test_lif_edge_cases.py::test_nan_input_propagates). Here: the op equals the reference,
  NaN in the same places (the reference is the spec, README "Usage").
- A tensor on "meta" runs the ops' fake implementations: outputs of the right shape on meta
  (snnkernels/_ops.py, used by torch.compile).
- beta outside [0, 1] warns in nn.Leaky and is clamped (snnkernels/nn/leaky.py, docs/nn.md).
- convert on a model without snntorch.Leaky returns it unchanged with a warning
  (snnkernels/convert.py).
- Huge sizes: torch's allocator raises RuntimeError ("can't allocate memory" / "Storage size
  calculation overflowed"), which names the requested size.
"""

from __future__ import annotations

import math
import re
import warnings
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np
import pytest
import snntorch
import torch
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import snnkernels
from snnkernels import models
from snnkernels import nn as knn
from snnkernels import reference
from snnkernels import sparse as sp
from snnkernels import surrogate as S

ALLOWED = (TypeError, ValueError, RuntimeError)  # NotImplementedError is a RuntimeError
TRIED = {"table": 0, "random": 0}

X = torch.randn(4, 3, 5)          # lif: [T, B, N]
XL = torch.randn(4, 3, 6)         # linear_lif: [T, B, F]
W = torch.randn(5, 6)             # [N, F]
B = torch.randn(5)
XT = torch.randn(3, 7)            # TabularSNN: [B, F]
NAN, INF = float("nan"), float("inf")
HUGE = 2**40                      # as a size: 4 TiB of float32 at least, refused at once


@pytest.fixture(scope="module", autouse=True)
def report_counts(request):
    yield
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if reporter is not None and capture is not None:
        with capture.global_and_fixture_disabled():
            reporter.write_line(f"\ntest_hardening_fuzz: {TRIED['table']} table cases and "
                                f"{TRIED['random']} random calls tried")


# ---------------------------------------------------------------------------------------------
# The table
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Raises:
    exc: type
    names: str  # a regex the message must match: the argument's name and what is wrong


@dataclass(frozen=True)
class Returns:
    check: Callable  # called with the result; asserts the documented result
    where: str       # where that result is documented


def lif(**kw):
    args = dict(x=X, beta=0.9)
    args.update(kw)
    return lambda: snnkernels.lif(**args)


def linear(**kw):
    args = dict(x=XL, weight=W, bias=B, beta=0.9)
    args.update(kw)
    return lambda: snnkernels.linear_lif(**args)


def quiet(fn):
    """Calls fn with warnings silenced (warnings are checked where they are the result)."""
    def run():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return fn()
    return run


def shaped_like(x, device="cpu"):
    def check(out):
        spk, mem = out
        assert spk.shape == mem.shape == x.shape and spk.device.type == device
    return check


def same_as_reference(x, **kw):
    """The op equals the reference, NaN / inf in the same places (the documented result for
    non-finite values: they propagate through the same arithmetic)."""
    def check(out):
        spk, mem = out
        spk_r, mem_r = reference.lif(x, **kw)
        assert torch.equal(spk.isnan(), spk_r.isnan()) and torch.equal(mem.isnan(), mem_r.isnan())
        assert torch.equal(spk.nan_to_num(0.5), spk_r.nan_to_num(0.5))
        torch.testing.assert_close(mem, mem_r, equal_nan=True, rtol=1e-6, atol=1e-6)
    return check


def nan_at(*index):
    x = X.clone()
    x[index] = NAN
    return x


def inf_at(*index, sign=1.0):
    x = X.clone()
    x[index] = sign * INF
    return x


def module_is(cls):
    def check(out):
        assert isinstance(out, cls)
    return check


def logits_shape(b, classes=2):
    def check(out):
        assert out.shape == (b, classes)
    return check


def leaky_step(layer, x, *mem):
    return lambda: layer()(x, *mem)


SECURITY = "SECURITY.md (NaN and inf propagate); tests/ops/test_lif_edge_cases.py"
META = "snnkernels/_ops.py (fake implementations run for meta tensors)"
T = TypeError
V = ValueError
R = RuntimeError

CASES = [
    # ---- snnkernels.lif: types
    ("lif-x-None", lif(x=None), Raises(T, r"x must be a torch.Tensor")),
    ("lif-x-list", lif(x=[[1.0]]), Raises(T, r"x must be a torch.Tensor")),
    ("lif-x-ndarray", lif(x=np.ones((2, 3))), Raises(T, r"x must be a torch.Tensor")),
    ("lif-x-float", lif(x=1.0), Raises(T, r"x must be a torch.Tensor")),
    ("lif-beta-str", lif(beta="0.9"), Raises(T, r"beta must be a float or a tensor")),
    ("lif-beta-None", lif(beta=None), Raises(T, r"beta must be a float or a tensor")),
    ("lif-beta-complex", lif(beta=1j), Raises(T, r"beta must be a float or a tensor")),
    ("lif-beta-dict", lif(beta={}), Raises(T, r"beta must be a float or a tensor")),
    ("lif-threshold-bool", lif(threshold=True), Raises(T, r"threshold must be a float")),
    ("lif-graded-list", lif(graded_spikes_factor=[1.0]), Raises(T, r"graded_spikes_factor must")),
    ("lif-mem0-float", lif(mem0=0.5), Raises(T, r"mem0 must be None or a tensor")),
    ("lif-surrogate-str", lif(surrogate="atan"), Raises(T, r"surrogate must be None or one of")),
    ("lif-surrogate-int", lif(surrogate=0), Raises(T, r"surrogate must be None or one of")),
    ("lif-reset-int", lif(reset_mechanism=0), Raises(V, r"reset_mechanism must be one of")),
    ("lif-reset_delay-None", lif(reset_delay=None), Raises(T, r"reset_delay must be a bool")),
    ("lif-sparse-str", lif(sparse="topk"), Raises(T, r"sparse must be None")),
    ("lif-sparse-class", lif(sparse=sp.TopK), Raises(T, r"sparse must be None")),
    ("lif-sparse-surrogate", lif(sparse=S.atan()), Raises(T, r"sparse must be None")),
    # ---- snnkernels.lif: shapes
    ("lif-x-0dim", lif(x=torch.tensor(1.0)), Raises(V, r"x must have a leading time dimension")),
    ("lif-beta-shape", lif(beta=torch.rand(3)), Raises(V, r"beta of shape \(3,\) does not")),
    ("lif-beta-grows", lif(beta=torch.rand(2, 3, 5)), Raises(V, r"beta of shape \(2, 3, 5\)")),
    ("lif-threshold-shape", lif(threshold=torch.ones(3, 1, 1)), Raises(V, r"threshold of shape")),
    ("lif-mem0-shape", lif(mem0=torch.zeros(4, 3, 5)), Raises(V, r"mem0 of shape \(4, 3, 5\)")),
    ("lif-mem0-N", lif(mem0=torch.zeros(6)), Raises(V, r"mem0 of shape \(6,\)")),
    ("lif-topk-k-above-N", lif(sparse=sp.TopK(k=6)), Raises(V, r"TopK: k = 6 is larger than")),
    ("lif-topk-k-2^70", lif(sparse=sp.TopK(k=2**70)), Raises(V, r"TopK: k = \d+ is larger")),
    # ---- snnkernels.lif: dtypes
    ("lif-x-int", lif(x=X.long()), Raises(T, r"x must be a floating-point tensor")),
    ("lif-x-bool", lif(x=X > 0), Raises(T, r"x must be a floating-point tensor")),
    ("lif-x-half", lif(x=X.half()), Raises(T, r"x has dtype torch.float16; on cpu")),
    ("lif-x-bfloat16", lif(x=X.bfloat16()), Raises(T, r"x has dtype torch.bfloat16; on cpu")),
    ("lif-x-complex", lif(x=X.to(torch.complex64)), Raises(T, r"x must be a floating-point")),
    ("lif-beta-int", lif(beta=torch.ones(5, dtype=torch.int32)), Raises(T, r"beta must be a floating")),
    ("lif-mem0-bool", lif(mem0=torch.ones(5, dtype=torch.bool)), Raises(T, r"mem0 must be a floating")),
    ("lif-mem0-float64", lif(mem0=torch.zeros(5, dtype=torch.float64)),
     Returns(shaped_like(X), "README Usage: mem0 is cast to x's dtype (snnkernels/lif.py)")),
    # ---- snnkernels.lif: devices
    ("lif-x-meta", lif(x=X.to("meta")), Returns(shaped_like(X, "meta"), META)),
    ("lif-x-meta-sparse", lif(x=X.to("meta"), sparse=sp.ActiveWindow()),
     Returns(shaped_like(X, "meta"), META)),
    ("lif-beta-meta", lif(beta=torch.ones(5, device="meta")), Raises(V, r"beta is on meta but x")),
    ("lif-mem0-meta", lif(mem0=torch.ones(5, device="meta")), Raises(V, r"mem0 is on meta but x")),
    ("lif-x-meta-beta-cpu", lif(x=X.to("meta"), beta=torch.ones(5)),
     Raises(V, r"beta is on cpu but x is on meta")),
    # ---- snnkernels.lif: NaN / inf (documented: they propagate as the reference's arithmetic)
    ("lif-x-nan", lif(x=nan_at(1, 2, 3)), Returns(same_as_reference(nan_at(1, 2, 3), beta=0.9), SECURITY)),
    ("lif-x-inf", lif(x=inf_at(0, 0, 0)), Returns(same_as_reference(inf_at(0, 0, 0), beta=0.9), SECURITY)),
    ("lif-x-minus-inf-zero-reset", lif(x=inf_at(0, 1, 1, sign=-1.0), reset_mechanism="zero"),
     Returns(same_as_reference(inf_at(0, 1, 1, sign=-1.0), beta=0.9, reset_mechanism="zero"), SECURITY)),
    ("lif-x-inf-zero-reset", lif(x=inf_at(0, 1, 1), reset_mechanism="zero", reset_delay=False),
     Returns(same_as_reference(inf_at(0, 1, 1), beta=0.9, reset_mechanism="zero",
                               reset_delay=False), SECURITY)),
    ("lif-beta-nan", lif(beta=NAN), Returns(same_as_reference(X, beta=NAN), SECURITY)),
    ("lif-beta-inf", lif(beta=INF), Returns(same_as_reference(X, beta=INF), SECURITY)),
    ("lif-threshold-nan", lif(threshold=NAN), Returns(same_as_reference(X, beta=0.9, threshold=NAN), SECURITY)),
    ("lif-threshold-inf", lif(threshold=INF), Returns(same_as_reference(X, beta=0.9, threshold=INF), SECURITY)),
    ("lif-threshold-minus-inf", lif(threshold=-INF),
     Returns(same_as_reference(X, beta=0.9, threshold=-INF), SECURITY)),
    ("lif-graded-inf", lif(graded_spikes_factor=INF),
     Returns(same_as_reference(X, beta=0.9, graded_spikes_factor=INF), SECURITY)),
    ("lif-mem0-nan", lif(mem0=torch.full((5,), NAN)),
     Returns(same_as_reference(X, beta=0.9, mem0=torch.full((5,), NAN)), SECURITY)),
    # ---- snnkernels.lif: huge and empty sizes (no memory: a zero-size dim)
    ("lif-T-2^40-empty", lif(x=torch.empty(HUGE, 0)), Returns(shaped_like(torch.empty(HUGE, 0)),
                                                             "README: [T, *batch], any T")),
    ("lif-N-2^40-empty", lif(x=torch.empty(0, HUGE)), Returns(shaped_like(torch.empty(0, HUGE)),
                                                             "README: [T, *batch], any batch")),
    ("lif-N-2^40-topk-empty", lif(x=torch.empty(0, 3, HUGE), sparse=sp.TopK(k=1)),
     Raises(V, r"a row of 1099511627776 neurons \(x.shape\[-1\].*int32")),
    # ---- snnkernels.linear_lif
    ("linear-x-list", linear(x=[1.0]), Raises(T, r"x must be a torch.Tensor")),
    ("linear-x-2d", linear(x=XL[0]), Raises(V, r"x must be \[T, B, F\] for linear_lif")),
    ("linear-x-4d", linear(x=XL[None]), Raises(V, r"x must be \[T, B, F\] for linear_lif")),
    ("linear-x-int", linear(x=XL.long()), Raises(T, r"x must be a floating-point tensor")),
    ("linear-x-half", linear(x=XL.half(), weight=W.half(), bias=B.half()),
     Raises(T, r"x has dtype torch.float16; on cpu snnkernels.linear_lif")),
    ("linear-weight-None", linear(weight=None), Raises(T, r"weight must be a torch.Tensor")),
    ("linear-weight-1d", linear(weight=W[0]), Raises(V, r"weight must be \[N, F\]")),
    ("linear-weight-F", linear(weight=W[:, :5]), Raises(V, r"weight has 5 input features")),
    ("linear-weight-float64", linear(weight=W.double()), Raises(T, r"weight has dtype torch.float64")),
    ("linear-weight-meta", linear(weight=W.to("meta")), Raises(V, r"weight is on meta but x")),
    ("linear-bias-list", linear(bias=[0.0] * 5), Raises(T, r"bias must be None or a tensor")),
    ("linear-bias-shape", linear(bias=torch.zeros(4)), Raises(V, r"bias must have shape \[N\]")),
    ("linear-bias-int", linear(bias=torch.zeros(5, dtype=torch.int64)), Raises(T, r"bias has dtype")),
    ("linear-beta-shape", linear(beta=torch.rand(6)), Raises(V, r"beta of shape \(6,\)")),
    ("linear-threshold-str", linear(threshold="1"), Raises(T, r"threshold must be a float")),
    ("linear-sparse-k", linear(sparse=sp.TopK(k=9)), Raises(V, r"TopK: k = 9 is larger")),
    ("linear-sparse-str", linear(sparse="window"), Raises(T, r"sparse must be None")),
    ("linear-surrogate-lambda", linear(surrogate=lambda z: z), Raises(T, r"surrogate must be")),
    ("linear-reset", linear(reset_mechanism="soft"), Raises(V, r"reset_mechanism must be one of")),
    ("linear-mem0-kw", linear(mem0=torch.zeros(3, 5)), Raises(T, r"mem0")),
    ("linear-meta", linear(x=XL.to("meta"), weight=W.to("meta"), bias=B.to("meta")),
     Returns(shaped_like(torch.empty(4, 3, 5), "meta"), META)),
    ("linear-x-nan", linear(x=torch.full_like(XL, NAN)),
     Returns(lambda out: (not out[0].any()) and out[1].isnan().all() or _fail("NaN"),
             SECURITY + " (NaN never fires)")),
    ("linear-rows-2^31-sparse", linear(x=torch.empty(2**16, 2**15, 0), weight=torch.empty(5, 0),
                                       bias=None, sparse=sp.TopK(k=1)),
     Raises(V, r"T \* B = 2147483648 rows.*int32")),
    ("linear-rows-2^31-dense", linear(x=torch.empty(2**16, 2**15, 0), weight=torch.empty(0, 0),
                                      bias=None),
     Returns(shaped_like(torch.empty(2**16, 2**15, 0)), "README: dense linear_lif, any T * B")),
    # ---- sparse specs
    ("topk-none", lambda: sp.TopK(), Raises(V, r"TopK: give exactly one of k and fraction")),
    ("topk-both", lambda: sp.TopK(k=1, fraction=0.5), Raises(V, r"TopK: give exactly one")),
    ("topk-k-0", lambda: sp.TopK(k=0), Raises(V, r"TopK: k must be >= 1")),
    ("topk-k-negative", lambda: sp.TopK(k=-3), Raises(V, r"TopK: k must be >= 1")),
    ("topk-k-float", lambda: sp.TopK(k=2.0), Raises(T, r"TopK: k must be an int")),
    ("topk-k-str", lambda: sp.TopK(k="2"), Raises(T, r"TopK: k must be an int")),
    ("topk-k-bool", lambda: sp.TopK(k=True), Raises(T, r"TopK: k must be an int")),
    ("topk-k-tensor", lambda: sp.TopK(k=torch.tensor(2)), Raises(T, r"TopK: k must be an int")),
    ("topk-fraction-0", lambda: sp.TopK(fraction=0.0), Raises(V, r"fraction must be in \(0, 1\]")),
    ("topk-fraction-1.5", lambda: sp.TopK(fraction=1.5), Raises(V, r"fraction must be in")),
    ("topk-fraction-negative", lambda: sp.TopK(fraction=-0.1), Raises(V, r"fraction must be in")),
    ("topk-fraction-nan", lambda: sp.TopK(fraction=NAN), Raises(V, r"fraction must be in")),
    ("topk-fraction-inf", lambda: sp.TopK(fraction=INF), Raises(V, r"fraction must be in")),
    ("topk-fraction-str", lambda: sp.TopK(fraction="0.1"), Raises(T, r"fraction must be a real")),
    ("topk-temporal-int", lambda: sp.TopK(k=1, temporal=1), Raises(T, r"temporal must be a bool")),
    ("window-0", lambda: sp.ActiveWindow(0.0), Raises(V, r"width must be > 0")),
    ("window-negative", lambda: sp.ActiveWindow(-1.0), Raises(V, r"width must be > 0")),
    ("window-nan", lambda: sp.ActiveWindow(NAN), Raises(V, r"width must be > 0")),
    ("window-str", lambda: sp.ActiveWindow("0.2"), Raises(T, r"width must be a real number")),
    ("window-None", lambda: sp.ActiveWindow(None), Raises(T, r"width must be a real number")),
    ("window-inf", lambda: sp.ActiveWindow(INF),
     Returns(module_is(sp.ActiveWindow), "snnkernels/sparse.py: a huge width is dense")),
    # ---- nn.Leaky / nn.LIF: constructor
    ("leaky-beta-str-regression", lambda: knn.Leaky(beta="0.9"), Raises(T, r"beta must be a number")),
    ("leaky-beta-None-regression", lambda: knn.Leaky(beta=None), Raises(T, r"beta must be a number")),
    ("leaky-threshold-dict-regression", lambda: knn.Leaky(0.9, threshold={}),
     Raises(T, r"threshold must be a number")),
    ("leaky-graded-str-regression", lambda: knn.Leaky(0.9, graded_spikes_factor="g"),
     Raises(T, r"graded_spikes_factor must be a number")),
    ("leaky-spike_grad-int", lambda: knn.Leaky(0.9, spike_grad=3), Raises(T, r"spike_grad=3 is not")),
    ("leaky-spike_grad-str", lambda: knn.Leaky(0.9, spike_grad="atan"), Raises(T, r"spike_grad='atan'")),
    ("leaky-reset-str", lambda: knn.Leaky(0.9, reset_mechanism="soft"), Raises(V, r"reset_mechanism")),
    ("leaky-reset_delay-int", lambda: knn.Leaky(0.9, reset_delay=0), Raises(T, r"reset_delay must be")),
    ("leaky-step_mode", lambda: knn.Leaky(0.9, step_mode="many"), Raises(V, r"step_mode must be one")),
    ("leaky-inhibition", lambda: knn.Leaky(0.9, inhibition=True), Raises(NotImplementedError, r"inhibition")),
    ("leaky-state_quant", lambda: knn.Leaky(0.9, state_quant=True), Raises(NotImplementedError, r"state_quant")),
    ("lif-module-beta-str-regression", lambda: knn.LIF(beta="a"), Raises(T, r"beta must be a number")),
    ("leaky-beta-1.5-warns", lambda: _warns(lambda: knn.Leaky(beta=1.5), r"beta has values outside"),
     Returns(module_is(knn.Leaky), "snnkernels/nn/leaky.py: beta outside [0, 1] warns")),
    ("leaky-int-params-regression", lambda: knn.Leaky(beta=1, threshold=1)(X[0]),
     Returns(lambda out: out[0].shape == X[0].shape or _fail("shape"),
             "docs/nn.md: snntorch.Leaky's constructor (an int threshold works there)")),
    # ---- nn.Leaky / nn.LIF: forward
    ("leaky-input-str", leaky_step(lambda: knn.Leaky(0.9), "x"), Raises(T, r"input must be a torch.Tensor")),
    ("leaky-input-None", leaky_step(lambda: knn.Leaky(0.9), None), Raises(T, r"input must be a torch.Tensor")),
    ("leaky-input-int", leaky_step(lambda: knn.Leaky(0.9), X[0].long()), Raises(T, r"x must be a floating")),
    ("leaky-input-half", leaky_step(lambda: knn.Leaky(0.9), X[0].half()), Raises(T, r"x has dtype torch.float16")),
    ("leaky-mem-str", leaky_step(lambda: knn.Leaky(0.9), X[0], "m"), Raises(T, r"mem must be a torch.Tensor")),
    ("leaky-mem-int", leaky_step(lambda: knn.Leaky(0.9), X[0], X[0].long()), Raises(T, r"mem0? must be a floating")),
    ("leaky-mem-meta-regression", leaky_step(lambda: knn.Leaky(0.9), X[0], X[0].to("meta")),
     Raises(V, r"mem is on meta but the input is on cpu")),
    ("leaky-mem-with-init_hidden", leaky_step(lambda: knn.Leaky(0.9, init_hidden=True), X[0], X[0]),
     Raises(T, r"`mem` should not be passed")),
    ("leaky-beta-shape", leaky_step(lambda: knn.Leaky(torch.rand(4)), X[0]), Raises(V, r"beta of shape \(4,\)")),
    ("leaky-input-meta", leaky_step(lambda: knn.Leaky(0.9), X[0].to("meta")),
     Returns(shaped_like(X[0], "meta"), META)),
    ("leaky-input-nan", leaky_step(lambda: knn.Leaky(0.9), torch.full((3, 5), NAN)),
     Returns(lambda out: (not out[0].any() and out[1].isnan().all()) or _fail("NaN"), SECURITY)),
    ("LIF-input-0dim", leaky_step(lambda: knn.LIF(0.9), torch.tensor(1.0)),
     Raises(V, r"forward_sequence expects a time-major input")),
    ("LIF-input-list", leaky_step(lambda: knn.LIF(0.9), [1.0, 2.0]), Raises(T, r"input must be a torch.Tensor")),
    ("LIF-mem0-shape", leaky_step(lambda: knn.LIF(0.9), X, torch.zeros(7)),
     Returns(shaped_like(X), "docs/nn.md: a state of another shape restarts from zeros (warns)")),
    # ---- nn.LinearLIF: constructor
    ("linearlif-in-0", lambda: knn.LinearLIF(0, 3), Raises(V, r"in_features must be a positive int")),
    ("linearlif-in-negative", lambda: knn.LinearLIF(-1, 3), Raises(V, r"in_features must be a positive")),
    ("linearlif-out-negative", lambda: knn.LinearLIF(3, -2), Raises(V, r"out_features must be a positive")),
    ("linearlif-in-float", lambda: knn.LinearLIF(2.0, 3), Raises(V, r"in_features must be a positive int")),
    ("linearlif-in-str", lambda: knn.LinearLIF("2", 3), Raises(V, r"in_features must be a positive int")),
    ("linearlif-out-bool", lambda: knn.LinearLIF(2, True), Raises(V, r"out_features must be a positive")),
    ("linearlif-huge", lambda: knn.LinearLIF(HUGE, HUGE), Raises(R, r"overflow|can't allocate")),
    ("linearlif-huge-product", lambda: knn.LinearLIF(2**31, 2**20), Raises(R, r"overflow|can't allocate")),
    ("linearlif-beta-str-regression", lambda: knn.LinearLIF(2, 3, beta="a"), Raises(T, r"beta must be a float")),
    ("linearlif-beta-vector-regression", lambda: knn.LinearLIF(2, 3, beta=torch.rand(3)),
     Raises(T, r"beta must be a float")),
    ("linearlif-threshold-None-regression", lambda: knn.LinearLIF(2, 3, threshold=None),
     Raises(T, r"threshold must be a float")),
    ("linearlif-surrogate-regression", lambda: knn.LinearLIF(2, 3, surrogate="atan"),
     Raises(T, r"surrogate must be None or one of")),
    ("linearlif-reset-regression", lambda: knn.LinearLIF(2, 3, reset_mechanism="x"),
     Raises(V, r"reset_mechanism must be one of")),
    ("linearlif-reset_delay-regression", lambda: knn.LinearLIF(2, 3, reset_delay="no"),
     Raises(T, r"reset_delay must be a bool")),
    ("linearlif-dtype-int-regression", lambda: knn.LinearLIF(2, 3, dtype=torch.int64),
     Raises(T, r"dtype must be a floating-point")),
    ("linearlif-sparse-k", lambda: knn.LinearLIF(2, 3, sparse=sp.TopK(k=4)), Raises(V, r"TopK: k = 4")),
    ("linearlif-sparse-str", lambda: knn.LinearLIF(2, 3, sparse="topk"), Raises(T, r"sparse must be None")),
    # ---- nn.LinearLIF: forward
    ("linearlif-x-F", lambda: knn.LinearLIF(6, 5)(XL[..., :4]), Raises(V, r"weight has 6 input features")),
    ("linearlif-x-2d", lambda: knn.LinearLIF(6, 5)(XL[0]), Raises(V, r"x must be \[T, B, F\]")),
    ("linearlif-x-float64", lambda: knn.LinearLIF(6, 5)(XL.double()), Raises(T, r"weight has dtype torch.float32")),
    ("linearlif-x-meta", lambda: knn.LinearLIF(6, 5)(XL.to("meta")), Raises(V, r"weight is on cpu but x is on meta")),
    ("linearlif-x-None", lambda: knn.LinearLIF(6, 5)(None), Raises(T, r"x must be a torch.Tensor")),
    ("linearlif-meta", lambda: knn.LinearLIF(6, 5, device="meta")(XL.to("meta")),
     Returns(shaped_like(torch.empty(4, 3, 5), "meta"), META)),
    # ---- snnkernels.convert
    ("convert-None-regression", lambda: snnkernels.convert(None), Raises(T, r"model must be a torch.nn.Module")),
    ("convert-str-regression", lambda: snnkernels.convert("model"), Raises(T, r"model must be a torch.nn.Module")),
    ("convert-class-regression", lambda: snnkernels.convert(snntorch.Leaky),
     Raises(T, r"model must be a torch.nn.Module")),
    ("convert-no-leaky", lambda: _warns(lambda: snnkernels.convert(torch.nn.Linear(2, 3)), r"no snntorch.Leaky"),
     Returns(module_is(torch.nn.Linear), "snnkernels/convert.py: returned unchanged, with a warning")),
    ("convert-inhibition", lambda: _warns(lambda: snnkernels.convert(snntorch.Leaky(0.9, inhibition=True)),
                                          r"inhibition=True"),
     Returns(module_is(snntorch.Leaky), "snnkernels/convert.py: kept, with a warning")),
    # ---- models.TabularSNN: constructor
    ("tabular-in-0", lambda: models.TabularSNN(0), Raises(V, r"in_features must be a positive int")),
    ("tabular-in-negative", lambda: models.TabularSNN(-7), Raises(V, r"in_features must be a positive")),
    ("tabular-in-float", lambda: models.TabularSNN(7.0), Raises(V, r"in_features must be a positive")),
    ("tabular-classes-0", lambda: models.TabularSNN(7, num_classes=0), Raises(V, r"num_classes must be")),
    ("tabular-T-0", lambda: models.TabularSNN(7, T=0), Raises(V, r"T must be a positive int")),
    ("tabular-T-negative", lambda: models.TabularSNN(7, T=-1), Raises(V, r"T must be a positive int")),
    ("tabular-hidden-0", lambda: models.TabularSNN(7, hidden=(0,)), Raises(V, r"hidden\[0\] must be")),
    ("tabular-hidden-negative", lambda: models.TabularSNN(7, hidden=(4, -4)), Raises(V, r"hidden\[1\] must be")),
    ("tabular-hidden-int-regression", lambda: models.TabularSNN(7, hidden=5),
     Raises(T, r"hidden must be a sequence of layer widths")),
    ("tabular-hidden-None-regression", lambda: models.TabularSNN(7, hidden=None),
     Raises(T, r"hidden must be a sequence of layer widths")),
    ("tabular-encoder", lambda: models.TabularSNN(7, encoder="poisson"), Raises(V, r"encoder must be one of")),
    ("tabular-readout", lambda: models.TabularSNN(7, readout="max"), Raises(V, r"readout must be one of")),
    ("tabular-surrogate", lambda: models.TabularSNN(7, surrogate="atan"), Raises(T, r"surrogate='atan'")),
    ("tabular-sparse", lambda: models.TabularSNN(7, sparse="topk"), Raises(T, r"sparse must be None")),
    ("tabular-beta-str-regression", lambda: models.TabularSNN(7, beta="a"), Raises(T, r"beta must be a float")),
    ("tabular-threshold-None-regression", lambda: models.TabularSNN(7, threshold=None),
     Raises(T, r"threshold must be a float")),
    ("tabular-reset-regression", lambda: models.TabularSNN(7, reset_mechanism="x"),
     Raises(V, r"reset_mechanism must be one of")),
    ("tabular-reset_delay-regression", lambda: models.TabularSNN(7, reset_delay=1),
     Raises(T, r"reset_delay must be a bool")),
    ("tabular-seed-str-regression", lambda: models.TabularSNN(7, seed="x"), Raises(T, r"seed must be an int")),
    ("tabular-huge", lambda: models.TabularSNN(HUGE, hidden=(HUGE,)), Raises(R, r"overflow|can't allocate")),
    # ---- models.TabularSNN: forward
    ("tabular-x-list", lambda: models.TabularSNN(7)([1.0] * 7), Raises(V, r"TabularSNN expects x of shape")),
    ("tabular-x-1d", lambda: models.TabularSNN(7)(XT[0]), Raises(V, r"TabularSNN expects x of shape")),
    ("tabular-x-F", lambda: models.TabularSNN(7)(XT[:, :6]), Raises(V, r"expects x of shape \[batch, 7\]")),
    ("tabular-x-int-regression", lambda: models.TabularSNN(7)(XT.long()),
     Raises(T, r"x must be a floating-point tensor")),
    ("tabular-x-float64-regression", lambda: models.TabularSNN(7)(XT.double()),
     Raises(T, r"x has dtype torch.float64 but the model")),
    ("tabular-x-meta-regression", lambda: models.TabularSNN(7)(XT.to("meta")),
     Raises(V, r"x is on meta but the model is on cpu")),
    ("tabular-x-empty", lambda: models.TabularSNN(7)(XT[:0]), Returns(logits_shape(0), "README: batch 0")),
    ("tabular-x-nan", lambda: models.TabularSNN(7)(torch.full((3, 7), NAN)),
     Returns(lambda out: (out.shape == (3, 2) and not out.any()) or _fail("NaN"),
             SECURITY + " (NaN never fires: zero spike counts)")),
    ("tabular-x-nan-membrane", lambda: models.TabularSNN(7, readout="membrane")(torch.full((3, 7), NAN)),
     Returns(lambda out: bool(out.isfinite().all()) or _fail("NaN"),
             SECURITY + " (NaN never fires: the output layer sees no spikes, only its bias)")),
    ("tabular-T-huge", lambda: models.TabularSNN(7, T=HUGE)(XT), Raises(R, r"overflow|can't allocate|out of memory allocating")),
    ("tabular-T-huge-batch-0", lambda: models.TabularSNN(7, T=HUGE)(XT[:0]),
     Returns(logits_shape(0), "README: batch 0, any T")),
]


def _fail(what):
    raise AssertionError(f"not the documented result: {what}")


def _warns(fn, pattern):
    with pytest.warns(UserWarning, match=pattern):
        return fn()


@pytest.mark.parametrize("call, outcome", [pytest.param(c, o, id=i) for i, c, o in CASES])
def test_bad_input(call, outcome):
    """One row of CASES: the documented exception naming the argument, or the documented
    result. (Warnings are silenced, except inside _warns, where they are the result.)"""
    TRIED["table"] += 1
    if isinstance(outcome, Raises):
        with pytest.raises(outcome.exc) as info:
            quiet(call)()
        assert re.search(outcome.names, str(info.value)), (
            f"message does not name the argument ({outcome.names!r}): {info.value}")
    else:
        outcome.check(quiet(call)())


def test_table_covers_every_entry_point():
    prefixes = {i.split("-")[0] for i, _, _ in CASES}
    assert {"lif", "linear", "topk", "window", "leaky", "LIF", "linearlif", "convert",
            "tabular"} <= prefixes
    assert len(CASES) >= 150


# ---------------------------------------------------------------------------------------------
# Random garbage
# ---------------------------------------------------------------------------------------------

SMALL_SHAPES = st.lists(st.integers(0, 4), min_size=0, max_size=4).map(tuple)
DTYPES = st.sampled_from([torch.float32, torch.float64, torch.float16, torch.bfloat16,
                          torch.int64, torch.int32, torch.bool, torch.complex64, torch.uint8])


@st.composite
def garbage_tensors(draw):
    shape = draw(SMALL_SHAPES)
    dtype = draw(DTYPES)
    device = draw(st.sampled_from(["cpu", "cpu", "cpu", "meta"]))
    fill = draw(st.sampled_from([0.0, 1.0, -2.5, 0.5, NAN, INF, -INF, None]))
    if fill is None:
        t = torch.randn(shape, generator=torch.Generator().manual_seed(draw(st.integers(0, 99))))
    else:
        t = torch.full(shape, fill)
    if dtype.is_floating_point or dtype.is_complex:
        t = t.to(dtype)
    else:
        t = t.nan_to_num(0.0, 1.0, -1.0).to(dtype)
    if draw(st.booleans()) and t.dim() >= 2:
        t = t.transpose(0, 1)  # non-contiguous
    if dtype.is_floating_point and draw(st.booleans()):
        t.requires_grad_(True)
    return t.to(device)


SIZES = st.integers(-3, 12) | st.sampled_from([HUGE, 2**62])  # small or absurd, never between
GARBAGE = st.one_of(
    st.none(), st.booleans(), st.integers(-3, 12), st.sampled_from([HUGE, -HUGE, 2**62, 2**64]),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=5), st.complex_numbers(),
    st.lists(st.floats(-2, 2), max_size=3), st.dictionaries(st.text(max_size=2), st.integers(), max_size=1),
    garbage_tensors(), garbage_tensors(),
    st.sampled_from([sp.TopK(k=1), sp.TopK(fraction=0.5, temporal=True), sp.ActiveWindow(0.3),
                     S.atan(), S.heaviside(), S.sigmoid(3.0), "subtract", "zero", "none", object(),
                     torch.float32, torch.nn.Linear(2, 2), np.float64(0.5), np.ones(3)]),
)

ENTRY_POINTS = {
    # name -> (function of the drawn keyword arguments, the valid defaults, garbage keys)
    "lif": (lambda a: snnkernels.lif(**a),
            dict(x=torch.randn(3, 2, 4), beta=0.9, threshold=1.0, mem0=None, surrogate=None,
                 reset_mechanism="subtract", reset_delay=True, graded_spikes_factor=1.0,
                 sparse=None)),
    "linear_lif": (lambda a: snnkernels.linear_lif(**a),
                   dict(x=torch.randn(3, 2, 5), weight=torch.randn(4, 5), bias=torch.randn(4),
                        beta=0.9, threshold=1.0, surrogate=None, reset_mechanism="subtract",
                        reset_delay=True, sparse=None)),
    "TopK": (lambda a: sp.TopK(**a), dict(k=2, fraction=None, temporal=False)),
    "ActiveWindow": (lambda a: sp.ActiveWindow(**a), dict(width=0.2)),
    "Leaky": (lambda a: _leaky_call(knn.Leaky, a),
              dict(beta=0.9, threshold=1.0, spike_grad=None, init_hidden=False, learn_beta=False,
                   reset_mechanism="subtract", reset_delay=True, graded_spikes_factor=1.0,
                   input_=torch.randn(2, 4), mem=None)),
    "LIF": (lambda a: _leaky_call(knn.LIF, a),
            dict(beta=0.9, threshold=1.0, spike_grad=None, init_hidden=False, learn_threshold=False,
                 reset_mechanism="subtract", reset_delay=True, graded_spikes_factor=1.0,
                 input_=torch.randn(3, 2, 4), mem=None)),
    "LinearLIF": (lambda a: _linear_module_call(a),
                  dict(in_features=5, out_features=4, beta=0.9, threshold=1.0, bias=True,
                       surrogate=None, reset_mechanism="subtract", reset_delay=True, sparse=None,
                       learn_beta=False, x=torch.randn(3, 2, 5))),
    "convert": (lambda a: snnkernels.convert(a["model"]), dict(model=torch.nn.Sequential())),
    "TabularSNN": (lambda a: _tabular_call(a),
                   dict(in_features=5, hidden=(4,), num_classes=2, T=3, encoder="direct",
                        readout="spike_count", surrogate=None, sparse=None, beta=0.9,
                        threshold=1.0, reset_mechanism="subtract", reset_delay=True, seed=0,
                        x=torch.rand(2, 5))),
}
SIZE_KEYS = {"in_features", "out_features", "num_classes", "T", "k"}


def _leaky_call(cls, a):
    a = dict(a)
    x, mem = a.pop("input_"), a.pop("mem")
    layer = cls(**a)
    return (x, layer(x) if mem is None else layer(x, mem))


def _linear_module_call(a):
    a = dict(a)
    x = a.pop("x")
    return (x, knn.LinearLIF(**a)(x))


def _tabular_call(a):
    a = dict(a)
    x = a.pop("x")
    model = models.TabularSNN(**a)
    return (x, model(x))


def _tensors(out):
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, (tuple, list)):
        return [t for o in out for t in _tensors(o)]
    return []


@settings(derandomize=True, database=None, deadline=None, max_examples=1000,
          suppress_health_check=list(HealthCheck))
@given(data=st.data(), name=st.sampled_from(sorted(ENTRY_POINTS)))
def test_random_garbage(data, name):
    """Random values of random types for a random subset of an entry point's arguments: it
    raises TypeError / ValueError / RuntimeError, or returns well-formed tensors (of x's shape
    for the ops and layers); a backward through a returned tensor that requires grad obeys the
    same rule. Anything else (another exception type, a crash, a hang) fails."""
    TRIED["random"] += 1
    call, defaults = ENTRY_POINTS[name]
    args = dict(defaults)
    keys = data.draw(st.lists(st.sampled_from(sorted(defaults)), min_size=1, max_size=3,
                              unique=True), label="replaced")
    for key in keys:
        args[key] = data.draw(SIZES if key in SIZE_KEYS else GARBAGE, label=key)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            out = call(args)
        except ALLOWED as e:
            event(f"{name}: {type(e).__name__}: {str(e)[:90]}")
            return
        event(f"{name}: returned")
        if name in ("lif", "linear_lif"):
            x = args["x"]
            spk, mem = out
            n = args["weight"].shape[0] if name == "linear_lif" else x.shape[-1]
            want = tuple(x.shape) if name == "lif" else (*x.shape[:2], n)
            assert spk.shape == mem.shape == want and spk.dtype == mem.dtype
        elif name in ("Leaky", "LIF", "LinearLIF", "TabularSNN"):
            x, result = out
            for t in _tensors(result):
                assert isinstance(t, torch.Tensor) and t.device == x.device
            if name == "TabularSNN":
                assert result.shape == (x.shape[0], args["num_classes"])
        tensors = [t for t in _tensors(out) if t.requires_grad and t.device.type == "cpu"
                   and t.is_floating_point()]
        if tensors:
            try:
                sum(t.sum() for t in tensors).backward()
            except ALLOWED:
                pass
