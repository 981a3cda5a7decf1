"""Runs the study cell by cell: each (dataset, arm, seed) cell trains one model, measures its
cost and attacks it, then is written to <out>/cells/ as one JSON file (and the model to
<out>/models/), atomically. A rerun with the same --out skips finished cells, so an interrupted
run loses at most the cell in flight."""

from __future__ import annotations

import io
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch

from . import atomic
from .arms import ARMS, DENSE_TWIN, Arm
from .attacks import evaluate_robustness
from .config import StudyConfig
from .data import Split, Table, make_split
from . import mechanism as M
from .threat_model import ThreatModel
from . import train as T

MLP = "mlp"


class RunFolderError(ValueError):
    """--out cannot be used (unwritable, or holds a run with other settings)."""


@dataclass(frozen=True)
class Cell:
    dataset: str
    arm: str
    seed: int
    width: Optional[int] = None  # the grid's hidden width; None: the config's only one
    T: Optional[int] = None      # the grid's time steps; None: the config's only one

    @property
    def key(self) -> str:
        key = f"{self.dataset}__{self.arm}__seed{self.seed}"
        if self.width is not None:
            key += f"__h{self.width}"
        if self.T is not None:
            key += f"__T{self.T}"
        return key

    def source(self, arm: str) -> "Cell":
        """The cell of `arm` that this cell is compared with (same dataset, seed and grid
        point; the MLP has no time steps, so one MLP serves every T)."""
        return Cell(self.dataset, arm, self.seed, self.width, None if arm == MLP else self.T)


def plan(config: StudyConfig) -> list:
    """Every cell, per dataset, seed and grid point the transfer sources (dense twin, MLP)
    first, as the other arms' attacks need them."""
    first = [a for a in (DENSE_TWIN, MLP) if a in config.arms]
    order = first + [a for a in config.arms if a not in first]
    cells = [Cell(d, a, s, w, t).source(a) for d in config.datasets for s in config.seeds
             for w, t in config.grid() for a in order]
    return list(dict.fromkeys(cells))  # one MLP per width, not per T


def required_arms(arms) -> tuple:
    """arms plus what they are compared with: the dense twin of every sparse arm, and the MLP
    and dense twin as transfer-attack sources of every other arm."""
    arms = tuple(dict.fromkeys(arms))
    extra = [a for a in (DENSE_TWIN, MLP) if a not in arms]
    return arms + tuple(extra)


class RunFolder:
    def __init__(self, out, config: StudyConfig):
        self.root = Path(out)
        try:
            for sub in ("cells", "models"):
                (self.root / sub).mkdir(parents=True, exist_ok=True)
            atomic.write_text(self.root / ".write-test", "ok")
            (self.root / ".write-test").unlink()
        except OSError as e:
            raise RunFolderError(f"--out {out}: cannot write there ({e.strerror or e})") from None
        settings_path = self.root / "settings.json"
        settings = config.cell_settings()
        if settings_path.exists():
            stored = json.loads(settings_path.read_text())
            if stored != settings:
                differ = sorted(k for k in set(settings) | set(stored)
                                if stored.get(k) != settings.get(k))
                raise RunFolderError(
                    f"--out {out} holds a run with other settings (differ in: "
                    f"{', '.join(differ)}); use another --out, or delete that folder")
        else:
            atomic.write_json(settings_path, settings)

    def cell_path(self, cell: Cell) -> Path:
        return self.root / "cells" / f"{cell.key}.json"

    def model_path(self, cell: Cell) -> Path:
        return self.root / "models" / f"{cell.key}.pt"

    def finished(self, cell: Cell):
        path = self.cell_path(cell)
        return json.loads(path.read_text()) if path.exists() else None

    def save(self, cell: Cell, record: dict, model) -> None:
        """model: the trained module, or its state_dict as torch.save bytes (from a worker)."""
        state = model if isinstance(model, bytes) else state_bytes(model)
        atomic.write_bytes(self.model_path(cell), state)
        atomic.write_json(self.cell_path(cell), record)  # last: marks the cell finished


def state_bytes(model: torch.nn.Module) -> bytes:
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return buffer.getvalue()


def tensors(split: Split, device):
    as_x = lambda a: torch.as_tensor(a, dtype=torch.float32, device=device)
    as_y = lambda a: torch.as_tensor(a, dtype=torch.int64, device=device)
    return (as_x(split.X_train), as_y(split.y_train), as_x(split.X_val), as_y(split.y_val),
            as_x(split.X_test), as_y(split.y_test))


def build(arm: Arm, split: Split, config: StudyConfig, cell: Cell) -> torch.nn.Module:
    torch.manual_seed(cell.seed)  # the same initial weights for every arm of one seed and width
    model = config.model_at(cell.width, cell.T)
    return arm.build(split.num_features, split.num_classes, model).to(config.device)


