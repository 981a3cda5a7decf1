"""Statistics over finished study cells: estimates per arm, and the labelled comparison of every
sparse arm with its dense twin on the declared endpoints (`snnkernels.study.endpoints`).

A *cell* is the record of one dataset × arm × seed at one grid point (hidden widths, T; see
`snnkernels study`); every function here takes the list of cell dicts as the runner writes them to
results.json. Arms are summarized and compared per grid point, a sparse arm with its twin of the
same point. When the same (dataset, arm, seed, grid point) occurs more than once (a resumed run),
the last record wins.

- `summarize`: mean ± Student-t CI over seeds of every measured quantity, per dataset × arm.
- `comparisons`: per dataset × sparse arm × primary endpoint, the paired difference test
  (`scipy.stats.ttest_rel`) and paired TOST (`statsmodels ttost_paired`) against the twin,
  Holm and Benjamini-Hochberg over the whole run (`statsmodels multipletests`), and exactly one
  label: better, worse, equivalent or inconclusive (definitions in `endpoints.LABEL_DEFINITIONS`).
- `pooled`: the random-effects summary per sparse arm and endpoint across tables.
- `verdict`: the per-dataset sentence, generated from the labelled comparisons only.
- `paired`: per-eps robust accuracy differences with CIs, a secondary, unlabelled result.
"""

from __future__ import annotations

import math
from typing import Iterable, NamedTuple

import numpy as np
from scipy import stats as scipy_stats
from statsmodels.stats.meta_analysis import combine_effects
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.weightstats import DescrStatsW, ttost_paired

from snnkernels.study.endpoints import (
    THROUGHPUT,
    AnalysisPlan,
    endpoint_label,
    endpoint_values,
    norm_label,
)

LABELS = ("better", "worse", "equivalent", "inconclusive")
# Differences whose spread is below this share of the values' scale are identical up to rounding.
ZERO_SPREAD = 1e-12


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
    low, high = DescrStatsW(x).tconfint_mean(alpha=1.0 - confidence)
    return mean, float(high - low) / 2.0


def estimate(values: Iterable, confidence: float = 0.95) -> Estimate:
    """`mean_ci` plus the number of values it used."""
    mean, half_width = mean_ci(values, confidence)
    return Estimate(mean, half_width, int(_finite(values).size))


def point_key(norm: str, eps: float) -> tuple[str, float]:
    """Key of one (norm, eps) grid point; eps rounded so 0.1 read back from JSON still matches."""
    return str(norm), round(float(eps), 12)


def grid_point(cell: dict) -> tuple:
    """(hidden widths, T) of the network a cell trained; None where the record does not say (the
    MLP has no T; records of runs before the grid have neither)."""
    hidden = cell.get("hidden")
    return (tuple(hidden) if hidden else None, cell.get("T"))


def is_grid(cells: list[dict]) -> bool:
    """Whether the cells span more than one hidden width or more than one T."""
    points = [grid_point(c) for c in cells]
    return (len({h for h, _ in points}) > 1
            or len({t for _, t in points if t is not None}) > 1)


def arm_at(row: dict, grid: bool) -> str:
    """The arm's name for tables and sentences; in a grid run with its point, e.g.
    "topk_1 @ w512 T10" (the first hidden layer's width; no T for the MLP)."""
    if not grid or not row.get("hidden"):
        return row["arm"]
    where = f"w{row['hidden'][0]}" + ("" if row.get("T") is None else f" T{row['T']}")
    return f"{row['arm']} @ {where}"


def unique_cells(cells: list[dict]) -> list[dict]:
    """The cells with one record per (dataset, arm, seed, grid point), the last one winning, in
    input order."""
    latest: dict[tuple, dict] = {}
    for cell in cells:
        key = (cell["dataset"], cell["arm"], int(cell["seed"]), grid_point(cell))
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


def _groups(cells: list[dict]) -> dict[tuple, list[dict]]:
    """Cells grouped by (dataset, arm, grid point) in first-seen order, each group sorted by
    seed."""
    groups: dict[tuple, list[dict]] = {}
    for cell in unique_cells(cells):
        groups.setdefault((cell["dataset"], cell["arm"], grid_point(cell)), []).append(cell)
    return {key: sorted(group, key=lambda c: int(c["seed"])) for key, group in groups.items()}


def summarize(cells: list[dict], confidence: float = 0.95) -> list[dict]:
    """One row per dataset × arm × grid point, every measured quantity as an `Estimate` over
    seeds.

    Keys: dataset, arm, hidden, T (the grid point), family, twin, metric, seeds (sorted list),
    density, epochs, seconds, clean, robust ({(norm, eps): Estimate}), train_samples_per_s,
    infer_samples_per_s, backward_share, activation_bytes, peak_memory_bytes (n = 0 on CPU),
    spike_rate (mean over the spiking layers of a cell, then over seeds; n = 0 for the MLP).
    """
    rows = []
    for (dataset, arm, (hidden, T)), group in _groups(cells).items():
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
                "hidden": hidden,
                "T": T,
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


