"""Width and time steps as grid factors, the scale preset's synthetic tables, the interleaved
throughput phase and time to accuracy."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from snnkernels import models as snn_models
from snnkernels.models import TabularSNN
from snnkernels.study import config as C
from snnkernels.study import throughput as TP
from snnkernels.study.data import available_datasets, load_dataset
from snnkernels.study.synthetic import ROWS, SYNTHETIC
from snnkernels.study.time_to_accuracy import time_to_accuracy
from tiny_study import study

def test_synthetic_tables_are_fixed_and_learnable():
    from sklearn.linear_model import LogisticRegression

    assert set(SYNTHETIC) <= set(available_datasets())
    table = load_dataset("synthetic_64")
    again = load_dataset("synthetic_64")
    assert table.X.shape == (ROWS, 64) and np.array_equal(table.X, again.X)
    assert np.array_equal(table.y, again.y) and 0.45 < table.y.mean() < 0.55
    n = 5000  # informative features: a linear model learns them, shuffled labels it does not
    fit = LogisticRegression(max_iter=500).fit(table.X[:n], table.y[:n])
    assert fit.score(table.X[n:2 * n], table.y[n:2 * n]) > 0.75
    assert load_dataset("synthetic_256").X.shape == (ROWS, 256)


def test_scale_preset():
    scale = C.PRESETS["scale"]
    assert scale.widths == (128, 512, 2048) and scale.steps == (10, 25)
    assert {"synthetic_64", "synthetic_256"} <= set(scale.datasets)
    assert set(scale.arms) == {"dense_fast_sigmoid", "topk_1", "topk_5", "aw_0.2", "mlp",
                               "pgd_at", "pgd_at_topk_5"}
    assert scale.timing_steps >= 200
    assert {"widths", "steps"} <= set(scale.cell_settings())
    assert "widths" not in C.PRESETS["default"].cell_settings()  # old run folders still match


def test_width_and_steps_grid(tmp_path, tiny):
    out = tmp_path / "grid"
    assert study("--out", str(out), "--hidden", "8,12", "--steps", "2,3", "--layers", "2") == 0
    names = sorted(p.stem for p in (out / "cells").iterdir())
    # per width: dense twin and topk at each T, one MLP (it has no time steps)
    assert len(names) == 2 * (2 + 2 + 1)
    assert "iris__topk_25__seed0__h12__T3" in names and "iris__mlp__seed0__h8" in names
    record = json.loads((out / "cells" / "iris__topk_25__seed0__h12__T3.json").read_text())
    assert record["hidden"] == [12, 12] and record["T"] == 3
    transfer = {a["attack"] for a in record["attacks"]}
    assert {"transfer_dense", "transfer_mlp"} <= transfer
    ttas = json.loads((out / "time_to_accuracy.json").read_text())
    assert {(tuple(r["hidden"]), r["T"]) for r in ttas} == {
        ((w, w), t) for w in (8, 12) for t in (2, 3)}
    settings = json.loads((out / "settings.json").read_text())
    assert settings["widths"] == [8, 12] and settings["steps"] == [2, 3]


def test_like_for_like_twin_runs_the_masked_path_kernel(monkeypatch):
    torch.manual_seed(0)
    model = TabularSNN(5, hidden=(16, 16), num_classes=3, T=4, readout="membrane")
    x = torch.randn(32, 5)
    twin = TP.like_for_like(model)
    expected = model(x)

    def no_constant_kernel(*args, **kwargs):
        raise AssertionError("lif_constant ran")

    monkeypatch.setattr(snn_models, "lif_constant", no_constant_kernel)
    got = twin(x)  # the fused LIF on the expanded current: the same spikes, same logits
    torch.testing.assert_close(got.double(), expected.double(), rtol=1e-5, atol=1e-5)
    with pytest.raises(AssertionError, match="lif_constant ran"):
        model(x)


def test_interleaved_steps_and_summary():
    torch.manual_seed(0)
    X, y = torch.randn(200, 6), torch.randint(0, 2, (200,))
    models = {"a": TabularSNN(6, hidden=(16,), num_classes=2, T=3),
              "b": TabularSNN(6, hidden=(64, 64), num_classes=2, T=3)}
    before = [p.clone() for p in models["a"].parameters()]
    times = TP.interleaved_steps(models, X, y, batch_size=32, steps=30, warmup=2)
    assert set(times) == {"a", "b"} and times["a"].shape == (30, 3) and (times["a"] > 0).all()
    assert all(torch.equal(p, q) for p, q in zip(before, models["a"].parameters()))
    rows = {r["arm"]: r for r in TP.summarize(times, "a")}
    assert "speedup" not in rows["a"]
    b = rows["b"]
    low, high = b["speedup_ci"]
    assert low <= b["speedup"] <= high
    ratios = times["a"].sum(1) / times["b"].sum(1)
    assert b["speedup"] == pytest.approx(np.median(ratios))
    assert b["step_iqr_s"][0] <= b["step_median_s"] <= b["step_iqr_s"][1]
    with pytest.raises(ValueError, match="steps"):
        TP.interleaved_steps(models, X, y, batch_size=32, steps=0)


def test_timing_phase_writes_rows_per_group(tmp_path, tiny):
    out = tmp_path / "timed"
    assert study("--out", str(out), "--timing-steps", "20") == 0
    rows = json.loads((out / "throughput.json").read_text())
    assert {r["arm"] for r in rows} == {"dense_fast_sigmoid", TP.AS_TRAINED, "topk_25"}
    topk = next(r for r in rows if r["arm"] == "topk_25")
    assert topk["steps"] == 20 and topk["speedup"] > 0 and topk["hidden"] == [8]
    assert study("--out", str(out), "--timing-steps", "-1") == 2


def test_time_to_accuracy_from_curves():
    base = {"dataset": "d", "hidden": [8], "T": 3, "seed": 0}
    records = [
        {**base, "arm": "dense_fast_sigmoid", "family": "dense",
         "val_curve": [[1.0, 0.80], [2.0, 0.90], [3.0, 0.88]]},
        {**base, "arm": "topk_5", "family": "topk",
         "val_curve": [[0.5, 0.70], [1.5, 0.896], [3.0, 0.95]]},
        {**base, "arm": "aw_0.2", "family": "active_window", "val_curve": [[0.4, 0.5]]},
        {**base, "arm": "mlp", "family": "mlp", "T": None, "val_curve": [[0.1, 0.9]]},
    ]
    rows = {r["arm"]: r for r in time_to_accuracy(records)}
    assert set(rows) == {"dense_fast_sigmoid", "topk_5", "aw_0.2"}
    assert rows["topk_5"]["target"] == pytest.approx(0.895)
    assert rows["topk_5"]["seconds"] == 1.5 and rows["topk_5"]["epochs"] == 2
    assert rows["aw_0.2"]["seconds"] is None
    assert rows["dense_fast_sigmoid"]["seconds"] == 2.0 == rows["topk_5"]["twin_seconds"]
    with pytest.raises(ValueError, match="tolerance"):
        time_to_accuracy(records, tolerance=1.5)


def test_grid_report_table_and_figure_end_to_end(tmp_path, tiny):
    """2 widths × 2 T on a small synthetic table, two seeds, a short timing phase, one worker:
    the report's table per (width, T, arm) matches the records, and the figure is drawn."""
    from sklearn.datasets import make_classification

    from scale_table_checks import check_scale_table

    X, y = make_classification(n_samples=240, n_features=6, n_informative=3, random_state=0)
    frame = pd.DataFrame(X, columns=[f"x{i}" for i in range(6)]).assign(y=y)
    frame.to_csv(tmp_path / "blobs.csv", index=False)
    out = tmp_path / "grid"
    assert study("--out", str(out), "--csv", str(tmp_path / "blobs.csv"), "--target", "y",
                 "--hidden", "8,12", "--steps", "2,3", "--seeds", "2", "--timing-steps", "5",
                 "--jobs", "1", "--threads", "1") == 0
    records = json.loads((out / "results.json").read_text())
    timing = json.loads((out / "throughput.json").read_text())
    assert {(tuple(t["hidden"]), t["T"]) for t in timing} == {
        ((w,), t) for w in (8, 12) for t in (2, 3)}
    text = (out / "report.md").read_text()
    shown = check_scale_table(text, records, timing)
    assert {(w, T) for w, T, _ in shown} == {(w, t) for w in (8, 12) for t in (2, 3)}
    assert {arm for _, _, arm in shown} == {"topk_25", TP.AS_TRAINED}
    assert "![speedup_vs_width](speedup_vs_width.png)" in text
    assert (out / "speedup_vs_width.png").read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    assert "topk_25 @ w12 T3" in text  # the other tables name each arm's grid point
