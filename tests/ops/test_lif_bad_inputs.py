"""Bad arguments: each must raise a clear Python exception whose message names the argument
(never crash, never silently compute). The public entry points validate first (snnkernels/
_args.py, shared by the op and the reference); the C++ op checks guard direct torch.ops
callers."""

from __future__ import annotations

import math
import re

import pytest
import snntorch.surrogate
import torch

import snnkernels
from snnkernels import _extension, reference
from snnkernels import surrogate as S

X = torch.randn(4, 3, 5)  # [T, B, N]


def call(**overrides):
    """Keyword arguments of a valid call, with some replaced."""
    kwargs = dict(x=X, beta=0.9, threshold=1.0, mem0=None, surrogate=None,
                  reset_mechanism="subtract", reset_delay=True, graded_spikes_factor=1.0)
    kwargs.update(overrides)
    return kwargs


BAD_CALLS = [
    # (id, overrides, exception type, text the message must contain)
    ("x-list", dict(x=[[1.0, 2.0]]), TypeError, "x must be a torch.Tensor"),
    ("x-ndarray", dict(x=X.numpy()), TypeError, "x must be a torch.Tensor"),
    ("x-0dim", dict(x=torch.tensor(1.0)), ValueError, "x must have a leading time dimension"),
    ("x-int", dict(x=torch.ones(4, 3, dtype=torch.int64)), TypeError, "x must be a floating"),
    ("x-bool", dict(x=torch.ones(4, 3, dtype=torch.bool)), TypeError, "x must be a floating"),
    ("beta-shape", dict(beta=torch.rand(4)), ValueError, "beta of shape (4,) does not broadcast"),
    ("beta-too-many-dims", dict(beta=torch.rand(2, 3, 5)), ValueError, "beta of shape (2, 3, 5)"),
    ("beta-bool", dict(beta=True), TypeError, "beta must be a float or a tensor, got bool"),
    ("beta-bool-tensor", dict(beta=torch.tensor(True)), TypeError, "beta must be a floating"),
    ("beta-int-tensor", dict(beta=torch.tensor([1, 0, 1, 0, 1])), TypeError, "beta must be a floating"),
    ("beta-str", dict(beta="0.9"), TypeError, "beta must be a float or a tensor, got str"),
    ("beta-None", dict(beta=None), TypeError, "beta must be a float or a tensor"),
    ("threshold-shape", dict(threshold=torch.ones(3)), ValueError, "threshold of shape (3,)"),
    ("threshold-list", dict(threshold=[1.0] * 5), TypeError, "threshold must be a float or a tensor"),
    ("graded-shape", dict(graded_spikes_factor=torch.ones(2, 5)), ValueError,
     "graded_spikes_factor of shape (2, 5)"),
    ("graded-bool", dict(graded_spikes_factor=False), TypeError, "graded_spikes_factor must be"),
    ("mem0-shape", dict(mem0=torch.zeros(4, 3, 5)), ValueError, "mem0 of shape (4, 3, 5)"),
    ("mem0-shape-N", dict(mem0=torch.zeros(6)), ValueError, "mem0 of shape (6,)"),
    ("mem0-float", dict(mem0=0.0), TypeError, "mem0 must be None or a tensor"),
    ("mem0-int", dict(mem0=torch.zeros(5, dtype=torch.int32)), TypeError, "mem0 must be a floating"),
    ("reset-unknown", dict(reset_mechanism="soft"), ValueError, "reset_mechanism must be one of"),
    ("reset-None", dict(reset_mechanism=None), ValueError, "reset_mechanism must be one of"),
    ("reset-case", dict(reset_mechanism="Subtract"), ValueError, "reset_mechanism must be one of"),
    ("reset_delay-int", dict(reset_delay=1), TypeError, "reset_delay must be a bool"),
    ("reset_delay-str", dict(reset_delay="False"), TypeError, "reset_delay must be a bool"),
    ("reset_delay-tensor", dict(reset_delay=torch.tensor(True)), TypeError, "reset_delay must be a bool"),
    ("surrogate-lambda", dict(surrogate=lambda z: z), TypeError, "surrogate must be None or one of"),
    ("surrogate-snntorch", dict(surrogate=snntorch.surrogate.atan()), TypeError,
     "surrogate must be None or one of"),
    ("surrogate-factory-uncalled", dict(surrogate=S.atan), TypeError, "surrogate must be None or one of"),
    ("surrogate-str", dict(surrogate="atan"), TypeError, "surrogate must be None or one of"),
]


