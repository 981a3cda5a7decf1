"""The interleaved throughput protocol: a phase of its own, after every cell is finished (and,
with --jobs / --ray, after the pool is closed), so that nothing else runs beside it.

For each (dataset, width, T) one process times the trained models of the first seed, the dense
twin and every sparse arm, interleaved: in each round every arm takes one Adam step on the same
batch, in an order that alternates between rounds (A B C, C B A, ...), after warm-up rounds, at
the same thread count. Each step is split into forward, backward and optimizer. Contention from
other processes then hits all arms alike, and the speedup is taken per round (the twin's step
over the arm's) with a bootstrap 95% CI of its median (scipy.stats.bootstrap).

Like for like: the dense twin as trained runs its direct-encoded first layer through
snnkernels.lif_constant (it never materializes the [T, B, H] current), while a sparse arm runs
the fused masked LIF on the expanded current. The reference here is the twin with
constant_kernel off (models.SpikingLinear), so every layer runs the same kernel apart from the
mask; the twin as trained is timed too ("dense_fast_sigmoid+lif_constant"), as what a dense user
would run.
"""

from __future__ import annotations

import copy
import json
import time

import numpy as np
import torch
from torch import nn

from .arms import ARMS, DENSE_TWIN

AS_TRAINED = f"{DENSE_TWIN}+lif_constant"
TIMING_FILE = "throughput.json"  # in the run folder: the rows of every timed group
PARTS = ("forward", "backward", "optimizer")


def like_for_like(model: nn.Module) -> nn.Module:
    """A copy of a dense TabularSNN whose layers all run the kernels of its sparse twins."""
    model = copy.deepcopy(model)
    for layer in list(model.layers) + [model.output]:
        layer.constant_kernel = False
    return model