def _usable(value) -> bool:
    return value is not None and not math.isnan(float(value))


def _twins(cells: list[dict]):
    """(dataset, sparse arm, twin name, sparse cells, twin cells by seed, where) for every arm
    whose cells name a twin, in first-seen order; where: {"hidden", "T"} of the grid point that
    both share."""
    groups = _groups(cells)
    for (dataset, arm, point), sparse_cells in groups.items():
        twin = sparse_cells[0].get("twin")
        if twin:
            twin_by_seed = {int(c["seed"]): c for c in groups.get((dataset, twin, point), [])}
            yield (dataset, arm, twin, sparse_cells, twin_by_seed,
                   {"hidden": point[0], "T": point[1]})


def _pairs(sparse_cells: list[dict], twin_by_seed: dict, get) -> list[tuple[int, float, float]]:
    """(seed, sparse value, twin value) for each seed where both arms measured the quantity."""
    found = []
    for cell in sparse_cells:
        seed = int(cell["seed"])
        twin = twin_by_seed.get(seed)
        if twin is not None and _usable(get(cell)) and _usable(get(twin)):
            found.append((seed, float(get(cell)), float(get(twin))))
    return found


def paired(cells: list[dict], confidence: float = 0.95) -> list[dict]:
    """Secondary result: robust accuracy of each sparse arm − its dense twin at every (norm, eps),
    paired by seed. Descriptive (difference and CI, no test), so it adds no comparisons.

    Rows: dataset, arm, hidden, T, twin, norm, eps, label, n_pairs, sparse_mean, twin_mean,
    mean_difference, ci_half_width. A missing twin gives n_pairs 0 and nan.
    """
    rows = []
    for dataset, arm, twin, sparse_cells, twin_by_seed, where in _twins(cells):
        for norm, eps in robust_points(sparse_cells):
            pairs = _pairs(sparse_cells, twin_by_seed,
                           lambda c, p=(norm, eps): robust_by_point(c).get(p))
            difference, half_width = mean_ci([s - t for _, s, t in pairs], confidence)
            rows.append({
                "dataset": dataset, "arm": arm, **where, "twin": twin, "norm": norm, "eps": eps,
                "label": f"robust {norm_label(norm)} ε={eps:g}", "n_pairs": len(pairs),
                "sparse_mean": float(np.mean([s for _, s, _ in pairs])) if pairs else math.nan,
                "twin_mean": float(np.mean([t for _, _, t in pairs])) if pairs else math.nan,
                "mean_difference": difference, "ci_half_width": half_width,
            })
    return rows


# ---------------------------------------------------------------- primary comparisons


class PairedTest(NamedTuple):
    """One paired comparison before multiplicity adjustment, in the endpoint's test units."""

    n: int
    effect: float          # mean paired difference (sparse − twin)
    ci_low: float
    ci_high: float
    p_difference: float    # two-sided paired t-test; nan below 2 pairs
    p_equivalence: float   # paired TOST within (low, high); nan below 2 pairs
    note: str              # why a test is degenerate, else ""


def paired_test(sparse, twin, low: float, high: float, confidence: float = 0.95) -> PairedTest:
    """Paired difference test and TOST of sparse − twin with equivalence bounds (low, high).

    Below 2 pairs nothing is tested (p = nan). Differences identical on every seed (up to
    rounding) have no variance and the t statistics are undefined; their limits are used
    instead: the difference test rejects (p = 0) unless the difference is 0 (p = 1), and the
    TOST rejects (p = 0) exactly when the difference lies strictly inside (low, high) (else 1).
    """
    a = np.asarray(sparse, dtype=np.float64)
    b = np.asarray(twin, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"sparse and twin must be 1-D of equal length, got {a.shape}, {b.shape}")
    if not low < 0 < high:
        raise ValueError(f"equivalence bounds must satisfy low < 0 < high, got ({low}, {high})")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    diffs = a - b
    n = int(diffs.size)
    if n == 0:
        return PairedTest(0, math.nan, math.nan, math.nan, math.nan, math.nan,
                          "no seed with the endpoint measured in both arms")
    effect = float(diffs.mean())
    if n < 2:
        return PairedTest(n, effect, math.nan, math.nan, math.nan, math.nan,
                          "fewer than 2 paired seeds")
    scale = max(1.0, float(np.max(np.abs(np.concatenate([a, b])))))
    if float(np.std(diffs)) <= ZERO_SPREAD * scale:
        constant = 0.0 if abs(effect) <= ZERO_SPREAD * scale else effect
        return PairedTest(n, constant, constant, constant, 0.0 if constant else 1.0,
                          0.0 if low < constant < high else 1.0,
                          "difference identical on every seed")
    ci_low, ci_high = DescrStatsW(diffs).tconfint_mean(alpha=1.0 - confidence)
    p_difference = float(scipy_stats.ttest_rel(a, b).pvalue)
    p_equivalence = float(ttost_paired(a, b, low, high)[0])
    return PairedTest(n, effect, float(ci_low), float(ci_high), p_difference, p_equivalence, "")


