"""The study's answer per grid point: for every sparse arm at each (dataset, width, T), its
training speedup over the dense twin, its time to accuracy relative to the twin, and its robust-AUC
difference from the twin with the label, the rows of the report's scale table and of
speedup_vs_width.png.

- speedup: from the interleaved timing phase (throughput.json: median per-round ratio, bootstrap
  95% CI) where the group was timed, else the primary throughput comparison of the cells
  (geometric mean ratio over seeds, Student-t 95% CI); `speedup_source` says which.
- time to accuracy: the arm's seconds over the twin's (time_to_accuracy.py) per seed, as a
  geometric mean over the seeds where the arm reached the target, with its 95% CI.
- robust AUC: the primary comparison of the robust-AUC endpoint of one norm, L∞ when the run
  has it (the norm of the adversarial-training reference), else the first norm recorded.
"""

from __future__ import annotations

import math

from .arms import DENSE_TWIN
from .endpoints import AUC_PREFIX, THROUGHPUT, AnalysisPlan
from .stats import (comparisons, display_effect, grid_point, is_grid, mean_ci, ordered,
                    unique_cells)
from .time_to_accuracy import time_to_accuracy

SPEEDUP_VS_WIDTH = "speedup_vs_width.png"  # the figure of these rows (figures.py)
TIMING = "interleaved"   # speedup_source of a timed group
PER_CELL = "per cell"    # speedup_source without one


def auc_endpoint(labelled: list[dict]) -> str | None:
    """The robust-AUC endpoint the scale summary shows: auc_linf when present."""
    found = ordered(r["endpoint"] for r in labelled if r["endpoint"].startswith(AUC_PREFIX))
    if not found:
        return None
    return AUC_PREFIX + "linf" if AUC_PREFIX + "linf" in found else found[0]


def shows_scale(cells: list[dict], timing: list[dict] | None) -> bool:
    """Whether a run gets the scale table and figure: several widths or T, or a timing phase."""
    return bool(timing) or is_grid(cells)


def _geometric(ratios: list[float], confidence: float) -> tuple[float, float, float]:
    """(geometric mean, CI low, CI high) of positive ratios: the t-interval of the mean log."""
    mean, half = mean_ci([math.log(r) for r in ratios], confidence)
    if math.isnan(mean):
        return math.nan, math.nan, math.nan
    if math.isnan(half):
        return math.exp(mean), math.nan, math.nan
    return math.exp(mean), math.exp(mean - half), math.exp(mean + half)


def scale_rows(cells: list[dict], plan: AnalysisPlan | None = None,
               timing: list[dict] | None = None) -> list[dict]:
    """One row per dataset × grid point × arm compared with its twin (and every arm of the
    timing phase besides the like-for-like twin), grouped by dataset, then width, T, arm in the
    run's order. Keys: dataset, hidden, width (first hidden layer), T, arm, speedup,
    speedup_low, speedup_high, speedup_source (TIMING, PER_CELL or None), tta_ratio, tta_low,
    tta_high, tta_reached, tta_seeds, auc_endpoint, auc_effect, auc_low, auc_high, auc_n,
    auc_label, auc_margin (the ± equivalence margin of the AUC difference)."""
    plan = plan or AnalysisPlan()
    labelled = comparisons(cells, plan)
    endpoint = auc_endpoint(labelled)
    timing = [t for t in timing or [] if t["arm"] != DENSE_TWIN]
    timed = {(t["dataset"], tuple(t["hidden"]), t["T"], t["arm"]): t for t in timing}
    ttas: dict[tuple, list[dict]] = {}
    for t in time_to_accuracy(unique_cells(cells)):
        ttas.setdefault((t["dataset"], tuple(t["hidden"]), t["T"], t["arm"]), []).append(t)
    keys = ordered((r["dataset"], *grid_point(r), r["arm"]) for r in labelled)
    keys += [k for k in timed if k not in keys]
    rows = []
    for key in keys:
        dataset, hidden, T, arm = key
        if hidden is None:
            continue  # records from before the grid say no width
        mine = [r for r in labelled if (r["dataset"], *grid_point(r), r["arm"]) == key]
        by_endpoint = {r["endpoint"]: r for r in mine}
        row = {"dataset": dataset, "hidden": hidden, "width": hidden[0], "T": T, "arm": arm}
        row.update(_speedup(timed.get(key), by_endpoint.get(THROUGHPUT)))
        row.update(_tta(ttas.get(key, []), plan.confidence))
        auc = by_endpoint.get(endpoint)
        row.update(auc_endpoint=endpoint, auc_margin=plan.margin_accuracy,
                   auc_effect=auc["effect"] if auc else math.nan,
                   auc_low=auc["ci_low"] if auc else math.nan,
                   auc_high=auc["ci_high"] if auc else math.nan,
                   auc_n=auc["n"] if auc else 0, auc_label=auc["label"] if auc else None)
        rows.append(row)
    order = {d: i for i, d in enumerate(ordered(r["dataset"] for r in rows))}
    return sorted(rows, key=lambda r: (order[r["dataset"]], r["width"], r["T"] or 0))


def _speedup(timed: dict | None, compared: dict | None) -> dict:
    if timed is not None and "speedup" in timed:
        low, high = timed["speedup_ci"]
        return {"speedup": timed["speedup"], "speedup_low": low, "speedup_high": high,
                "speedup_source": TIMING}
    if compared is not None:
        effect, low, high = display_effect(compared)
        return {"speedup": effect, "speedup_low": low, "speedup_high": high,
                "speedup_source": PER_CELL}
    return {"speedup": math.nan, "speedup_low": math.nan, "speedup_high": math.nan,
            "speedup_source": None}


def _tta(rows: list[dict], confidence: float) -> dict:
    ratios = [r["seconds"] / r["twin_seconds"] for r in rows
              if r["seconds"] is not None and r["twin_seconds"]]
    ratio, low, high = _geometric(ratios, confidence) if ratios else (math.nan,) * 3
    return {"tta_ratio": ratio, "tta_low": low, "tta_high": high, "tta_reached": len(ratios),
            "tta_seeds": len(rows)}
