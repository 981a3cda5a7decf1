"""The study's primary endpoints and its analysis plan, declared before any cell runs.

Per cell (one dataset × arm × seed) the primary endpoints are:

- ``clean``: the table's clean metric on the test split (balanced accuracy on imbalanced
  tables, else accuracy), from ``cell["clean_metrics"]`` when recorded, else ``cell["clean"]``;
- ``clean_roc_auc``: the clean ROC AUC, on tables scored with balanced accuracy only;
- ``auc_<norm>``: the normalized area under the robust-accuracy curve of one norm,
  trapezoid over [0, eps_max] through (0, clean) and each (eps, worst-case accuracy) of the
  cell's "robust" list, divided by eps_max (the clean metric when no eps costs anything, 0 when
  nothing is left);
- ``throughput``: log of training samples/s; compared with the dense twin as the ratio.

`AnalysisPlan` holds the equivalence margins and the error rate; `StudyConfig` carries one, so
the resolved config written to the run folder declares the plan before the first cell.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.integrate import trapezoid

NORM_LABELS = {"linf": "L∞", "l2": "L2"}
THROUGHPUT = "throughput"
CLEAN = "clean"
CLEAN_ROC_AUC = "clean_roc_auc"
AUC_PREFIX = "auc_"


def norm_label(norm: str) -> str:
    return NORM_LABELS.get(norm, norm)


def check_margin(name: str, value, upper: float = 1.0) -> float:
    """value as a float if it is finite and in (0, upper); else ValueError naming `name`."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number in (0, {upper:g}), got {value!r}") from None
    if not math.isfinite(number) or not 0.0 < number < upper:
        raise ValueError(f"{name} must be a finite number in (0, {upper:g}), got {value!r}")
    return number


@dataclass(frozen=True)
class AnalysisPlan:
    """Equivalence margins and error rate of the sparse-vs-twin comparisons.

    margin_accuracy: ± absolute margin for the accuracy endpoints (clean, ROC AUC, robust AUC).
    margin_throughput: ± relative margin for the throughput ratio (0.1: 0.9x to 1.1x of the twin,
    tested on the log ratio from log(0.9) to log(1.1)).
    alpha: family-wise error rate (Holm) of all labels of a run; confidence: of every interval.
    """

    margin_accuracy: float = 0.03
    margin_throughput: float = 0.10
    alpha: float = 0.05
    confidence: float = 0.95

    def __post_init__(self):
        check_margin("margin_accuracy", self.margin_accuracy)
        check_margin("margin_throughput", self.margin_throughput)
        check_margin("alpha", self.alpha)
        check_margin("confidence", self.confidence)

    @classmethod
    def from_config(cls, config: dict | None) -> "AnalysisPlan":
        """The plan stored in a config dict (its "analysis" entry), defaults where absent."""
        stored = (config or {}).get("analysis") or {}
        names = ("margin_accuracy", "margin_throughput", "alpha", "confidence")
        return cls(**{k: stored[k] for k in names if k in stored})

    def margins(self, endpoint: str) -> tuple[float, float]:
        """(low, high) equivalence bounds of endpoint's paired difference, in test units."""
        if endpoint == THROUGHPUT:
            return math.log1p(-self.margin_throughput), math.log1p(self.margin_throughput)
        return -self.margin_accuracy, self.margin_accuracy

    def declaration(self) -> dict:
        """The plan in words and numbers, as config.json and the report state it."""
        return {
            "margin_accuracy": self.margin_accuracy,
            "margin_throughput": self.margin_throughput,
            "alpha": self.alpha,
            "confidence": self.confidence,
            "endpoints": ENDPOINT_DEFINITIONS,
            "comparison": COMPARISON,
            "labels": LABEL_DEFINITIONS,
            "family": FAMILY,
            "pooled": POOLED_MODEL,
        }


