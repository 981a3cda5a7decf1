"""Results files and the Markdown report of a finished study.

- `write_results`: results.csv (a row per dataset × arm × seed × attack × eps) and results.json
  (the cell records unchanged).
- `main_table`: the compact table the CLI prints.
- `write_report`: report.md (the declared analysis plan, the labelled verdict table and the
  sentences written from it, the pooled summary, figures, then secondary tables, sanity checks,
  config and environment), together with the figures it links.

Every file is written atomically (temporary file in the same directory, then `os.replace`), so
an interrupted run leaves either the previous file or the new one, never half of one.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os

from snnkernels.study.atomic import write_text as atomic_write_text
from snnkernels.study.endpoints import THROUGHPUT, AnalysisPlan, endpoint_label, norm_label
from snnkernels.study.attack_checks import attack_strength_checks, threat_model_section
from snnkernels.study.scale_summary import SPEEDUP_VS_WIDTH, scale_rows, shows_scale
from snnkernels.study.throughput import TIMING_FILE
from snnkernels.study.time_to_accuracy import TOLERANCE as TTA_TOLERANCE
from snnkernels.study.stats import (
    Estimate,
    arm_at,
    comparisons,
    display_effect,
    grid_point,
    is_grid,
    mean_spike_rate,
    ordered,
    paired,
    point_key,
    pooled,
    summarize,
    unique_cells,
    verdict,
)

RESULTS_CSV = "results.csv"
RESULTS_JSON = "results.json"
REPORT_MD = "report.md"

CSV_COLUMNS = [
    "dataset", "arm", "seed", "family", "density", "twin", "metric",
    "attack", "norm", "eps", "radius", "scope", "surrogate", "accuracy", "clean", "epochs",
    "seconds",
    "train_samples_per_s", "infer_samples_per_s", "backward_share", "activation_bytes",
    "peak_memory_bytes", "spike_rate_mean", "spike_rates",
]
CLEAN_ATTACK = "none"  # attack/norm of the clean row (eps 0)
WORST_CASE_ATTACK = "worst_case"  # attack of the rows copied from a cell's "robust" list

# Sanity thresholds. A working attack chooses a perturbation per example, so at a large budget
# it drives accuracy towards 0, below chance, whatever the number of classes; chance itself is
# not in the records. Hence one absolute threshold for every dataset.
SANITY_MAX_ROBUST_AT_LARGEST_EPS = 0.2
# Gradient-free/transfer attacks beating the white-box ones, or robust accuracy rising with eps,
# by more than this (mean over seeds) points at a broken attack or masked gradients.
SANITY_MARGIN = 0.05
WHITE_BOX_ATTACKS = {"fgsm", "pgd", "apgd_ce", "apgd_dlr"}
BLACK_BOX_ATTACKS = {"square", "random_search", "transfer_dense", "transfer_mlp"}
SUSPICION = "attack may be broken / gradient masking suspected for arm"


# ---------------------------------------------------------------- results files


def results_rows(cells: list[dict]) -> list[dict]:
    """The results.csv rows: per cell one clean row (attack "none", norm "none", eps 0, accuracy =
    the clean metric), one row per "attacks" entry and one "worst_case" row per "robust" entry,
    each carrying the cell's identity, density/family and throughput columns."""
    rows = []
    for cell in cells:
        speed = cell.get("throughput") or {}
        spike_rates = cell.get("spike_rates") or []
        common = {
            "dataset": cell["dataset"], "arm": cell["arm"], "seed": cell["seed"],
            "family": cell.get("family"), "density": cell.get("density"),
            "twin": cell.get("twin"), "metric": cell.get("metric"),
            "clean": cell.get("clean"), "epochs": cell.get("epochs"),
            "seconds": cell.get("seconds"),
            "train_samples_per_s": speed.get("train_samples_per_s"),
            "infer_samples_per_s": speed.get("infer_samples_per_s"),
            "backward_share": speed.get("backward_share"),
            "activation_bytes": speed.get("activation_bytes"),
            "peak_memory_bytes": speed.get("peak_memory_bytes"),
            "spike_rate_mean": mean_spike_rate(cell) if spike_rates else None,
            "spike_rates": json.dumps(spike_rates),
        }
        rows.append({**common, "attack": CLEAN_ATTACK, "norm": CLEAN_ATTACK, "eps": 0.0,
                     "surrogate": None, "accuracy": cell.get("clean")})
        for attack in cell.get("attacks", []):
            rows.append({**common, "attack": attack["attack"], "norm": attack["norm"],
                         "eps": attack["eps"], "radius": attack.get("radius"),
                         "scope": attack.get("scope"), "surrogate": attack.get("surrogate"),
                         "accuracy": attack["accuracy"]})
        for robust in cell.get("robust", []):
            rows.append({**common, "attack": WORST_CASE_ATTACK, "norm": robust["norm"],
                         "eps": robust["eps"], "radius": robust.get("radius"),
                         "scope": "worst_case", "surrogate": None,
                         "accuracy": robust["accuracy"]})
    return rows


