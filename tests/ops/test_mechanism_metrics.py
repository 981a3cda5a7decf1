"""snnkernels.mechanism (counts inside the ops) and the study's mechanism metrics:
- the counts against the reference (snnkernels/reference.py) in float64 on random inputs, for
  every op path: lif dense and masked, lif_constant, linear_lif dense / sparse / event synapse
  (spike rate and δI density exactly; the active-window fraction from the reference membranes);
- nothing counted, and no counting op run, without a recording;
- every arm of the study (study/arms.py) through the study's collection function: every metric
  present, finite and in range; and run_cell's record fields;
- the clean metrics."""

from __future__ import annotations

import math
from unittest import mock

import numpy as np
import pytest
import torch

import snnkernels
from snnkernels import _ops, mechanism, reference
from snnkernels import sparse as sp
from snnkernels import surrogate as S
from snnkernels.linear_lif import op_args
from snnkernels.study import mechanism as study_mechanism
from snnkernels.study import runner
from snnkernels.study import train as T
from snnkernels.study.arms import ARMS, ModelConfig
from snnkernels.study.config import PRESETS
from snnkernels.study.data import Table, make_split

from helpers import generator

THR = 0.8  # the reference tests' threshold; beta 0.85, the fast_sigmoid surrogate
MASKS = [
    pytest.param(None, id="dense"),
    pytest.param(sp.TopK(k=3), id="topk3"),
    pytest.param(sp.TopK(fraction=0.25, temporal=True), id="topk-temporal"),
    pytest.param(sp.ActiveWindow(0.3), id="window0.3"),
]


def rand(*shape, seed, scale=1.0, shift=0.0):
    return torch.randn(shape, generator=generator(seed), dtype=torch.float64) * scale + shift


def fractions(spk, grad, h=None, width=None):
    """What the counts must be, from reference tensors: nonzero spikes, nonzero δI, and the
    membranes h with |h - THR| < width."""
    window = None if width is None else float(((h - THR).abs() < width).double().mean())
    return (float(torch.count_nonzero(spk)) / spk.numel(),
            float(torch.count_nonzero(grad)) / grad.numel(), window)


def upstream_loss(spk, mem, seed):
    """A loss with random weights on every spike and membrane (so δI is nonzero unless masked)."""
    return ((spk * rand(*spk.shape, seed=seed)).sum()
            + (mem * rand(*mem.shape, seed=seed + 1)).sum())


def reference_h(spk, mem, reset_delay):
    """The membrane h_t the ActiveWindow tests (subtract reset, graded 1): the returned one with
    reset_delay; without it (snnTorch's order: the delayed reset R_t = H(mem_{t-1} - THR), then
    the same-step reset by spk_t - R_t) the returned one before that same-step reset."""
    if reset_delay:
        return mem
    previous = torch.cat([torch.zeros_like(mem[:1]), mem[:-1]])
    return mem + (spk - (previous > THR).double()) * THR


def reference_fractions(current, kw, seed):
    """fractions() of the reference LIF on `current` (requiring grad) with snnkernels.lif's
    keyword arguments kw, under upstream_loss(seed)."""
    current.retain_grad()
    spk, mem = reference.lif(current, 0.85, THR, **kw)
    upstream_loss(spk, mem, seed=seed).backward()
    mask = kw["sparse"]
    width = mask.width if isinstance(mask, sp.ActiveWindow) else None
    return fractions(spk, current.grad, reference_h(spk, mem, kw["reset_delay"]), width)


def only_layer(recording) -> mechanism.LayerMetrics:
    layers = recording.layers()
    assert len(layers) == 1, layers
    return next(iter(layers.values()))


def assert_counts(got: mechanism.LayerMetrics, want):
    spike_rate, density, window = want
    assert 0 < spike_rate < 1 and 0 < density, "degenerate inputs: a weak test"
    assert got.spike_rate == spike_rate
    assert got.grad_current_density == density
    if window is None:
        assert got.active_window_fraction is None
    else:
        assert 0 < window < 1 and got.active_window_fraction == window


@pytest.mark.parametrize("reset_delay", [True, False], ids=["delay", "no-delay"])
@pytest.mark.parametrize("mask", MASKS)
def test_lif_counts_match_reference(mask, reset_delay):
    kw = dict(surrogate=S.fast_sigmoid(), reset_delay=reset_delay, sparse=mask)
    x = rand(7, 5, 12, seed=1, scale=0.6, shift=0.3)
    want = reference_fractions(x.clone().requires_grad_(True), kw, seed=2)

    x_ours = x.clone().requires_grad_(True)
    with mechanism.record() as rec:
        spk, mem = snnkernels.lif(x_ours, 0.85, THR, **kw)
        upstream_loss(spk, mem, seed=2).backward()
    assert list(rec.layers()) == ["lif_forward_masked#0" if mask else "lif_forward#0"]
    assert_counts(only_layer(rec), want)
    if mask is not None:
        assert want[1] < 0.6, "the mask did not thin δI: a weak test"


