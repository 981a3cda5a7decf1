"""The ops of snnkernels/_readout.py (lif_backward_readout, linear_lif_readout_forward) against
lif_backward / lif_backward_masked on the readout's materialized input gradient. TabularSNN no
longer calls them."""

from __future__ import annotations

import pytest
import torch
from helpers import generator

_lib = torch.ops.snnkernels


def readout_case(dtype, t=5, b=7, h=40, c=3, seed=0):
    g = generator(seed)

    def rand(*shape, scale=1.0, shift=0.0):
        return (torch.randn(shape, generator=g, dtype=torch.float64) * scale + shift).to(dtype)

    return dict(readout_grad=rand(t * b, c), readout_weight=rand(c, h),
                mem=rand(t, b * h, scale=0.6, shift=0.8), beta=rand(h, scale=0.1, shift=0.8),
                threshold=rand(h, scale=0.1, shift=1.0), graded=torch.ones(1, dtype=dtype))


MASKS = [
    pytest.param((0, 0, 0, 0.0, False), id="dense"),
    pytest.param((1, 40, 3, 0.0, False), id="topk3"),
    pytest.param((1, 40, 3, 0.0, True), id="topk3-temporal"),
    pytest.param((2, 40, 0, 0.4, False), id="window0.4"),
]


@pytest.mark.parametrize("param_grads", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("mask", MASKS)
def test_op_equals_lif_backward_on_the_readouts_input_gradient(mask, dtype, param_grads):
    # h = 40 with chunks of 64 neurons: the rows of b start in the middle of a chunk
    case = readout_case(dtype)
    t, m = case["mem"].shape
    rows, c = case["readout_grad"].shape
    h = case["readout_weight"].shape[1]
    # the readout's input gradient as linear_dense_backward's narrow loops form it
    spikes = torch.zeros(rows, h, dtype=dtype)
    gx, _, _ = _lib.linear_dense_backward(case["readout_grad"], spikes, case["readout_weight"],
                                          True, False, False)
    params = (case["beta"], case["threshold"], case["graded"])
    consts = (0, 2.0, 0.0, 0, True)
    empty = torch.empty(0, dtype=dtype)
    got = _lib.lif_backward_readout(case["readout_grad"], case["readout_weight"], None,
                                    case["mem"], empty, *params, *consts, param_grads, *mask)
    names = ["grad_x", "grad_beta", "grad_threshold", "grad_graded"]
    if mask[0] == 0:
        want = _lib.lif_backward(gx.view(t, m), None, case["mem"], empty, None, *params,
                                 *consts, param_grads)
        assert got[0].abs().sum() > 0, "grad_x is zero: a weak test"
        assert all(g.numel() == 0 for g in got[4:]), "dense: no compact outputs"
        got = got[:4]
    else:
        want = _lib.lif_backward_masked(gx.view(t, m), None, case["mem"], empty, None, *params,
                                        *consts, param_grads, *mask, True)
        assert got[4].abs().sum() > 0, "no surviving entries: a weak test"
        names += ["values", "indices", "row_ptr"]
    want = (want[0], *want[2:])  # without grad_mem0
    for name, a, b in zip(names, got, want, strict=True):
        assert torch.equal(a, b), name


@pytest.mark.parametrize("mask", MASKS)
def test_op_opcheck(mask):
    case = readout_case(torch.float64)
    empty = torch.empty(0, dtype=torch.float64)
    for param_grads in (False, True):
        torch.library.opcheck(
            _lib.lif_backward_readout.default,
            (case["readout_grad"], case["readout_weight"], None, case["mem"], empty,
             case["beta"], case["threshold"], case["graded"], 0, 2.0, 0.0, 0, True, param_grads,
             *mask))


@pytest.mark.parametrize("change, message", [
    (dict(readout_weight=torch.zeros(3, 30, dtype=torch.float64)), "readout_weight"),
    (dict(readout_weight=torch.zeros(3, 40)), "readout_weight"),
    (dict(readout_weight=torch.zeros(0, 40, dtype=torch.float64),
          readout_grad=torch.zeros(35, 0, dtype=torch.float64)), "readout_weight"),
    (dict(readout_grad=torch.zeros(34, 3, dtype=torch.float64)), "readout_grad"),
    (dict(readout_grad=torch.zeros(35, 2, dtype=torch.float64)), "readout_grad"),
    (dict(readout_grad=torch.zeros(3, 35, dtype=torch.float64).t()), "readout_grad"),
])
def test_op_bad_inputs_name_the_argument(change, message):
    case = {**readout_case(torch.float64), **change}
    with pytest.raises(RuntimeError, match=message):
        _lib.lif_backward_readout(case["readout_grad"], case["readout_weight"], None,
                                  case["mem"], torch.empty(0, dtype=torch.float64), case["beta"],
                                  case["threshold"], case["graded"], 0, 2.0, 0.0, 0, True, False)


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("t, b, f, n, c", [(5, 7, 30, 40, 3), (3, 300, 20, 130, 2),
                                           (2, 1, 9, 1, 4)])
def test_forward_op_equals_the_separate_ops(t, b, f, n, c, dtype, bias):
    # n = 40 and 130: the LIF's chunks (multiples of 64 neurons) rounded to whole rows of n
    g = generator(t + b + n)
    x = (torch.rand(t, b, f, generator=g) < 0.3).to(dtype)
    weight = torch.randn(n, f, generator=g, dtype=torch.float64).to(dtype)
    hidden_bias = (torch.randn(n, generator=g, dtype=torch.float64) * 0.3 + 0.3).to(dtype)
    weight_o = torch.randn(c, n, generator=g, dtype=torch.float64).to(dtype)
    bias_o = torch.randn(c, generator=g, dtype=torch.float64).to(dtype) if bias else None
    beta, one = torch.full((1,), 0.8, dtype=dtype), torch.ones(1, dtype=dtype)
    neuron = (beta, one, one, 0, 2.0, 0.0, 0, True)
    got = _lib.linear_lif_readout_forward(x, weight, hidden_bias, *neuron, weight_o, bias_o)
    want = _lib.linear_lif_forward(x, weight, hidden_bias, *neuron, 0, 0, 0.0, False)
    # the readout's current: its membrane with beta 0 and no reset
    zero = torch.zeros(1, dtype=dtype)
    _, current, _, _ = _lib.linear_lif_forward(want[0].view(t, b, n), weight_o, bias_o, zero,
                                               one, one, 0, 2.0, 0.0, 2, True, 0, 0, 0.0, False)
    assert 0.05 < want[0].mean() < 0.95, "too few or too many spikes: a weak test"
    for name, a, w in zip(("spk", "mem", "pre", "event"), got[:4], want):
        assert torch.equal(a, w), name
    assert torch.equal(got[4], current.view(t * b, c)), "readout_current"


def test_forward_op_opcheck():
    g = generator(2)
    # no input requires grad: the op has no autograd formula of its own (_readout.py has it)
    x = (torch.rand(4, 5, 6, generator=g) < 0.4).double()
    args = (torch.randn(40, 6, generator=g, dtype=torch.float64),
            torch.randn(40, generator=g, dtype=torch.float64),
            torch.full((1,), 0.8, dtype=torch.float64), torch.ones(1, dtype=torch.float64),
            torch.ones(1, dtype=torch.float64), 0, 2.0, 0.0, 0, True,
            torch.randn(2, 40, generator=g, dtype=torch.float64))
    for bias_o in (torch.randn(2, generator=g, dtype=torch.float64), None):
        torch.library.opcheck(_lib.linear_lif_readout_forward.default, (x, *args, bias_o))


@pytest.mark.parametrize("change, message", [
    (dict(weight_o=torch.zeros(2, 41, dtype=torch.float64)), "readout_weight"),
    (dict(weight_o=torch.zeros(5, 40, dtype=torch.float64)), "readout_weight"),
    (dict(weight_o=torch.zeros(2, 40)), "readout_weight"),
    (dict(bias_o=torch.zeros(3, dtype=torch.float64)), "bias"),
])
def test_forward_op_bad_inputs_name_the_argument(change, message):
    args = {"weight_o": torch.zeros(2, 40, dtype=torch.float64), "bias_o": None, **change}
    one = torch.ones(1, dtype=torch.float64)
    with pytest.raises(RuntimeError, match=message):
        _lib.linear_lif_readout_forward(
            torch.zeros(3, 4, 6, dtype=torch.float64), torch.zeros(40, 6, dtype=torch.float64),
            None, one, one, one, 0, 2.0, 0.0, 0, True, args["weight_o"], args["bias_o"])