def write_results(cells: list[dict], out_dir: str) -> list[str]:
    """Write results.csv (see `results_rows`; None is an empty field) and results.json (the cells
    exactly as given) into out_dir, atomically; return [csv_path, json_path]."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(results_rows(cells))
    csv_path = os.path.join(out_dir, RESULTS_CSV)
    json_path = os.path.join(out_dir, RESULTS_JSON)
    atomic_write_text(csv_path, buffer.getvalue())
    atomic_write_text(json_path, json.dumps(cells, indent=1) + "\n")
    return [csv_path, json_path]


# ---------------------------------------------------------------- formatting


def _missing(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def format_number(value, digits: int = 3) -> str:
    """Accuracies and fractions with `digits` decimals, large numbers with thousands separators."""
    if _missing(value):
        return "n/a"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.{digits}f}"


def format_estimate(e: Estimate, digits: int = 3) -> str:
    """'mean ± half-width', both at the mean's precision; 'mean ± n/a' with one seed; 'n/a'
    with none."""
    if _missing(e.mean):
        return "n/a"
    if _missing(e.half_width):
        return f"{format_number(e.mean, digits)} ± n/a"
    if abs(e.mean) >= 100:
        return f"{e.mean:,.0f} ± {e.half_width:,.0f}"
    return f"{e.mean:.{digits}f} ± {e.half_width:.{digits}f}"


def format_bytes(value) -> str:
    if _missing(value):
        return "n/a"
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if abs(value) >= size:
            return f"{value / size:.2f} {unit}"
    return f"{value:.0f} B"


def format_p(p) -> str:
    if _missing(p):
        return "n/a"
    return f"{p:.2g}" if p >= 0.001 else "<0.001"


def markdown_table(headers: list[str], rows: list[list[str]]) -> str:
    """A Markdown table padded to aligned columns, so it also reads as plain text."""
    widths = [max(len(str(x)) for x in column) for column in zip(headers, *rows)]

    def line(values):
        return "| " + " | ".join(str(v).ljust(w) for v, w in zip(values, widths)) + " |"

    separator = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(headers), separator] + [line(r) for r in rows])


# ---------------------------------------------------------------- tables


def _nearest(grid: list[float], target: float) -> float:
    return min(grid, key=lambda eps: (abs(eps - target), eps))


def main_table_eps(rows: list[dict]) -> list[float]:
    """The L∞ eps shown in the main table: those nearest 0.1 and 0.5 in the recorded grid."""
    grid = sorted({eps for r in rows for norm, eps in r["robust"] if norm == "linf"})
    return ordered(_nearest(grid, target) for target in (0.1, 0.5)) if grid else []


def _format_speedup(row: dict | None) -> str:
    """'×ratio label' of the throughput comparison (geometric mean ratio over the paired
    seeds); '—' for an arm without a twin."""
    if row is None:
        return "—"
    ratio = display_effect(row)[0]
    return f"{'n/a' if _missing(ratio) else f'×{_ratio(ratio)}'} {row['label']}"


def main_table(cells: list[dict], plan: AnalysisPlan | None = None) -> str:
    """Per dataset × arm: clean metric, robust L∞ accuracy at eps 0.1 and 0.5 (or the nearest
    recorded eps), train samples/s (all mean ± 95% CI over seeds), the training speedup of a
    sparse arm over its dense twin with its label, and the labels of its other endpoints."""
    rows = summarize(cells)
    if not rows:
        return "(no finished cells)"
    eps_shown = main_table_eps(rows)
    spans_grid = is_grid(rows)
    labelled: dict[tuple, list[dict]] = {}
    for row in comparisons(cells, plan):
        labelled.setdefault((row["dataset"], row["arm"], grid_point(row)), []).append(row)
    headers = ["dataset", "arm", "seeds", "clean"]
    headers += [f"robust L∞ ε={eps:g}" for eps in eps_shown]
    headers += ["train samples/s", "speedup vs twin", "other endpoints vs twin"]
    table = []
    for r in rows:
        line = [r["dataset"], arm_at(r, spans_grid), str(len(r["seeds"])),
                format_estimate(r["clean"])]
        for eps in eps_shown:
            e = r["robust"].get(point_key("linf", eps))
            line.append(format_estimate(e) if e else "n/a")
        line.append(format_estimate(r["train_samples_per_s"]))
        arm_rows = labelled.get((r["dataset"], r["arm"], grid_point(r)), [])
        line.append(_format_speedup(next((c for c in arm_rows if c["endpoint"] == THROUGHPUT),
                                         None)))
        line.append("; ".join(f"{c['endpoint_label']}: {c['label']}" for c in arm_rows
                              if c["endpoint"] != THROUGHPUT) or "—")
        table.append(line)
    return markdown_table(headers, table)


def robust_tables(rows: list[dict]) -> list[tuple[str, str, str]]:
    """(dataset, norm, table) per dataset × norm: arms × (clean, each eps), mean ± 95% CI."""
    tables = []
    spans_grid = is_grid(rows)
    for dataset in ordered(r["dataset"] for r in rows):
        dataset_rows = [r for r in rows if r["dataset"] == dataset]
        for norm in ordered(n for r in dataset_rows for n, _ in r["robust"]):
            grid = sorted({eps for r in dataset_rows for n, eps in r["robust"] if n == norm})
            headers = ["arm", "clean"] + [f"ε={eps:g}" for eps in grid]
            table = []
            for r in dataset_rows:
                cells = [r["robust"].get((norm, eps)) for eps in grid]
                table.append([arm_at(r, spans_grid), format_estimate(r["clean"])]
                             + [format_estimate(e) if e else "n/a" for e in cells])
            tables.append((dataset, norm, markdown_table(headers, table)))
    return tables


def _ratio(value: float) -> str:
    """Two decimals in the usual range; two significant digits for the extreme bounds a CI over
    very few noisy seeds can reach."""
    return f"{value:.2f}" if 0.01 <= value < 1000 else f"{value:.2g}"


def format_interval(value: float, low: float, high: float, ratio: bool = False) -> str:
    """'+0.012 [-0.004, +0.028]' for a difference, '×1.52 [1.40, 1.65]' for a ratio; the value
    alone without a CI, 'n/a' without a value."""
    if _missing(value):
        return "n/a"
    show = _ratio if ratio else (lambda v: f"{v:+.3f}")
    text = f"×{show(value)}" if ratio else show(value)
    return text if _missing(low) else f"{text} [{show(low)}, {show(high)}]"


def format_effect(row: dict) -> str:
    """A comparison's effect with its 95% CI (`format_interval`), the throughput as the ratio."""
    return format_interval(*display_effect(row), ratio=row["endpoint"] == THROUGHPUT)