def _label(test: PairedTest, holm_difference: float, holm_equivalence: float,
           alpha: float) -> tuple[str, str]:
    """(label, reason) from the Holm-adjusted p-values; see endpoints.LABEL_DEFINITIONS."""
    if test.n < 2:
        return "inconclusive", f"{test.note} (n = {test.n})"
    suffix = f"; {test.note}" if test.note else ""
    if holm_equivalence < alpha:
        return "equivalent", f"TOST within the margin, Holm p < {alpha:g}{suffix}"
    if holm_difference < alpha:
        direction = "better" if test.effect > 0 else "worse"
        return direction, f"difference test Holm p < {alpha:g}, not equivalent{suffix}"
    return "inconclusive", f"neither test significant after Holm{suffix}"


def _adjust(p_values: list[float], method: str) -> list[float]:
    """statsmodels multipletests over the finite p-values; nan stays nan (nothing tested)."""
    finite = [i for i, p in enumerate(p_values) if not math.isnan(p)]
    adjusted = [math.nan] * len(p_values)
    if finite:
        corrected = multipletests([p_values[i] for i in finite], method=method)[1]
        for i, p in zip(finite, corrected):
            adjusted[i] = float(p)
    return adjusted


def _plan(plan) -> AnalysisPlan:
    if plan is None:
        return AnalysisPlan()
    if not isinstance(plan, AnalysisPlan):
        raise TypeError(f"plan must be an AnalysisPlan or None, got {type(plan).__name__}")
    return plan


def comparisons(cells: list[dict], plan: AnalysisPlan | None = None) -> list[dict]:
    """Every primary comparison of the run, labelled: one row per dataset × sparse arm × endpoint.

    Endpoints are those of `endpoints.endpoint_values` found in the sparse arm's cells. Rows:
    dataset, arm, hidden, T (the grid point of the arm and its twin), twin, family, density,
    metric, endpoint, endpoint_label, n (paired seeds), sparse_mean, twin_mean (endpoint values,
    throughput as samples/s: geometric mean), effect, ci_low, ci_high, margin_low, margin_high
    (test units: accuracy difference, or log ratio for throughput), p_difference,
    p_equivalence (unadjusted), holm_difference, holm_equivalence, q_difference, q_equivalence
    (over the family: every test of every row), label, reason.
    """
    plan = _plan(plan)
    rows, tests = [], []
    for dataset, arm, twin, sparse_cells, twin_by_seed, where in _twins(cells):
        values = {id(c): endpoint_values(c) for c in sparse_cells + list(twin_by_seed.values())}
        endpoints = list(dict.fromkeys(e for c in sparse_cells for e in values[id(c)]))
        for endpoint in endpoints:
            pairs = _pairs(sparse_cells, twin_by_seed,
                           lambda c, e=endpoint: values[id(c)].get(e))
            low, high = plan.margins(endpoint)
            test = paired_test([s for _, s, _ in pairs], [t for _, _, t in pairs], low, high,
                               plan.confidence)
            to_scale = math.exp if endpoint == THROUGHPUT else (lambda v: v)
            rows.append({
                "dataset": dataset, "arm": arm, **where, "twin": twin,
                "family": sparse_cells[0].get("family"),
                "density": mean_ci([c.get("density") for c in sparse_cells])[0],
                "metric": sparse_cells[0].get("metric"),
                "endpoint": endpoint,
                "endpoint_label": endpoint_label(endpoint, sparse_cells[0].get("metric")),
                "n": test.n,
                "seeds": [seed for seed, _, _ in pairs],
                "differences": [s - t for _, s, t in pairs],
                "sparse_mean": to_scale(float(np.mean([s for _, s, _ in pairs])))
                if pairs else math.nan,
                "twin_mean": to_scale(float(np.mean([t for _, _, t in pairs])))
                if pairs else math.nan,
                "effect": test.effect, "ci_low": test.ci_low, "ci_high": test.ci_high,
                "margin_low": low, "margin_high": high,
                "p_difference": test.p_difference, "p_equivalence": test.p_equivalence,
            })
            tests.append(test)
    family = [r["p_difference"] for r in rows] + [r["p_equivalence"] for r in rows]
    holm, bh = _adjust(family, "holm"), _adjust(family, "fdr_bh")
    k = len(rows)
    for i, (row, test) in enumerate(zip(rows, tests)):
        row.update(holm_difference=holm[i], holm_equivalence=holm[k + i],
                   q_difference=bh[i], q_equivalence=bh[k + i])
        row["label"], row["reason"] = _label(test, holm[i], holm[k + i], plan.alpha)
    return rows