def _raises(fn, kwargs, exc, text):
    with pytest.raises(exc, match=re.escape(text)):
        fn(**kwargs)


@pytest.mark.parametrize("impl", [snnkernels.lif, reference.lif], ids=["op", "reference"])
@pytest.mark.parametrize("overrides, exc, text", [pytest.param(*c[1:], id=c[0]) for c in BAD_CALLS])
def test_bad_argument(impl, overrides, exc, text):
    """The op and the reference share the validation: same exception, same message."""
    _raises(impl, call(**overrides), exc, text)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_x_on_cpu(dtype):
    """Half types are CUDA-only: on the CPU the error names x, its dtype and what is supported."""
    _raises(snnkernels.lif, call(x=X.to(dtype)), TypeError,
            f"x has dtype {dtype}; on cpu snnkernels.lif supports torch.float32, torch.float64")


@pytest.mark.parametrize("name", ["beta", "threshold", "graded_spikes_factor", "mem0"])
def test_argument_on_another_device(name):
    """A tensor argument on another device than x is a ValueError naming it (the "meta" device
    stands in for a second device on a machine without a GPU), for both directions."""
    shaped = torch.ones(5, device="meta")
    _raises(snnkernels.lif, call(**{name: shaped}), ValueError, f"{name} is on meta but x is on cpu")
    if name != "mem0":  # a 0-dim non-CPU tensor with a CPU x is refused too
        _raises(snnkernels.lif, call(**{name: torch.tensor(1.0, device="meta")}), ValueError,
                f"{name} is on meta but x is on cpu")
    # x on meta, a per-neuron argument on the CPU
    _raises(snnkernels.lif, call(x=X.to("meta"), **{name: torch.ones(5)}), ValueError,
            f"{name} is on cpu but x is on meta")


def test_zero_dim_cpu_parameter_with_x_elsewhere_is_accepted():
    """As torch accepts CPU scalars next to device tensors, a 0-dim CPU parameter is moved."""
    spk, mem = snnkernels.lif(X.to("meta"), torch.tensor(0.9), torch.tensor(1.0))
    assert spk.device.type == "meta" and spk.shape == X.shape


@pytest.mark.parametrize("factory, kwargs, text", [
    (S.atan, {"alpha": -1}, "atan(): alpha must be finite and >= 0, got -1.0"),
    (S.atan, {"alpha": math.inf}, "atan(): alpha must be finite and >= 0, got inf"),
    (S.fast_sigmoid, {"slope": math.nan}, "fast_sigmoid(): slope must be finite and >= 0, got nan"),
    (S.sigmoid, {"slope": -25}, "sigmoid(): slope must be finite and >= 0"),
    (S.spike_rate_escape, {"beta": -math.inf}, "spike_rate_escape(): beta must be finite"),
    (S.spike_rate_escape, {"slope": math.nan}, "spike_rate_escape(): slope must be finite"),
    (S.triangular, {"threshold": -0.5}, "triangular(): threshold must be finite and >= 0"),
], ids=["atan-negative", "atan-inf", "fast_sigmoid-nan", "sigmoid-negative",
        "spike_rate_escape-beta-inf", "spike_rate_escape-slope-nan", "triangular-negative"])
def test_bad_surrogate_parameter_value(factory, kwargs, text):
    _raises(factory, kwargs, ValueError, text)