def scale_tables(rows: list[dict]) -> list[tuple[str, str]]:
    """(dataset, table) per dataset of `scale_summary.scale_rows`: a row per width × T × arm with
    the training speedup over the twin [95% CI] and where it was measured, the time to
    accuracy over the twin's [95% CI] (seeds that reached it / seeds), the robust-AUC
    difference [95% CI] with its label."""
    tables = []
    for dataset in ordered(r["dataset"] for r in rows):
        lines, dataset_rows = [], [r for r in rows if r["dataset"] == dataset]
        for r in dataset_rows:
            tta = format_interval(r["tta_ratio"], r["tta_low"], r["tta_high"], ratio=True)
            lines.append([
                str(r["width"]), "—" if r["T"] is None else str(r["T"]), r["arm"],
                format_interval(r["speedup"], r["speedup_low"], r["speedup_high"], ratio=True),
                r["speedup_source"] or "—",
                f"{tta} ({r['tta_reached']}/{r['tta_seeds']})" if r["tta_seeds"] else "n/a",
                format_interval(r["auc_effect"], r["auc_low"], r["auc_high"]),
                r["auc_label"] or "—"])
        endpoint = next((r["auc_endpoint"] for r in dataset_rows if r["auc_endpoint"]), None)
        auc = endpoint_label(endpoint) if endpoint else "robust AUC"
        headers = ["width", "T", "arm", "speedup vs twin [95% CI]", "speedup from",
                   "time to accuracy vs twin [95% CI] (reached)", f"{auc} − twin [95% CI]",
                   "label"]
        tables.append((dataset, markdown_table(headers, lines)))
    return tables


