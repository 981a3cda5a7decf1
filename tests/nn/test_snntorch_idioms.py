"""Converted networks under snnTorch's own training idioms (those of snnTorch 1.0.0's tutorials 5,
6 and 7 and its quickstart, written again here with random data): `snntorch.utils.reset(net)`
before each batch, `init_hidden=True` layers in an nn.Sequential with `output=True` on the last,
`init_leaky()` / `reset_mem()` in a custom forward, snntorch.functional's losses and accuracy,
snnTorch's own truncated-BPTT loop, the class-level `snn.Leaky.reset_hidden()` /
`detach_hidden()`, checkpoints, deepcopy, `.to(device)`.

Each training comparison runs the tutorial's loop on the converted network; before every batch
the snnTorch network gets the converted one's weights and runs the same batch, so what is
compared is that batch alone (not the optimizer's float32 rounding accumulated over batches).
Tolerances (float32, tests/helpers.py): output spikes identical, membranes and losses within
SNNTORCH_FORWARD_TOL (1e-6 relative), gradients within SNNTORCH_GRAD_TOL (1e-5 relative, floor
0.1 of the largest). Where both networks train on their own (snnTorch's TBPTT loop), their
weights after training agree within 1e-5 of the largest weight."""

from __future__ import annotations

import copy
import gc
import io
import subprocess
import sys
import warnings
import weakref
from pathlib import Path

import pytest
import snntorch as snn
import snntorch.functional as SF
import torch
from snntorch import surrogate, utils
from torch import nn

import snnkernels
from snnkernels.nn.converted import ConvertedLeaky

from helpers import SNNTORCH_FORWARD_TOL, SNNTORCH_GRAD_TOL, Tol, assert_close

NUM_STEPS = 8


@pytest.fixture(autouse=True)
def own_snntorch_instance_list():
    """snnTorch lists every neuron ever built in one class-level list that its resets walk, and
    keeps them alive; a neuron another test file left there (e.g. a DeltaLeaky whose mem is
    None) makes `snntorch.utils.reset` fail in snnTorch itself. Each test here starts from an
    empty list, as a fresh process would, and the list is restored afterwards."""
    saved = list(snn.SpikingNeuron.instances)
    snn.SpikingNeuron.instances.clear()
    yield
    snn.SpikingNeuron.instances[:] = saved


# ---- the tutorials' networks and loops -------------------------------------------------------