def display_effect(row: dict) -> tuple[float, float, float]:
    """(effect, ci_low, ci_high) on the reader's scale: the ratio for throughput (exp of the
    mean log ratio: the geometric mean ratio), the difference otherwise."""
    values = (row["effect"], row["ci_low"], row["ci_high"])
    if row["endpoint"] == THROUGHPUT:
        return tuple(math.exp(v) if not math.isnan(v) else math.nan for v in values)
    return values


def shared_endpoint_label(rows: list[dict]) -> str:
    """The endpoint label of rows of one endpoint from several tables, which may score the clean
    endpoint with different metrics ("clean metric" then)."""
    metrics = ordered(r["metric"] for r in rows)
    return endpoint_label(rows[0]["endpoint"], metrics[0] if len(metrics) == 1 else "metric")


def pooled(rows: list[dict], plan: AnalysisPlan | None = None) -> list[dict]:
    """Random-effects summary across tables per sparse arm, grid point and endpoint
    (descriptive).

    Each table contributes its mean paired difference with variance s²/n; tables with fewer
    than 2 pairs or no spread have no usable variance and are left out (counted in
    `tables_left_out`). Paule-Mandel τ² (statsmodels' "dl" does not truncate a negative τ² at
    0), normal CI. One usable table: its own estimate and t-interval. Rows: arm, hidden, T,
    endpoint, endpoint_label, tables (used), tables_left_out, effect, ci_low, ci_high (test
    units), tau2.
    """
    plan = _plan(plan)
    out = []
    key = lambda r: (r["arm"], grid_point(r), r["endpoint"])
    for arm, (hidden, T), endpoint in ordered(key(r) for r in rows):
        group = [r for r in rows if key(r) == (arm, (hidden, T), endpoint)]
        usable = [r for r in group if r["n"] >= 2 and float(np.var(r["differences"])) > 0]
        result = {"arm": arm, "hidden": hidden, "T": T, "endpoint": endpoint,
                  "endpoint_label": shared_endpoint_label(group),
                  "tables": [r["dataset"] for r in usable],
                  "tables_left_out": [r["dataset"] for r in group if r not in usable],
                  "effect": math.nan, "ci_low": math.nan, "ci_high": math.nan, "tau2": math.nan}
        if len(usable) == 1:
            only = usable[0]
            result.update(effect=only["effect"], ci_low=only["ci_low"], ci_high=only["ci_high"])
        elif usable:
            effects = np.array([r["effect"] for r in usable])
            variances = np.array([np.var(r["differences"], ddof=1) / r["n"] for r in usable])
            combined = combine_effects(effects, variances, method_re="iterated",
                                       alpha=1.0 - plan.confidence)
            frame = combined.summary_frame(alpha=1.0 - plan.confidence)
            estimate_row = frame.loc["random effect"]
            result.update(effect=float(estimate_row["eff"]), ci_low=float(estimate_row["ci_low"]),
                          ci_high=float(estimate_row["ci_upp"]), tau2=float(combined.tau2))
        out.append(result)
    return out


# ---------------------------------------------------------------- verdict sentences


def verdict_groups(rows: list[dict], dataset: str) -> dict[str, list[tuple[str, list[str]]]]:
    """{label: [(arm, [endpoint labels])]} for dataset, labels in LABELS order, arms in
    first-seen order (with their grid point when the rows span several: `arm_at`); the structure
    every verdict sentence is written from."""
    grid = is_grid(rows)
    groups: dict[str, list[tuple[str, list[str]]]] = {}
    for label in LABELS:
        labelled = [r for r in rows if r["dataset"] == dataset and r["label"] == label]
        arms = ordered(arm_at(r, grid) for r in labelled)
        if arms:
            groups[label] = [(arm, [r["endpoint_label"] for r in labelled
                                    if arm_at(r, grid) == arm]) for arm in arms]
    return groups


def verdict(rows: list[dict], dataset: str) -> str:
    """One sentence per dataset, from the labelled comparisons only:
    'On D, each sparse arm against its dense twin: better: A (e1, e2); worse: ...; ...'."""
    groups = verdict_groups(rows, dataset)
    if not groups:
        return (f"On {dataset}, no sparse arm was run together with its dense twin, so sparse "
                "training was not compared.")
    parts = [f"{label}: " + ", ".join(f"{arm} ({', '.join(endpoints)})"
                                      for arm, endpoints in arms)
             for label, arms in groups.items()]
    return f"On {dataset}, each sparse arm against its dense twin: " + "; ".join(parts) + "."
