"""snnkernels.nn.Leaky vs snntorch.Leaky (1.0.0), single step by single step: spikes,
membrane and gradients (x, mem0 and every learnable parameter) for each option the kernels
support; the attributes users touch; state_dict round trips; bad input.

Tolerances: helpers.SNNTORCH_* (spikes identical, membrane <= 1e-6 relative, gradients at the
float32 gradient tolerance). Inputs: test_lif_snntorch_parity.parity_inputs (float32, keeps
z > -3.5 where snnTorch's sigmoid backward overflows)."""

from __future__ import annotations

import warnings

import pytest
import snntorch
import snntorch.surrogate as sts
import torch

import snnkernels
from snnkernels import nn as knn
from snnkernels import surrogate as S

from helpers import (RESET_DELAYS, RESETS, SNNTORCH_FORWARD_TOL, SNNTORCH_GRAD_TOL, Result,
                     assert_results_match, assert_spiking_regime)
from snntorch_cases import SURROGATE_PAIRS, leaf, parity_inputs

LEARN = {  # name -> which of beta / threshold / graded_spikes_factor are parameters
    "none": (),
    "beta": ("beta",),
    "all": ("beta", "threshold", "graded_spikes_factor"),
}


def layer_kwargs(inp, learn=(), **options) -> dict:
    kw = {k: inp[k] for k in ("beta", "threshold", "graded_spikes_factor")}
    kw.update({f"learn_{k}": True for k in learn})
    kw.update(options)
    return kw


def make(cls, kwargs: dict):
    """A layer from independent copies of the tensor arguments (two layers never share one)."""
    return cls(**{k: v.detach().clone() if isinstance(v, torch.Tensor) else v
                  for k, v in kwargs.items()})


def run_steps(layer, inp) -> Result:
    """Feeds inp["x"] one step at a time, the way snnTorch users do, starting from inp["mem0"]
    (passed in, or stored in layer.mem with init_hidden); loss on spikes and membranes."""
    x, mem0 = leaf(inp["x"]), leaf(inp["mem0"])
    if layer.init_hidden:
        layer.mem = mem0
    mem = None if layer.init_hidden else mem0
    spks, mems = [], []
    for xt in x.unbind(0):
        if not layer.init_hidden:
            spk, mem = layer(xt, mem)
        elif layer.output:
            spk, mem = layer(xt)
        else:
            spk, mem = layer(xt), layer.mem
        spks.append(spk)
        mems.append(mem)
    spk, mem = torch.stack(spks), torch.stack(mems)
    loss = (spk * inp["w_spk"]).sum() + (mem * inp["w_mem"]).sum()
    leaves = {"x": x, "mem0": mem0, **dict(layer.named_parameters())}
    grads = torch.autograd.grad(loss, list(leaves.values()), allow_unused=True)
    grads = {k: torch.zeros_like(v) if g is None else g
             for (k, v), g in zip(leaves.items(), grads)}
    return Result(spk.detach(), mem.detach(), grads)


def check_matches_snntorch(kwargs: dict, inp: dict, what: str = "") -> None:
    expected = run_steps(make(snntorch.Leaky, kwargs), inp)
    assert_spiking_regime(expected.spk)
    actual = run_steps(make(knn.Leaky, kwargs), inp)
    assert_results_match(actual, expected, SNNTORCH_FORWARD_TOL, SNNTORCH_GRAD_TOL, what)


@pytest.mark.parametrize("theirs, ours, sg_kwargs", SURROGATE_PAIRS)
@pytest.mark.parametrize("reset_delay", RESET_DELAYS)
@pytest.mark.parametrize("reset_mechanism", RESETS)
def test_step_matches_snntorch_per_surrogate(reset_mechanism, reset_delay, theirs, ours,
                                             sg_kwargs):
    """Given snnTorch's own surrogate closure as spike_grad; every parameter learnable."""
    inp = parity_inputs(seed=RESETS.index(reset_mechanism) + 3 * reset_delay, per_neuron=True)
    kw = layer_kwargs(inp, LEARN["all"], spike_grad=theirs(**sg_kwargs),
                      reset_mechanism=reset_mechanism, reset_delay=reset_delay)
    check_matches_snntorch(kw, inp)


@pytest.mark.parametrize("per_neuron", [True, False], ids=["per_neuron", "scalar"])
@pytest.mark.parametrize("learn", list(LEARN))
@pytest.mark.parametrize("init_hidden, output", [(False, False), (True, False), (True, True)],
                         ids=["mem-passed", "init_hidden", "init_hidden-output"])
def test_step_matches_snntorch_per_option(init_hidden, output, learn, per_neuron):
    inp = parity_inputs(seed=7, per_neuron=per_neuron)
    kw = layer_kwargs(inp, LEARN[learn], init_hidden=init_hidden, output=output)
    check_matches_snntorch(kw, inp)