@pytest.mark.parametrize("reset_delay", [True, False], ids=["delay", "no-delay"])
def test_lif_constant_counts_the_per_step_current_gradient(reset_delay):
    """lif_constant's δI is the gradient of each step's copy of the current, as snnkernels.lif
    reports it for the expanded current (the reference on that copy)."""
    kw = dict(surrogate=S.fast_sigmoid(), reset_delay=reset_delay)
    x = rand(6, 10, seed=3, scale=0.5, shift=0.4)
    expanded = x.expand(8, 6, 10).clone().requires_grad_(True)
    spk, _ = reference.lif(expanded, 0.85, THR, **kw)
    weights = rand(8, 6, 10, seed=4) * (rand(8, 6, 10, seed=5) > 0.5)  # some δI exactly zero
    (spk * weights).sum().backward()
    want = fractions(spk, expanded.grad)
    assert want[1] < 0.9

    x_ours = x.clone().requires_grad_(True)
    with mechanism.record() as rec:
        spk = snnkernels.lif_constant(x_ours, 8, 0.85, THR, **kw)
        (spk * weights).sum().backward()
    assert_counts(only_layer(rec), want)


def linear_case(seed, spikes=False):
    """x [T, B, F] (dense values, or 0/1 spikes sparse enough for the event synapse), weight
    [N, F], bias [N] with N = the event synapse's minimum width."""
    n = snnkernels.build_info()["event_min_width"]
    if spikes:
        x = (torch.rand(5, 6, 300, generator=generator(seed), dtype=torch.float64) < 0.02)
        x = x.double()
    else:
        x = rand(5, 6, 20, seed=seed)
    features = x.shape[-1]
    weight = rand(n, features, seed=seed + 1, scale=2.0 / math.sqrt(features * 0.02 if spikes
                                                                     else features))
    return x, weight, rand(n, seed=seed + 2, scale=0.2, shift=0.3)


@pytest.mark.parametrize("reset_delay", [True, False], ids=["delay", "no-delay"])
@pytest.mark.parametrize("mask", MASKS)
@pytest.mark.parametrize("synapse", ["dense-input", "event"])
def test_linear_lif_counts_match_reference(synapse, mask, reset_delay):
    x, weight, bias = linear_case(seed=10, spikes=synapse == "event")
    if synapse == "event":  # the forward takes the event synapse on these inputs
        args = op_args(x, weight, bias, 0.85, THR, None, "subtract",
                                             reset_delay, mask)
        assert torch.ops.snnkernels.linear_lif_forward(x, *args)[3].tolist() == [True]
    kw = dict(surrogate=S.fast_sigmoid(), reset_delay=reset_delay, sparse=mask)
    want = reference_fractions(torch.matmul(x, weight.clone().requires_grad_(True).t()) + bias,
                               kw, seed=12)

    w_ours = weight.clone().requires_grad_(True)
    with mechanism.record() as rec:
        spk, mem = snnkernels.linear_lif(x, w_ours, bias, 0.85, THR, **kw)
        upstream_loss(spk, mem, seed=12).backward()
    assert list(rec.layers()) == ["linear_lif_forward#0"]
    assert_counts(only_layer(rec), want)


def test_forward_without_gradient_counts_spikes_and_window_only():
    x = rand(7, 5, 12, seed=20, scale=0.6, shift=0.3)
    with torch.no_grad():
        spk, mem = reference.lif(x, 0.85, THR, sparse=sp.ActiveWindow(0.3))
    with mechanism.record() as rec, torch.no_grad():
        snnkernels.lif(x, 0.85, THR, sparse=sp.ActiveWindow(0.3))
    got = only_layer(rec)
    assert got.spike_rate == float(spk.mean())
    assert got.active_window_fraction == float(((mem - THR).abs() < 0.3).double().mean())
    assert got.grad_current_density is None


