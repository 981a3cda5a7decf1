"""PNG figures of a finished study: robustness vs eps with CI bands, a forest plot of the paired
effects against the equivalence margins, throughput vs density, robustness vs throughput, and for
a run over several widths or T (or with a timing phase) speedup and robust-AUC difference vs width.

Drawn with matplotlib's object API (`Figure` + `FigureCanvasAgg`), never pyplot, so the caller's
backend and pyplot state are left untouched and no display is needed.
"""

from __future__ import annotations

import io
import math
import os
import re

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter

from snnkernels.study.atomic import write_bytes as atomic_write_bytes
from snnkernels.study.endpoints import AUC_PREFIX, THROUGHPUT, AnalysisPlan, norm_label
from snnkernels.study.scale_summary import SPEEDUP_VS_WIDTH, TIMING, scale_rows, shows_scale
from snnkernels.study.stats import (
    LABELS,
    Estimate,
    arm_at,
    comparisons,
    display_effect,
    grid_point,
    is_grid,
    ordered,
    pooled,
    shared_endpoint_label,
    summarize,
)

FAMILY_STYLES = {  # line style and marker per arm family, so families read apart at a glance
    "dense": ("-", "o"),
    "topk": ("--", "s"),
    "active_window": ("-.", "^"),
    "mlp": (":", "D"),
}
MAX_PANELS_PER_ROW = 3