@pytest.mark.parametrize("reset_delay", RESET_DELAYS)
@pytest.mark.parametrize("reset_mechanism", RESETS)
def test_surrogate_disable_matches_snntorch(reset_mechanism, reset_delay):
    """No gradient through any spike (also not through the reset_delay=False reset)."""
    inp = parity_inputs(seed=11, per_neuron=True)
    kw = layer_kwargs(inp, LEARN["all"], surrogate_disable=True, spike_grad=sts.fast_sigmoid(),
                      reset_mechanism=reset_mechanism, reset_delay=reset_delay)
    check_matches_snntorch(kw, inp)


@pytest.mark.parametrize("theirs, ours, sg_kwargs", SURROGATE_PAIRS[:4])
def test_our_surrogates_as_spike_grad(theirs, ours, sg_kwargs):
    inp = parity_inputs(seed=3, per_neuron=False)
    expected = run_steps(make(snntorch.Leaky, layer_kwargs(inp, spike_grad=theirs(**sg_kwargs))),
                         inp)
    layer = make(knn.Leaky, layer_kwargs(inp, spike_grad=ours(**sg_kwargs)))
    assert layer.surrogate == ours(**sg_kwargs)
    actual = run_steps(layer, inp)
    assert_results_match(actual, expected, SNNTORCH_FORWARD_TOL, SNNTORCH_GRAD_TOL)


def test_spike_grad_recognition():
    cases = [(None, S.atan()), (sts.atan(), S.atan()), (sts.atan(alpha=0.7), S.atan(0.7)),
             (sts.spike_rate_escape(beta=2, slope=5), S.spike_rate_escape(2, 5)),
             (sts.triangular(torch.tensor(0.5)), S.triangular(0.5)), (S.sigmoid(4), S.sigmoid(4))]
    for given, expected in cases:
        layer = knn.Leaky(beta=0.5, spike_grad=given)
        assert layer.surrogate == expected
        assert layer.spike_grad is given
    layer.spike_grad = sts.heaviside()  # the setter resolves again
    assert layer.surrogate == S.heaviside()


# ---- attributes, buffers vs parameters, state_dict ---------------------------------------


@pytest.mark.parametrize("learn", list(LEARN))
def test_parameters_buffers_and_state_dict_keys(learn):
    inp = parity_inputs(seed=0, per_neuron=True)
    kw = layer_kwargs(inp, LEARN[learn])
    theirs, ours = make(snntorch.Leaky, kw), make(knn.Leaky, kw)
    assert [n for n, _ in ours.named_parameters()] == [n for n, _ in theirs.named_parameters()]
    # the hidden state `mem` is a buffer in snnTorch, a plain attribute here (DDP: see leaky.py)
    assert [n for n, _ in ours.named_buffers()] == [n for n, _ in theirs.named_buffers()
                                                    if n != "mem"]
    assert list(ours.state_dict()) == list(theirs.state_dict())
    for k, v in theirs.state_dict().items():
        assert torch.equal(ours.state_dict()[k], v) and ours.state_dict()[k].dtype == v.dtype, k


@pytest.mark.parametrize("learn", list(LEARN))
def test_state_dict_round_trip(learn):
    """snnTorch checkpoint -> ours -> snnTorch: values and behaviour survive."""
    inp = parity_inputs(seed=5, per_neuron=True)
    kw = layer_kwargs(inp, LEARN[learn], reset_mechanism="zero")
    theirs = make(snntorch.Leaky, kw)
    blank = dict(beta=torch.zeros(5), threshold=torch.ones(5), graded_spikes_factor=torch.ones(5),
                 **{f"learn_{k}": True for k in LEARN[learn]}, reset_mechanism="zero")
    ours = knn.Leaky(**blank)
    ours.load_state_dict(theirs.state_dict())
    assert_results_match(run_steps(ours, inp), run_steps(theirs, inp), SNNTORCH_FORWARD_TOL,
                         SNNTORCH_GRAD_TOL, "after load")
    back = snntorch.Leaky(**blank)
    back.load_state_dict(ours.state_dict())
    for k, v in theirs.state_dict().items():
        assert torch.equal(back.state_dict()[k], v), k


def test_reset_mechanism_setter_and_checkpoint():
    inp = parity_inputs(seed=2, per_neuron=False)
    layer = make(knn.Leaky, layer_kwargs(inp))
    layer.reset_mechanism = "zero"
    assert layer.reset_mechanism == "zero" and int(layer.reset_mechanism_val) == 1
    zero = make(snntorch.Leaky, layer_kwargs(inp, reset_mechanism="zero"))
    assert_results_match(run_steps(layer, inp), run_steps(zero, inp), SNNTORCH_FORWARD_TOL,
                         SNNTORCH_GRAD_TOL)
    # a checkpoint's reset_mechanism_val decides the mechanism
    fresh = make(knn.Leaky, layer_kwargs(inp))
    fresh.load_state_dict(zero.state_dict())
    assert fresh.reset_mechanism == "zero"
    with pytest.raises(ValueError, match="reset_mechanism"):
        layer.reset_mechanism = "hard"


