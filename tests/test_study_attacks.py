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
from snnkernels.study.attacks import (AttackConfig, _check_budget, evaluate_robustness,
                                      select_examples, surrogate_label)

F, HIDDEN, T = 6, (16,), 4
CONFIG = AttackConfig(eps_linf=(0.05, 0.3, 10.0), eps_l2=(0.1, 1.0, 25.0), pgd_steps=10,
                      apgd_steps=5, square_queries=20, surrogates=(S.straight_through_estimator(),),
                      eot_samples=3, max_examples=None)
SURROGATES = ["own", surrogate_label(S.straight_through_estimator())]


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


@pytest.fixture(scope="module")
def snn_result(snn, data):
    return evaluate_robustness(snn, data[2], data[3], CONFIG, seed=1)


@pytest.fixture(scope="module")
def mlp_result(mlp, data):
    return evaluate_robustness(mlp, data[2], data[3], CONFIG, seed=1)


def grid_items(config=CONFIG):
    return [(norm, e) for norm, grid in (("linf", config.eps_linf), ("l2", config.eps_l2))
            for e in grid]


def test_rows_have_the_exact_schema(snn_result, mlp_result):
    for (rows, robust, clean), surrogates in ((snn_result, SURROGATES), (mlp_result, [None])):
        assert isinstance(clean, float) and clean > 0.8  # the models learned the task
        expected = {(norm, e, attack, s) for norm, e in grid_items()
                    for attack in ("fgsm", "pgd", "apgd_ce") for s in surrogates}
        expected |= {(norm, e, "square", None) for norm, e in grid_items()}
        keys = ("norm", "eps", "attack", "surrogate", "accuracy")
        assert [tuple(r) for r in rows] == [keys] * len(rows)
        assert {(r["norm"], r["eps"], r["attack"], r["surrogate"]) for r in rows} == expected
        assert len(rows) == len(expected)
        assert all(type(r["eps"]) is float and type(r["accuracy"]) is float for r in rows)
        assert [(r["norm"], r["eps"]) for r in robust] == grid_items()
        assert all(list(r) == ["norm", "eps", "accuracy"] and type(r["accuracy"]) is float
                   for r in robust)


@pytest.mark.parametrize("which", ["snn", "mlp"])
def test_robust_is_the_worst_case_and_falls_to_zero(which, snn_result, mlp_result):
    rows, robust, clean = snn_result if which == "snn" else mlp_result
    by_eps = {}
    for r in rows:
        by_eps.setdefault((r["norm"], r["eps"]), []).append(r["accuracy"])
    for norm in ("linf", "l2"):
        accs = [r["accuracy"] for r in robust if r["norm"] == norm]
        assert accs == sorted(accs, reverse=True), (norm, accs)  # eps grids are increasing
        assert accs[0] <= clean
    for r in robust:
        assert r["accuracy"] <= min(by_eps[(r["norm"], r["eps"])]) + 1e-12
    # the sanity property: at eps 10 (L-inf) / 25 (L2) in standardized units nothing survives
    huge = [r["accuracy"] for r in robust if r["eps"] in (10.0, 25.0)]
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
    config = dataclasses.replace(CONFIG, eps_linf=(0.3, 10.0), eps_l2=(1.0,),
                                 attacks=("pgd", "square"))
    stream = rate._generators["cpu"].get_state()
    rows, robust, clean = evaluate_robustness(rate, Xt, yt, config, seed=2)
    assert clean > 0.6
    # at eps 10 almost nothing survives; not quite nothing: the encoder's clamp to [0, 1] has no
    # gradient outside it, which PGD's first step reaches (measured: 0 and 5 of 40 examples
    # survive, for two trainings that differ only in float rounding of the readout's sums)
    assert len(rows) == 3 * 2 + 3 and robust[1]["accuracy"] <= 0.15 < clean
    assert evaluate_robustness(rate, Xt, yt, config, seed=2) == (rows, robust, clean)
    # the caller's model is untouched: same seed, same position in its encoder's stream
    assert rate.seed == 0 and torch.equal(rate._generators["cpu"].get_state(), stream)