@pytest.mark.parametrize("factory, kwargs, text", [
    (S.atan, {"alpha": "2"}, "atan(): alpha must be a real number, got str"),
    (S.fast_sigmoid, {"slope": True}, "fast_sigmoid(): slope must be a real number, got bool"),
    (S.triangular, {"threshold": torch.tensor(1.0)}, "triangular(): threshold must be a real number"),
    (S.spike_rate_escape, {"beta": None}, "spike_rate_escape(): beta must be a real number"),
], ids=["atan-str", "fast_sigmoid-bool", "triangular-tensor", "spike_rate_escape-None"])
def test_bad_surrogate_parameter_type(factory, kwargs, text):
    _raises(factory, kwargs, TypeError, text)


@pytest.mark.parametrize("args, exc, text", [
    (("bogus",), ValueError, r"name must be one of atan, fast_sigmoid, .*got 'bogus'"),
    ((None,), ValueError, r"name must be one of atan, .*got None"),
    (("atan",), ValueError, r"Surrogate\('atan'\): params must give exactly alpha; got none "
                            r"\(missing: alpha\)"),
    (("spike_rate_escape", (("beta", 1.0),)), ValueError, r"\(missing: slope\)"),
    (("sigmoid", (("slope", 1.0), ("alpha", 2.0))), ValueError, r"\(unknown: alpha\)"),
    (("heaviside", (("slope", 1.0),)), ValueError, r"no parameters; got slope \(unknown: slope\)"),
    (("atan", (("alpha", 1.0), ("alpha", 2.0))), ValueError, r"exactly alpha; got alpha, alpha"),
    (("atan", [("alpha", 2.0)]), TypeError, r"params must be a tuple of \(name, value\) pairs"),
    (("atan", (("alpha", "2"),)), TypeError, r"atan\(\): alpha must be a real"),
    (("atan", (("alpha", -1.0),)), ValueError, r"alpha must be finite and >= 0, got -1.0"),
], ids=["unknown-name", "name-None", "atan-no-alpha", "missing-slope", "unknown-key",
        "heaviside-with-param", "duplicate-key", "params-list", "param-str", "param-negative"])
def test_surrogate_constructor_checks_name_and_params(args, exc, text):
    with pytest.raises(exc, match=text):
        S.Surrogate(*args)


def test_surrogate_constructor_accepts_what_the_factories_make():
    for factory in (S.atan, S.fast_sigmoid, S.sigmoid, S.spike_rate_escape, S.triangular,
                    S.straight_through_estimator, S.heaviside):
        made = factory()
        assert S.Surrogate(made.name, made.params) == made


def test_cuda_tensor_on_cpu_only_build(monkeypatch):
    """A CUDA tensor given to a CPU-only build: the error says the build is CPU-only and how to
    rebuild. (No CUDA tensor can be made here: a stand-in object with .device = cuda, and a
    build that says CPU-only, as it does on this machine.)"""

    class StandIn:
        device = torch.device("cuda", 0)

    monkeypatch.setattr(_extension, "CUDA_BUILT", False)
    with pytest.raises(RuntimeError, match=r"x is a CUDA tensor, but this snnkernels build is "
                                           r"CPU-only .*SNNKERNELS_CUDA=1"):
        _extension.check_device_supported(StandIn(), "x")
    # the same stand-in passes when the build has CUDA; other devices are refused by name
    monkeypatch.setattr(_extension, "CUDA_BUILT", True)
    _extension.check_device_supported(StandIn(), "x")
    StandIn.device = torch.device("xpu")
    with pytest.raises(RuntimeError, match="x is on xpu; snnkernels supports cpu and cuda"):
        _extension.check_device_supported(StandIn(), "x")


