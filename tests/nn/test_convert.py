"""snnkernels.convert on small snnTorch models: the converted model gives the same spikes,
membranes and parameter gradients (helpers.SNNTORCH_* tolerances), keeps the Parameter objects
(an optimizer built before keeps working), loads snnTorch checkpoints; unsupported layers are
kept with a warning; a model with no Leaky is a no-op with a warning. And utils.reset."""

from __future__ import annotations

import copy
import warnings

import pytest
import snntorch
import snntorch.surrogate as sts
import torch
from torch import nn

import snnkernels
from snnkernels import nn as knn
from snnkernels import utils
from snnkernels.convert import from_snntorch
from snnkernels.nn.converted import ConvertedLeaky

from helpers import SNNTORCH_FORWARD_TOL, SNNTORCH_GRAD_TOL, assert_close

T, B = 6, 4


class HiddenNet(nn.Module):
    """The snnTorch tutorial pattern with init_hidden: layers in an nn.Sequential."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(5, 8),
            snntorch.Leaky(beta=0.8, spike_grad=sts.fast_sigmoid(slope=10), learn_beta=True,
                           init_hidden=True),
            nn.Linear(8, 3),
            snntorch.Leaky(beta=torch.rand(3) * 0.5 + 0.4, threshold=0.7, learn_threshold=True,
                           reset_mechanism="zero", init_hidden=True, output=True),
        )

    def forward(self, x):
        utils.reset(self)
        spks, mems = [], []
        for xt in x:
            spk, mem = self.net(xt)
            spks.append(spk)
            mems.append(mem)
        return torch.stack(spks), torch.stack(mems)


class ExplicitNet(nn.Module):
    """The other snnTorch pattern: mem passed in and out; layers in a ModuleList, one nested."""

    def __init__(self):
        super().__init__()
        self.fc = nn.ModuleList([nn.Linear(5, 8), nn.Linear(8, 3)])
        self.lifs = nn.ModuleList([
            snntorch.Leaky(beta=0.9, spike_grad=sts.atan(alpha=3.0), reset_delay=False),
            snntorch.Leaky(beta=0.7, surrogate_disable=True, graded_spikes_factor=1.5,
                           learn_graded_spikes_factor=True),
        ])

    def forward(self, x):
        mems = [lif.init_leaky() for lif in self.lifs]
        spks, outs = [], []
        for xt in x:
            h = xt
            for i, (fc, lif) in enumerate(zip(self.fc, self.lifs)):
                h, mems[i] = lif(fc(h), mems[i])
            spks.append(h)
            outs.append(mems[-1])
        return torch.stack(spks), torch.stack(outs)


def inputs(seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(T, B, 5, generator=g) * 2.0


def run(model, x):
    model.zero_grad()
    spk, mem = model(x)
    g = torch.Generator().manual_seed(1)
    loss = (spk * torch.randn(spk.shape, generator=g)).sum() + (mem * torch.randn(
        mem.shape, generator=g)).sum()
    loss.backward()
    return spk.detach(), mem.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}


def assert_same_results(actual, expected):
    (s1, m1, g1), (s2, m2, g2) = actual, expected
    assert torch.equal(s1, s2), "spikes differ"
    assert s2.abs().sum() > 0, "no spikes: choose other inputs"
    assert_close(m1, m2, SNNTORCH_FORWARD_TOL, "mem")
    assert list(g1) == list(g2)
    for name in g2:
        assert_close(g1[name], g2[name], SNNTORCH_GRAD_TOL, f"grad {name}")


@pytest.mark.parametrize("make", [HiddenNet, ExplicitNet])
def test_converted_model_matches_snntorch(make):
    torch.manual_seed(0)
    theirs = make()
    ours = snnkernels.convert(copy.deepcopy(theirs))
    leakies = [m for m in ours.modules() if isinstance(m, (knn.Leaky, snntorch.Leaky))]
    assert leakies and all(type(m) is ConvertedLeaky for m in leakies)
    x = inputs()
    assert_same_results(run(ours, x), run(theirs, x))
    assert list(ours.state_dict()) == list(theirs.state_dict())


def test_settings_are_kept():
    torch.manual_seed(0)
    ours = snnkernels.convert(ExplicitNet())
    a, b = ours.lifs
    assert a.surrogate == snnkernels.surrogate.atan(alpha=3.0) and a.reset_delay is False
    assert b.surrogate_disable and isinstance(b.graded_spikes_factor, nn.Parameter)
    hidden = snnkernels.convert(HiddenNet()).net
    assert hidden[3].reset_mechanism == "zero" and hidden[3].output and hidden[3].init_hidden
    assert hidden[1].surrogate == snnkernels.surrogate.fast_sigmoid(slope=10)


def test_parameters_are_the_same_objects():
    """An optimizer built on the snnTorch model keeps training the converted one."""
    torch.manual_seed(0)
    model = HiddenNet()
    before = dict(model.named_parameters())
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    snnkernels.convert(model)
    after = dict(model.named_parameters())
    assert list(before) == list(after)
    assert all(before[k] is after[k] for k in before)
    beta = model.net[1].beta.detach().clone()
    run(model, inputs())
    opt.step()
    assert not torch.equal(model.net[1].beta, beta)


def test_snntorch_checkpoint_loads_into_converted_model():
    torch.manual_seed(0)
    trained = HiddenNet()
    with torch.no_grad():
        for p in trained.parameters():
            p.mul_(1.1)
    torch.manual_seed(1)
    fresh = snnkernels.convert(HiddenNet())
    fresh.load_state_dict(trained.state_dict())  # strict
    x = inputs(3)
    assert_same_results(run(fresh, x), run(trained, x))


def test_converting_a_single_leaky():
    layer = snntorch.Leaky(beta=0.5, learn_beta=True)
    new = snnkernels.convert(layer)
    assert type(new) is ConvertedLeaky and new.beta is layer.beta


def test_model_without_leaky_warns_and_is_unchanged():
    model = nn.Sequential(nn.Linear(2, 3), nn.ReLU())
    with pytest.warns(UserWarning, match="no snntorch.Leaky"):
        assert snnkernels.convert(model) is model
    assert [type(m) for m in model] == [nn.Linear, nn.ReLU]


@pytest.mark.parametrize("layer, reason", [
    (lambda: snntorch.Leaky(beta=0.5, inhibition=True), "inhibition"),
    (lambda: snntorch.Leaky(beta=0.5, state_quant=lambda m: m), "state_quant"),
    (lambda: snntorch.Leaky(beta=0.5, spike_grad=sts.SSO()), "spike_grad"),
    (lambda: snntorch.DeltaLeaky(beta=0.5), "subclass"),
], ids=["inhibition", "state_quant", "SSO", "DeltaLeaky"])
def test_unsupported_layers_are_kept_with_a_warning(layer, reason):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # snnTorch's own warning on inhibition
        bad = layer()
    model = nn.Sequential(nn.Linear(2, 3), bad, snntorch.Leaky(beta=0.5))
    with pytest.warns(UserWarning, match=rf"kept .*1: .*{reason}"):
        snnkernels.convert(model)
    assert model[1] is bad and type(model[2]) is ConvertedLeaky


def test_reset_mechanism_changed_after_construction_is_kept():
    layer = snntorch.Leaky(beta=0.5)
    layer.reset_mechanism = "zero"  # snnTorch still subtracts (state_function unchanged)
    with pytest.warns(UserWarning, match="changed after construction"):
        assert snnkernels.convert(layer) is layer


def test_utils_reset_and_detach():
    model = nn.Sequential(nn.Linear(2, 3), knn.Leaky(beta=0.5, init_hidden=True),
                          snntorch.Leaky(beta=0.5, init_hidden=True))
    model(torch.ones(4, 2, requires_grad=True) * 3)
    assert model[1].mem.grad_fn is not None
    assert utils.detach(model) is model
    assert model[1].mem.grad_fn is None and model[1].mem.abs().sum() > 0
    assert utils.reset(model) is model
    for layer in model[1:]:
        assert torch.equal(layer.mem, torch.zeros(4, 3))


@pytest.mark.parametrize("fn", [utils.reset, utils.detach], ids=["reset", "detach"])
@pytest.mark.parametrize("bad", [None, torch.zeros(3), [knn.Leaky(beta=0.5)]],
                         ids=["None", "tensor", "list"])
def test_utils_reset_and_detach_refuse_a_non_module(fn, bad):
    with pytest.raises(TypeError, match=rf"utils\.{fn.__name__}: model must be a "
                                        rf"torch\.nn\.Module, got {type(bad).__name__}"):
        fn(bad)


@pytest.mark.parametrize("make, name", [
    (lambda: snntorch.Synaptic(alpha=0.5, beta=0.9), "Synaptic"),
    (lambda: snntorch.DeltaLeaky(beta=0.5), "DeltaLeaky"),
    (lambda: nn.Linear(2, 2), "Linear"),
    (lambda: knn.Leaky(beta=0.5), "Leaky"),
], ids=["Synaptic", "DeltaLeaky", "Linear", "snnkernels-Leaky"])
def test_from_snntorch_refuses_what_is_not_a_snntorch_leaky(make, name):
    with pytest.raises(TypeError, match=rf"layer must be a snntorch\.Leaky.*got \S*{name}"):
        from_snntorch(make())


@pytest.mark.parametrize("layer, setting", [
    (lambda: snntorch.Leaky(beta=0.5, inhibition=True), "inhibition=True"),
    (lambda: snntorch.Leaky(beta=0.5, state_quant=lambda m: m), "state_quant"),
], ids=["inhibition", "state_quant"])
def test_from_snntorch_refuses_what_convert_keeps(layer, setting):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # snnTorch's own warning on inhibition
        bad = layer()
    with pytest.raises(ValueError, match=setting):
        from_snntorch(bad)


def test_from_snntorch_refuses_a_reset_mechanism_changed_after_construction():
    layer = snntorch.Leaky(beta=0.5)
    layer.reset_mechanism = "zero"
    with pytest.raises(ValueError, match="reset_mechanism was changed after construction"):
        from_snntorch(layer)


def test_from_snntorch_refuses_an_unsupported_spike_grad():
    with pytest.raises(TypeError, match="spike_grad="):
        from_snntorch(snntorch.Leaky(beta=0.5, spike_grad=sts.SSO()))
