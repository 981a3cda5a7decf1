"""Statistics over finished study cells: mean ± CI per arm, paired sparse-vs-twin tests, verdicts.

A *cell* is the record of one dataset × arm × seed (see `snnkernels study`); every function here
takes the list of cell dicts as the runner writes them to results.json. When the same
(dataset, arm, seed) occurs more than once (a resumed run), the last record wins.

Confidence intervals are Student-t intervals over seeds. The paired comparison pairs a sparse arm
with its dense twin seed by seed (same data split and initialisation seed) and applies a
two-sided paired t-test (`scipy.stats.ttest_rel`).
"""

from __future__ import annotations

import math
from typing import Iterable, NamedTuple

import numpy as np
from scipy import stats as scipy_stats

ALPHA = 0.05  # significance level of every paired test and verdict
THROUGHPUT_QUANTITY = "train_samples_per_s"
NORM_LABELS = {"linf": "L∞", "l2": "L2"}


class Estimate(NamedTuple):
    """Mean over seeds, half-width of its confidence interval (nan below 2 values), and n."""

    mean: float
    half_width: float
    n: int


def _finite(values: Iterable) -> np.ndarray:
    """The values as float64 with None and nan dropped: a missing measurement is not a zero."""
    kept = [float(v) for v in values if v is not None and not math.isnan(float(v))]
    return np.asarray(kept, dtype=np.float64)


def mean_ci(values: Iterable, confidence: float = 0.95) -> tuple[float, float]:
    """Return (mean, half_width) of the Student-t confidence interval of the mean.

    None and nan entries are ignored. With one value the half-width is nan (no spread to
    estimate); with none both are nan. Equal values give a half-width of 0.
    """
    x = _finite(values)
    if x.size == 0:
        return math.nan, math.nan
    mean = float(x.mean())
    if x.size == 1:
        return mean, math.nan
    sem = float(x.std(ddof=1)) / math.sqrt(x.size)
    t = float(scipy_stats.t.ppf(0.5 + confidence / 2.0, df=x.size - 1))
    return mean, t * sem


def estimate(values: Iterable, confidence: float = 0.95) -> Estimate:
    """`mean_ci` plus the number of values it used."""
    mean, half_width = mean_ci(values, confidence)
    return Estimate(mean, half_width, int(_finite(values).size))


def norm_label(norm: str) -> str:
    return NORM_LABELS.get(norm, norm)


def point_key(norm: str, eps: float) -> tuple[str, float]:
    """Key of one (norm, eps) grid point; eps rounded so 0.1 read back from JSON still matches."""
    return str(norm), round(float(eps), 12)


def unique_cells(cells: list[dict]) -> list[dict]:
    """The cells with one record per (dataset, arm, seed), the last one winning, in input order."""
    latest: dict[tuple, dict] = {}
    for cell in cells:
        key = (cell["dataset"], cell["arm"], int(cell["seed"]))
        latest.pop(key, None)  # re-insert so the order follows the winning record
        latest[key] = cell
    return list(latest.values())


def ordered(values: Iterable) -> list:
    """Distinct values in order of first appearance (datasets and arms keep the runner's order)."""
    return list(dict.fromkeys(values))


def robust_points(cells: list[dict]) -> list[tuple[str, float]]:
    """All (norm, eps) points in the cells' "robust" lists; norms first-seen, eps ascending."""
    points = {point_key(r["norm"], r["eps"]) for cell in cells for r in cell.get("robust", [])}
    norms = ordered(point_key(r["norm"], 0)[0] for cell in cells for r in cell.get("robust", []))
    return sorted(points, key=lambda p: (norms.index(p[0]), p[1]))


def robust_by_point(cell: dict) -> dict[tuple[str, float], float]:
    return {point_key(r["norm"], r["eps"]): r["accuracy"] for r in cell.get("robust", [])}


def mean_spike_rate(cell: dict) -> float:
    """Mean over the cell's spiking layers; nan for the MLP, which has none."""
    rates = cell.get("spike_rates") or []
    return float(np.mean(rates)) if rates else math.nan


