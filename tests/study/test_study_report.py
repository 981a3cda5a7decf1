"""Statistics, results files, report and figures of `snnkernels study`, on synthetic cell records.

`make_cells` builds records in the runner's schema with known effects planted per arm, so every
check below knows what the right answer is.
"""

from __future__ import annotations

import copy
import csv
import json
import math
import os
import re
from pathlib import Path

import numpy as np
import pytest

from snnkernels.study import atomic, report, stats
from snnkernels.study.figures import write_figures
from scale_table_checks import SECTION, check_scale_table, markdown_rows

LINF_GRID = [0.05, 0.1, 0.2, 0.5, 1.0]
L2_GRID = [0.25, 0.5, 1.0, 2.0]
DEFAULT_ARMS = {  # arm: (family, density, twin)
    "dense_fast_sigmoid": ("dense", 1.0, None),
    "dense_atan": ("dense", 1.0, None),
    "topk_1": ("topk", 0.01, "dense_fast_sigmoid"),
    "topk_25": ("topk", 0.25, "dense_fast_sigmoid"),
    "aw_0.2": ("active_window", 0.3, "dense_fast_sigmoid"),
    "mlp": ("mlp", None, None),
}
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def make_cell(dataset, arm, seed, rng, *, robust_shift=0.0, speedup=1.0, floor=0.0,
              masked=False, noise=True):
    """One realistic record. robust_shift adds to every robust accuracy, speedup multiplies train
    samples/s, floor keeps robust accuracy at least that high (a broken attack), masked makes the
    white-box attacks far weaker than the gradient-free one (gradient masking). noise=False
    gives values that depend on the seed only, so two arms built alike are identical."""
    family, density, twin = DEFAULT_ARMS[arm]
    jitter = (lambda scale: rng.normal(0, scale)) if noise else (lambda scale: 0.0)
    seed_effect = 0.01 * (seed % 3)
    clean = 0.95 - seed_effect + jitter(0.005)
    attacks, robust = [], []
    for norm, grid, scale in (("linf", LINF_GRID, 0.2), ("l2", L2_GRID, 0.5)):
        for eps in grid:
            worst = clean * math.exp(-eps / scale) + robust_shift + jitter(0.005)
            worst = float(np.clip(max(worst, floor), 0.0, clean))
            white_box = 0.6 if masked else worst
            spread = {"fgsm": white_box + 0.1, "pgd": white_box + 0.02, "apgd_ce": white_box,
                      "square": worst + (0.0 if masked else 0.05)}
            if arm != "mlp":
                spread["transfer_mlp"] = worst + 0.1
            for attack, accuracy in spread.items():
                white_box_on_snn = attack in report.WHITE_BOX_ATTACKS and arm != "mlp"
                surrogate = "fast_sigmoid" if white_box_on_snn else None
                attacks.append({"norm": norm, "eps": eps, "attack": attack,
                                "surrogate": surrogate, "accuracy": float(min(accuracy, 1.0))})
            robust.append({"norm": norm, "eps": eps, "accuracy": worst})
    train_speed = 5000.0 * speedup * (1 + jitter(0.02)) + 10 * seed
    return {
        "dataset": dataset, "arm": arm, "seed": seed, "family": family, "density": density,
        "twin": twin, "metric": "accuracy", "clean": clean, "epochs": 20 + seed,
        "throughput": {"train_samples_per_s": train_speed,
                       "infer_samples_per_s": 3 * train_speed,
                       "backward_share": 0.55, "activation_bytes": 3 * 2**20 + seed,
                       "peak_memory_bytes": None},
        "spike_rates": [] if arm == "mlp" else [0.12, 0.3],
        "attacks": attacks, "robust": robust, "seconds": 40.0 + seed,
    }


def make_cells(datasets=("breast_cancer", "wine"), arms=tuple(DEFAULT_ARMS), seeds=(0, 1, 2),
               effects=None, seed=0):
    """Cells for datasets × arms × seeds; effects maps (dataset, arm) to make_cell keywords."""
    rng = np.random.default_rng(seed)
    effects = effects or {}
    return [
        make_cell(dataset, arm, s, rng, **effects.get((dataset, arm), {}))
        for dataset in datasets for arm in arms for s in seeds
    ]


# breast_cancer: topk_1 is planted more robust and twice as fast; topk_25 and aw_0.2 unchanged.
# wine: every arm is built without noise, so the sparse arms equal their twin exactly.
PLANTED = {("breast_cancer", "topk_1"): {"robust_shift": 0.15, "speedup": 2.0}}
PLANTED.update({("wine", arm): {"noise": False} for arm in DEFAULT_ARMS})