def verdict_table(rows: list[dict]) -> str:
    """The labelled primary comparisons: dataset × arm × endpoint."""
    headers = ["dataset", "arm", "endpoint", "label", "effect [95% CI]", "pairs",
               "Holm p (difference)", "Holm p (equivalence)", "q BH (difference)",
               "q BH (equivalence)", "why"]
    spans_grid = is_grid(rows)
    table = [[r["dataset"], arm_at(r, spans_grid), r["endpoint_label"], r["label"],
              format_effect(r), str(r["n"]), format_p(r["holm_difference"]),
              format_p(r["holm_equivalence"]), format_p(r["q_difference"]),
              format_p(r["q_equivalence"]), r["reason"]]
             for r in rows]
    return markdown_table(headers, table)


def pooled_table(pooled_rows: list[dict]) -> str:
    headers = ["arm", "endpoint", "pooled effect [95% CI]", "tables", "left out", "τ²"]
    table = []
    spans_grid = is_grid(pooled_rows)
    for r in pooled_rows:
        line = {"endpoint": r["endpoint"], "effect": r["effect"], "ci_low": r["ci_low"],
                "ci_high": r["ci_high"]}
        table.append([arm_at(r, spans_grid), r["endpoint_label"], format_effect(line),
                      str(len(r["tables"])), ", ".join(r["tables_left_out"]) or "—",
                      format_number(r["tau2"], 4)])
    return markdown_table(headers, table)


def paired_table(paired_rows: list[dict]) -> str:
    headers = ["dataset", "arm", "twin", "point", "sparse", "twin mean",
               "difference ± 95% CI", "pairs"]
    table = []
    spans_grid = is_grid(paired_rows)
    for r in paired_rows:
        difference = Estimate(r["mean_difference"], r["ci_half_width"], r["n_pairs"])
        table.append([
            r["dataset"], arm_at(r, spans_grid), r["twin"], r["label"],
            format_number(r["sparse_mean"]), format_number(r["twin_mean"]),
            format_estimate(difference), str(r["n_pairs"]),
        ])
    return markdown_table(headers, table)


def throughput_table(rows: list[dict]) -> str:
    headers = ["dataset", "arm", "family", "density", "train samples/s", "infer samples/s",
               "backward share", "activation bytes/step", "peak memory", "spike rate",
               "epochs", "cell seconds"]
    table = []
    spans_grid = is_grid(rows)
    for r in rows:
        table.append([
            r["dataset"], arm_at(r, spans_grid), str(r["family"]), format_number(r["density"].mean),
            format_estimate(r["train_samples_per_s"], 1),
            format_estimate(r["infer_samples_per_s"], 1),
            format_estimate(r["backward_share"]),
            format_bytes(r["activation_bytes"].mean),
            format_bytes(r["peak_memory_bytes"].mean),
            format_number(r["spike_rate"].mean),
            format_number(r["epochs"].mean, 1),
            format_number(r["seconds"].mean, 1),
        ])
    return markdown_table(headers, table)


