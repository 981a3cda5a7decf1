"""Time to accuracy: the training wall clock until an arm's validation metric first reaches the
dense twin's final value (its best epoch, whose weights it keeps) less a tolerance, from each
cell's validation curve. Per (dataset, seed, grid point), for every spiking arm. The clocks are
those of the cells' own runs: comparable within one run mode (sequential, or one cell per
worker), not across modes."""

from __future__ import annotations

from .arms import DENSE_TWIN

TOLERANCE = 0.005  # half a point of accuracy


def time_to_accuracy(records: list, tolerance: float = TOLERANCE) -> list:
    """One row per spiking cell that has a dense twin among `records`: {dataset, hidden, T,
    seed, arm, target, seconds (None: never reached), epochs (to reach it), twin_seconds}."""
    if not 0 <= tolerance < 1:
        raise ValueError(f"time_to_accuracy: tolerance must lie in [0, 1), got {tolerance!r}")
    key = lambda r: (r["dataset"], tuple(r["hidden"]), r["T"], r["seed"])
    records = [r for r in records if "val_curve" in r]  # cells of older runs have no curve
    twins = {key(r): r for r in records if r["arm"] == DENSE_TWIN}
    rows = []
    for r in records:
        twin = twins.get(key(r))
        if twin is None or r["family"] == "mlp":
            continue
        target = max(score for _, score in twin["val_curve"]) - tolerance
        reached = [(i + 1, s) for i, (s, score) in enumerate(r["val_curve"]) if score >= target]
        twin_reached = next(s for s, score in twin["val_curve"] if score >= target)
        rows.append({"dataset": r["dataset"], "hidden": list(r["hidden"]), "T": r["T"],
                     "seed": r["seed"], "arm": r["arm"], "target": target,
                     "seconds": reached[0][1] if reached else None,
                     "epochs": reached[0][0] if reached else None,
                     "twin_seconds": twin_reached})
    return rows