def test_reset_mem_and_init_leaky():
    layer = knn.Leaky(beta=0.5)
    assert layer.init_leaky().shape == (0,)  # snnTorch's idiom: mem = lif.init_leaky()
    spk, mem = layer(torch.ones(3, 2) * 1.5, layer.init_leaky())
    assert torch.equal(mem, torch.full((3, 2), 1.5))
    assert torch.equal(layer.reset_mem(), torch.zeros(3, 2))
    assert torch.equal(layer.mem, torch.zeros(3, 2))
    layer(torch.ones(3, 2, requires_grad=True))
    layer.detach_hidden()
    assert layer.mem.grad_fn is None


def test_state_persists_without_init_hidden_like_snntorch():
    """snnTorch quirk: without init_hidden, mem=None continues from the stored state."""
    x = torch.rand(4, 3, 2) + 0.3
    theirs, ours = snntorch.Leaky(beta=0.7), knn.Leaky(beta=0.7)
    for xt in x:
        s1, m1 = theirs(xt)
        s2, m2 = ours(xt)
        assert torch.equal(s1, s2) and torch.allclose(m1, m2, rtol=1e-6, atol=0)


# ---- bad input ---------------------------------------------------------------------------


def test_unsupported_options_raise():
    with pytest.raises(NotImplementedError, match="inhibition"):
        knn.Leaky(beta=0.5, inhibition=True)
    with pytest.raises(NotImplementedError, match="state_quant"):
        knn.Leaky(beta=0.5, state_quant=lambda m: m)
    with pytest.raises(ValueError, match="reset_mechanism"):
        knn.Leaky(beta=0.5, reset_mechanism="hard")
    with pytest.raises(ValueError, match="step_mode"):
        knn.Leaky(beta=0.5, step_mode="both")


@pytest.mark.parametrize("spike_grad", [sts.SSO(), sts.SFS(), lambda z: (z > 0).float(),
                                        sts.custom_surrogate(lambda i, g, o: g), "atan"],
                         ids=["SSO", "SFS", "lambda", "custom", "str"])
def test_unknown_spike_grad_lists_supported(spike_grad):
    with pytest.raises(TypeError, match=r"Supported: None .*fast_sigmoid.*spike_rate_escape"):
        knn.Leaky(beta=0.5, spike_grad=spike_grad)


def test_mem_with_init_hidden_raises():
    layer = knn.Leaky(beta=0.5, init_hidden=True)
    with pytest.raises(TypeError, match="init_hidden"):
        layer(torch.ones(2, 3), torch.zeros(2, 3))


@pytest.mark.parametrize("step_mode", ["single", "multi"])
def test_integer_mem_of_the_neuron_shape_is_named_mem(step_mode):
    layer = knn.Leaky(beta=0.5, step_mode=step_mode)
    x = torch.ones(2, 3) if step_mode == "single" else torch.ones(4, 2, 3)
    with pytest.raises(TypeError, match=r"^mem must be a floating-point tensor, got dtype "
                                        r"torch\.int64"):
        layer(x, torch.zeros(2, 3, dtype=torch.long))
    assert layer.mem.numel() == 0, "the refused mem is not stored"


def test_mem_of_wrong_shape_warns_and_restarts_like_snntorch():
    x, mem = torch.rand(2, 3) + 0.5, torch.ones(4, 3)
    expected = snntorch.Leaky(beta=0.5)(x, mem)
    with pytest.warns(UserWarning, match="does not match the neuron shape"):
        actual = knn.Leaky(beta=0.5)(x, mem)
    for a, e in zip(actual, expected):
        assert torch.equal(a, e)


def test_empty_mem_restarts_silently():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        knn.Leaky(beta=0.5)(torch.ones(2, 3), torch.zeros(0))


@pytest.mark.parametrize("beta", [1.5, -0.1, torch.tensor([0.5, 1.2])])
def test_beta_outside_unit_interval_warns_and_clamps(beta):
    with pytest.warns(UserWarning, match=r"outside \[0, 1\]"):
        layer = knn.Leaky(beta=beta, learn_beta=True, reset_mechanism="none")
    clamped = torch.as_tensor(beta).clamp(0, 1)
    x = torch.full((3, 2), 0.25)
    layer(x[0])
    _, mem = layer(x[1])
    assert torch.allclose(mem, clamped * 0.25 + 0.25)


def test_wrong_input_rank_for_step_mode_warns():
    layer = knn.Leaky(beta=0.5, init_hidden=True)
    layer(torch.zeros(3, 2))  # state [3, 2]
    with pytest.warns(UserWarning, match=r"looks like a \[T, ...\] sequence"):
        layer(torch.zeros(5, 3, 2))
    seq = knn.LIF(beta=0.5, init_hidden=True)
    seq(torch.zeros(5, 3, 2))  # state [3, 2]
    with pytest.warns(UserWarning, match="looks like ONE step"):
        seq(torch.zeros(3, 2))
    with pytest.raises(ValueError, match="time-major"):
        seq(torch.tensor(1.0))
    with pytest.raises(TypeError, match="torch.Tensor"):
        layer([1.0, 2.0])


def test_public_names():
    assert snnkernels.nn.Leaky is knn.Leaky and snnkernels.nn.LIF is knn.LIF
