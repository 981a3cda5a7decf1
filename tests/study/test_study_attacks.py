"""snnkernels.study.attacks: evaluate_robustness on a tiny trained TabularSNN and MLP (synthetic,
seeded): the rows' schema; robust accuracy is the per-example worst case (<= every attack, non-
increasing in eps, ~0 at a huge eps: the sanity property); the attacker never runs the sparse
backward; determinism; expectation over transformation for a rate-encoded model; transfer rows;
examples misclassified clean count as broken. And the helpers: the eps frame, the image view,
stratified example selection, the NaN guard, the neuron-state reset."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from torch import nn

import snnkernels.models as models_module
from snnkernels import surrogate as S
from snnkernels.models import TabularSNN
from snnkernels.sparse import TopK
from snnkernels.study.attack_models import (AttackView, FeatureImage, PerturbationFrame,
                                            attack_view, predict)
from snnkernels.study.attacks import (LINEARIZED, AttackConfig, evaluate_robustness,
                                      select_examples, surrogate_label)
from snnkernels.study.threat_model import ThreatModel

F, HIDDEN, T = 6, (16,), 4
# eps_l2 is per sqrt(F): 25 / sqrt(6) ~ 10 is the huge L2 radius of 25 again
CONFIG = AttackConfig(eps_linf=(0.05, 0.3, 10.0), eps_l2=(0.05, 0.4, 10.0), pgd_steps=10,
                      pgd_restarts=1, apgd_steps=5, apgd_restarts=1, square_queries=20,
                      surrogates=(S.atan(alpha=10),), eot_samples=3, max_examples=None)
SURROGATES = ["own", surrogate_label(S.atan(alpha=10))]
LINEARIZING = surrogate_label(S.straight_through_estimator())


def synthetic(n=240, seed=0):
    g = np.random.default_rng(seed)
    X = g.standard_normal((n, F)).astype(np.float32)
    y = (X[:, 0] + 0.5 * X[:, 1] > 0).astype(np.int64)
    return X[:200], y[:200], X[200:], y[200:]


def train(model, X, y, steps=150, lr=2e-2):
    torch.manual_seed(0)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    X, y = torch.from_numpy(X), torch.from_numpy(y)
    for _ in range(steps):
        opt.zero_grad()
        nn.functional.cross_entropy(model(X), y).backward()
        opt.step()
    return model.eval()


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # These models are tiny: a second intra-op thread only adds OpenMP barriers, which cost
    # ~10x the whole op when another process holds the other core (measured: 0.6 s vs 8 s for
    # one evaluate_robustness here).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def data():
    return synthetic()


@pytest.fixture(scope="module")
def snn(data):
    torch.manual_seed(0)
    return train(TabularSNN(F, HIDDEN, 2, T=T), *data[:2])


@pytest.fixture(scope="module")
def mlp(data):
    torch.manual_seed(0)
    return train(nn.Sequential(nn.Linear(F, 16), nn.ReLU(), nn.Linear(16, 2)), *data[:2])


CONFIG_TEST_Y = synthetic()[3]


@pytest.fixture(scope="module")
def snn_result(snn, data):
    return evaluate_robustness(snn, data[2], data[3], CONFIG, seed=1)


@pytest.fixture(scope="module")
def mlp_result(mlp, data):
    return evaluate_robustness(mlp, data[2], data[3], CONFIG, seed=1)


def grid_items(config=CONFIG):
    return [(norm, e) for norm, grid in (("linf", config.eps_linf), ("l2", config.eps_l2))
            for e in grid]


def unpack(result):
    return result["attacks"], result["robust"], result["clean"]


def test_rows_have_the_exact_schema(snn_result, mlp_result):
    for result, snn in ((snn_result, True), (mlp_result, False)):
        rows, robust, clean = unpack(result)
        assert isinstance(clean, float) and clean > 0.8  # the models learned the task
        own = "own" if snn else None
        square = {"linf": "square", "l2": "random_search"}
        expected = {(norm, e, a, own, "all") for norm, e in grid_items() for a in ("pgd", "apgd_ce")}
        expected |= {(norm, e, square[norm], None, "survivors") for norm, e in grid_items()}
        if snn:  # two classes: no APGD-DLR; the other surrogate on survivors; linearized apart
            expected |= {(norm, e, "apgd_ce", SURROGATES[1], "survivors")
                         for norm, e in grid_items()}
            expected |= {(norm, e, LINEARIZED, LINEARIZING, LINEARIZED) for norm, e in grid_items()}
        keys = ("norm", "eps", "radius", "attack", "surrogate", "scope", "accuracy")
        assert [tuple(r) for r in rows] == [keys] * len(rows)
        assert {(r["norm"], r["eps"], r["attack"], r["surrogate"], r["scope"])
                for r in rows} == expected
        assert len(rows) == len(expected)
        assert all(type(r["eps"]) is float and type(r["accuracy"]) is float for r in rows)
        assert [(r["norm"], r["eps"]) for r in robust] == grid_items()
        assert all(list(r) == ["norm", "eps", "radius", "eps_raw", "accuracy"]
                   and type(r["accuracy"]) is float for r in robust)
        # L2 radii scale with sqrt(F mutable features): here every one of the F
        assert all(r["radius"] == pytest.approx(r["eps"] * (np.sqrt(F) if r["norm"] == "l2"
                                                            else 1)) for r in robust)
        keys = ("norm", "eps", "attack", "surrogate", "broke", "first")
        assert all(tuple(b) == keys for b in result["broken_by"])
        # every example broken at an eps was broken first by exactly one attack
        n_ok = round(clean * len(CONFIG_TEST_Y))
        examples = result["examples"]
        assert len(examples["rows"]) == len(CONFIG_TEST_Y)
        per_example = {(e["norm"], e["eps"]): e["attack"] for e in examples["first_broken_by"]}
        for r in robust:
            firsts = sum(b["first"] for b in result["broken_by"]
                         if (b["norm"], b["eps"]) == (r["norm"], r["eps"]))
            assert n_ok - firsts == round(r["accuracy"] * len(CONFIG_TEST_Y))
            # per example: survivors are None, the clean mistakes "clean", and each attack's
            # label appears as often as broken_by says it broke an example first
            labels = per_example[(r["norm"], r["eps"])]
            assert labels.count(None) == n_ok - firsts
            assert labels.count("clean") == len(CONFIG_TEST_Y) - n_ok
            for b in result["broken_by"]:
                if (b["norm"], b["eps"]) == (r["norm"], r["eps"]):
                    label = b["attack"] + (f"[{b['surrogate']}]" if b["surrogate"] else "")
                    assert labels.count(label) == b["first"]


def test_linearized_rows_are_not_in_the_worst_case(snn_result):
    rows, robust, _ = unpack(snn_result)
    linear = [r for r in rows if r["attack"] == LINEARIZED]
    assert linear and all(r["scope"] == LINEARIZED for r in linear)
    assert not any(b["attack"] == LINEARIZED for b in snn_result["broken_by"])
    worst = {(r["norm"], r["eps"]): r["accuracy"] for r in robust}
    # the worst case is the minimum over the other attacks only (the linearized rows may be lower)
    for key, acc in worst.items():
        others = [r["accuracy"] for r in rows
                  if (r["norm"], r["eps"]) == key and r["attack"] != LINEARIZED]
        assert acc == pytest.approx(min(others))


@pytest.mark.parametrize("which", ["snn", "mlp"])
def test_robust_is_the_worst_case_and_falls_to_zero(which, snn_result, mlp_result):
    rows, robust, clean = unpack(snn_result if which == "snn" else mlp_result)
    by_eps = {}
    for r in rows:
        by_eps.setdefault((r["norm"], r["eps"]), []).append(r["accuracy"])
    for norm in ("linf", "l2"):
        accs = [r["accuracy"] for r in robust if r["norm"] == norm]
        assert accs == sorted(accs, reverse=True), (norm, accs)  # eps grids are increasing
        assert accs[0] <= clean
    for r in robust:
        assert r["accuracy"] <= min(by_eps[(r["norm"], r["eps"])]) + 1e-12
    # the sanity property: at eps 10 (L-inf; L2 radius ~25) in standardized units nothing survives
    huge = [r["accuracy"] for r in robust if r["eps"] == 10.0]
    assert max(huge) <= 0.1, robust
    # and the smallest eps leaves most examples alone (the attacks are not broken the other way)
    assert robust[0]["accuracy"] >= clean - 0.3


def test_attacker_never_runs_the_sparse_backward(snn, data, monkeypatch):
    sparse = TabularSNN(F, HIDDEN, 2, T=T, sparse=TopK(k=2))
    sparse.load_state_dict(snn.state_dict())
    seen = []
    for name in ("lif", "linear_lif"):
        original = getattr(models_module, name)

        def spy(*args, _original=original, **kwargs):
            if torch.is_grad_enabled():
                seen.append(kwargs.get("sparse"))
            return _original(*args, **kwargs)

        monkeypatch.setattr(models_module, name, spy)
    # the spy sees a training step's sparse backward ...
    X, y = torch.from_numpy(data[2]), torch.from_numpy(data[3])
    nn.functional.cross_entropy(sparse(X), y).backward()
    assert TopK(k=2) in seen
    seen.clear()
    config = dataclasses.replace(CONFIG, eps_linf=(0.3,), eps_l2=(1.0,))
    result = evaluate_robustness(sparse, data[2], data[3], config, seed=1)
    # ... but none during the attacks, which give what they give on the dense twin
    assert seen and all(s is None for s in seen)
    assert result == evaluate_robustness(sparse.dense_copy(None), data[2], data[3], config, seed=1)


def test_same_seed_same_rows(snn, snn_result, data):
    state = np.random.get_state()[1].copy(), torch.get_rng_state().clone()
    again = evaluate_robustness(snn, data[2], data[3], CONFIG, seed=1)
    assert again == snn_result
    # the caller's global random streams are left as they were
    assert (np.random.get_state()[1] == state[0]).all()
    assert torch.equal(torch.get_rng_state(), state[1])


def test_rate_encoded_model_is_attacked_through_eot(data):
    X, y, Xt, yt = data
    torch.manual_seed(0)
    rate = train(TabularSNN(F, HIDDEN, 2, T=8, encoder="rate"), X, y, steps=100)
    sizes = []
    rate.register_forward_pre_hook(lambda module, args: sizes.append(args[0].shape[0]))
    predict(rate, Xt, eot_samples=3, seed=5)
    assert sizes == [3 * len(Xt)]  # one forward of the eot_samples draws, stacked
    config = dataclasses.replace(CONFIG, eps_linf=(0.3, 10.0), eps_l2=(0.4,),
                                 attacks=("pgd", "square"), linearized=False)
    stream = rate._generators["cpu"].get_state()
    result = evaluate_robustness(rate, Xt, yt, config, seed=2)
    rows, robust, clean = unpack(result)
    assert clean > 0.6
    # at eps 10 almost nothing survives; not quite nothing: the encoder's clamp to [0, 1] has no
    # gradient outside it, which PGD's first step reaches (measured: 0 and 5 of 40 examples
    # survive, for two trainings that differ only in float rounding of the readout's sums)
    assert len(rows) == 2 * 3 and robust[1]["accuracy"] <= 0.15 < clean
    assert evaluate_robustness(rate, Xt, yt, config, seed=2) == result
    # the caller's model is untouched: same seed, same position in its encoder's stream
    assert rate.seed == 0 and torch.equal(rate._generators["cpu"].get_state(), stream)


def test_transfer_rows(snn, mlp, data):
    config = dataclasses.replace(CONFIG, attacks=("pgd",), surrogates=(), linearized=False)
    rows, robust, _ = unpack(evaluate_robustness(
        snn, data[2], data[3], config, seed=1,
        transfer_sources={"transfer_dense": snn.dense_copy(None), "transfer_mlp": mlp}))
    got = {(r["norm"], r["eps"], r["attack"]): r for r in rows}
    for norm, e in grid_items():
        for name in ("transfer_dense", "transfer_mlp"):
            assert got[(norm, e, name)]["surrogate"] is None
            assert got[(norm, e, name)]["scope"] == "survivors"
            # run on the survivors, a transfer row is the worst case so far: never above PGD's
            assert got[(norm, e, name)]["accuracy"] <= got[(norm, e, "pgd")]["accuracy"]


def test_clean_misclassified_examples_count_as_broken():
    X = np.array([[3.0], [-3.0], [2.5], [-2.5], [0.001], [-4.0]], np.float32)
    y = np.array([1, 0, 1, 0, 0, 1])  # the last two are on the wrong side of the boundary
    model = nn.Linear(1, 2)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[-1.0], [1.0]]))
        model.bias.zero_()
    reverse = nn.Linear(1, 2)  # a transfer source that disagrees with the model everywhere
    with torch.no_grad():
        reverse.weight.copy_(-model.weight)
        reverse.bias.zero_()
    config = dataclasses.replace(CONFIG, eps_linf=(1e-3, 2.6), eps_l2=(1e-3, 3.5),
                                 attacks=("pgd", "apgd_ce"))
    rows, robust, clean = unpack(evaluate_robustness(model, X, y, config,
                                                     transfer_sources={"transfer_mlp": reverse}))
    assert clean == pytest.approx(4 / 6)
    # eps 1e-3 moves no correct example across (margin >= 2.5): every row is the clean accuracy
    assert [r["accuracy"] for r in rows if r["eps"] == 1e-3] == pytest.approx([4 / 6] * 6)
    # crafted on `reverse`, the transfer attack would move x = 0.001 to the model's correct
    # side; the repaired example still counts as broken
    assert [r["accuracy"] for r in robust] == pytest.approx([4 / 6, 2 / 6, 4 / 6, 0.0])


def test_balanced_accuracy_weighs_each_class_equally():
    """On an imbalanced set scored with balanced accuracy, every accuracy is the mean of the
    per-class shares: 8 of 8 class-0 examples and 1 of 2 class-1 examples correct give 0.75
    (plain accuracy would say 0.9), and the robust rows fall from there."""
    X = np.array([[-3.0]] * 8 + [[3.0], [-0.5]], np.float32)
    y = np.array([0] * 8 + [1, 1])
    model = nn.Linear(1, 2)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[-1.0], [1.0]]))
        model.bias.zero_()
    config = dataclasses.replace(CONFIG, attacks=("pgd",), eps_linf=(1e-3, 4.0),
                                 eps_l2=(1e-3, 4.0))
    rows, robust, clean = unpack(evaluate_robustness(model, X, y, config,
                                                     metric="balanced_accuracy"))
    assert clean == pytest.approx(0.75)
    assert [r["accuracy"] for r in robust] == pytest.approx([0.75, 0.0, 0.75, 0.0])
    plain = evaluate_robustness(model, X, y, config)["clean"]
    assert plain == pytest.approx(0.9)
    with pytest.raises(ValueError, match="metric must be 'accuracy' or 'balanced_accuracy'"):
        evaluate_robustness(model, X, y, config, metric="f1")


def test_a_model_wrong_on_every_example_scores_zero_everywhere(snn, data):
    X, y = data[2], 1 - data[3]  # the labels flipped: the trained model is (almost) always wrong
    keep = predict(snn, X) != y
    rows, robust, clean = unpack(evaluate_robustness(snn, X[keep], y[keep], CONFIG))
    assert clean == 0.0 and len(rows) == 2 * 3 * 5
    assert {r["accuracy"] for r in rows + robust} == {0.0}


def test_perturbation_frame_round_trip():
    x = np.arange(6, dtype=np.float32).reshape(3, 2)
    frame = PerturbationFrame(x, (0.1, 2.0))
    u = frame.encode()
    assert u.shape == (6, 3) and not u[:, :2].any()
    u[:, :2] = 1.0
    u[:, 2] += np.array([1, -1, 0.5, -0.5, 1, -1], np.float32)  # ART may move the tag by <= 1
    decoded = frame.decode(torch.from_numpy(u)).numpy()
    assert np.allclose(decoded, np.concatenate([x + 0.1, x + 2.0]))
    assert np.allclose(frame.adversarial(u), decoded)
    # only the chosen (eps, example) pairs, and only the mutable features are in the frame
    threat = ThreatModel(np.full(2, -np.inf, np.float32), np.full(2, np.inf, np.float32),
                         np.array([True, False]))
    rows = np.array([[True, False, False], [False, True, True]])
    frame = PerturbationFrame(x, (0.1, 2.0), threat, rows)
    u = frame.encode()
    assert u.shape == (3, 2) and frame.example.tolist() == [0, 1, 2]
    u[:, 0] = 1.0
    assert np.allclose(frame.adversarial(u), x + np.array([[0.1, 0], [2.0, 0], [2.0, 0]]))


def test_linf_frame_maps_the_unit_cube_onto_box_and_ball_with_a_gradient_everywhere():
    # feature 0: box [-1, 0.3] around 0 (0.3 of room up at eps 1, all of it down); feature 1:
    # the clean value sits on the upper bound, so it cannot move up at all
    threat = ThreatModel(np.array([-1.0, -5.0], np.float32), np.array([0.3, 2.0], np.float32),
                         np.ones(2, bool))
    x = np.array([[0.0, 2.0]], np.float32)
    frame = PerturbationFrame(x, (0.5, 1.0), threat, norm="linf")
    u = torch.from_numpy(frame.encode())
    for corner, want in (((1.0, 1.0), [[0.3, 2.0], [0.3, 2.0]]),
                         ((-1.0, -1.0), [[-0.5, 1.5], [-1.0, 1.0]]),
                         ((0.5, -0.5), [[0.15, 1.75], [0.15, 1.5]])):
        u[:, :2] = torch.tensor(corner)
        assert np.allclose(frame.adversarial(u.numpy()), want), corner
    u = u.clone().requires_grad_(True)
    with torch.no_grad():
        u[:, :2] = torch.tensor([0.9, -0.9])
    frame.decode(u).sum().backward()
    # d x / d u = eps * room: positive wherever the box leaves room, as in the clean direction
    assert np.allclose(u.grad[:, :2].numpy(), [[0.5 * 0.6, 0.5 * 1.0], [1.0 * 0.3, 1.0 * 1.0]])
    # feature 1 has no room up: a step there moves nothing, yet a gradient pointing back down
    # passes (with the other side's slope), so the attack can come back
    u.grad = None
    with torch.no_grad():
        u[:, :2] = torch.tensor([0.9, 0.9])
    x_adv = frame.decode(u)
    (-x_adv[:, 1]).sum().backward()
    assert np.allclose(x_adv.detach().numpy()[:, 1], 2.0)
    assert np.allclose(u.grad[:, 1].numpy(), [-0.5, -1.0])
    # L2 keeps the budget per unit of u and clamps to the box instead
    frame = PerturbationFrame(x, (0.5,), threat, norm="l2")
    u = frame.encode()
    u[:, :2] = (1.0, 0.0)
    assert np.allclose(frame.adversarial(u), [[0.3, 2.0]])


def test_box_clamp_passes_only_gradients_that_point_back_in():
    threat = ThreatModel(np.zeros(6, np.float32), np.ones(6, np.float32), np.ones(6, bool))
    x0 = torch.full((1, 6), 0.5)
    # inside, on the upper edge, past it, on the lower edge, past it, past it
    x = torch.tensor([[0.5, 1.0, 1.5, 0.0, -0.5, -0.5]], requires_grad=True)
    projected = threat.project(x, x0)
    assert projected.tolist() == [[0.5, 1.0, 1.0, 0.0, 0.0, 0.0]]
    grad = torch.tensor([[2.0, 3.0, -4.0, 5.0, 6.0, -7.0]])
    projected.backward(grad)
    # outward pushes (+3 at the top, -7 below the bottom) are dropped, the rest pass
    assert x.grad.tolist() == [[2.0, 0.0, -4.0, 5.0, 6.0, 0.0]]
    x.grad = None
    threat.project(x, x0).backward(-grad)
    assert x.grad.tolist() == [[-2.0, -3.0, 0.0, 0.0, 0.0, 7.0]]


def test_feature_image_round_trip_and_sizes():
    x = np.random.default_rng(0).standard_normal((4, 7)).astype(np.float32)
    image = FeatureImage(7)
    assert image.shape == (1, 4, 4)
    assert np.array_equal(image.features(image.to_image(x)), x)


def test_select_examples_is_stratified_and_deterministic():
    y = np.array([0] * 70 + [1] * 30)
    picked = select_examples(y, 10)
    assert len(picked) == 10 and (y[picked] == 0).sum() == 7
    assert np.array_equal(picked, select_examples(y, 10))
    assert np.array_equal(select_examples(y, None), np.arange(100))


def test_select_examples_balanced_gives_rare_classes_equal_places():
    y = np.array([0] * 90 + [1] * 4 + [2] * 6)
    picked = select_examples(y, 15, balanced=True)
    assert np.bincount(y[picked]).tolist() == [6, 4, 5]  # class 1 has only 4 rows
    assert np.array_equal(picked, select_examples(y, 15, balanced=True))
    assert np.bincount(y[select_examples(y, 15)]).tolist() == [13, 1, 1]  # proportional


def test_view_guards_nan_and_resets_state():
    class Counter(nn.Module):  # a stateful "neuron": its output drifts unless reset
        def __init__(self):
            super().__init__()
            self.linear, self.mem = nn.Linear(2, 2), 0.0

        def reset_mem(self):
            self.mem = 0.0

        def forward(self, x):
            self.mem += 1.0
            return self.linear(x) * self.mem

    view = attack_view(Counter())
    x = torch.tensor([[1.0, 2.0], [float("nan"), 0.0]])
    first, second = view(x), view(x)
    assert torch.equal(first[0], second[0])
    assert torch.isnan(first[1]).all()  # a NaN proposal never scores as a valid point
    assert abs(first[0].sum().item()) < 1e-5  # logits are centred


def test_memo_forwards_each_row_once_and_changes_nothing(snn):
    rows_seen = []
    view = attack_view(snn, memo=True)
    view.model.register_forward_pre_hook(lambda module, args: rows_seen.append(len(args[0])))
    x = torch.from_numpy(synthetic()[2][:5])
    with torch.no_grad():
        first = view(x)
        again = view(torch.cat([x[2:], x[:1]]))
        assert torch.equal(again, torch.cat([first[2:], first[:1]]))
        assert torch.equal(first, attack_view(snn)(x))
    assert rows_seen == [5]  # the second call was served from the memo
    rate = attack_view(TabularSNN(F, HIDDEN, 2, T=T, encoder="rate"), memo=True)
    assert rate._memo is None  # a stochastic forward is never memoised


def test_threat_check_catches_every_violation():
    x = np.zeros((2, 3), np.float32)
    threat = ThreatModel(np.full(3, -1, np.float32), np.full(3, 1, np.float32),
                         np.array([True, True, False]))
    threat.check(x + [0.5, 0.5, 0], x, "linf", 0.5, "test")
    for bad, norm, message in ((x + [0.6, 0, 0], "linf", "moved by"),
                               (x + [0.5, 0.5, 0], "l2", "moved by"),  # L2 length 0.71
                               (x + [0.1, 0, 0.1], "linf", "immutable"),
                               (x + [0, 2.0, 0], "linf", "training range"),
                               (x + np.nan, "linf", "non-finite")):
        with pytest.raises(RuntimeError, match=message):
            threat.check(bad.astype(np.float32), x, norm, 0.5 if norm == "linf" else 0.5, "test")


# ---------------------------------------------------------------- the tabular threat model


@pytest.fixture(scope="module")
def mixed_split():
    """A table with a 3-level categorical column (one-hot), a binary column and 3 continuous
    ones; the label depends on all of them."""
    import pandas as pd

    from snnkernels.study.data import _table_from_frame, make_split

    g = np.random.default_rng(3)
    n = 300
    frame = pd.DataFrame({"a": g.standard_normal(n), "b": g.uniform(0, 10, n),
                          "c": g.standard_normal(n), "flag": g.integers(0, 2, n),
                          "color": g.choice(["red", "green", "blue"], n)})
    score = frame.a + 0.2 * frame.b - 1 + frame.flag - (frame.color == "red") + 0.5 * frame.c
    frame["label"] = (score > 0).astype(int)
    table = _table_from_frame(frame, "label", "mixed", quiet=True)
    return make_split(table, 0)


def _attacked_rows(monkeypatch, split, threat, eps=(0.5, 3.0)):
    """Runs the attacks on a small trained SNN and returns every (x_adv, x, norm, radius)
    handed to the threat model's check."""
    seen = []
    original = ThreatModel.check

    def spy(self, x_adv, x, norm, radius, what):
        if len(x):
            seen.append((x_adv.copy(), x.copy(), norm, radius))
        return original(self, x_adv, x, norm, radius, what)

    monkeypatch.setattr(ThreatModel, "check", spy)
    torch.manual_seed(0)
    model = train(TabularSNN(split.num_features, HIDDEN, 2, T=T), split.X_train, split.y_train)
    config = dataclasses.replace(CONFIG, eps_linf=eps, eps_l2=eps, square_queries=10)
    evaluate_robustness(model, split.X_test, split.y_test, config, threat=threat, seed=0)
    assert seen
    return seen