ENDPOINT_DEFINITIONS = {
    CLEAN: "clean metric on the test split: the table's metric (balanced accuracy on "
           "imbalanced tables, else accuracy)",
    CLEAN_ROC_AUC: "clean ROC AUC on the test split (tables scored with balanced accuracy "
                   "only, where the cells record it)",
    "auc_<norm>": "robust-accuracy AUC per norm: trapezoid over [0, eps_max] through "
                  "(0, clean metric) and the worst case over all attacks at each eps, divided "
                  "by eps_max",
    THROUGHPUT: "training samples/s relative to the dense twin (ratio; tested on the log ratio)",
}
COMPARISON = ("each sparse arm minus its dense twin, paired by seed (same split and initial "
              "weights): two-sided paired t-test of the difference (scipy.stats.ttest_rel) and "
              "paired TOST equivalence test within the margins "
              "(statsmodels ttost_paired); effect = mean paired difference (throughput: "
              "geometric mean ratio) with a Student-t 95% CI")
LABEL_DEFINITIONS = {
    "equivalent": "Holm-adjusted TOST p < alpha (the difference lies within ± margin)",
    "better": "not equivalent, and the Holm-adjusted difference test p < alpha with the sparse "
              "arm higher",
    "worse": "not equivalent, and the Holm-adjusted difference test p < alpha with the sparse "
             "arm lower",
    "inconclusive": "neither, or fewer than 2 paired seeds; a difference identical on every "
                    "seed counts as equivalent inside the margin and better/worse outside it",
}
FAMILY = ("every difference test and every TOST of every primary comparison in the run "
          "(datasets × sparse arms × endpoints) is one family: Holm-adjusted for the labels, "
          "Benjamini-Hochberg q-values shown")
POOLED_MODEL = ("per sparse arm and endpoint, the per-table mean paired differences combined by "
                "a random-effects model (Paule-Mandel between-table variance, inverse-variance "
                "weights, normal 95% CI; statsmodels combine_effects); descriptive, not "
                "labelled")


def clean_metric(cell: dict) -> float:
    """The table's clean metric: cell["clean_metrics"][metric] when recorded, else cell["clean"]."""
    recorded = cell.get("clean_metrics") or {}
    metric = cell.get("metric") or "accuracy"
    value = recorded.get(metric)
    return _number(value if value is not None else cell.get("clean"))


def robust_auc(cell: dict, norm: str, clean: float | None = None) -> float:
    """Normalized robust-accuracy AUC of one norm over the cell's eps grid (nan without points).

    Trapezoid through (0, clean) and the worst case at each eps, divided by the largest eps.
    """
    points = sorted((float(r["eps"]), _number(r["accuracy"]))
                    for r in cell.get("robust", []) if r["norm"] == norm)
    clean = clean_metric(cell) if clean is None else clean
    if not points or points[-1][0] <= 0:
        return math.nan
    eps = np.array([0.0] + [e for e, _ in points])
    accuracy = np.array([clean] + [a for _, a in points])
    return float(trapezoid(accuracy, eps) / eps[-1])


def endpoint_values(cell: dict) -> dict[str, float]:
    """Every primary endpoint of one cell: {endpoint key: value}; nan where not measured."""
    clean = clean_metric(cell)
    values = {CLEAN: clean}
    roc_auc = (cell.get("clean_metrics") or {}).get("roc_auc")
    if cell.get("metric") == "balanced_accuracy" and roc_auc is not None:
        values[CLEAN_ROC_AUC] = _number(roc_auc)
    for norm in dict.fromkeys(r["norm"] for r in cell.get("robust", [])):
        values[AUC_PREFIX + norm] = robust_auc(cell, norm, clean)
    speed = _number((cell.get("throughput") or {}).get("train_samples_per_s"))
    values[THROUGHPUT] = math.log(speed) if speed > 0 else math.nan
    return values


def endpoint_label(endpoint: str, metric: str | None = None) -> str:
    """Short name of an endpoint for tables and sentences (no commas, semicolons or brackets)."""
    if endpoint == CLEAN:
        return f"clean {(metric or 'accuracy').replace('_', ' ')}"
    if endpoint == CLEAN_ROC_AUC:
        return "clean ROC AUC"
    if endpoint.startswith(AUC_PREFIX):
        return f"robust AUC {norm_label(endpoint[len(AUC_PREFIX):])}"
    if endpoint == THROUGHPUT:
        return "train throughput"
    return endpoint


def _number(value) -> float:
    if value is None:
        return math.nan
    number = float(value)
    return number if math.isfinite(number) else math.nan