def test_transfer_rows(snn, mlp, data):
    config = dataclasses.replace(CONFIG, attacks=("pgd",), surrogates=())
    rows, robust, _ = evaluate_robustness(
        snn, data[2], data[3], config, seed=1,
        transfer_sources={"transfer_dense": snn.dense_copy(None), "transfer_mlp": mlp})
    got = {(r["norm"], r["eps"], r["attack"]): r for r in rows}
    for norm, e in grid_items():
        for name in ("transfer_dense", "transfer_mlp"):
            assert got[(norm, e, name)]["surrogate"] is None
        # PGD crafted on the model's own dense twin is the white-box PGD (it has no random start)
        assert got[(norm, e, "transfer_dense")]["accuracy"] == got[(norm, e, "pgd")]["accuracy"]
    assert max(got[(n, e, "transfer_mlp")]["accuracy"] for n, e in grid_items() if e >= 10) <= 0.2


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
    config = dataclasses.replace(CONFIG, eps_linf=(1e-3, 2.6), eps_l2=(1e-3, 3.5))
    rows, robust, clean = evaluate_robustness(model, X, y, config,
                                              transfer_sources={"transfer_mlp": reverse})
    assert clean == pytest.approx(4 / 6)
    # eps 1e-3 moves no correct example across (margin >= 2.5): every row is the clean accuracy
    assert [r["accuracy"] for r in rows if r["eps"] == 1e-3] == pytest.approx([4 / 6] * 10)
    # crafted on `reverse`, the transfer attack moves x = 0.001 to the model's correct side and
    # pushes the correct ones away from the boundary: still 4 / 6, the repaired one is broken
    transfer = {(r["norm"], r["eps"]): r["accuracy"] for r in rows if r["attack"] == "transfer_mlp"}
    assert transfer[("linf", 2.6)] == pytest.approx(4 / 6)
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
    config = dataclasses.replace(CONFIG, attacks=("fgsm",), eps_linf=(1e-3, 4.0),
                                 eps_l2=(1e-3, 4.0))
    rows, robust, clean = evaluate_robustness(model, X, y, config, metric="balanced_accuracy")
    assert clean == pytest.approx(0.75)
    assert [r["accuracy"] for r in robust] == pytest.approx([0.75, 0.0, 0.75, 0.0])
    _, _, plain = evaluate_robustness(model, X, y, config)
    assert plain == pytest.approx(0.9)
    with pytest.raises(ValueError, match="metric must be 'accuracy' or 'balanced_accuracy'"):
        evaluate_robustness(model, X, y, config, metric="f1")


def test_a_model_wrong_on_every_example_scores_zero_everywhere(snn, data):
    X, y = data[2], 1 - data[3]  # the labels flipped: the trained model is (almost) always wrong
    keep = predict(snn, X) != y
    rows, robust, clean = evaluate_robustness(snn, X[keep], y[keep], CONFIG)
    assert clean == 0.0 and len(rows) == 2 * 3 * 7
    assert {r["accuracy"] for r in rows + robust} == {0.0}


def test_an_example_broken_at_a_small_eps_stays_broken_at_larger_ones():
    class Band(nn.Module):  # wrong (class 1) only for x in (0.5, 1.5)
        def __init__(self):
            super().__init__()
            self.dummy = nn.Parameter(torch.zeros(()))

        def forward(self, x):
            wrong = 1 - 2 * (x[:, :1] - 1).abs()
            return torch.cat([torch.zeros_like(wrong) + self.dummy, wrong], 1)

    config = dataclasses.replace(CONFIG, attacks=("fgsm",), eps_linf=(1.0, 3.0), eps_l2=(1.0, 3.0))
    rows, robust, clean = evaluate_robustness(Band(), np.zeros((1, 1), np.float32),
                                              np.zeros(1, int), config)
    # FGSM lands in the band at eps 1 and jumps over it at eps 3, but the eps-1 example is
    # inside the eps-3 ball
    assert clean == 1.0 and [r["accuracy"] for r in rows] == [0.0, 1.0, 0.0, 1.0]
    assert [r["accuracy"] for r in robust] == [0.0, 0.0, 0.0, 0.0]


def test_perturbation_frame_round_trip():
    x = np.arange(6, dtype=np.float32).reshape(3, 2)
    frame = PerturbationFrame(x, (0.1, 2.0))
    u = frame.encode()
    assert u.shape == (6, 3) and not u[:, :2].any()
    u[:, :2] = 1.0
    u[:, 2] += np.array([1, -1, 0.5, -0.5, 1, -1], np.float32)  # ART may move the tag by <= 1
    decoded = frame.decode(torch.from_numpy(u)).numpy()
    assert np.allclose(decoded, np.concatenate([x + 0.1, x + 2.0]))
    (e0, x0), (e1, x1) = frame.split(u)
    assert (e0, e1) == (0.1, 2.0) and np.allclose(x0, x + 0.1) and np.allclose(x1, x + 2.0)


def test_feature_image_round_trip_and_sizes():
    x = np.random.default_rng(0).standard_normal((4, 7)).astype(np.float32)
    for norm, side in (("linf", 4), ("l2", 10)):
        image = FeatureImage(7, norm)
        assert image.shape == (1, side, side)
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


def test_budget_check_catches_a_too_large_perturbation():
    x = np.zeros((2, 3), np.float32)
    _check_budget(x + 0.5, x, "linf", 0.5, "test")
    with pytest.raises(RuntimeError, match="moved an example"):
        _check_budget(x + 0.6, x, "linf", 0.5, "test")
    with pytest.raises(RuntimeError):
        _check_budget(x + 0.5, x, "l2", 0.5, "test")  # L2 length 0.87
    with pytest.raises(RuntimeError):
        _check_budget(x + np.nan, x, "l2", 0.5, "test")