def test_data_carries_feature_kinds_and_training_range(mixed_split):
    s = mixed_split
    kinds = dict(zip(s.feature_names, s.feature_kinds))
    assert kinds == {"a": "continuous", "b": "continuous", "c": "continuous", "flag": "binary",
                     "color=blue": "onehot:color", "color=green": "onehot:color",
                     "color=red": "onehot:color"}
    assert np.allclose(s.lower, s.X_train.min(0)) and np.allclose(s.upper, s.X_train.max(0))


def test_attacks_stay_in_the_box_and_leave_immutable_features(monkeypatch, mixed_split):
    threat = ThreatModel.from_split(mixed_split, immutable=("c",))
    names = mixed_split.feature_names
    frozen = [names.index(c) for c in ("c", "flag", "color=blue", "color=green", "color=red")]
    assert threat.n_mutable == 2 and not threat.mutable[frozen].any()
    for x_adv, x, norm, radius in _attacked_rows(monkeypatch, mixed_split, threat):
        assert np.array_equal(x_adv[:, frozen], x[:, frozen])
        lower, upper = np.minimum(threat.lower, x), np.maximum(threat.upper, x)
        assert (x_adv >= lower - 1e-5).all() and (x_adv <= upper + 1e-5).all()
        delta = (x_adv - x).astype(np.float64)
        size = np.abs(delta).max(1) if norm == "linf" else np.linalg.norm(delta, axis=1)
        assert size.max() <= radius * (1 + 1e-4) + 1e-6
    # the box binds: at the large eps some feature sits on its training bound
    assert any(np.isclose(x_adv, np.maximum(threat.upper, x)).any()
               for x_adv, x, _, r in _attacked_rows(monkeypatch, mixed_split, threat) if r >= 3)