# ---------------------------------------------------------------- sanity checks


def _mean(values) -> float:
    kept = [float(v) for v in values if not _missing(v)]
    return sum(kept) / len(kept) if kept else math.nan


def _attack_gap(cell: dict, norm: str, eps: float) -> float:
    """White-box minus gradient-free/transfer accuracy at one point of one cell (nan if either
    kind is missing). Positive: the attacks that ignore gradients did better."""
    def best(kinds):
        found = [a["accuracy"] for a in cell.get("attacks", [])
                 if a["attack"] in kinds and point_key(a["norm"], a["eps"]) == (norm, eps)]
        return min(found) if found else math.nan

    return best(WHITE_BOX_ATTACKS) - best(BLACK_BOX_ATTACKS)


def sanity_checks(cells: list[dict]) -> tuple[str, list[str]]:
    """(table, warnings). The table lists, per dataset × arm × norm, the robust accuracy at the
    largest eps. A warning naming the arm is raised when, averaged over seeds,
    - robust accuracy at the largest eps of a norm is above SANITY_MAX_ROBUST_AT_LARGEST_EPS;
    - a gradient-free or transfer attack beats every white-box attack by more than SANITY_MARGIN;
    - robust accuracy rises with eps (clean counted as eps 0) by more than SANITY_MARGIN.
    """
    rows = summarize(cells)
    unique = unique_cells(cells)
    spans_grid = is_grid(rows)
    headers = ["dataset", "arm", "norm", "largest ε", "robust at largest ε", "status"]
    table, warnings = [], []
    for r in rows:
        suspicions = []
        for norm in ordered(n for n, _ in r["robust"]):
            grid = sorted(eps for n, eps in r["robust"] if n == norm)
            largest = r["robust"][(norm, grid[-1])]
            high = not _missing(largest.mean) and largest.mean > SANITY_MAX_ROBUST_AT_LARGEST_EPS
            table.append([r["dataset"], arm_at(r, spans_grid), norm_label(norm), f"{grid[-1]:g}",
                          format_estimate(largest), "WARNING" if high else "ok"])
            if high:
                suspicions.append(
                    f"robust accuracy {largest.mean:.3f} at the largest {norm_label(norm)} "
                    f"ε={grid[-1]:g} is above {SANITY_MAX_ROBUST_AT_LARGEST_EPS:g}")
            curve = [(0.0, r["clean"].mean)]
            curve += [(eps, r["robust"][(norm, eps)].mean) for eps in grid]
            for (eps_a, acc_a), (eps_b, acc_b) in zip(curve, curve[1:]):
                if not _missing(acc_a) and not _missing(acc_b) and acc_b > acc_a + SANITY_MARGIN:
                    suspicions.append(
                        f"robust accuracy rises from {acc_a:.3f} at {norm_label(norm)} "
                        f"ε={eps_a:g} to {acc_b:.3f} at ε={eps_b:g}")
            arm_cells = [c for c in unique if (c["dataset"], c["arm"], grid_point(c))
                         == (r["dataset"], r["arm"], (r["hidden"], r["T"]))]
            for eps in grid:
                gap = _mean(_attack_gap(c, norm, eps) for c in arm_cells)
                if not _missing(gap) and gap > SANITY_MARGIN:
                    suspicions.append(
                        f"gradient-free/transfer attacks beat the white-box ones by {gap:.3f} "
                        f"at {norm_label(norm)} ε={eps:g}")
        if suspicions:
            warnings.append(
                f"{SUSPICION} {arm_at(r, spans_grid)} on {r['dataset']}: "
                + "; ".join(suspicions) + ".")
    return markdown_table(headers, table), warnings