def tutorial6_cnn(in_channels=1, side=28):
    """Tutorial 6 (and 7, with 2 input channels for events): Conv2d / MaxPool2d / Leaky with
    init_hidden, the last Leaky with output=True. Weights scaled up and the output layer's bias
    raised so that random inputs make every layer spike."""
    spike_grad = surrogate.fast_sigmoid(slope=25)
    flat = 16 * (((side - 4) // 2 - 4) // 2) ** 2
    net = nn.Sequential(
        nn.Conv2d(in_channels, 8, 5), nn.MaxPool2d(2),
        snn.Leaky(beta=0.5, spike_grad=spike_grad, init_hidden=True),
        nn.Conv2d(8, 16, 5), nn.MaxPool2d(2),
        snn.Leaky(beta=0.5, spike_grad=spike_grad, init_hidden=True),
        nn.Flatten(), nn.Linear(flat, 10),
        snn.Leaky(beta=0.5, spike_grad=spike_grad, init_hidden=True, output=True))
    with torch.no_grad():
        for p in net.parameters():
            p.mul_(3.0)
        net[7].bias.add_(1.0)
    return net


def quickstart_mlp():
    """The quickstart's network: Flatten, Linear, Leaky(init_hidden), Linear, Leaky(output)."""
    net = nn.Sequential(nn.Flatten(), nn.Linear(28 * 28, 64),
                        snn.Leaky(beta=0.95, init_hidden=True),
                        nn.Linear(64, 10), snn.Leaky(beta=0.95, init_hidden=True, output=True))
    with torch.no_grad():
        net[1].weight.mul_(3.0)
        net[3].weight.mul_(3.0)
    return net


class Tutorial5Net(nn.Module):
    """Tutorial 5: explicit membranes, started in forward by init_leaky() (or reset_mem())."""

    def __init__(self, start="init_leaky"):
        super().__init__()
        self.start = start
        self.fc1 = nn.Linear(28 * 28, 64)
        self.lif1 = snn.Leaky(beta=0.95)
        self.fc2 = nn.Linear(64, 10)
        self.lif2 = snn.Leaky(beta=0.95)
        with torch.no_grad():
            self.fc1.weight.mul_(3.0)
            self.fc2.weight.mul_(3.0)

    def forward(self, x):
        mem1 = getattr(self.lif1, self.start)()
        mem2 = getattr(self.lif2, self.start)()
        spk2_rec, mem2_rec = [], []
        for _ in range(NUM_STEPS):
            spk1, mem1 = self.lif1(self.fc1(x.flatten(1)), mem1)
            spk2, mem2 = self.lif2(self.fc2(spk1), mem2)
            spk2_rec.append(spk2)
            mem2_rec.append(mem2)
        return torch.stack(spk2_rec), torch.stack(mem2_rec)


def forward_pass(net, data):
    """Tutorials 6 and the quickstart (static input repeated), tutorial 7 (data [T, B, ...]):
    reset the network, step it, stack the output layer's spikes and membranes."""
    utils.reset(net)
    spk_rec, mem_rec = [], []
    steps = data if data.dim() == 5 else [data] * NUM_STEPS
    for x in steps:
        spk_out, mem_out = net(x)
        spk_rec.append(spk_out)
        mem_rec.append(mem_out)
    return torch.stack(spk_rec), torch.stack(mem_rec)


def tutorial5_loss(spk_rec, mem_rec, targets):
    """Tutorial 5's loss: cross-entropy of the output membrane, summed over the steps."""
    loss = torch.zeros(1)
    for step in range(mem_rec.shape[0]):
        loss += nn.functional.cross_entropy(mem_rec[step], targets)
    return loss


def twins(build, *args):
    """An snnTorch network and a converted one with the same weights (built twice from one seed:
    a deep copy of an snnTorch network is not in snnTorch's instance list, so utils.reset
    would not reset the copy)."""
    torch.manual_seed(0)
    theirs = build(*args)
    torch.manual_seed(0)
    ours = snnkernels.convert(build(*args))
    assert all(type(m) is ConvertedLeaky for m in ours.modules() if isinstance(m, snn.Leaky))
    return theirs, ours


def static_batches(n, seed, batch=8):
    g = torch.Generator().manual_seed(seed)
    return [(torch.rand(batch, 1, 28, 28, generator=g), torch.randint(0, 10, (batch,), generator=g))
            for _ in range(n)]


def event_batches(n, seed, batch=4):
    """Tutorial 7's input: event frames [T, B, 2, 34, 34] of 0/1."""
    g = torch.Generator().manual_seed(seed)
    return [(torch.bernoulli(torch.full((NUM_STEPS, batch, 2, 34, 34), 0.3), generator=g),
             torch.randint(0, 10, (batch,), generator=g)) for _ in range(n)]


def run_batch(net, data, targets, forward, loss_fn):
    net.zero_grad()
    spk, mem = forward(net, data)
    loss = loss_fn(spk, mem, targets)
    loss.backward()
    return spk, mem, loss.detach(), {n: p.grad.clone() for n, p in net.named_parameters()}


def assert_same_outputs(ours, theirs, what):
    (spk, mem), (spk_ref, mem_ref) = ours, theirs
    assert torch.equal(spk, spk_ref), f"{what}: spikes differ"
    assert spk_ref.sum() > 0, f"{what}: no output spikes; the comparison would be weak"
    assert_close(mem, mem_ref, SNNTORCH_FORWARD_TOL, f"{what}: output membrane")


def train_and_evaluate(theirs, ours, forward, loss_fn, optimizer, train, test):
    """The tutorials' loop on `ours` (train each batch, then evaluate under no_grad), each batch
    compared with `theirs` run from the same weights."""
    for i, (data, targets) in enumerate(train):
        theirs.load_state_dict(ours.state_dict())
        expected = run_batch(theirs, data, targets, forward, loss_fn)
        ours.train()
        actual = run_batch(ours, data, targets, forward, loss_fn)
        optimizer.step()
        assert_same_outputs(actual[:2], expected[:2], f"training batch {i}")
        assert_close(actual[2], expected[2], SNNTORCH_FORWARD_TOL, f"batch {i}: loss")
        assert list(actual[3]) == list(expected[3])
        for name in expected[3]:
            assert_close(actual[3][name], expected[3][name], SNNTORCH_GRAD_TOL,
                         f"batch {i}: grad {name}")
    theirs.load_state_dict(ours.state_dict())
    ours.eval()
    theirs.eval()
    with torch.no_grad():
        first = []
        for i, (data, targets) in enumerate(test):
            spk, mem = forward(ours, data)
            assert_same_outputs((spk, mem), forward(theirs, data), f"evaluation batch {i}")
            assert SF.accuracy_rate(spk, targets) == SF.accuracy_rate(forward(theirs, data)[0],
                                                                      targets)
            first.append(spk)
        # A batch's result does not depend on the batch evaluated before it.
        for (data, _), spk in zip(reversed(test), reversed(first)):
            assert torch.equal(forward(ours, data)[0], spk)


def spike_rate_loss(loss):
    """snntorch.functional's spike losses take the output spikes only."""
    return lambda spk, mem, targets: loss(spk, targets)


# ---- the tutorials ----------------------------------------------------------------------------


def test_tutorial6_cnn_trains_and_evaluates_like_snntorch():
    theirs, ours = twins(tutorial6_cnn)
    optimizer = torch.optim.Adam(ours.parameters(), lr=1e-2, betas=(0.9, 0.999))
    train_and_evaluate(theirs, ours, forward_pass, spike_rate_loss(SF.ce_rate_loss()), optimizer,
                       static_batches(4, seed=1), static_batches(2, seed=2))


def test_tutorial7_event_cnn_trains_and_evaluates_like_snntorch():
    theirs, ours = twins(tutorial6_cnn, 2, 34)
    optimizer = torch.optim.Adam(ours.parameters(), lr=2e-2, betas=(0.9, 0.999))
    loss_fn = SF.mse_count_loss(correct_rate=0.8, incorrect_rate=0.2)
    train_and_evaluate(theirs, ours, forward_pass, spike_rate_loss(loss_fn), optimizer,
                       event_batches(2, seed=3), event_batches(2, seed=4))


def test_quickstart_mlp_trains_and_evaluates_like_snntorch():
    theirs, ours = twins(quickstart_mlp)
    optimizer = torch.optim.Adam(ours.parameters(), lr=2e-2, betas=(0.9, 0.999))
    loss_fn = SF.mse_count_loss(correct_rate=0.8, incorrect_rate=0.2)
    train_and_evaluate(theirs, ours, forward_pass, spike_rate_loss(loss_fn), optimizer,
                       static_batches(3, seed=5), static_batches(2, seed=6))


@pytest.mark.parametrize("start", ["init_leaky", "reset_mem"])
def test_tutorial5_custom_forward_trains_and_evaluates_like_snntorch(start):
    theirs, ours = twins(Tutorial5Net, start)
    optimizer = torch.optim.Adam(ours.parameters(), lr=5e-4, betas=(0.9, 0.999))
    train_and_evaluate(theirs, ours, lambda net, x: net(x), tutorial5_loss, optimizer,
                       static_batches(3, seed=7), static_batches(2, seed=8))


def test_snntorch_truncated_bptt_loop_trains_like_snntorch():
    """snntorch.backprop.TBPTT: utils.reset per batch, its final-layer check, and the class-level
    snn.Leaky.detach_hidden() every K steps (in place, so the state must not be a view)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # snnTorch's, on importing backprop
        from snntorch import backprop
    theirs, ours = twins(quickstart_mlp)
    initial = ours[1].weight.detach().clone()
    batches = static_batches(2, seed=9)
    losses = []
    for net in (theirs, ours):
        optimizer = torch.optim.SGD(net.parameters(), lr=0.05)
        loss_fn = SF.mse_count_loss(correct_rate=0.8, incorrect_rate=0.2)
        losses.append(backprop.TBPTT(net, batches, optimizer, loss_fn, num_steps=NUM_STEPS,
                                     time_var=False, K=3))
    assert_close(losses[1].detach(), losses[0].detach(), SNNTORCH_FORWARD_TOL, "TBPTT loss")
    for (name, p), q in zip(ours.named_parameters(), theirs.parameters()):
        assert_close(p.detach(), q.detach(), Tol(1e-5, 1.0), f"trained {name}")
    assert not torch.equal(ours[1].weight, initial), "did not train"


# ---- snnTorch's class-level state ------------------------------------------------------------


def stepped(*nets, batch=4):
    """Runs `nets` a few steps with grad, so that every layer holds a state in a graph (no
    utils.reset here: it would reset every network's layers, not only the one given)."""
    x = torch.rand(batch, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    for net in nets:
        for _ in range(3):
            net(x)


def leakies(net):
    return [m for m in net.modules() if isinstance(m, snn.Leaky)]


def test_class_level_reset_and_detach_reach_converted_and_snntorch_layers():
    theirs, ours = twins(quickstart_mlp)
    stepped(theirs, ours)
    before = [m.mem.detach().clone() for m in leakies(ours)]
    assert all(m.mem.grad_fn is not None for m in leakies(ours) + leakies(theirs))
    snn.Leaky.detach_hidden()
    for m, mem in zip(leakies(ours), before):
        assert m.mem.grad_fn is None and torch.equal(m.mem, mem) and mem.abs().sum() > 0
    assert all(m.mem.grad_fn is None for m in leakies(theirs))
    snn.Leaky.reset_hidden()
    for m, mem in zip(leakies(ours) + leakies(theirs), before + before):
        assert torch.equal(m.mem, torch.zeros_like(mem))


def test_layer_methods_act_on_that_layer_and_class_methods_on_every_leaky():
    theirs, ours = twins(quickstart_mlp)
    stepped(theirs, ours)
    first, last = leakies(ours)
    last_mem = last.mem.detach().clone()
    first.detach_hidden()
    assert first.mem.grad_fn is None and last.mem.grad_fn is not None
    first.reset_hidden()
    assert not first.mem.any() and torch.equal(last.mem, last_mem)
    ConvertedLeaky.reset_hidden()  # on the class: snnTorch's, every Leaky
    assert not last.mem.any() and not any(m.mem.any() for m in leakies(theirs))


def test_evaluation_without_reset_carries_the_state_like_snntorch():
    """Without utils.reset, both carry the last batch's membranes into the next one (what the
    tutorials' reset is for); the converted network does exactly what snnTorch's does."""
    theirs, ours = twins(quickstart_mlp)
    (a, _), (b, _) = static_batches(2, seed=10)
    with torch.no_grad():
        results = []
        for net in (theirs, ours):
            utils.reset(net)
            for x in (a, b):
                for _ in range(NUM_STEPS):
                    out = net(x)
            results.append(out)
    assert_same_outputs(results[1], results[0], "second batch without reset")
    assert not torch.equal(forward_pass(ours, b)[1][-1], results[1][1])


# ---- mixed networks and what convert() leaves alone ------------------------------------------


def mixed_net():
    """A converted Leaky, a Leaky that stays snnTorch's (inhibition) and a Synaptic (not
    converted), all with init_hidden."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # snnTorch's own warning on inhibition
        inhibited = snn.Leaky(beta=0.8, inhibition=True, init_hidden=True)
    net = nn.Sequential(
        nn.Flatten(), nn.Linear(28 * 28, 32), snn.Leaky(beta=0.9, init_hidden=True),
        nn.Linear(32, 32), inhibited,
        nn.Linear(32, 10), snn.Synaptic(alpha=0.8, beta=0.9, init_hidden=True, output=True))
    with torch.no_grad():
        for linear in net[1::2]:
            linear.weight.mul_(4.0)
    return net


def mixed_forward(net, data):
    utils.reset(net)
    spk_rec, mem_rec = [], []
    for _ in range(NUM_STEPS):
        spk, _, mem = net(data)
        spk_rec.append(spk)
        mem_rec.append(mem)
    return torch.stack(spk_rec), torch.stack(mem_rec)


def test_mixed_network_resets_every_neuron_with_snntorch_utils_reset():
    torch.manual_seed(0)
    theirs = mixed_net()
    torch.manual_seed(0)
    ours = mixed_net()
    with pytest.warns(UserWarning, match=r"4: inhibition=True; 6: Synaptic \(only snntorch.Leaky"):
        snnkernels.convert(ours)
    assert [type(m) for m in ours[2::2]] == [ConvertedLeaky, snn.Leaky, snn.Synaptic]
    optimizer = torch.optim.Adam(ours.parameters(), lr=1e-2)
    train_and_evaluate(theirs, ours, mixed_forward, spike_rate_loss(SF.ce_rate_loss()),
                       optimizer, static_batches(3, seed=11), static_batches(2, seed=12))


@pytest.mark.parametrize("make, name", [
    (lambda: snn.Synaptic(alpha=0.9, beta=0.8), "Synaptic"),
    (lambda: snn.Alpha(alpha=0.9, beta=0.8), "Alpha"),
    (lambda: snn.Lapicque(beta=0.9), "Lapicque"),
    (lambda: snn.RLeaky(beta=0.9, linear_features=4), "RLeaky"),
    (lambda: snn.RSynaptic(alpha=0.9, beta=0.8, linear_features=4), "RSynaptic"),
    (lambda: snn.SLSTM(4, 4), "SLSTM"),
    (lambda: snn.SConv2dLSTM(1, 2, 3), "SConv2dLSTM"),
    (lambda: snn.LeakyParallel(4, 4), "LeakyParallel"),
], ids=lambda v: v if isinstance(v, str) else "")
def test_convert_names_every_neuron_it_does_not_convert(make, name):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # snnTorch's own construction warnings
        other = make()
    model = nn.Sequential(nn.Linear(4, 4), snn.Leaky(beta=0.5), nn.Sequential(other))
    with pytest.warns(UserWarning, match=rf"kept .*2\.0: {name} \(only snntorch.Leaky"):
        snnkernels.convert(model)
    assert type(model[1]) is ConvertedLeaky and model[2][0] is other


def test_converting_twice_changes_nothing_and_does_not_warn():
    torch.manual_seed(0)
    net = snnkernels.convert(quickstart_mlp())
    layers = list(net)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert snnkernels.convert(net) is net
    assert list(net) == layers


# ---- snnTorch's instance list ----------------------------------------------------------------


def test_instance_list_does_not_keep_converted_or_replaced_layers_alive():
    torch.manual_seed(0)
    net = quickstart_mlp()
    replaced = weakref.ref(net[2])
    snnkernels.convert(net)
    converted = weakref.ref(net[2])
    stepped(net)
    gc.collect()
    assert replaced() is None, "the snnTorch layer the conversion replaced is still alive"
    assert converted() is not None
    del net
    gc.collect()
    assert converted() is None, "snnTorch's instance list keeps the converted layer alive"
    snn.Leaky.reset_hidden()  # the dead layer's entry is skipped, not an error
    snn.Leaky.detach_hidden()
    _, ours = twins(quickstart_mlp)  # listing these drops the dead entries; ours stays alive
    live = [e for e in snn.SpikingNeuron.instances if isinstance(e, ConvertedLeaky)]
    assert len(live) == len([e for e in snn.SpikingNeuron.instances
                             if type(e).__name__ == "_LayerHandle"])


# ---- checkpoints, copies, devices ------------------------------------------------------------


def test_state_dict_round_trips_between_snntorch_and_converted():
    theirs, ours = twins(tutorial6_cnn)
    with torch.no_grad():
        for p in theirs.parameters():
            p.add_(0.01 * torch.randn_like(p))
    buffer = io.BytesIO()
    torch.save(theirs.state_dict(), buffer)
    buffer.seek(0)
    ours.load_state_dict(torch.load(buffer))  # strict: the same keys
    (x, _), = static_batches(1, seed=13)
    with torch.no_grad():
        assert_same_outputs(forward_pass(ours, x), forward_pass(theirs, x), "snnTorch -> ours")
    buffer = io.BytesIO()
    torch.save(ours.state_dict(), buffer)
    buffer.seek(0)
    torch.manual_seed(1)
    other = tutorial6_cnn()
    other.load_state_dict(torch.load(buffer))
    with torch.no_grad():
        assert_same_outputs(forward_pass(other, x), forward_pass(theirs, x), "ours -> snnTorch")


@pytest.mark.parametrize("how", ["deepcopy", "torch.save of the model"])
def test_copied_and_reloaded_models_are_reset_by_snntorch(how):
    theirs, ours = twins(quickstart_mlp)
    if how == "deepcopy":
        copied = copy.deepcopy(ours)
    else:
        buffer = io.BytesIO()
        torch.save(ours, buffer)
        buffer.seek(0)
        copied = torch.load(buffer, weights_only=False)
    assert type(copied[2]) is ConvertedLeaky and copied[2] is not ours[2]
    optimizer = torch.optim.Adam(copied.parameters(), lr=2e-2)
    loss_fn = SF.mse_count_loss(correct_rate=0.8, incorrect_rate=0.2)
    train_and_evaluate(theirs, copied, forward_pass, spike_rate_loss(loss_fn), optimizer,
                       static_batches(2, seed=14), static_batches(2, seed=15))


def test_to_device_then_train_and_evaluate_like_snntorch(device):
    theirs, ours = twins(quickstart_mlp)
    theirs.to(device)
    ours.to(device)
    batches = [(x.to(device), y.to(device)) for x, y in static_batches(3, seed=16)]
    optimizer = torch.optim.Adam(ours.parameters(), lr=2e-2)
    loss_fn = SF.mse_count_loss(correct_rate=0.8, incorrect_rate=0.2)
    train_and_evaluate(theirs, ours, forward_pass, spike_rate_loss(loss_fn), optimizer,
                       batches[:2], batches[2:])


# ---- snnTorch stays optional -----------------------------------------------------------------


def test_snnkernels_works_without_snntorch():
    code = """
import sys
sys.modules["snntorch"] = None  # import snntorch now raises ImportError
import torch, snnkernels
from snnkernels import nn as knn, utils
lif = knn.Leaky(beta=0.9, init_hidden=True)
spk = lif(torch.full((2, 3), 1.5))
assert spk.sum() == 6, spk
utils.reset(lif)
assert not lif.mem.any()
try:
    snnkernels.convert(torch.nn.Linear(2, 2))
except ImportError as e:
    assert "needs snntorch" in str(e), e
else:
    raise AssertionError("convert without snnTorch did not raise")
assert "snntorch" not in [m.split(".")[0] for m in sys.modules if sys.modules[m] is not None]
"""
    root = Path(snnkernels.__file__).parents[1]  # this checkout's snnkernels, not another
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            cwd=root)
    assert result.returncode == 0, result.stderr