def test_perturb_categorical_keeps_every_group_a_valid_category(monkeypatch, mixed_split):
    threat = ThreatModel.from_split(mixed_split, perturb_categorical=True)
    names = mixed_split.feature_names
    group = [names.index(f"color={c}") for c in ("blue", "green", "red")]
    assert threat.n_mutable == 6 and [g.tolist() for g in threat.groups] == [group]
    changed = 0
    for x_adv, x, norm, radius in _attacked_rows(monkeypatch, mixed_split, threat):
        raw = x_adv[:, group] * mixed_split.std[group] + mixed_split.mean[group]
        assert np.allclose(np.sort(raw, 1), [0, 0, 1], atol=1e-4)  # exactly one level set
        assert np.array_equal(x_adv[:, names.index("flag")], x[:, names.index("flag")])
        changed += int((np.abs(x_adv[:, group] - x[:, group]).max(1) > 1e-4).sum())
    assert changed  # categories do move


def test_l2_radius_scales_with_the_mutable_features(mixed_split):
    base = ThreatModel.from_split(mixed_split)
    wide = ThreatModel.from_split(mixed_split, perturb_categorical=True)
    assert base.radius("l2", 0.5) == pytest.approx(0.5 * np.sqrt(3))
    assert wide.radius("l2", 0.5) == pytest.approx(0.5 * np.sqrt(6))
    assert base.radius("linf", 0.5) == 0.5
    assert base.raw_eps(0.5) == pytest.approx(0.5 * np.median(mixed_split.std[:3]))


