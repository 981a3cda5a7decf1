"""The study's endpoints and labelled comparisons on synthetic paired results with known truth.

`scenario_cells` plants, per sparse arm, an exact effect on the accuracy endpoints (clean and
every robust accuracy shift together, so the robust AUC shifts by the same amount) and on
training throughput, with chosen noise and number of seeds; each test knows the right label.
"""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
from scipy import stats as scipy_stats
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.weightstats import ttost_paired

from snnkernels.study import endpoints as E
from snnkernels.study import stats
from snnkernels.study.config import PRESETS

EPS = [0.25, 0.5, 1.0]
TWIN = "dense_fast_sigmoid"

# arm: (accuracy shift, accuracy noise sd, throughput factor, throughput noise sd, seeds)
SCENARIOS = {
    "sparse_worse": (-0.15, 0.005, 1.0, 0.002, range(10)),
    "sparse_better": (0.0, 0.003, 2.0, 0.01, range(10)),
    "sparse_null_small_n": (0.0, 0.05, 1.0, 0.2, range(3)),
    "sparse_one_seed": (-0.2, 0.0, 3.0, 0.0, range(1)),
    "sparse_constant_large": (0.05, 0.0, 1.0, 0.0, range(5)),
    "sparse_constant_small": (-0.01, 0.0, 1.5, 0.0, range(5)),
}
# the right label per arm: (clean, robust AUC L∞, throughput)
TRUTH = {
    "sparse_worse": ("worse", "worse", "equivalent"),
    "sparse_better": ("equivalent", "equivalent", "better"),
    "sparse_null_small_n": ("inconclusive", "inconclusive", "inconclusive"),
    "sparse_one_seed": ("inconclusive", "inconclusive", "inconclusive"),
    "sparse_constant_large": ("better", "better", "equivalent"),
    "sparse_constant_small": ("equivalent", "equivalent", "better"),
}


def cell(dataset, arm, seed, clean, robust, speed, twin=None):
    return {"dataset": dataset, "arm": arm, "seed": seed, "twin": twin,
            "family": "dense" if twin is None else "topk", "density": None if twin is None else 0.1,
            "metric": "accuracy", "clean": clean,
            "robust": [{"norm": "linf", "eps": e, "accuracy": a} for e, a in zip(EPS, robust)],
            "throughput": {"train_samples_per_s": speed}}


def scenario_cells(dataset="synthetic", scenarios=SCENARIOS, seed=0):
    rng = np.random.default_rng(seed)
    twin_clean = 0.85 + rng.normal(0, 0.03, size=10)
    twin_robust = [[c * math.exp(-e) for e in EPS] for c in twin_clean]
    twin_speed = 4000 * np.exp(rng.normal(0, 0.1, size=10))
    cells = [cell(dataset, TWIN, s, twin_clean[s], twin_robust[s], twin_speed[s])
             for s in range(10)]
    for arm, (shift, noise, factor, speed_noise, seeds) in scenarios.items():
        for s in seeds:
            d = shift + rng.normal(0, noise) if noise else shift
            speed = twin_speed[s] * factor * (math.exp(rng.normal(0, speed_noise))
                                              if speed_noise else 1.0)
            cells.append(cell(dataset, arm, s, twin_clean[s] + d,
                              [a + d for a in twin_robust[s]], speed, twin=TWIN))
    return cells


@pytest.fixture(scope="module")
def rows():
    return stats.comparisons(scenario_cells())


def by_key(rows):
    return {(r["dataset"], r["arm"], r["endpoint"]): r for r in rows}


# ---------------------------------------------------------------- endpoints


def test_robust_auc_is_the_normalized_trapezoid_through_clean():
    c = {"clean": 0.9, "metric": "accuracy",
         "robust": [{"norm": "linf", "eps": 1.0, "accuracy": 0.1},
                    {"norm": "linf", "eps": 0.5, "accuracy": 0.5},
                    {"norm": "l2", "eps": 2.0, "accuracy": 0.3}]}
    # (0.9 + 0.5) / 2 * 0.5 + (0.5 + 0.1) / 2 * 0.5 = 0.5, over eps_max 1.0
    assert E.robust_auc(c, "linf") == pytest.approx(0.5, abs=1e-15)
    assert E.robust_auc(c, "l2") == pytest.approx((0.9 + 0.3) / 2, abs=1e-15)
    assert math.isnan(E.robust_auc(c, "nosuch"))
    values = E.endpoint_values({**c, "throughput": {"train_samples_per_s": 1000.0}})
    assert set(values) == {"clean", "auc_linf", "auc_l2", "throughput"}
    assert values["throughput"] == pytest.approx(math.log(1000.0), rel=1e-15)