@pytest.fixture(scope="module")
def cells():
    return make_cells(effects=PLANTED)


@pytest.fixture(scope="module")
def written_report(cells, tmp_path_factory):
    out_dir = tmp_path_factory.mktemp("study")  # a Path, as the CLI passes it
    paths = report.write_results(cells, out_dir)
    path = report.write_report(cells, out_dir, {"epochs": 20, "seeds": 3},
                               {"python": "3.11", "torch": "2.x"})
    return out_dir, paths, path


# ---------------------------------------------------------------- statistics


def test_mean_ci_matches_hand_computed_t_interval():
    values = [0.80, 0.84, 0.86, 0.90]
    mean = 0.85
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / 3)  # 0.041633
    t_975_df3 = 3.182446305284263  # Student t, 97.5% quantile, 3 degrees of freedom
    got_mean, got_half = stats.mean_ci(values)
    assert got_mean == pytest.approx(mean)
    assert got_half == pytest.approx(t_975_df3 * sd / 2, rel=1e-9)
    assert stats.mean_ci(values, confidence=0.99)[1] > got_half


def test_mean_ci_single_missing_and_constant_values():
    mean, half = stats.mean_ci([0.7])
    assert mean == 0.7 and math.isnan(half)
    assert all(math.isnan(x) for x in stats.mean_ci([]))
    assert stats.mean_ci([0.5, None, float("nan"), 0.5]) == (0.5, 0.0)


def test_paired_rows_pair_by_seed(cells):
    rows = stats.paired(cells)
    row = next(r for r in rows if (r["dataset"], r["arm"]) == ("breast_cancer", "topk_1")
               and (r["norm"], r["eps"]) == ("linf", 0.1))
    by_seed = {(c["arm"], c["seed"]): stats.robust_by_point(c)[("linf", 0.1)]
               for c in cells if c["dataset"] == "breast_cancer"}
    sparse = [by_seed[("topk_1", s)] for s in (0, 1, 2)]
    twin = [by_seed[("dense_fast_sigmoid", s)] for s in (0, 1, 2)]
    assert row["twin"] == "dense_fast_sigmoid" and row["n_pairs"] == 3
    assert row["mean_difference"] == pytest.approx(np.mean(np.subtract(sparse, twin)))
    assert row["mean_difference"] > 0.1
    # secondary rows: every robust point, for each of the 3 sparse arms on both datasets
    assert len(rows) == 2 * 3 * (len(LINF_GRID) + len(L2_GRID))
    assert {r["arm"] for r in rows} == {"topk_1", "topk_25", "aw_0.2"}


def test_comparisons_find_planted_effects(cells):
    rows = {(r["dataset"], r["arm"], r["endpoint"]): r for r in stats.comparisons(cells)}
    # quantities: clean + robust AUC per norm + throughput, 3 sparse arms, 2 datasets
    assert len(rows) == 2 * 3 * 4
    for endpoint in ("auc_linf", "auc_l2", "throughput"):
        assert rows[("breast_cancer", "topk_1", endpoint)]["label"] == "better", endpoint
    speed = rows[("breast_cancer", "topk_1", "throughput")]
    assert stats.display_effect(speed)[0] == pytest.approx(2.0, rel=0.05)
    # wine: built without noise, every sparse arm equals its twin on every seed
    assert {r["label"] for k, r in rows.items() if k[0] == "wine"} == {"equivalent"}
    sentence = stats.verdict(list(rows.values()), "breast_cancer")
    assert sentence.startswith("On breast_cancer,")
    assert "better: topk_1 (robust AUC L∞, robust AUC L2, train throughput)" in sentence

    slower = make_cells(datasets=("iris",), effects={
        ("iris", "topk_1"): {"robust_shift": -0.3, "speedup": 0.5}})
    sentence = stats.verdict(stats.comparisons(slower), "iris")
    assert "worse: topk_1 (robust AUC L∞, robust AUC L2, train throughput)" in sentence


def test_one_seed_gives_na_not_a_crash():
    one_seed = make_cells(seeds=(0,), effects=PLANTED)
    rows = stats.summarize(one_seed)
    assert all(r["clean"].n == 1 and math.isnan(r["clean"].half_width) for r in rows)
    labelled = stats.comparisons(one_seed)
    assert {r["label"] for r in labelled} == {"inconclusive"}
    assert all(math.isnan(r["p_difference"]) for r in labelled)
    table = report.main_table(one_seed)
    assert "± n/a" in table and "nan" not in table
    text = report.render_report(one_seed, {}, {}, [])
    assert "nan" not in text.replace("n/a", "")


