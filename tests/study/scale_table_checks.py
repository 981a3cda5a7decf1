"""Reads the report's table across widths and T back and checks every row against the records
it was made from: the timing phase's rows, the robust AUCs of the cells (paired by seed at the
same width and T) and their time to accuracy. Shared by the synthetic and the end-to-end tests."""

from __future__ import annotations

import math
import re

import pytest

from snnkernels.study import stats
from snnkernels.study.arms import DENSE_TWIN
from snnkernels.study.endpoints import robust_auc
from snnkernels.study.time_to_accuracy import time_to_accuracy

SECTION = "## Across widths and time steps"


def markdown_rows(text: str, heading: str) -> list[list[str]]:
    """The body rows of the first table after `heading`, cells stripped."""
    lines = text[text.index(heading):].splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("|"))
    table = []
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        table.append([c.strip() for c in line.strip("|").split("|")])
    return table


NUMBER = re.compile(r"[-+]?\d+(?:\.\d+)?(?:e[-+]?\d+)?")


def numbers(text: str) -> list[float]:
    """The numbers of a table cell, in order: '×1.2 [0.9, 1.6] (2/3)' -> [1.2, 0.9, 1.6, 2, 3]."""
    return [float(n) for n in NUMBER.findall(text)]


def shows(text: str, *expected: float) -> bool:
    """Whether a cell shows `expected` as the report rounds them: 3 decimals, a ratio to 2
    decimals or, far from 1, 2 significant digits (up to 5% off)."""
    return numbers(text) == pytest.approx(list(expected), rel=0.05, abs=0.0051)


def check_scale_table(text: str, cells: list[dict], timing: list[dict]) -> dict:
    """Assert that the report's scale table (one dataset) shows, per (width, T, arm), the timing
    phase's speedup and CI, and the robust-AUC L∞ difference from the twin and the time to
    accuracy over the twin's (geometric mean, seeds that reached it / seeds) computed here from
    `cells`, each with its 95% CI; return {(width, T, arm): the row's other cells}."""
    table = markdown_rows(text, SECTION)
    shown = {(int(w), int(T), arm): rest for w, T, arm, *rest in table}
    assert len(shown) == len(table)
    assert [key[:2] for key in shown] == sorted(key[:2] for key in shown)  # grouped by (w, T)
    timed = {(t["hidden"][0], t["T"], t["arm"]): t for t in timing if t["arm"] != DENSE_TWIN}
    sparse = {(c["hidden"][0], c["T"], c["arm"]) for c in cells if c.get("twin")}
    assert set(shown) == set(timed) | sparse
    by_key = {(c["hidden"][0], c["T"], c["arm"], c["seed"]): c for c in cells}
    ttas = time_to_accuracy(cells)
    for key, (speedup, source, tta, auc, label) in shown.items():
        if key in timed:
            t = timed[key]
            assert shows(speedup, t["speedup"], *t["speedup_ci"]) and source == "interleaved"
        if key not in sparse:  # timed only (the twin as trained): no cells of its own
            assert (tta, auc, label) == ("n/a", "n/a", "—")
            continue
        width, T, arm = key
        seeds = sorted(s for w, t, a, s in by_key if (w, t, a) == key)
        differences = [robust_auc(by_key[(*key, s)], "linf")
                       - robust_auc(by_key[(width, T, DENSE_TWIN, s)], "linf") for s in seeds]
        mean, half = stats.mean_ci(differences)
        assert shows(auc, mean, mean - half, mean + half) if len(seeds) > 1 else shows(auc, mean)
        assert label in stats.LABELS
        ratios = [r["seconds"] / r["twin_seconds"] for r in ttas
                  if (r["hidden"][0], r["T"], r["arm"]) == key and r["seconds"] is not None]
        log_mean, log_half = stats.mean_ci([math.log(r) for r in ratios])
        expected = [math.exp(log_mean + d) for d in (0.0, -log_half, log_half)]
        counts = [len(ratios), len(seeds)]
        if len(ratios) > 1:
            assert shows(tta, *expected, *counts)
        else:
            assert shows(tta, *expected[:len(ratios)], *counts)
    return shown