def _groups(cells: list[dict]) -> dict[tuple[str, str], list[dict]]:
    """Cells grouped by (dataset, arm) in first-seen order, each group sorted by seed."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for cell in unique_cells(cells):
        groups.setdefault((cell["dataset"], cell["arm"]), []).append(cell)
    return {key: sorted(group, key=lambda c: int(c["seed"])) for key, group in groups.items()}


def summarize(cells: list[dict], confidence: float = 0.95) -> list[dict]:
    """One row per dataset × arm, every measured quantity as an `Estimate` over seeds.

    Keys: dataset, arm, family, twin, metric, seeds (sorted list), density, epochs, seconds,
    clean, robust ({(norm, eps): Estimate}), train_samples_per_s, infer_samples_per_s,
    backward_share, activation_bytes, peak_memory_bytes (n = 0 on CPU), spike_rate (mean over
    the spiking layers of a cell, then over seeds; n = 0 for the MLP).
    """
    rows = []
    for (dataset, arm), group in _groups(cells).items():
        first = group[0]

        def over_seeds(get):
            return estimate([get(c) for c in group], confidence)

        def throughput(name):
            return over_seeds(lambda c: (c.get("throughput") or {}).get(name))

        robust = {
            point: over_seeds(lambda c, p=point: robust_by_point(c).get(p))
            for point in robust_points(group)
        }
        rows.append(
            {
                "dataset": dataset,
                "arm": arm,
                "family": first.get("family"),
                "twin": first.get("twin"),
                "metric": first.get("metric"),
                "seeds": [int(c["seed"]) for c in group],
                "density": over_seeds(lambda c: c.get("density")),
                "epochs": over_seeds(lambda c: c.get("epochs")),
                "seconds": over_seeds(lambda c: c.get("seconds")),
                "clean": over_seeds(lambda c: c.get("clean")),
                "robust": robust,
                "train_samples_per_s": throughput("train_samples_per_s"),
                "infer_samples_per_s": throughput("infer_samples_per_s"),
                "backward_share": throughput("backward_share"),
                "activation_bytes": throughput("activation_bytes"),
                "peak_memory_bytes": throughput("peak_memory_bytes"),
                "spike_rate": over_seeds(mean_spike_rate),
            }
        )
    return rows


def paired_t_test(sparse: list[float], twin: list[float]) -> float:
    """Two-sided p-value of `scipy.stats.ttest_rel`; nan below 2 pairs or with no spread.

    Differences that are identical on every seed (up to rounding) have zero variance, where
    the t statistic is undefined; we return nan there instead of letting scipy warn or report
    p = 0 from a rounding-error variance.
    """
    a = np.asarray(sparse, dtype=np.float64)
    b = np.asarray(twin, dtype=np.float64)
    if a.size < 2:
        return math.nan
    diffs = a - b
    scale = max(1.0, float(np.max(np.abs(np.concatenate([a, b])))))
    if float(np.std(diffs)) <= 1e-12 * scale:
        return math.nan
    return float(scipy_stats.ttest_rel(a, b).pvalue)


def _quantities(sparse_cells: list[dict]) -> list[tuple[str, str | None, float | None, object]]:
    """(quantity, norm, eps, getter) for clean, each robust point of the arm, train samples/s."""
    found = [("clean", None, None, lambda c: c.get("clean"))]
    for norm, eps in robust_points(sparse_cells):
        found.append(("robust", norm, eps, lambda c, p=(norm, eps): robust_by_point(c).get(p)))
    found.append(
        (THROUGHPUT_QUANTITY, None, None,
         lambda c: (c.get("throughput") or {}).get(THROUGHPUT_QUANTITY))
    )
    return found


def quantity_label(quantity: str, norm: str | None = None, eps: float | None = None) -> str:
    if quantity == "robust":
        return f"robust {norm_label(norm)} ε={eps:g}"
    if quantity == THROUGHPUT_QUANTITY:
        return "train samples/s"
    return quantity


def _usable(value) -> bool:
    return value is not None and not math.isnan(float(value))


def paired(cells: list[dict], confidence: float = 0.95) -> list[dict]:
    """Sparse arm − dense twin, paired by seed, per dataset × sparse arm × quantity.

    A sparse arm is any arm whose cells name a `twin`. Quantities: "clean", "robust" at each
    (norm, eps) of the sparse arm, and "train_samples_per_s". Each row has: dataset, arm, twin,
    family, density (mean), quantity, norm, eps, label, n_pairs (seeds where both arms measured
    the quantity), sparse_mean, twin_mean, mean_difference, ci_half_width (of the mean
    difference), p_value (paired t-test; nan below 2 pairs or zero variance), ratio
    (sparse_mean / twin_mean, the speedup for throughput). A missing twin gives n_pairs 0 and nan.
    """
    groups = _groups(cells)
    rows = []
    for (dataset, arm), sparse_cells in groups.items():
        twin = sparse_cells[0].get("twin")
        if not twin:
            continue
        twin_by_seed = {int(c["seed"]): c for c in groups.get((dataset, twin), [])}
        for quantity, norm, eps, get in _quantities(sparse_cells):
            pairs = [
                (float(get(c)), float(get(twin_by_seed[int(c["seed"])])))
                for c in sparse_cells
                if int(c["seed"]) in twin_by_seed
                and _usable(get(c))
                and _usable(get(twin_by_seed[int(c["seed"])]))
            ]
            sparse_values = [s for s, _ in pairs]
            twin_values = [t for _, t in pairs]
            diff_mean, diff_half_width = mean_ci([s - t for s, t in pairs], confidence)
            sparse_mean = float(np.mean(sparse_values)) if pairs else math.nan
            twin_mean = float(np.mean(twin_values)) if pairs else math.nan
            rows.append(
                {
                    "dataset": dataset,
                    "arm": arm,
                    "twin": twin,
                    "family": sparse_cells[0].get("family"),
                    "density": mean_ci([c.get("density") for c in sparse_cells])[0],
                    "quantity": quantity,
                    "norm": norm,
                    "eps": eps,
                    "label": quantity_label(quantity, norm, eps),
                    "n_pairs": len(pairs),
                    "sparse_mean": sparse_mean,
                    "twin_mean": twin_mean,
                    "mean_difference": diff_mean,
                    "ci_half_width": diff_half_width,
                    "p_value": paired_t_test(sparse_values, twin_values),
                    "ratio": sparse_mean / twin_mean if pairs and twin_mean else math.nan,
                }
            )
    return rows


def _significant(row: dict, alpha: float) -> bool:
    return _usable(row["p_value"]) and row["p_value"] < alpha


def _effect(rows: list[dict], alpha: float) -> str:
    """'helped', 'hurt', 'mixed', 'none' (tested, nothing significant), 'untested' or 'absent'
    (nothing recorded)."""
    if not rows:
        return "absent"
    if not any(r["n_pairs"] >= 2 for r in rows):
        return "untested"
    signs = {r["mean_difference"] > 0 for r in rows if _significant(r, alpha)}
    if not signs:
        return "none"
    if signs == {True}:
        return "helped"
    if signs == {False}:
        return "hurt"
    return "mixed"


def _robustness_detail(rows: list[dict], alpha: float, helped: bool) -> str:
    """Per arm: how many (norm, eps) points moved in this direction, and the largest move."""
    parts = []
    for arm in ordered(r["arm"] for r in rows):
        arm_rows = [r for r in rows if r["arm"] == arm]
        moved = [r for r in arm_rows
                 if _significant(r, alpha) and (r["mean_difference"] > 0) == helped]
        if moved:
            largest = max(moved, key=lambda r: abs(r["mean_difference"]))
            parts.append(
                f"{arm} at {len(moved)} of {len(arm_rows)} (norm, ε) points, largest "
                f"{largest['mean_difference']:+.3f} at {norm_label(largest['norm'])} "
                f"ε={largest['eps']:g}"
            )
    return "; ".join(parts)


def _throughput_detail(rows: list[dict], alpha: float, helped: bool) -> str:
    return ", ".join(
        f"{r['arm']} ×{r['ratio']:.2f}"
        for r in rows
        if _significant(r, alpha) and (r["mean_difference"] > 0) == helped
    )


def _clause(effect: str, what: str, detail) -> str:
    if effect == "helped":
        return f"helped {what} ({detail(True)})"
    if effect == "hurt":
        return f"hurt {what} ({detail(False)})"
    if effect == "mixed":
        return f"had mixed effects on {what} (helped: {detail(True)}; hurt: {detail(False)})"
    if effect == "none":
        return f"made no measurable difference to {what}"
    if effect == "absent":
        return f"could not be tested for {what} (nothing recorded)"
    return f"could not be tested for {what} (fewer than two seeds paired with the dense twin)"


def verdict(paired_rows: list[dict], dataset: str, alpha: float = ALPHA) -> str:
    """One plain sentence on whether sparse training helped, hurt, or made no measurable
    difference to robustness and to training throughput on `dataset`.

    Robustness looks at every "robust" row (all sparse arms, norms and eps); throughput at the
    "train_samples_per_s" rows. A row counts when its paired t-test has p < alpha; "helped"
    means every significant row goes up, "hurt" every one down, "mixed effects" both. The
    tests are not corrected for multiple comparisons (the report says so and gives the count).
    """
    rows = [r for r in paired_rows if r["dataset"] == dataset]
    if not rows:
        return (
            f"On {dataset}, no sparse arm was run together with its dense twin, "
            "so sparse training was not compared."
        )
    robust_rows = [r for r in rows if r["quantity"] == "robust"]
    speed_rows = [r for r in rows if r["quantity"] == THROUGHPUT_QUANTITY]
    robust_effect = _effect(robust_rows, alpha)
    speed_effect = _effect(speed_rows, alpha)
    test = f"paired t-test of each sparse arm against its dense twin over seeds, α = {alpha:g}"
    if robust_effect == speed_effect == "none":
        return (
            f"On {dataset}, sparse gradient training made no measurable difference to robustness "
            f"or to training throughput; {test}."
        )
    robustness = _clause(
        robust_effect, "robustness", lambda up: _robustness_detail(robust_rows, alpha, up)
    )
    throughput = _clause(
        speed_effect, "training throughput", lambda up: _throughput_detail(speed_rows, alpha, up)
    )
    return f"On {dataset}, sparse gradient training {robustness} and {throughput}; {test}."