def test_unknown_immutable_column_is_named(mixed_split):
    from snnkernels.study.threat_model import ThreatModelError

    with pytest.raises(ThreatModelError, match=r"--immutable: unknown column\(s\) 'nope'.*'color'"):
        ThreatModel.from_split(mixed_split, immutable=("a", "nope"))
    assert not ThreatModel.from_split(mixed_split, immutable=("color",)).groups


def test_default_and_full_presets_attack_at_full_strength():
    from snnkernels.study.config import PRESETS

    for name in ("default", "full"):
        attack = PRESETS[name].attack
        assert attack.apgd_steps >= 100 and attack.apgd_restarts >= 3
        assert attack.pgd_restarts >= 2 and attack.square_queries >= 1000
        assert {"pgd", "apgd_ce", "apgd_dlr", "square"} <= set(attack.attacks)
        assert len(attack.surrogates) >= 2 and attack.linearized
    assert len(PRESETS["full"].seeds) >= 10


# ---------------------------------------------------------------- the report's attack checks


def _cell(dataset, arm, seed, worst_at_top, apgd, pgd):
    attacks = [{"norm": "linf", "eps": e, "attack": a, "surrogate": "own", "scope": "all",
                "accuracy": acc} for e in (0.1, 1.0) for a, acc in (("apgd_ce", apgd),
                                                                     ("pgd", pgd))]
    robust = [{"norm": "linf", "eps": 0.1, "radius": 0.1, "eps_raw": 0.5, "accuracy": 0.8},
              {"norm": "linf", "eps": 1.0, "radius": 1.0, "eps_raw": 5.0,
               "accuracy": worst_at_top}]
    return {"dataset": dataset, "arm": arm, "seed": seed, "attacks": attacks, "robust": robust,
            "mutable_features": 4}