def test_layers_named_and_unnamed():
    x = rand(4, 3, 6, seed=21, shift=0.5)
    with mechanism.record() as rec, torch.no_grad():
        with mechanism.layer("first"):
            snnkernels.lif(x, 0.9)
            snnkernels.lif(x, 0.9)  # the same name: counted together
        snnkernels.lif(x, 0.9)
        snnkernels.lif(x, 0.9)
    assert list(rec.layers()) == ["first", "lif_forward#0", "lif_forward#1"]
    both = float(torch.count_nonzero(snnkernels.lif(x, 0.9)[0])) / x.numel()
    assert rec.layers()["first"].spike_rate == both
    with mechanism.record():
        with pytest.raises(RuntimeError, match="already open"):
            with mechanism.record():
                pass
    with pytest.raises(ValueError, match="name"):
        mechanism.layer("")
    assert mechanism.current is None


def test_a_backward_after_the_recording_is_not_counted():
    x = rand(4, 3, 6, seed=22, shift=0.5).requires_grad_(True)
    with mechanism.record() as rec:
        spk, _ = snnkernels.lif(x, 0.9)
    spk.sum().backward()
    assert only_layer(rec).grad_current_density is None and x.grad is not None


def every_op_path_once(dtype=torch.float64):
    """Forward and backward of each op path the study's models take on the CPU."""
    x = rand(4, 3, 6, seed=23, shift=0.5).to(dtype).requires_grad_(True)
    xs, w, b = (t.to(dtype) for t in linear_case(seed=24, spikes=True))
    w.requires_grad_(True)
    outputs = [snnkernels.lif(x, 0.9), snnkernels.lif(x, 0.9, sparse=sp.TopK(k=2)),
               snnkernels.lif(x, 0.9, sparse=sp.ActiveWindow(0.3)),
               (snnkernels.lif_constant(x[0], 5, 0.9),)]
    for mask in (None, sp.TopK(k=4), sp.ActiveWindow(0.3)):
        outputs.append(snnkernels.linear_lif(xs, w, b, 0.9, sparse=mask))
        outputs.append(snnkernels.linear_lif(x, w[:, :6], b, 0.9, sparse=mask))
    sum(o.sum() for out in outputs for o in out).backward()


def test_nothing_is_counted_without_a_recording():
    """No counting op runs and no ctx is marked when no recording is open."""
    with mock.patch.object(torch, "count_nonzero", wraps=torch.count_nonzero) as counted, \
            mock.patch.object(_ops, "_count_constant_current_gradient") as recomputed, \
            mock.patch.object(mechanism.Recording, "layer_key") as keyed:
        every_op_path_once()
        assert counted.call_count == 0 and recomputed.call_count == 0
        assert keyed.call_count == 0
    with mock.patch.object(torch, "count_nonzero", wraps=torch.count_nonzero) as counted:
        with mechanism.record() as rec:
            every_op_path_once()
        assert counted.call_count > 0  # the same calls do count while recording
    assert all(m.grad_current_density is not None for m in rec.layers().values())


# --------------------------------------------------------------------------------------------
# The study: every arm through its collection function.
# --------------------------------------------------------------------------------------------


def small_table(classes=3, rows=150, features=7, seed=0) -> Table:
    rng = np.random.default_rng(seed)
    y = np.arange(rows) % classes
    centers = rng.normal(0, 1.5, (classes, features))
    X = (centers[y] + rng.normal(0, 1, (rows, features))).astype(np.float32)
    return Table("small", X, y.astype(np.int64), [f"f{i}" for i in range(features)],
                 [f"c{i}" for i in range(classes)], "accuracy")


def split_tensors(seed=0):
    split = make_split(small_table(), seed)
    return split, runner.tensors(split, "cpu")


MODEL = ModelConfig(hidden=(16, 16), T=5)


def in_unit(value) -> bool:
    return value is not None and math.isfinite(value) and 0.0 <= value <= 1.0


@pytest.mark.parametrize("arm", list(ARMS))
def test_every_arm_has_every_metric(arm):
    split, (X_tr, y_tr, _, _, X_te, y_te) = split_tensors()
    torch.manual_seed(0)
    model = ARMS[arm].build(split.num_features, split.num_classes, MODEL)
    got = study_mechanism.collect(model, X_tr, y_tr, X_te, y_te, batch_size=32, seed=0)
    grad = got["input_grad"]
    assert all(math.isfinite(grad[k]) for k in ("l1", "l2", "density"))
    assert grad["l1"] >= grad["l2"] > 0 and 0 < grad["density"] <= 1
    family = ARMS[arm].family
    if family == "mlp":
        assert got["layers"] == [] and study_mechanism.hidden_gradient_density(got) is None
        return
    assert [layer["name"] for layer in got["layers"]] == ["layers.0", "layers.1", "output"]
    for layer in got["layers"]:
        assert in_unit(layer["spike_rate"]), layer
        assert in_unit(layer["grad_current_density"]) and layer["grad_current_density"] > 0
        if family == "active_window" and layer["name"] != "output":
            assert in_unit(layer["active_window_fraction"]), layer
            assert layer["active_window_fraction"] > 0, "no membrane in the window: weak test"
        else:
            assert layer["active_window_fraction"] is None, layer
    assert all(layer["spike_rate"] > 0 for layer in got["layers"][:-1]), "silent hidden layer"
    hidden = [layer["grad_current_density"] for layer in got["layers"][:-1]]
    density = study_mechanism.hidden_gradient_density(got)
    assert density == pytest.approx(sum(hidden) / 2)
    if family == "topk":
        k = ARMS[arm].sparse.k_for(16)
        assert all(d <= k / 16 for d in hidden) and density > 0.5 * k / 16
    elif family == "dense":
        assert density > 0.5  # the dense surrogates are nonzero almost everywhere
    elif family == "active_window":
        assert density < 1
    assert got["layers"][-1]["grad_current_density"] > 0.5  # the output layer stays dense
    assert not any(p.grad is not None for p in model.parameters()), "collect set .grad"