def test_lif_refuses_unsupported_device(monkeypatch):
    """snnkernels.lif itself goes through that check: with x on "meta" and a check that
    treats meta like an unsupported device, the call raises before any kernel runs."""
    seen = []

    def check(t, name):
        seen.append((t.device.type, name))
        raise RuntimeError(f"{name} refused")

    monkeypatch.setattr(_extension, "check_device_supported", check)
    with pytest.raises(RuntimeError, match="x refused"):
        snnkernels.lif(X.to("meta"), 0.9)
    assert seen == [("meta", "x")]


# -- the op boundary: direct torch.ops callers get TORCH_CHECK errors, not crashes --------------


def op_args(**overrides):
    t, m = 3, 8
    args = dict(x=torch.randn(t, m), mem0=None, beta=torch.full((1,), 0.9),
                threshold=torch.ones(m), graded=torch.ones(1), surrogate=0, p0=1.0, p1=3.14,
                reset=0, reset_delay=True)
    args.update(overrides)
    return list(args.values())


@pytest.mark.parametrize("overrides, text", [
    (dict(x=torch.randn(3, 8).t()), "x must be contiguous [T, M] or one contiguous row "
                                     "broadcast over T, got strides [1, 8]"),
    (dict(x=torch.randn(3, 2, 4)), "x must be [T, M], got [3, 2, 4]"),
    (dict(x=torch.randn(3, 8, dtype=torch.float16)), "x must be float32 or float64"),
    (dict(beta=torch.full((3,), 0.9)), "beta must be 1-D with a number of elements dividing 8"),
    (dict(beta=torch.full((1, 1), 0.9)), "beta must be 1-D"),
    (dict(beta=torch.empty(0)), "beta must be 1-D"),
    (dict(threshold=torch.ones(8, dtype=torch.float64)), "threshold must have dtype Float"),
    (dict(graded=torch.ones(8, 2)[:, 0]), "graded must be contiguous"),
    (dict(mem0=torch.zeros(7)), "mem0 must be contiguous with shape [8]"),
    (dict(mem0=torch.zeros(8, dtype=torch.float64)), "mem0 must match x in dtype and device"),
    (dict(reset=7), "unknown reset id 7"),
], ids=["x-transposed", "x-3d", "x-half", "beta-period", "beta-2d", "beta-empty",
        "threshold-dtype", "graded-strided", "mem0-shape", "mem0-dtype", "reset-id"])
def test_op_forward_checks(overrides, text):
    with pytest.raises(RuntimeError, match=re.escape(text)):
        torch.ops.snnkernels.lif_forward(*op_args(**overrides))


def test_op_backward_checks():
    x, mem0, beta, thr, graded, *consts = op_args()
    spk, mem, pre = torch.ops.snnkernels.lif_forward(x, mem0, beta, thr, graded, *consts)
    surrogate, p0, p1, reset, delay = consts
    with pytest.raises(RuntimeError, match=re.escape("grad_spk must be contiguous with shape")):
        torch.ops.snnkernels.lif_backward(torch.ones(2, 8), None, mem, pre, mem0, beta, thr,
                                          graded, surrogate, p0, p1, reset, delay, True)
    # a row broadcast over T is read in place only when the row itself is contiguous
    strided_row = torch.ones(8, 2)[:, 0].expand(mem.shape)
    with pytest.raises(RuntimeError, match=re.escape("grad_spk must be contiguous with shape")):
        torch.ops.snnkernels.lif_backward(strided_row, None, mem, pre, mem0, beta, thr, graded,
                                          surrogate, p0, p1, reset, delay, True)
    with pytest.raises(RuntimeError, match=re.escape("unknown surrogate id 42")):
        torch.ops.snnkernels.lif_backward(None, torch.ones_like(mem), mem, pre, mem0, beta, thr,
                                          graded, 42, p0, p1, reset, delay, True)
    with pytest.raises(RuntimeError, match=re.escape("pre_reset must be contiguous with shape")):
        torch.ops.snnkernels.lif_backward(None, torch.ones_like(mem), mem, pre, mem0, beta, thr,
                                          graded, surrogate, p0, p1, reset, False, True)