def interleaved_steps(models: dict, X: torch.Tensor, y: torch.Tensor, *, batch_size: int,
                      steps: int = 200, warmup: int = 10, seed: int = 0) -> dict:
    """{name: float64 array [steps, 3]} of (forward, backward, optimizer) seconds of Adam steps
    of copies of `models` (name -> module; the originals are not touched), interleaved, on the
    same batches of (X, y) drawn with `seed`."""
    for name, value in (("steps", steps), ("batch_size", batch_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"interleaved_steps: {name} must be a positive int, got {value!r}")
    if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 0:
        raise ValueError(f"interleaved_steps: warmup must be an int >= 0, got {warmup!r}")
    if not models:
        raise ValueError("interleaved_steps: models is empty")
    arms = {name: copy.deepcopy(m).train() for name, m in models.items()}
    optims = {name: torch.optim.Adam(m.parameters(), lr=1e-4) for name, m in arms.items()}
    generator = torch.Generator().manual_seed(seed)
    n = min(batch_size, len(X))
    names = list(arms)
    times = {name: np.zeros((steps, 3)) for name in names}
    for round_ in range(warmup + steps):
        idx = torch.randperm(len(X), generator=generator)[:n].to(X.device)
        xb, yb = X[idx], y[idx]
        for name in (names if round_ % 2 == 0 else names[::-1]):
            t = _timed_step(arms[name], optims[name], xb, yb)
            if round_ >= warmup:
                times[name][round_ - warmup] = t
    return times


def _timed_step(model, opt, x, y):
    sync = torch.cuda.synchronize if x.device.type == "cuda" else (lambda: None)
    sync()
    t0 = time.perf_counter()
    loss = nn.functional.cross_entropy(model(x), y)
    sync()
    t1 = time.perf_counter()
    opt.zero_grad(set_to_none=True)
    loss.backward()
    sync()
    t2 = time.perf_counter()
    opt.step()
    sync()
    return t1 - t0, t2 - t1, time.perf_counter() - t2


def summarize(times: dict, reference: str, *, seed: int = 0) -> list:
    """One row per arm: median step and its IQR, the median of each part, and the speedup over
    `reference` (median of per-round ratios reference step / arm step) with its bootstrap 95%
    CI and the CI's half-width relative to the speedup."""
    from scipy import stats

    ref = times[reference].sum(1)
    rows = []
    for name, t in times.items():
        step = t.sum(1)
        q25, median, q75 = np.percentile(step, [25, 50, 75])
        row = {"arm": name, "steps": len(step), "step_median_s": float(median),
               "step_iqr_s": [float(q25), float(q75)],
               **{f"{part}_median_s": float(np.median(t[:, i])) for i, part in enumerate(PARTS)}}
        if name != reference:
            ratios = ref / step
            ci = stats.bootstrap((ratios,), np.median, confidence_level=0.95,
                                 method="percentile", n_resamples=5000,
                                 random_state=np.random.default_rng(seed)).confidence_interval
            speedup = float(np.median(ratios))
            row.update(speedup=speedup, speedup_ci=[float(ci.low), float(ci.high)],
                       ci_half_width=float((ci.high - ci.low) / 2 / speedup))
        rows.append(row)
    return rows


def timing_groups(records: list) -> dict:
    """(dataset, hidden, T) -> the records of the first seed's spiking arms there."""
    first_seed = {}
    records = [r for r in records if "hidden" in r]  # cells of older runs: not timed
    for r in records:
        key = (r["dataset"], tuple(r["hidden"]), r["T"])
        if r["family"] != "mlp":
            first_seed.setdefault(key, r["seed"])
    return {key: [r for r in records if r["family"] != "mlp" and r["seed"] == seed
                  and (r["dataset"], tuple(r["hidden"]), r["T"]) == key]
            for key, seed in first_seed.items()}


def _timed(arm: str) -> bool:
    """Sparse arms trained plainly (an adversarially trained arm's step is not a plain step)."""
    return ARMS[arm].sparse is not None and ARMS[arm].adversarial is None


def run_phase(config, folder, tables: dict, records: list, *, steps: int,
              show_progress: bool = True) -> list:
    """Times every (dataset, width, T) group of `records` that has a dense twin and at least
    one sparse arm; rows (one per arm and group) are also written to <out>/throughput.json.
    Groups already in that file are not timed again."""
    from tqdm.auto import tqdm

    from . import atomic
    from .data import make_split
    from .runner import Cell, load_model, tensors

    path = folder.root / TIMING_FILE
    rows = json.loads(path.read_text()) if path.exists() else []
    done = {(r["dataset"], tuple(r["hidden"]), r["T"]) for r in rows}
    groups = {k: v for k, v in timing_groups(records).items()
              if k not in done and any(r["arm"] == DENSE_TWIN for r in v)
              and any(_timed(r["arm"]) for r in v)}
    for (dataset, hidden, T), group in tqdm(groups.items(), desc="timing", unit="group",
                                            disable=not show_progress):
        seed = group[0]["seed"]
        split = make_split(tables[dataset], seed, max_rows=config.max_rows)
        X, y = tensors(split, config.device)[:2]
        width = hidden[0] if config.widths else None
        T_cell = T if config.steps else None
        models = {}
        for r in group:
            model = load_model(folder, Cell(dataset, r["arm"], seed, width, T_cell), split, config)
            if r["arm"] == DENSE_TWIN:
                models[DENSE_TWIN] = like_for_like(model)
                models[AS_TRAINED] = model
            elif _timed(r["arm"]):
                models[r["arm"]] = model
        times = interleaved_steps(models, X, y, batch_size=config.train.batch_size,
                                  steps=steps, seed=seed)
        for row in summarize(times, DENSE_TWIN, seed=seed):
            rows.append({"dataset": dataset, "hidden": list(hidden), "T": T, "seed": seed,
                         "threads": torch.get_num_threads(), "batch_size":
                         config.train.batch_size, **row})
        atomic.write_json(path, rows)  # after each group: an interruption keeps the others
    return rows