def test_input_gradient_is_each_rows_loss_gradient():
    split, (_, _, _, _, X_te, y_te) = split_tensors()
    model = ARMS["mlp"].build(split.num_features, split.num_classes, MODEL).double()
    X = X_te.double()
    got = study_mechanism.input_gradient(model, X, y_te, batch_size=7)
    rows = []
    for x, y in zip(X, y_te):
        x = x.clone().requires_grad_(True)
        loss = torch.nn.functional.cross_entropy(model(x[None]), y[None])
        rows.append(torch.autograd.grad(loss, x)[0])
    rows = torch.stack(rows)
    assert got["l1"] == pytest.approx(float(rows.abs().sum(1).mean()), rel=1e-12)
    assert got["l2"] == pytest.approx(float(rows.norm(dim=1).mean()), rel=1e-12)
    assert got["density"] == float(torch.count_nonzero(rows)) / rows.numel()
    with pytest.raises(ValueError, match="batch_size"):
        study_mechanism.input_gradient(model, X, y_te, batch_size=0)


@pytest.mark.parametrize("arm", ["aw_0.2", "mlp"])
def test_run_cell_records_the_metrics(arm, monkeypatch):
    monkeypatch.setattr(runner, "evaluate_robustness",
                        lambda *a, **k: {"attacks": [], "robust": [], "broken_by": [],
                                         "examples": {}})
    table = small_table()
    split = make_split(table, 0)
    config = PRESETS["quick"]
    config = type(config)(**{**config.__dict__, "model": MODEL,
                             "train": T.TrainConfig(epochs=2, patience=1)})
    record, _ = runner.run_cell(runner.Cell("small", arm, 0), table, split, config, {},
                                lambda s: None)
    clean = record["clean_metrics"]
    assert set(clean) == {"accuracy", "balanced_accuracy", "roc_auc"}
    assert all(in_unit(v) for v in clean.values()) and clean["accuracy"] == record["clean"]
    mech = record["mechanism"]
    assert set(mech) == {"layers", "input_grad"}
    if arm == "mlp":
        assert record["density"] is None and record["spike_rates"] == []
    else:
        assert record["spike_rates"] == [layer["spike_rate"] for layer in mech["layers"]]
        assert in_unit(record["density"]) and record["density"] < 1
        assert all(in_unit(layer["active_window_fraction"]) for layer in mech["layers"][:-1])


def test_clean_metrics():
    y = torch.tensor([0, 0, 1, 1, 1, 1])
    logits = torch.tensor([[2.0, 0], [0, 1], [0, 3], [0, 2], [1, 0], [0, 1.5]])
    got = T.clean_metrics(logits, y)
    assert got["accuracy"] == pytest.approx(4 / 6)
    assert got["balanced_accuracy"] == pytest.approx((1 / 2 + 3 / 4) / 2)
    # P(class 1) ranks: one of the 8 (negative, positive) pairs is inverted, none tied
    assert got["roc_auc"] == pytest.approx(7 / 8)
    three = T.clean_metrics(torch.eye(3).repeat(2, 1) * 5, torch.tensor([0, 1, 2, 0, 1, 2]))
    assert three == {"accuracy": 1.0, "balanced_accuracy": 1.0, "roc_auc": 1.0}
    missing = T.clean_metrics(torch.randn(4, 3), torch.tensor([0, 1, 0, 1]))
    assert missing["roc_auc"] is None
    with pytest.raises(ValueError, match="metric"):
        T.metric_value(logits, y, "f1")
    with pytest.raises(ValueError, match="logits"):
        T.clean_metrics(logits[:, 0], y)