def test_clean_endpoint_prefers_recorded_clean_metrics():
    imbalanced = {"clean": 0.7, "metric": "balanced_accuracy",
                  "clean_metrics": {"accuracy": 0.9, "balanced_accuracy": 0.75, "roc_auc": 0.8},
                  "robust": [], "throughput": {}}
    values = E.endpoint_values(imbalanced)
    assert values["clean"] == 0.75 and values["clean_roc_auc"] == 0.8
    assert math.isnan(values["throughput"])
    assert E.endpoint_values({**imbalanced, "clean_metrics": None})["clean"] == 0.7
    assert "clean_roc_auc" not in E.endpoint_values({**imbalanced, "metric": "accuracy"})


@pytest.mark.parametrize("value", [-0.1, 0.0, 1.0, 2.0, math.nan, math.inf, -math.inf, "x"])
def test_plan_rejects_bad_margins_naming_the_argument(value):
    with pytest.raises(ValueError, match="margin_accuracy"):
        E.AnalysisPlan(margin_accuracy=value)
    with pytest.raises(ValueError, match="margin_throughput"):
        E.AnalysisPlan(margin_throughput=value)


def test_plan_margins_and_declaration():
    plan = E.AnalysisPlan(margin_accuracy=0.02, margin_throughput=0.2)
    assert plan.margins("auc_l2") == (-0.02, 0.02)
    low, high = plan.margins("throughput")
    assert low == pytest.approx(math.log(0.8)) and high == pytest.approx(math.log(1.2))
    declared = PRESETS["default"].to_dict()["analysis"]
    assert declared["margin_accuracy"] == 0.03 and declared["margin_throughput"] == 0.1
    assert set(declared["endpoints"]) >= {"clean", "auc_<norm>", "throughput"}
    assert set(declared["labels"]) == set(stats.LABELS)
    assert E.AnalysisPlan.from_config({"analysis": declared}) == E.AnalysisPlan()
    # margins are analysis, not cell settings: changing them keeps a run folder resumable
    assert "analysis" not in PRESETS["default"].cell_settings()


# ---------------------------------------------------------------- tests and labels


def test_paired_test_matches_scipy_and_statsmodels():
    rng = np.random.default_rng(3)
    twin = rng.normal(0.8, 0.05, size=7)
    sparse = twin + rng.normal(0.01, 0.01, size=7)
    got = stats.paired_test(sparse, twin, -0.03, 0.03)
    diffs = sparse - twin
    half = scipy_stats.t.ppf(0.975, 6) * diffs.std(ddof=1) / math.sqrt(7)
    assert got.n == 7 and got.effect == pytest.approx(diffs.mean(), abs=1e-15)
    assert (got.ci_low, got.ci_high) == pytest.approx((diffs.mean() - half, diffs.mean() + half),
                                                      abs=1e-12)
    assert got.p_difference == pytest.approx(scipy_stats.ttest_rel(sparse, twin).pvalue, rel=1e-12)
    assert got.p_equivalence == pytest.approx(ttost_paired(sparse, twin, -0.03, 0.03)[0],
                                              rel=1e-12)
    assert got.note == ""


