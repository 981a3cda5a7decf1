"""PGD adversarial training, the study's reference arms (pgd_at, pgd_at_topk_5)."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from snnkernels import sparse as S
from snnkernels.models import TabularSNN
from snnkernels.study import config as C
from snnkernels.study.adversarial import AdversarialTraining, PGDAdversary
from snnkernels.study.arms import ARMS, STANDARD_ARMS
from tiny_study import TINY, study


def test_eps_is_the_middle_of_the_grid():
    assert AdversarialTraining().eps((0.05, 0.1, 0.2, 0.5, 1.0)) == 0.2
    assert AdversarialTraining().eps((1.0, 0.5)) == 0.5
    with pytest.raises(ValueError, match="eps grid"):
        AdversarialTraining().eps(())


def test_reference_arms_are_not_in_the_standard_presets():
    assert ARMS["pgd_at_topk_5"].sparse is not None and ARMS["pgd_at"].sparse is None
    assert all(ARMS[a].adversarial is not None for a in ("pgd_at", "pgd_at_topk_5"))
    assert not {"pgd_at", "pgd_at_topk_5"} & set(STANDARD_ARMS)
    assert C.PRESETS["default"].arms == STANDARD_ARMS


def test_pgd_examples_stay_in_the_ball_raise_the_loss_and_repeat():
    torch.manual_seed(0)
    mask = S.TopK(fraction=0.25)
    model = TabularSNN(6, hidden=(32,), num_classes=3, T=4, readout="membrane", sparse=mask)
    x, y = torch.randn(64, 6), torch.randint(0, 3, (64,))
    eps = 0.3
    adversary = PGDAdversary(model, eps, steps=5, num_classes=3, seed=1)
    x_adv = adversary(x, y)
    assert x_adv.dtype == x.dtype and x_adv.shape == x.shape
    assert (x_adv - x).abs().max() <= eps + 1e-6 and (x_adv - x).abs().max() > eps / 2
    loss = lambda inp: torch.nn.functional.cross_entropy(model(inp), y).item()
    assert loss(x_adv) > loss(x)
    assert model.training and model.layers[0].sparse is mask  # restored after the attack
    again = PGDAdversary(model, eps, steps=5, num_classes=3, seed=1)(x, y)
    assert torch.equal(again, x_adv)  # seeded random start
    with pytest.raises(ValueError, match="eps"):
        PGDAdversary(model, 0.0, steps=5, num_classes=3, seed=1)


def test_adversarial_arms_train_end_to_end(tmp_path, monkeypatch):
    # a three-point grid, so that the adversary's eps (its middle) is not its largest
    three_points = dataclasses.replace(TINY.attack, eps_linf=(0.1, 0.5, 50.0))
    monkeypatch.setitem(C.PRESETS, "quick", dataclasses.replace(TINY, attack=three_points))
    out = tmp_path / "run"
    assert study("--out", str(out), "--arms", "pgd_at,pgd_at_topk_5") == 0
    records = {r["arm"]: r for r in json.loads((out / "results.json").read_text())}
    assert set(records) == {"pgd_at", "pgd_at_topk_5", "dense_fast_sigmoid", "mlp"}
    for arm in ("pgd_at", "pgd_at_topk_5"):
        assert records[arm]["adversarial_eps"] == 0.5 and records[arm]["twin"] == "dense_fast_sigmoid"
        assert np.isfinite(records[arm]["clean"])
    assert records["dense_fast_sigmoid"]["adversarial_eps"] is None