def test_missing_twin_and_missing_arms_do_not_crash():
    partial = make_cells(datasets=("digits",), arms=("topk_1", "mlp"))  # twin never ran
    rows = stats.comparisons(partial)
    assert rows and all(r["n"] == 0 and r["label"] == "inconclusive" for r in rows)
    assert "inconclusive: topk_1" in stats.verdict(rows, "digits")
    assert "n/a inconclusive" in report.main_table(partial)
    only_dense = make_cells(datasets=("digits",), arms=("dense_atan",))
    assert stats.comparisons(only_dense) == [] and stats.paired(only_dense) == []
    assert "was not compared" in stats.verdict([], "digits")
    text = report.render_report(only_dense, {}, {}, [])
    assert text.index("was not compared") < text.index("## Main table")


def test_duplicate_cell_last_record_wins():
    cells = make_cells(datasets=("iris",), arms=("dense_atan",), seeds=(0,))
    rerun = copy.deepcopy(cells[0])
    rerun["clean"] = 0.5
    rows = stats.summarize(cells + [rerun])
    assert len(rows) == 1
    assert rows[0]["clean"].mean == 0.5 and rows[0]["clean"].n == 1


# ---------------------------------------------------------------- results files


def test_results_csv_has_one_row_per_cell_attack_and_eps(cells, written_report):
    out_dir, (csv_path, json_path), _ = written_report
    with open(csv_path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    expected = sum(1 + len(c["attacks"]) + len(c["robust"]) for c in cells)
    # by construction: per (norm, eps) point 4 attacks for the MLP and 5 for SNN arms, + worst case
    n_points = len(LINF_GRID) + len(L2_GRID)
    per_seed_dataset = sum(1 + n_points * ((4 if arm == "mlp" else 5) + 1) for arm in DEFAULT_ARMS)
    assert expected == per_seed_dataset * 3 * 2
    assert len(rows) == expected
    assert set(rows[0]) == set(report.CSV_COLUMNS)
    clean_rows = [r for r in rows if r["attack"] == "none"]
    assert len(clean_rows) == len(cells)
    assert all(r["norm"] == "none" and float(r["eps"]) == 0 and r["accuracy"] == r["clean"]
               for r in clean_rows)
    assert sum(r["attack"] == "worst_case" for r in rows) == len(cells) * n_points
    mlp = next(r for r in rows if r["arm"] == "mlp")
    assert mlp["density"] == "" and mlp["peak_memory_bytes"] == "" and mlp["family"] == "mlp"
    assert float(mlp["train_samples_per_s"]) > 0
    assert json.loads(Path(json_path).read_text()) == cells


def test_atomic_writes_leave_no_temporary_files(written_report):
    out_dir, _, _ = written_report
    names = os.listdir(out_dir)
    assert not [n for n in names if n.startswith(".") or n.endswith(".tmp")]


def test_atomic_write_keeps_old_file_when_interrupted(tmp_path, monkeypatch):
    path = tmp_path / "results.json"
    atomic.write_text(str(path), "old")

    def interrupted(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        atomic.write_text(str(path), "new")
    assert path.read_text() == "old"
    assert os.listdir(tmp_path) == ["results.json"]


# ---------------------------------------------------------------- report


def test_main_table_shows_requested_eps_and_speedup(cells):
    table = report.main_table(cells)
    header = table.splitlines()[0]
    assert "robust L∞ ε=0.1" in header and "robust L∞ ε=0.5" in header
    topk_1 = next(line for line in table.splitlines()
                  if "breast_cancer" in line and "topk_1" in line)
    speedup = re.search(r"×([0-9.]+) (\w+)", topk_1)
    assert float(speedup.group(1)) == pytest.approx(2.0, rel=0.05)
    assert speedup.group(2) == "better" and "robust AUC L∞: better" in topk_1
    assert len(table.splitlines()) == 2 + 2 * len(DEFAULT_ARMS)
    # a grid without 0.1 and 0.5 shows the nearest recorded eps
    assert report.main_table_eps([{"robust": {("linf", 0.08): 0, ("linf", 0.4): 0}}]) == [0.08, 0.4]


def test_report_declares_the_plan_then_verdicts_first(written_report):
    out_dir, _, path = written_report
    text = Path(path).read_text()
    head = text[:text.index("## Verdicts")]
    assert "Declared before the run" in head and "±0.03" in head and "±10%" in head
    for name in ("clean", "auc_<norm>", "throughput", "Holm", "equivalent", "inconclusive"):
        assert name in head, name
    verdicts = text[text.index("## Verdicts"):text.index("## Pooled across tables")]
    assert verdicts.index("| dataset") < verdicts.index("On breast_cancer, ")
    assert "On wine, each sparse arm against its dense twin: equivalent:" in verdicts
    positions = [text.index(s) for s in (
        "## Verdicts", "## Pooled across tables", "## Figures", "## Main table",
        "## Robust accuracy (secondary)", "### wine, L2", "## Robust accuracy per ε",
        "## Throughput", "## Sanity checks", "## Configuration", "## Environment")]
    assert positions == sorted(positions)
    assert "random-effects" in text and "Paule-Mandel" in text
    assert "No arm was flagged." in text and report.SUSPICION not in text
    for name in os.listdir(out_dir):
        if name.endswith(".png"):
            assert f"]({name})" in text
    assert '"epochs": 20' in text and '"torch": "2.x"' in text


def test_report_uses_the_configured_margins():
    cells = make_cells(datasets=("wine",), effects={
        ("wine", "topk_1"): {"robust_shift": 0.05, "noise": False},
        ("wine", "dense_fast_sigmoid"): {"noise": False}})
    plan = {"analysis": {"margin_accuracy": 0.2, "margin_throughput": 0.5}}
    text = report.render_report(cells, plan, {}, [])
    assert "±0.2 for the accuracy endpoints" in text and "±50% for throughput" in text
    row = next(line for line in text.splitlines()
               if line.startswith("| wine ") and "topk_1" in line and "robust AUC L∞" in line)
    assert "equivalent" in row  # +0.05 everywhere: inside ±0.2
    default = report.render_report(cells, {}, {}, [])
    row = next(line for line in default.splitlines()
               if line.startswith("| wine ") and "topk_1" in line and "robust AUC L∞" in line)
    assert "better" in row  # outside ±0.03


def test_sanity_warns_for_arm_that_keeps_high_accuracy():
    broken = make_cells(datasets=("breast_cancer",), effects={
        ("breast_cancer", "aw_0.2"): {"floor": 0.45}})
    _, warnings = report.sanity_checks(broken)
    assert len(warnings) == 1
    assert f"{report.SUSPICION} aw_0.2 on breast_cancer" in warnings[0]
    assert "largest L∞ ε=1" in warnings[0]
    text = report.render_report(broken, {}, {}, [])
    assert f"{report.SUSPICION} aw_0.2" in text and "No arm was flagged." not in text


def test_sanity_warns_when_gradient_free_attack_beats_white_box():
    masked = make_cells(datasets=("wine",), effects={("wine", "topk_25"): {"masked": True}})
    _, warnings = report.sanity_checks(masked)
    assert len(warnings) == 1 and f"{report.SUSPICION} topk_25" in warnings[0]
    assert "gradient-free/transfer attacks beat the white-box ones" in warnings[0]


# ---------------------------------------------------------------- figures


def test_figures_are_valid_pngs(cells, written_report):
    out_dir, _, _ = written_report
    expected = [f"robust_vs_eps_{d}_{n}.png"
                for d in ("breast_cancer", "wine") for n in ("linf", "l2")]
    expected += ["forest_plot.png", "throughput_vs_density.png", "robust_vs_throughput.png"]
    assert sorted(n for n in os.listdir(out_dir) if n.endswith(".png")) == sorted(expected)
    for name in expected:
        data = (out_dir / name).read_bytes()
        assert data[:8] == PNG_MAGIC and len(data) > 10_000, name


def test_write_figures_one_seed_and_empty_input(tmp_path):
    assert write_figures([], str(tmp_path)) == []
    one = make_cells(datasets=("iris",), arms=("dense_fast_sigmoid", "topk_1"), seeds=(0,))
    paths = write_figures(one, str(tmp_path))
    assert [os.path.basename(p) for p in paths] == [
        "robust_vs_eps_iris_linf.png", "robust_vs_eps_iris_l2.png", "forest_plot.png",
        "throughput_vs_density.png", "robust_vs_throughput.png"]
    assert all(Path(p).read_bytes()[:8] == PNG_MAGIC for p in paths)


# ---------------------------------------------------------------- widths and time steps

GRID_ARMS = ("dense_fast_sigmoid", "topk_1", "topk_25", "mlp")


def grid_cells(widths=(128, 512), steps=(10, 25)):
    """wine over widths × T: topk_1 planted more robust at the widest width only, and reaching
    the twin's accuracy in half its time; one MLP per width (it has no T)."""
    cells = []
    for w in widths:
        for T in steps:
            planted = {("wine", "topk_1"): {"robust_shift": 0.1}} if w == widths[-1] else {}
            for cell in make_cells(datasets=("wine",), arms=GRID_ARMS, effects=planted,
                                   seed=w + T):
                if cell["arm"] == "mlp" and T != steps[0]:
                    continue
                fast = cell["arm"] == "topk_1"
                cells.append({**cell, "hidden": [w, w], "T": None if cell["arm"] == "mlp" else T,
                              "val_curve": [[1.0, 0.8], [2.0 + (0.1 * cell["seed"] - 1) * fast,
                                                         0.9]]})
    return cells


def timing_rows(widths=(128, 512), steps=(10, 25)):
    """throughput.json rows: topk_1 faster the wider, topk_25 a little faster everywhere."""
    rows = []
    for w in widths:
        for T in steps:
            for arm, speedup in (("topk_1", w / 100 + T / 100), ("topk_25", 1.05),
                                 ("dense_fast_sigmoid+lif_constant", 1.3)):
                rows.append({"dataset": "wine", "hidden": [w, w], "T": T, "arm": arm,
                             "speedup": speedup, "speedup_ci": [0.9 * speedup, 1.1 * speedup]})
    return rows


def test_grid_cells_are_compared_per_width_and_t():
    cells = grid_cells()
    rows = {(r["arm"], r["hidden"], r["T"], r["endpoint"]): r for r in stats.comparisons(cells)}
    # topk_1 is planted more robust at width 512 only: a width-blind pairing would mix the two
    wide = rows[("topk_1", (512, 512), 10, "auc_linf")]
    narrow = rows[("topk_1", (128, 128), 10, "auc_linf")]
    assert wide["effect"] > 0.05 and abs(narrow["effect"]) < 0.02 and wide["label"] == "better"
    assert len({(r["arm"], r["hidden"], r["T"]) for r in rows.values()}) == 2 * 2 * 2
    summary = stats.summarize(cells)
    assert len(summary) == 2 * 2 * 3 + 2  # per width: three spiking arms at each T, one MLP
    assert stats.is_grid(cells) and not stats.is_grid(grid_cells(widths=(128,), steps=(10,)))


def test_scale_table_rows_match_the_records(tmp_path):
    cells, timing = grid_cells(), timing_rows()
    (tmp_path / "throughput.json").write_text(json.dumps(timing))
    text = Path(report.write_report(cells, tmp_path, {}, {})).read_text()
    assert "![speedup_vs_width](speedup_vs_width.png)" in text
    assert (tmp_path / "speedup_vs_width.png").read_bytes().startswith(PNG_MAGIC)
    shown = check_scale_table(text, cells, timing)
    assert len(shown) == 2 * 2 * 3  # per width and T: topk_1, topk_25 and the twin as trained
    assert shown[(512, 10, "topk_1")][4] == "better"  # planted at the widest width only
    assert shown[(128, 10, "topk_1")][4] != "better"


def test_scale_section_falls_back_to_the_cells_throughput_without_a_timing_phase(tmp_path):
    text = Path(report.write_report(grid_cells(), tmp_path, {}, {})).read_text()
    table = markdown_rows(text, SECTION)
    assert {row[4] for row in table} == {"per cell"}
    assert len(table) == 2 * 2 * 2  # no timed-only rows
    assert (tmp_path / "speedup_vs_width.png").exists()


def test_one_width_and_one_t_leave_the_report_unchanged(tmp_path):
    """Cells of one grid point give the report of the same cells recorded before the grid."""
    cells = grid_cells(widths=(128,), steps=(10,))
    before = [{k: v for k, v in c.items() if k not in ("hidden", "T", "val_curve")}
              for c in cells]
    names = write_figures(cells, tmp_path / "grid")
    assert not any(n.endswith("speedup_vs_width.png") for n in names)
    assert write_figures(before, tmp_path / "before") == [
        n.replace(str(tmp_path / "grid"), str(tmp_path / "before")) for n in names]
    figures = [os.path.basename(n) for n in names]
    assert (report.render_report(cells, {}, {}, figures)
            == report.render_report(before, {}, {}, figures))
    assert SECTION not in report.render_report(cells, {}, {}, figures)