def test_paired_test_degenerate_cases():
    one = stats.paired_test([0.5], [0.4], -0.03, 0.03)
    assert one.n == 1 and math.isnan(one.p_difference) and math.isnan(one.p_equivalence)
    assert "fewer than 2" in one.note
    with np.errstate(all="raise"):
        same = stats.paired_test([0.5, 0.6, 0.7], [0.5, 0.6, 0.7], -0.03, 0.03)
        shifted = stats.paired_test([a + 0.05 for a in (0.31, 0.47, 0.83)], [0.31, 0.47, 0.83],
                                    -0.03, 0.03)
    assert (same.p_difference, same.p_equivalence, same.effect) == (1.0, 0.0, 0.0)
    assert (shifted.p_difference, shifted.p_equivalence) == (0.0, 1.0)
    assert shifted.effect == pytest.approx(0.05) and "identical" in shifted.note
    with pytest.raises(ValueError, match="equal length"):
        stats.paired_test([0.1, 0.2], [0.1], -0.03, 0.03)
    with pytest.raises(ValueError, match="bounds"):
        stats.paired_test([0.1, 0.2], [0.1, 0.3], 0.01, 0.03)
    with pytest.raises(ValueError, match="confidence"):
        stats.paired_test([0.1, 0.2], [0.1, 0.3], -0.03, 0.03, confidence=95)
    with pytest.raises(TypeError, match="plan"):
        stats.comparisons([], {"margin_accuracy": 0.03})


def test_labels_match_the_planted_truth(rows):
    found = by_key(rows)
    for arm, labels in TRUTH.items():
        for endpoint, label in zip(("clean", "auc_linf", "throughput"), labels):
            row = found[("synthetic", arm, endpoint)]
            assert row["label"] == label, (arm, endpoint, row["label"], row["reason"])
    assert len(rows) == 3 * len(SCENARIOS)
    one_seed = found[("synthetic", "sparse_one_seed", "clean")]
    assert one_seed["n"] == 1 and "fewer than 2 paired seeds" in one_seed["reason"]
    constant = found[("synthetic", "sparse_constant_large", "auc_linf")]
    assert "identical on every seed" in constant["reason"]
    assert constant["effect"] == pytest.approx(0.05) and constant["ci_low"] == constant["ci_high"]
    speed = found[("synthetic", "sparse_better", "throughput")]
    ratio, low, high = stats.display_effect(speed)
    assert ratio == pytest.approx(2.0, rel=0.01) and low < ratio < high


def test_labels_come_from_holm_over_the_whole_run(rows):
    family = [r["p_difference"] for r in rows] + [r["p_equivalence"] for r in rows]
    tested = [i for i, p in enumerate(family) if not math.isnan(p)]
    holm = multipletests([family[i] for i in tested], method="holm")[1]
    bh = multipletests([family[i] for i in tested], method="fdr_bh")[1]
    adjusted = [r["holm_difference"] for r in rows] + [r["holm_equivalence"] for r in rows]
    q_values = [r["q_difference"] for r in rows] + [r["q_equivalence"] for r in rows]
    assert [adjusted[i] for i in tested] == pytest.approx(list(holm), rel=1e-12)
    assert [q_values[i] for i in tested] == pytest.approx(list(bh), rel=1e-12)
    for r in rows:
        assert r["label"] in stats.LABELS
        if r["n"] < 2:
            expected = "inconclusive"
        elif r["holm_equivalence"] < 0.05:
            expected = "equivalent"
        elif r["holm_difference"] < 0.05:
            expected = "better" if r["effect"] > 0 else "worse"
        else:
            expected = "inconclusive"
        assert r["label"] == expected, r


def test_family_wise_error_over_many_tables():
    """30 tables in one run, each with a true null at n = 3 and a true difference just outside
    the margin at n = 5: Holm over the run keeps every wrong label out (a family-wise error of at
    most α), and the null stays inconclusive (3 noisy seeds cannot show equivalence)."""
    cells = []
    for draw in range(30):
        cells += scenario_cells(f"table{draw}", {"null": (0.0, 0.05, 1.0, 0.2, range(3)),
                                                 "outside": (-0.04, 0.02, 1.0, 0.0, range(5))},
                                seed=draw)
    rows = [r for r in stats.comparisons(cells) if r["endpoint"] != "throughput"]
    null = [r["label"] for r in rows if r["arm"] == "null"]
    outside = [r["label"] for r in rows if r["arm"] == "outside"]
    assert set(null) == {"inconclusive"}
    assert "equivalent" not in outside and "better" not in outside