# ---------------------------------------------------------------- report


def _json_block(value) -> str:
    return "```json\n" + json.dumps(value, indent=2, default=str) + "\n```"


def declared_plan(plan: AnalysisPlan) -> list[str]:
    """The report's first lines: endpoints, margins, tests, labels and the family, as declared
    in the run's config before its first cell."""
    d = plan.declaration()
    low, high = (math.exp(m) for m in plan.margins(THROUGHPUT))
    out = ["Declared before the run (config.json, \"analysis\"). Primary endpoints per "
           "dataset × arm (per norm for the robust AUC):", ""]
    out += [f"- `{name}`: {text}" for name, text in d["endpoints"].items()]
    out += ["", f"Equivalence margins: ±{plan.margin_accuracy:g} for the accuracy endpoints "
            f"(absolute), ±{plan.margin_throughput:.0%} for throughput (ratio {low:.2f} to "
            f"{high:.2f}). Comparison: {d['comparison']}. Family: {d['family']}; "
            f"α = {plan.alpha:g}.", "", "Labels, exactly one per comparison:", ""]
    out += [f"- **{label}**: {text}" for label, text in d["labels"].items()]
    return out + [""]


def scale_section(cells: list[dict], plan: AnalysisPlan, timing: list[dict] | None,
                  figure_names: list[str]) -> list[str]:
    """The lines of the section across widths and T (empty for a run at one width and one T
    without a timing phase): what the figure and tables show, the figure, a table per
    dataset."""
    rows = scale_rows(cells, plan, timing) if shows_scale(cells, timing) else []
    if not rows:
        return []
    out = ["## Across widths and time steps", "",
           "Per width × T, each sparse arm against its dense twin of the same width and T. "
           "Speedup: training step time of the twin over the arm's; from the interleaved timing "
           "phase (median of the per-round ratios, bootstrap 95% CI; throughput.json) where the "
           "group was timed, else from the cells' own throughput (geometric mean ratio over "
           "seeds, Student-t 95% CI). Time to accuracy: the arm's training wall clock until its "
           "validation metric reaches the twin's best less "
           f"{TTA_TOLERANCE:g}, over the twin's, geometric mean over the seeds that reached it. "
           "Robust AUC: the primary comparison (mean paired difference over seeds, 95% CI, "
           "label).", ""]
    if SPEEDUP_VS_WIDTH in figure_names:
        out += [f"![{os.path.splitext(SPEEDUP_VS_WIDTH)[0]}]({SPEEDUP_VS_WIDTH})", ""]
    for dataset, table in scale_tables(rows):
        out += [f"### {dataset}", "", table, ""]
    return out