def safe_name(text: str) -> str:
    """A file-name-safe version of a dataset or norm name."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", str(text)) or "_"


def robust_vs_eps_name(dataset: str, norm: str) -> str:
    return f"robust_vs_eps_{safe_name(dataset)}_{safe_name(norm)}.png"


FOREST_PLOT = "forest_plot.png"
THROUGHPUT_VS_DENSITY = "throughput_vs_density.png"
ROBUST_VS_THROUGHPUT = "robust_vs_throughput.png"
SPEEDUP_KEYS = ("speedup", "speedup_low", "speedup_high")  # of a scale_summary row
AUC_KEYS = ("auc_effect", "auc_low", "auc_high")


def _bar(e: Estimate) -> float:
    """Error-bar length: the CI half-width, or 0 where a single seed gives no interval."""
    return 0.0 if math.isnan(e.half_width) else e.half_width


def _style(family: str | None) -> tuple[str, str]:
    return FAMILY_STYLES.get(family, ("-", "o"))


def _save(figure: Figure, path: str) -> str:
    FigureCanvasAgg(figure)  # attach the Agg canvas explicitly: no global backend involved
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    atomic_write_bytes(path, buffer.getvalue())
    return path


def _panels(count: int, panel_size=(4.8, 3.8)):
    """A constrained-layout figure with `count` axes in rows of at most MAX_PANELS_PER_ROW."""
    ncols = max(1, min(count, MAX_PANELS_PER_ROW))
    nrows = max(1, math.ceil(count / ncols))
    figure = Figure(figsize=(panel_size[0] * ncols, panel_size[1] * nrows), layout="constrained")
    axes = [figure.add_subplot(nrows, ncols, i + 1) for i in range(max(count, 1))]
    return figure, axes


def _dataset_panels(rows: list[dict]):
    """A figure with a panel per dataset: (figure, [(axes, dataset, the dataset's rows)])."""
    datasets = ordered(r["dataset"] for r in rows)
    figure, panels = _panels(len(datasets))
    return figure, [(axes, dataset, [r for r in rows if r["dataset"] == dataset])
                    for axes, dataset in zip(panels, datasets)]


def _robust_vs_eps(rows: list[dict], dataset: str, norm: str, path: str) -> str:
    figure, (axes,) = _panels(1, (6.4, 4.4))
    spans_grid = is_grid(rows)
    for row in rows:
        points = sorted((eps, e) for (n, eps), e in row["robust"].items() if n == norm)
        if not points:
            continue
        # eps = 0 is the clean metric, so each line starts where the attack has no budget
        eps_values = [0.0] + [eps for eps, _ in points]
        estimates = [row["clean"]] + [e for _, e in points]
        line, marker = _style(row["family"])
        means = [e.mean for e in estimates]
        (drawn,) = axes.plot(eps_values, means, linestyle=line, marker=marker, markersize=4,
                             label=arm_at(row, spans_grid))
        axes.fill_between(eps_values, [m - _bar(e) for m, e in zip(means, estimates)],
                          [m + _bar(e) for m, e in zip(means, estimates)],
                          color=drawn.get_color(), alpha=0.15, linewidth=0)
    metric = rows[0]["metric"] or "accuracy"
    axes.set_xlabel(f"{norm_label(norm)} ε (standardized feature units; 0 = clean)")
    axes.set_ylabel(f"robust {metric} (worst case over attacks)")
    axes.set_ylim(-0.02, 1.02)
    axes.set_title(f"{dataset}: robust {metric} vs {norm_label(norm)} ε (mean, 95% CI band)")
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
    return _save(figure, path)


LABEL_COLOURS = {"better": "tab:green", "worse": "tab:red", "equivalent": "tab:blue",
                 "inconclusive": "tab:gray"}


def _forest(labelled: list[dict], pooled_rows: list[dict], path: str) -> str:
    """One panel per endpoint: each dataset × arm effect with its 95% CI, coloured by label,
    the pooled random-effects estimate per arm as a diamond, the margins as dashed lines."""
    endpoints = ordered(r["endpoint"] for r in labelled)
    heights = [len([r for r in labelled if r["endpoint"] == e])
               + len([p for p in pooled_rows if p["endpoint"] == e]) for e in endpoints]
    figure, panels = _panels(len(endpoints), (5.2, 0.9 + 0.28 * max(heights, default=1)))
    spans_grid = is_grid(labelled)
    for axes, endpoint in zip(panels, endpoints):
        rows = [r for r in labelled if r["endpoint"] == endpoint]
        entries = [(f"{r['dataset']} {arm_at(r, spans_grid)}", display_effect(r),
                    LABEL_COLOURS[r["label"]], "o") for r in rows]
        for p in pooled_rows:
            if p["endpoint"] == endpoint:
                entries.append((f"pooled {arm_at(p, spans_grid)}", display_effect(p), "black",
                                "D"))
        for y, (_, (effect, low, high), colour, marker) in enumerate(reversed(entries)):
            if math.isnan(effect):
                continue
            if not math.isnan(low):
                axes.plot([low, high], [y, y], color=colour, linewidth=1.5)
            axes.plot([effect], [y], marker=marker, color=colour, linestyle="none")
        ratio = endpoint == THROUGHPUT
        margin_low, margin_high = rows[0]["margin_low"], rows[0]["margin_high"]
        if ratio:
            margin_low, margin_high = math.exp(margin_low), math.exp(margin_high)
            axes.set_xscale("log")  # a ratio: 0.5x and 2x equally far from 1
            plain = FuncFormatter(lambda value, _: f"{value:g}")
            axes.xaxis.set_major_formatter(plain)
            axes.xaxis.set_minor_formatter(plain)
        for margin in (margin_low, margin_high):
            axes.axvline(margin, color="black", linestyle="--", linewidth=1)
        axes.axvline(1.0 if ratio else 0.0, color="black", linewidth=0.8, alpha=0.5)
        axes.set_yticks(range(len(entries)))
        axes.set_yticklabels([name for name, *_ in reversed(entries)], fontsize=7)
        axes.set_xlabel("sparse / dense twin (ratio)" if ratio else "sparse − dense twin")
        axes.set_title(shared_endpoint_label(rows), fontsize=10)
        axes.grid(axis="x", alpha=0.3)
    handles = [Line2D([], [], color=c, marker="o", linestyle="-", label=label)
               for label, c in LABEL_COLOURS.items() if label in LABELS]
    handles += [Line2D([], [], color="black", marker="D", linestyle="none",
                       label="pooled (random effects)"),
                Line2D([], [], color="black", linestyle="--", label="equivalence margin")]
    figure.legend(handles=handles, loc="outside lower center", ncols=len(handles), fontsize=8)
    return _save(figure, path)


def _throughput_vs_density(rows: list[dict], path: str) -> str:
    figure, panels = _dataset_panels(rows)
    spans_grid = is_grid(rows)
    for axes, dataset, dataset_rows in panels:
        by_arm = {(r["arm"], grid_point(r)): r for r in dataset_rows}
        sparse = [r for r in dataset_rows if r["twin"] and not math.isnan(r["density"].mean)]
        for twin in ordered((r["twin"], grid_point(r)) for r in sparse):
            if twin in by_arm:
                speed = by_arm[twin]["train_samples_per_s"]
                axes.axhline(speed.mean, color="black", linewidth=1,
                             label=f"{arm_at(by_arm[twin], spans_grid)} (dense twin)")
                if _bar(speed):
                    axes.axhspan(speed.mean - speed.half_width, speed.mean + speed.half_width,
                                 color="black", alpha=0.1)
        for row in sparse:
            _, marker = _style(row["family"])
            axes.errorbar(
                row["density"].mean,
                row["train_samples_per_s"].mean,
                xerr=_bar(row["density"]),
                yerr=_bar(row["train_samples_per_s"]),
                marker=marker,
                linestyle="none",
                capsize=3,
                label=arm_at(row, spans_grid),
            )
        if sparse:
            axes.set_xscale("log")
            axes.legend(fontsize=7)
        else:
            axes.text(0.5, 0.5, "no sparse arms", ha="center", va="center",
                      transform=axes.transAxes)
        axes.set_ylim(bottom=0)  # from zero, so the gap to the twin is not exaggerated
        axes.set_xlabel("gradient density (fraction of entries kept)")
        axes.set_ylabel("train samples/s")
        axes.set_title(f"{dataset}: training throughput vs density")
        axes.grid(alpha=0.3)
    return _save(figure, path)


def mid_point(row_points: list[tuple[str, float]]) -> tuple[str, float] | None:
    """The (norm, eps) the robustness-vs-throughput scatter uses: the middle of the first
    norm's grid (L∞ when present), lower middle for an even grid."""
    if not row_points:
        return None
    norms = ordered(n for n, _ in row_points)
    norm = "linf" if "linf" in norms else norms[0]
    grid = sorted(eps for n, eps in row_points if n == norm)
    return norm, grid[(len(grid) - 1) // 2]


def _robust_vs_throughput(rows: list[dict], path: str) -> str:
    figure, panels = _dataset_panels(rows)
    spans_grid = is_grid(rows)
    for axes, dataset, dataset_rows in panels:
        point = mid_point(ordered(p for r in dataset_rows for p in r["robust"]))
        if point is None:
            axes.text(0.5, 0.5, "no robust accuracy recorded", ha="center", va="center",
                      transform=axes.transAxes)
            axes.set_title(dataset)
            continue
        speeds = []
        for row in dataset_rows:
            robust = row["robust"].get(point)
            speed = row["train_samples_per_s"]
            if robust is None or math.isnan(robust.mean) or math.isnan(speed.mean):
                continue
            _, marker = _style(row["family"])
            axes.errorbar(speed.mean, robust.mean, xerr=_bar(speed), yerr=_bar(robust),
                          marker=marker, linestyle="none", capsize=3,
                          label=arm_at(row, spans_grid))
            speeds.append(speed.mean)
        if speeds and min(speeds) > 0 and max(speeds) > 10 * min(speeds):
            axes.set_xscale("log")  # only across an order of magnitude: log ticks are unreadable
        if speeds:
            axes.legend(fontsize=7)
        axes.set_ylim(-0.02, 1.02)
        metric = dataset_rows[0]["metric"] or "accuracy"
        axes.set_xlabel("train samples/s")
        axes.set_ylabel(f"robust {metric} at {norm_label(point[0])} ε={point[1]:g}")
        axes.set_title(f"{dataset}: robustness vs training throughput")
        axes.grid(alpha=0.3)
    return _save(figure, path)


def _interval(value: float, low: float, high: float) -> tuple[float, list[float]]:
    """(value, [below, above]) error-bar lengths; no bar where the CI is missing."""
    if math.isnan(low) or math.isnan(high):
        return value, [0.0, 0.0]
    return value, [max(value - low, 0.0), max(high - value, 0.0)]


def _speedup_vs_width(rows: list[dict], path: str) -> str:
    """Per dataset two panels against hidden width: the training speedup over the dense twin
    and the robust-AUC difference from it, one line per (arm, T), 95% CIs as error bars."""
    datasets = ordered(r["dataset"] for r in rows)
    figure = Figure(figsize=(11.0, 4.2 * len(datasets)), layout="constrained")
    grid = figure.subplots(len(datasets), 2, squeeze=False)
    steps = ordered(r["T"] for r in rows)
    for (speed_axes, auc_axes), dataset in zip(grid, datasets):
        dataset_rows = [r for r in rows if r["dataset"] == dataset]
        widths = sorted({r["width"] for r in dataset_rows})
        for arm in ordered(r["arm"] for r in dataset_rows if r["auc_label"] is not None):
            colour = None
            for T in steps:
                line = sorted((r for r in dataset_rows if (r["arm"], r["T"]) == (arm, T)),
                              key=lambda r: r["width"])
                if not line:
                    continue
                style = ("-", "--", ":", "-.")[steps.index(T) % 4]
                label = f"{arm} T={T}"
                for axes, (key, low, high) in ((speed_axes, SPEEDUP_KEYS),
                                               (auc_axes, AUC_KEYS)):
                    points = [(r["width"], *_interval(r[key], r[low], r[high]))
                              for r in line if not math.isnan(r[key])]
                    if not points:
                        continue
                    x, y, bars = zip(*points)
                    drawn = axes.errorbar(x, y, yerr=list(zip(*bars)), linestyle=style,
                                          marker=_style(line[0].get("family"))[1], capsize=3,
                                          color=colour, label=label)
                    colour = drawn.lines[0].get_color()  # one colour per arm, a style per T
        sources = ordered(r["speedup_source"] for r in dataset_rows if r["speedup_source"])
        how = ("interleaved timing phase: median ratio, bootstrap 95% CI" if sources == [TIMING]
               else "per-cell throughput: geometric mean over seeds, 95% CI"
               if TIMING not in sources else "timing phase where timed, else per cell; 95% CI")
        speed_axes.axhline(1.0, color="black", linewidth=0.8, alpha=0.6)
        speed_axes.set_ylabel("training speedup vs dense twin (×)")
        speed_axes.set_title(f"{dataset}: training speedup\n({how})", fontsize=9)
        endpoint = next((r["auc_endpoint"] for r in dataset_rows if r["auc_endpoint"]), None)
        norm = norm_label(endpoint[len(AUC_PREFIX):]) if endpoint else "?"
        margin = dataset_rows[0]["auc_margin"]
        for bound in (-margin, margin):
            auc_axes.axhline(bound, color="black", linestyle="--", linewidth=1)
        auc_axes.axhline(0.0, color="black", linewidth=0.8, alpha=0.6)
        auc_axes.set_ylabel(f"robust AUC {norm}: sparse − twin")
        auc_axes.set_title(f"{dataset}: robust AUC {norm} difference\n(paired over seeds: mean, "
                           f"95% CI; dashed: equivalence margin ±{margin:g})", fontsize=9)
        for axes in (speed_axes, auc_axes):
            axes.set_xscale("log", base=2)
            axes.set_xticks(widths)
            axes.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
            axes.set_xlabel("hidden width (log2)")
            axes.grid(alpha=0.3)
        if speed_axes.get_legend_handles_labels()[0]:
            speed_axes.legend(fontsize=7)
    return _save(figure, path)


def write_figures(cells: list[dict], out_dir: str, plan: AnalysisPlan | None = None,
                  timing: list[dict] | None = None) -> list[str]:
    """Write the study's PNG figures into out_dir and return their paths, in this order:

    - robust_vs_eps_<dataset>_<norm>.png for every dataset × norm: one line per arm, robust
      accuracy (mean over seeds, 95% CI band) against eps, with the clean metric at eps = 0;
    - forest_plot.png (when a sparse arm has its twin): the paired effect of every primary
      comparison with its 95% CI, coloured by label, the pooled estimate per arm, the margins;
    - throughput_vs_density.png: train samples/s against density for the sparse arms, one panel
      per dataset, the dense twin as a horizontal line with its CI band;
    - robust_vs_throughput.png: robust accuracy at the middle eps of the L∞ grid against train
      samples/s, every arm, one panel per dataset;
    - speedup_vs_width.png, when the run spans several widths or T or `timing` (the rows of
      throughput.json) is given: per dataset, against hidden width, the training speedup of
      every sparse arm over its twin and its robust-AUC difference from the twin with the
      equivalence margin, a line per (arm, T) (`scale_summary.scale_rows`).

    Each file is written atomically. With no cells nothing is written and [] is returned.
    """
    rows = summarize(cells)
    if not rows:
        return []
    os.makedirs(out_dir, exist_ok=True)
    paths = []
    for dataset in ordered(r["dataset"] for r in rows):
        dataset_rows = [r for r in rows if r["dataset"] == dataset]
        for norm in ordered(n for r in dataset_rows for n, _ in r["robust"]):
            path = os.path.join(out_dir, robust_vs_eps_name(dataset, norm))
            paths.append(_robust_vs_eps(dataset_rows, dataset, norm, path))
    labelled = comparisons(cells, plan)
    if labelled:
        paths.append(_forest(labelled, pooled(labelled, plan), os.path.join(out_dir, FOREST_PLOT)))
    paths.append(_throughput_vs_density(rows, os.path.join(out_dir, THROUGHPUT_VS_DENSITY)))
    paths.append(_robust_vs_throughput(rows, os.path.join(out_dir, ROBUST_VS_THROUGHPUT)))
    scale = scale_rows(cells, plan, timing) if shows_scale(cells, timing) else []
    if scale:
        paths.append(_speedup_vs_width(scale, os.path.join(out_dir, SPEEDUP_VS_WIDTH)))
    return paths