def test_margins_decide_equivalence():
    """A constant +0.02 difference is equivalent within ±0.03 and better within ±0.01."""
    cells = scenario_cells(scenarios={"shifted": (0.02, 0.0, 1.0, 0.0, range(4))})
    wide = by_key(stats.comparisons(cells, E.AnalysisPlan(margin_accuracy=0.03)))
    narrow = by_key(stats.comparisons(cells, E.AnalysisPlan(margin_accuracy=0.01)))
    assert wide[("synthetic", "shifted", "clean")]["label"] == "equivalent"
    assert narrow[("synthetic", "shifted", "clean")]["label"] == "better"


def test_missing_twin_gives_inconclusive_rows():
    cells = [c for c in scenario_cells() if c["arm"] != TWIN]
    rows = stats.comparisons(cells)
    assert rows and all(r["n"] == 0 and r["label"] == "inconclusive" for r in rows)
    assert all("no seed with the endpoint measured in both arms" in r["reason"] for r in rows)


# ---------------------------------------------------------------- verdict sentences


SEGMENT = re.compile(r"(\w+): (.*)")
ARM_ENDPOINTS = re.compile(r"([\w.]+) \(([^)]*)\)")


def parse_verdict(sentence: str) -> dict[tuple[str, str], str]:
    """{(arm, endpoint label): label} named in one verdict sentence."""
    body = sentence.split(": ", 1)[1].rstrip(".")
    named = {}
    for segment in body.split("; "):
        label, listed = SEGMENT.fullmatch(segment).groups()
        for arm, endpoint_labels in ARM_ENDPOINTS.findall(listed):
            for endpoint_label in endpoint_labels.split(", "):
                assert (arm, endpoint_label) not in named, "named twice"
                named[(arm, endpoint_label)] = label
    return named


def test_verdict_sentences_cannot_contradict_the_table():
    cells = scenario_cells() + scenario_cells(dataset="other", seed=1)
    rows = stats.comparisons(cells)
    for dataset in ("synthetic", "other"):
        sentence = stats.verdict(rows, dataset)
        assert sentence.startswith(f"On {dataset}, ")
        named = parse_verdict(sentence)
        table = {(r["arm"], r["endpoint_label"]): r["label"]
                 for r in rows if r["dataset"] == dataset}
        assert named == table  # every comparison named once, under its own label
        assert set(named.values()) <= set(stats.LABELS)
        worse = {arm for (arm, _), label in named.items() if label == "worse"}
        assert "sparse_worse" in worse and "sparse_better" not in worse
    assert "not compared" in stats.verdict(rows, "absent_dataset")


# ---------------------------------------------------------------- pooled summary


def test_pooled_random_effects_across_tables():
    cells = []
    for dataset, shift, seed in (("a", -0.05, 0), ("b", -0.05, 1), ("c", 0.1, 2)):
        cells += scenario_cells(dataset, {"arm": (shift, 0.01, 1.0, 0.01, range(6))}, seed)
    cells += scenario_cells("d", {"arm": (0.0, 0.0, 1.0, 0.0, range(6))}, 3)  # no spread
    rows = stats.comparisons(cells)
    summary = {p["endpoint"]: p for p in stats.pooled(rows)}
    clean = summary["clean"]
    assert clean["tables"] == ["a", "b", "c"] and clean["tables_left_out"] == ["d"]
    per_table = [r for r in rows if r["endpoint"] == "clean" and r["dataset"] != "d"]
    effects = [r["effect"] for r in per_table]
    assert min(effects) < clean["effect"] < max(effects)
    assert clean["ci_low"] < clean["effect"] < clean["ci_high"]
    assert clean["tau2"] > 0  # the tables disagree far beyond their within-table noise
    # between-table spread widens the interval beyond every table's own
    assert clean["ci_high"] - clean["ci_low"] > max(r["ci_high"] - r["ci_low"] for r in per_table)
    one = stats.pooled(stats.comparisons(scenario_cells("a", {"arm": (0.0, 0.01, 1.0, 0.01,
                                                                     range(4))})))
    single = {p["endpoint"]: p for p in one}["clean"]
    table_row = next(r for r in stats.comparisons(scenario_cells(
        "a", {"arm": (0.0, 0.01, 1.0, 0.01, range(4))})) if r["endpoint"] == "clean")
    assert (single["effect"], single["ci_low"]) == (table_row["effect"], table_row["ci_low"])