def run_cell(cell: Cell, table: Table, split: Split, config: StudyConfig,
             sources: dict, progress) -> tuple:
    """Trains, measures and attacks one cell; returns (record, trained model)."""
    start = time.perf_counter()
    arm = ARMS[cell.arm]
    X_tr, y_tr, X_va, y_va, X_te, y_te = tensors(split, config.device)
    model = build(arm, split, config, cell)
    adversary, adversarial_eps = None, None
    if arm.adversarial is not None:
        from .adversarial import PGDAdversary

        adversarial_eps = arm.adversarial.eps(config.attack.eps_linf)
        adversary = PGDAdversary(model, adversarial_eps, arm.adversarial.steps,
                                 split.num_classes, cell.seed)
    result = T.train(model, X_tr, y_tr, X_va, y_va, config.train, metric=table.metric,
                     seed=cell.seed, progress=lambda s: progress(f"train {s}"),
                     adversary=adversary)
    progress("measure")
    logits = T.predict(model, X_te)
    clean = T.metric_value(logits, y_te, table.metric)
    train_rate, backward_share = T.training_throughput(model, X_tr, y_tr, config.train.batch_size)
    mechanism = M.collect(model, X_tr, y_tr, X_te, y_te, batch_size=config.train.batch_size,
                          seed=cell.seed)
    cuda = config.device.startswith("cuda")
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    batch = slice(0, config.train.batch_size)
    saved = T.activation_bytes(model, X_tr[batch], y_tr[batch])
    throughput = {
        "train_samples_per_s": train_rate,
        "infer_samples_per_s": T.inference_samples_per_s(model, X_te),
        "backward_share": backward_share,
        "activation_bytes": saved,  # one training step on a batch of batch_size
        "peak_memory_bytes": int(torch.cuda.max_memory_allocated()) if cuda else None,
    }
    threat = ThreatModel.from_split(split, config.attack.immutable,
                                    config.attack.perturb_categorical)
    robustness = evaluate_robustness(
        model, X_te, y_te, config.attack, threat=threat, transfer_sources=sources,
        seed=cell.seed, progress=lambda s: progress(f"attack {s}"), metric=table.metric)
    record = {
        "dataset": cell.dataset, "arm": cell.arm, "seed": cell.seed, "family": arm.family,
        "hidden": list(config.model_at(cell.width, cell.T).hidden),
        "T": None if arm.family == "mlp" else config.model_at(cell.width, cell.T).T,
        "threads": torch.get_num_threads(),  # a BLAS may sum in a thread-dependent order
        "val_curve": result.val_curve,
        "adversarial_eps": adversarial_eps,  # PGD adversarial training's L-inf eps, or None
        "density": M.hidden_gradient_density(mechanism),  # measured δI density; None: MLP
        "twin": arm.twin, "metric": table.metric, "clean": clean,
        "clean_metrics": T.clean_metrics(logits, y_te), "epochs": result.epochs,
        "throughput": throughput, "spike_rates": M.spike_rates(mechanism),
        "mechanism": mechanism, "attacks": robustness["attacks"],
        "robust": robustness["robust"], "broken_by": robustness["broken_by"],
        "examples": robustness["examples"],
        "mutable_features": threat.n_mutable, "seconds": time.perf_counter() - start,
    }
    return record, model


SOURCES = (("transfer_dense", DENSE_TWIN), ("transfer_mlp", MLP))  # in the order they run


def source_cells(cell: Cell) -> dict:
    """{attack name: source cell} of `cell`: the sources (same dataset, seed and grid point)
    that run before its arm: none for the dense twin, the twin for the MLP, both otherwise."""
    arms = [arm for _, arm in SOURCES]
    before = arms[:arms.index(cell.arm)] if cell.arm in arms else arms
    return {name: cell.source(arm) for name, arm in SOURCES if arm in before}


def transfer_sources(cell: Cell, models: dict) -> dict:
    """The models of `cell`'s source cells that this run has (trained or loaded)."""
    return {name: models[source] for name, source in source_cells(cell).items()
            if source in models}


def load_model(folder: RunFolder, cell: Cell, split: Split, config: StudyConfig):
    return model_from_bytes(folder.model_path(cell).read_bytes(), cell, split, config)


def model_from_bytes(state: bytes, cell: Cell, split: Split, config: StudyConfig):
    model = build(ARMS[cell.arm], split, config, cell)
    model.load_state_dict(torch.load(io.BytesIO(state), map_location=config.device,
                                     weights_only=True))
    return model.eval()


def run_study(config: StudyConfig, out, tables: dict, *, show_progress: bool = True,
              pool=None) -> list:
    """Runs every cell of `config` not yet finished in `out` and returns all its cells' records
    (finished earlier or now), in plan order. tables: dataset name -> Table. pool: None (one
    cell after another in this process) or an executor.Pool that runs cells in workers."""
    from tqdm.auto import tqdm

    folder = RunFolder(out, config)
    atomic.write_json(folder.root / "config.json", config.to_dict())  # the plan, before any cell
    cells = plan(config)
    todo = [c for c in cells if not folder.cell_path(c).exists()]
    if len(todo) < len(cells):
        print(f"{len(cells) - len(todo)} of {len(cells)} cells already finished in {out}: "
              "skipped")
    if pool is not None:
        from .executor import run_parallel

        return run_parallel(pool, config, folder, tables, cells, todo,
                            show_progress=show_progress)
    records, models, splits = {}, {}, {}
    bar = tqdm(total=len(todo), unit="cell", disable=not show_progress, dynamic_ncols=True)
    try:
        for cell in cells:
            key = (cell.dataset, cell.seed)
            if key not in splits:
                splits[key] = make_split(tables[cell.dataset], cell.seed,
                                         max_rows=config.max_rows)
            split = splits[key]
            done = folder.finished(cell)
            if done is not None:
                records[cell] = done
                if cell.arm in (DENSE_TWIN, MLP) and needed_as_source(cell, todo):
                    models[cell] = load_model(folder, cell, split, config)
                continue
            bar.set_description(f"{cell.dataset} {cell.arm} seed {cell.seed}")
            report = lambda s: bar.set_postfix_str(s, refresh=True)
            record, model = run_cell(cell, tables[cell.dataset], split, config,
                                     transfer_sources(cell, models), report)
            folder.save(cell, record, model)
            records[cell] = record
            if cell.arm in (DENSE_TWIN, MLP):
                models[cell] = model
            bar.update(1)
    finally:
        bar.close()
    return [records[c] for c in cells]


def needed_as_source(source: Cell, todo) -> bool:
    return any(source in source_cells(c).values() for c in todo)
