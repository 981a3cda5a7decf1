"""`snnkernels study` end to end: the quick preset as the README runs it, resuming, Ctrl-C, a
user's own table, and the one-line errors (exit status 2, no traceback, nothing written) for
bad input. Most tests swap the quick preset for a tiny one (a few seconds per run)."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch

from snnkernels.study import config as C
from snnkernels.study import runner
from snnkernels.study.train import TrainConfig
from tiny_study import TINY, refused, study

def cell_files(out):
    return sorted(p.name for p in (out / "cells").iterdir())


def no_temporary_files(out):
    return not [p for p in out.rglob("*") if p.name.startswith(".") or p.suffix == ".tmp"]


def test_quick_preset_end_to_end(tmp_path):
    """The real quick preset, through the console entry point in a fresh interpreter."""
    out = tmp_path / "run"
    done = subprocess.run([sys.executable, "-m", "snnkernels", "study", "--preset", "quick",
                           "--out", str(out), "--no-progress"], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    preset = C.PRESETS["quick"]
    n_cells = len(preset.datasets) * len(preset.arms) * len(preset.seeds)
    assert len(cell_files(out)) == n_cells
    assert len(list((out / "models").iterdir())) == n_cells
    for name in ("report.md", "results.csv", "results.json", "config.json", "environment.json",
                 "throughput_vs_density.png", "robust_vs_throughput.png"):
        assert (out / name).stat().st_size > 0, name
    records = json.loads((out / "results.json").read_text())
    assert len(records) == n_cells
    table = pd.read_csv(out / "results.csv")
    expected_rows = sum(1 + len(r["attacks"]) + len(r["robust"]) for r in records)
    assert len(table) == expected_rows
    for r in records:
        assert 0.5 < r["clean"] <= 1.0, (r["arm"], r["clean"])  # breast_cancer: it learned
        assert r["throughput"]["train_samples_per_s"] > 0
        eps = max(p["eps"] for p in r["robust"] if p["norm"] == "linf")
        worst = [p["accuracy"] for p in r["robust"] if p["norm"] == "linf" and p["eps"] == eps]
        assert worst == [0.0] or worst[0] <= 0.1, (r["arm"], worst)  # the attack works
    env = json.loads((out / "environment.json").read_text())
    assert env["torch"] == torch.__version__ and env["device"] == "cpu"
    assert json.loads((out / "config.json").read_text())["preset"] == "quick"
    report = (out / "report.md").read_text()
    assert report.startswith("# ") and "breast_cancer" in report
    assert "| breast_cancer |" in done.stdout  # the main table is printed
    assert no_temporary_files(out)


def test_rerun_skips_finished_cells(tmp_path, tiny, monkeypatch, capsys):
    out = tmp_path / "run"
    assert study("--out", str(out)) == 0
    first = (out / "results.json").read_text()

    def must_not_run(*args, **kwargs):
        raise AssertionError("a finished cell was run again")

    monkeypatch.setattr(runner, "run_cell", must_not_run)
    assert study("--out", str(out)) == 0
    assert "3 of 3 cells already finished" in capsys.readouterr().out
    assert (out / "results.json").read_text() == first


def test_rerun_adds_only_new_cells(tmp_path, tiny, monkeypatch):
    out = tmp_path / "run"
    assert study("--out", str(out)) == 0
    ran = []
    real = runner.run_cell
    monkeypatch.setattr(runner, "run_cell", lambda cell, *a, **k: ran.append(cell) or real(cell, *a, **k))
    assert study("--out", str(out), "--seeds", "2") == 0
    assert {c.seed for c in ran} == {1} and len(ran) == 3
    assert len(cell_files(out)) == 6


def test_ctrl_c_keeps_finished_cells_and_resumes(tmp_path, tiny, monkeypatch, capsys):
    out = tmp_path / "run"
    real = runner.run_cell
    calls = []

    def interrupted_second(cell, *args, **kwargs):
        calls.append(cell)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(cell, *args, **kwargs)

    monkeypatch.setattr(runner, "run_cell", interrupted_second)
    assert study("--out", str(out)) == 130
    err = capsys.readouterr().err
    assert "interrupted" in err and "Traceback" not in err
    assert len(cell_files(out)) == 1 and no_temporary_files(out)
    assert not (out / "report.md").exists()
    monkeypatch.setattr(runner, "run_cell", real)
    assert study("--out", str(out)) == 0
    assert len(cell_files(out)) == 3


def test_other_settings_in_same_out_are_refused(tmp_path, tiny, monkeypatch, capsys):
    out = tmp_path / "run"
    assert study("--out", str(out)) == 0
    changed = dataclasses.replace(TINY, train=TrainConfig(epochs=3, patience=1))
    monkeypatch.setitem(C.PRESETS, "quick", changed)
    assert study("--out", str(out)) == 2
    err = capsys.readouterr().err
    assert "other settings" in err and "train" in err


def test_users_csv_with_missing_and_text_cells(tmp_path, tiny, capsys):
    rng = np.random.default_rng(0)
    n = 90
    y = np.arange(n) % 3
    frame = pd.DataFrame({"f1": rng.normal(size=n) + y, "f2": rng.normal(size=n),
                          "colour": np.array(["red", "green"])[np.arange(n) % 2],
                          "kind": np.array(["a", "b", "c"])[y]})
    frame.loc[3, "f2"] = np.nan
    path = tmp_path / "mytable.csv"
    frame.to_csv(path, index=False)
    out = tmp_path / "run"
    assert study("--csv", str(path), "--target", "kind", "--out", str(out)) == 0
    err = capsys.readouterr().err
    assert "warning" in err and "colour" in err and "f2" in err  # one-hot and imputation
    assert "Traceback" not in err
    records = json.loads((out / "results.json").read_text())
    assert {r["dataset"] for r in records} == {"mytable"} and len(records) == 3
    # the same table split by a group column: its own settings, so another --out
    frame["site"] = np.arange(n) // 6
    frame.to_csv(path, index=False)
    assert study("--csv", str(path), "--target", "kind", "--group", "site",
                 "--out", str(tmp_path / "by_site")) == 0
    assert json.loads((tmp_path / "by_site" / "settings.json").read_text())["group"] == "site"
    capsys.readouterr()
    assert study("--csv", str(path), "--target", "kind", "--out", str(tmp_path / "by_site")) == 2
    assert "(differ in: group)" in capsys.readouterr().err


@pytest.mark.parametrize("args, message", [
    (["--datasets", "nosuch"], "unknown dataset"),
    (["--arms", "dense_fast_sigmoid,topk_99"], "unknown arm"),
    (["--seeds", "0"], "--seeds"),
    (["--threads", "0"], "--threads"),
    (["--device", "tpu"], "--device"),
    (["--target", "x"], "--target only goes with"),
    (["--group", "x"], "--group only goes with"),
    (["--csv", "missing.csv"], "--target COL is required"),
    (["--margin-accuracy", "-0.1"], "--margin-accuracy must be a finite number in (0, 1)"),
    (["--margin-accuracy", "0"], "--margin-accuracy must be a finite number in (0, 1)"),
    (["--margin-accuracy", "nan"], "--margin-accuracy must be a finite number in (0, 1)"),
    (["--margin-throughput", "inf"], "--margin-throughput must be a finite number in (0, 1)"),
    (["--margin-throughput=-inf"], "--margin-throughput must be a finite number in (0, 1)"),
])
def test_bad_arguments_one_line_exit_2(tmp_path, tiny, capsys, args, message):
    out = tmp_path / "run"
    assert message in refused(capsys, "--out", str(out), *args)
    assert not (out / "cells").exists() or not list((out / "cells").iterdir())


def test_unknown_immutable_column_one_line_exit_2_and_finished_cells_kept(tmp_path, tiny, capsys):
    out = tmp_path / "run"
    assert study("--out", str(out)) == 0
    finished = cell_files(out)
    capsys.readouterr()
    err = refused(capsys, "--out", str(out), "--immutable", "petal length (cm),nosuch")
    assert "--immutable: unknown column(s) 'nosuch'" in err and cell_files(out) == finished


def test_immutable_and_perturb_categorical_reach_the_attacks(tmp_path, tiny, capsys):
    out = tmp_path / "run"
    assert study("--out", str(out), "--immutable", "sepal length (cm)",
                 "--perturb-categorical") == 0
    err = capsys.readouterr().err
    assert "--perturb-categorical: table 'iris' has no categorical (one-hot) columns" in err
    attack = json.loads((out / "settings.json").read_text())["attack"]
    assert attack["immutable"] == ["sepal length (cm)"] and attack["perturb_categorical"]
    cell = json.loads((out / "cells" / cell_files(out)[0]).read_text())
    assert cell["mutable_features"] == 3 and cell["broken_by"]


@pytest.mark.parametrize("frame, message", [
    (pd.DataFrame({"a": [1.0, 2.0, 3.0] * 10, "y": [1] * 30}), "class"),
    (pd.DataFrame({"a": [1.0, 2.0, 3.0] * 10, "b": [0, 1, 2] * 10}), "target"),
])
def test_bad_tables_one_line_exit_2(tmp_path, tiny, capsys, frame, message):
    path = tmp_path / "t.csv"
    frame.to_csv(path, index=False)
    assert message in refused(capsys, "--csv", str(path), "--target", "y", "--out",
                              str(tmp_path / "run"))


def test_unwritable_out(tmp_path, tiny, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    assert "--out" in refused(capsys, "--out", str(blocker / "run"))


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA message")
def test_device_cuda_without_cuda(tmp_path, tiny, capsys):
    assert "CUDA" in refused(capsys, "--device", "cuda", "--out", str(tmp_path / "run"))


def test_required_arms_are_added(tmp_path, tiny, capsys):
    """A sparse arm alone also runs its dense twin and the MLP (comparison, transfer source)."""
    out = tmp_path / "run"
    assert study("--arms", "topk_25", "--out", str(out)) == 0
    assert "also running dense_fast_sigmoid, mlp" in capsys.readouterr().err
    assert len(cell_files(out)) == 3
    records = json.loads((out / "results.json").read_text())
    topk = next(r for r in records if r["arm"] == "topk_25")
    assert {a["attack"] for a in topk["attacks"]} >= {"transfer_dense", "transfer_mlp"}


def test_margins_are_declared_in_config_before_the_run(tmp_path, tiny, monkeypatch):
    out = tmp_path / "run"
    declared = []
    real = runner.run_cell

    def check_config_first(cell, *args, **kwargs):
        declared.append(json.loads((out / "config.json").read_text())["analysis"])
        return real(cell, *args, **kwargs)

    monkeypatch.setattr(runner, "run_cell", check_config_first)
    assert study("--out", str(out), "--margin-accuracy", "0.05",
                 "--margin-throughput", "0.2") == 0
    assert declared and declared[0]["margin_accuracy"] == 0.05
    assert declared[0]["margin_throughput"] == 0.2 and "endpoints" in declared[0]
    report = (out / "report.md").read_text()
    assert "±0.05 for the accuracy endpoints" in report and "±20% for throughput" in report
    # margins are analysis settings: the same folder resumes with other margins
    assert study("--out", str(out), "--margin-accuracy", "0.01") == 0
    assert "±0.01 for the accuracy endpoints" in (out / "report.md").read_text()