def render_report(cells: list[dict], config: dict, environment: dict,
                  figure_names: list[str], timing: list[dict] | None = None) -> str:
    """The report.md text; figure_names are file names relative to the report. The analysis
    plan is config["analysis"] (defaults where absent); timing: the rows of throughput.json,
    if the run had a timing phase."""
    plan = AnalysisPlan.from_config(config)
    rows = summarize(cells)
    labelled = comparisons(cells, plan)
    datasets = ordered(r["dataset"] for r in rows)
    out = ["# snnkernels study report", ""] + declared_plan(plan)
    sanity, warnings = sanity_checks(cells)
    out += ["## Verdicts", ""]
    if labelled:
        out += [verdict_table(labelled), ""]
    if datasets:
        out += [" ".join(verdict(labelled, d) for d in datasets), ""]
        flagged = ordered(w[len(SUSPICION) + 1:].split(":")[0] for w in warnings)
        if flagged:
            out += [f"Caution: the sanity checks flag {', '.join(flagged)}; robustness numbers of "
                    "a flagged arm may come from a broken attack or masked gradients rather than "
                    "real robustness.", ""]
    else:
        out += ["No cell finished, so there is nothing to compare yet.", ""]
    pooled_rows = pooled(labelled, plan)
    out += ["## Pooled across tables", "", f"Model: {plan.declaration()['pooled']}.", "",
            pooled_table(pooled_rows) if pooled_rows else "No sparse arm with a dense twin.", ""]
    scale = scale_section(cells, plan, timing, figure_names)
    out += scale
    shown = [n for n in figure_names if not (scale and n == SPEEDUP_VS_WIDTH)]
    out += ["## Figures", ""]
    out += [f"![{os.path.splitext(name)[0]}]({name})" for name in shown] or ["(none)"]
    out += [
        "", "## Main table", "",
        "Mean ± 95% CI over seeds. Speedup: geometric mean ratio of train samples/s of the "
        "sparse arm over its dense twin on the same seeds, with its label.", "",
        main_table(cells, plan), "",
        "## Robust accuracy (secondary)", "",
        "Worst case per example over all attacks at each (norm, ε), mean ± 95% CI over seeds.",
        "",
    ]
    for dataset, norm, table in robust_tables(rows):
        out += [f"### {dataset}, {norm_label(norm)}", "", table, ""]
    paired_rows = paired(cells, plan.confidence)
    out += ["## Robust accuracy per ε against the dense twin (secondary)", "",
            "Sparse arm − dense twin, paired by seed, mean ± 95% CI; descriptive, not tested.",
            ""]
    out += [paired_table(paired_rows) if paired_rows else "No sparse arm with a dense twin.", ""]
    out += ["## Throughput", "",
            "Training and inference samples/s, the fraction of a training step spent in "
            "backward, bytes saved for backward per step, peak CUDA memory (n/a on CPU), mean "
            "spike rate over the spiking layers; mean over seeds.", "",
            throughput_table(rows) if rows else "(no finished cells)", ""]
    out += [
        "## Sanity checks", "",
        f"A working attack picks a perturbation per example, so at the largest ε robust accuracy "
        f"should fall near 0 (below chance, for any number of classes). An arm is flagged when, "
        f"averaged over seeds, its robust accuracy at the largest ε of a norm is above "
        f"{SANITY_MAX_ROBUST_AT_LARGEST_EPS:g}, when gradient-free or transfer attacks beat every "
        f"white-box attack by more than {SANITY_MARGIN:g}, or when robust accuracy rises with ε "
        f"by more than {SANITY_MARGIN:g}.", "",
        sanity if rows else "(no finished cells)", "",
    ]
    out += [f"- **{w}**" for w in warnings] or ["No arm was flagged."]
    strength, strength_warnings = attack_strength_checks(cells)
    out += ["", "### Attack strength", ""] + strength + [""]
    out += [f"- **{w}**" for w in strength_warnings] or ["No attack-strength check was flagged."]
    out += ["", "## Threat model", ""] + threat_model_section(cells, config.get("attack", {}))
    out += ["", "## Configuration", "", _json_block(config), "",
            "## Environment", "", _json_block(environment), ""]
    return "\n".join(out)


def write_report(cells: list[dict], out_dir: str, config: dict, environment: dict) -> str:
    """Write the figures (`write_figures`) and report.md into out_dir; return report.md's path.

    report.md: the declared plan, the verdict table and sentences, the pooled summary, for a run
    over several widths or T (or with a timing phase: <out_dir>/throughput.json) the speedup,
    time-to-accuracy and robust-AUC table per dataset with its figure, links to the figures, the
    main table, robust-accuracy tables per dataset × norm, per-eps paired differences, the
    throughput table, sanity checks (with a plain warning per suspicious
    arm), config, environment.
    """
    from snnkernels.study.figures import write_figures  # here: figures imports this module

    os.makedirs(out_dir, exist_ok=True)
    timing_path = os.path.join(out_dir, TIMING_FILE)
    timing = None
    if os.path.exists(timing_path):
        with open(timing_path) as f:
            timing = json.load(f)
    figures = write_figures(cells, out_dir, AnalysisPlan.from_config(config), timing)
    text = render_report(cells, config, environment, [os.path.basename(p) for p in figures],
                         timing)
    path = os.path.join(out_dir, REPORT_MD)
    atomic_write_text(path, text)
    return path