def test_attack_strength_checks_flag_with_their_numbers():
    from snnkernels.study.attack_checks import attack_strength_checks, threat_model_section

    cells = [_cell("good", "dense", s, 0.0, 0.30, 0.40) for s in range(2)]
    # APGD weaker in 6 of 6 cells: sign test p = 0.5 ** 6
    cells += [_cell("weak", "dense", s, (0.10, 0.20)[s % 2], 0.50, 0.40) for s in range(6)]
    # APGD weaker in 3 cells, stronger in 2, mean above 0: what two random starts can give
    cells += [_cell("noisy", "dense", s, 0.0, 0.425 if s < 3 else 0.375, 0.4) for s in range(5)]
    lines, warnings = attack_strength_checks(cells)
    text = "\n".join(lines)
    assert "| good | L∞ | 1 | dense | 0.000 | n/a | ok |" in text
    assert "| weak | L∞ | 1 | dense | 0.150 | n/a | FLAG |" in text  # mean over the seeds
    assert "| good | L∞ | -0.100 at ε=0.1 | 0/4 | 1 at ε=0.1 | ok |" in text
    assert "| weak | L∞ | +0.100 at ε=0.1 | 12/0 | 0.016 at ε=0.1 | FLAG |" in text
    assert "| noisy | L∞ | +0.005 at ε=0.1 | 6/4 | 0.5 at ε=0.1 | ok |" in text
    assert len(warnings) == 2 and all("weak" in w for w in warnings)
    assert "in 6 cells and fewer in 0 (sign test p = 0.016" in warnings[1]
    assert "the attacks may be too weak" in warnings[0]
    # an MLP that keeps as much points at the eps grid, one that does not at the attacks
    for mlp_worst, says in ((0.1, "the MLP, with exact gradients, keeps 0.100 too"),
                            (0.0, "the attacks may be too weak")):
        with_mlp = cells + [_cell("weak", "mlp", s, mlp_worst, 0.3, 0.3) for s in range(2)]
        lines, warnings = attack_strength_checks(with_mlp)
        assert f"| weak | L∞ | 1 | dense | 0.150 | {mlp_worst:.3f} | FLAG |" in "\n".join(lines)
        assert says in warnings[0]
    # a width grid: each arm judged at its own width, next to the MLP of that width
    wide = [dict(c, hidden=[w, w]) for w in (8, 16) for c in cells + [
        _cell("weak", "mlp", s, 0.1, 0.3, 0.3) for s in range(2)]]
    for c in wide:
        if c["hidden"][0] == 16 and c["dataset"] == "weak":
            c["robust"] = [dict(r, accuracy=0.0) for r in c["robust"]]
    lines, warnings = attack_strength_checks(wide)
    assert "| weak | L∞ | 1 | dense @ w8 | 0.150 | 0.100 | FLAG |" in "\n".join(lines)
    section = "\n".join(threat_model_section(cells, {"immutable": ["age"],
                                                     "perturb_categorical": False}))
    assert "nor do age" in section and "| good | L∞ | 1 | 1 | 5 | 4 |" in section
    assert "below the study's full strength" not in section
    weak = "\n".join(threat_model_section(cells, {"apgd_steps": 5, "square_queries": 1000}))
    assert "below the study's full strength (apgd_steps 5 < 100)" in weak


