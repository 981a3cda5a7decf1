"""TabularSNN's last hidden layer and narrow readout as one autograd node on the CPU
(snnkernels/_readout.py, the op lif_backward_readout): the same bits as the two separate
linear_lif calls in every output and gradient (dense and sparse hidden layers), when it runs and
when it does not, and the op against lif_backward / lif_backward_masked on the readout's
materialized input gradient."""

from __future__ import annotations

from unittest import mock

import pytest
import torch

from snnkernels import _readout
from snnkernels import sparse as sp
from snnkernels.models import TabularSNN

from helpers import generator

_lib = torch.ops.snnkernels


def train_once(model, x, hidden_spikes_loss):
    """Logits, every layer's spikes, and every parameter's gradient after one backward."""
    logits, spikes = model(x, record=True)
    weights = torch.linspace(-1, 2, logits.shape[-1], dtype=x.dtype)
    loss = (logits * weights).sum() + 0.1 * (logits * weights).square().sum()
    if hidden_spikes_loss:  # the last hidden layer's spikes also feed the loss directly
        loss = loss + (spikes[-2] * torch.linspace(0, 1, spikes[-2].shape[-1],
                                                   dtype=x.dtype)).sum()
    loss.backward()
    return logits.detach(), [s.detach() for s in spikes], [p.grad for p in model.parameters()]


def twins(dtype, **kwargs):
    torch.manual_seed(0)  # threshold 0.3: every layer spikes at 18-47% here
    a = TabularSNN(12, T=6, threshold=0.3, **kwargs).to(dtype)
    b = TabularSNN(12, T=6, threshold=0.3, **kwargs).to(dtype)
    b.load_state_dict(a.state_dict())
    return a, b


CONFIGS = [
    pytest.param(dict(hidden=(130, 140)), id="2x-spike-count"),
    pytest.param(dict(hidden=(20, 30, 150), num_classes=4, readout="membrane"),
                 id="3x-membrane-4-classes"),
    pytest.param(dict(hidden=(40, 50), learn_beta=True, learn_threshold=True,
                      reset_mechanism="zero", reset_delay=False), id="learnable-zero-reset"),
    pytest.param(dict(hidden=(40, 50), encoder="rate", num_classes=3), id="rate-3-classes"),
    pytest.param(dict(hidden=(40, 150), sparse=sp.TopK(fraction=0.05)), id="topk"),
    pytest.param(dict(hidden=(40, 50), sparse=sp.TopK(k=4, temporal=True), learn_beta=True),
                 id="topk-temporal-learnable"),
    pytest.param(dict(hidden=(40, 50), sparse=sp.ActiveWindow(0.3), num_classes=3),
                 id="active-window"),
]


@pytest.mark.parametrize("hidden_spikes_loss", [False, True], ids=["readout-only", "two-uses"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("config", CONFIGS)
def test_same_bits_as_separate_layers(config, dtype, hidden_spikes_loss):
    fused_model, separate_model = twins(dtype, **config)
    x = (torch.randn(40, 12, generator=generator(1), dtype=torch.float64) * 2 + 0.5).to(dtype)
    if config.get("encoder") == "rate":
        x = x.clamp(0, 1)
    with mock.patch.object(_readout, "hidden_and_readout",
                           wraps=_readout.hidden_and_readout) as fused:
        got = train_once(fused_model, x, hidden_spikes_loss)
    assert fused.call_count == 1, "the fused layers did not run"
    with mock.patch.object(_readout, "fusable", return_value=False):
        want = train_once(separate_model, x, hidden_spikes_loss)
    logits, spikes, grads = got
    assert all(0.1 < s.mean() < 0.9 for s in spikes), "layers too quiet or too busy: weak test"
    assert torch.equal(logits, want[0]), "logits"
    for i, (a, b) in enumerate(zip(spikes, want[1], strict=True)):
        assert torch.equal(a, b), f"spikes of layer {i}"
    for i, (a, b) in enumerate(zip(grads, want[2], strict=True)):
        assert b.abs().sum() > 0, f"gradient {i} is zero: a weak test"
        assert torch.equal(a, b), f"gradient of parameter {i}"


def test_runs_only_where_it_applies():
    model = TabularSNN(12, hidden=(30, 40), T=4)
    x = torch.randn(8, 12)
    spikes = torch.zeros(4, 8, 30)
    hidden, readout = model.layers[1], model.output
    assert _readout.fusable(spikes, hidden, readout)
    with torch.no_grad():
        assert not _readout.fusable(spikes, hidden, readout)
    assert not _readout.fusable(spikes.half(), hidden, readout)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert not _readout.fusable(spikes, hidden, readout)
    sparse = TabularSNN(12, hidden=(30, 40), T=4, sparse=sp.TopK(k=3))
    assert _readout.fusable(spikes, sparse.layers[1], sparse.output)  # the readout stays dense
    wide = TabularSNN(12, hidden=(30, 40), T=4, num_classes=_readout.NARROW_MAX_WIDTH + 1)
    assert not _readout.fusable(spikes, wide.layers[1], wide.output)
    # no_grad: the separate calls, with the same logits
    with torch.no_grad():
        plain = model(x)
    assert torch.equal(model(x).detach(), plain)


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