def test_capped_logit_range_keeps_the_cross_entropy_gradient_alive():
    model = nn.Linear(1, 2)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[-100.0], [100.0]]))
        model.bias.zero_()
    x = torch.tensor([[1.0], [0.01]])  # a margin of 200 (saturated) and one of 2
    label = torch.tensor([1, 1])
    grads = {}
    for capped in (False, True):
        view = attack_view(model, capped_range=capped)
        xi = x.clone().requires_grad_(True)
        logits = view(xi)
        assert logits.argmax(1).tolist() == [1, 1]
        nn.functional.cross_entropy(logits, label, reduction="sum").backward()
        grads[capped] = xi.grad[:, 0]
    assert grads[False][0] == 0 and grads[True][0] < 0  # float32 rounds it away uncapped
    assert grads[True][1] == grads[False][1] != 0  # a span under the cap is left alone


def test_view_remembers_misclassified_points_inside_the_ball_only():
    model = nn.Linear(1, 2)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[-1.0], [1.0]]))
        model.bias.zero_()
    frame = PerturbationFrame(np.array([[0.5], [0.5]], np.float32), (1.0,))
    view = attack_view(model, frame=frame)
    view.track(np.array([1, 1]), "linf")
    u = torch.from_numpy(frame.encode())
    u[0, 0], u[1, 0] = -0.9, -1.5  # row 0: x = -0.4, wrong, in the ball; row 1: outside it
    view(u)
    assert list(view.witness) == [0] and view.witness[0][0] == pytest.approx(-0.9)
    u[0, 0] = -0.95
    view(u)
    assert view.witness[0][0] == pytest.approx(-0.9)  # the first one found is kept
