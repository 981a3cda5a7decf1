"""The study's configuration and its three presets (issue 5 item 1).

A run folder is tied to the settings that define a cell's result (model, training, attacks, data
size, device): resuming with other settings is refused, while datasets, arms and seeds may be
added to a run folder later (each (dataset, arm, seed) cell stands alone).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Optional

from .. import surrogate as G
from .arms import ARMS, ModelConfig
from .attacks import AttackConfig
from .data import FULL
from .train import TrainConfig

DEFAULT_DATASETS = ("breast_cancer", "wine", "digits")
# Preset sizes, from per-cell times with AttackConfig's attacks on one core of this project's
# 2-core CPU (CPU seconds, so contention from other processes does not inflate them). One seed
# of the default tables with 40 examples per cell: about 310 s for 27 cells (breast_cancer and
# wine ~10 s a cell, digits ~15 s, the attacks ~8.7 s of that; start-up, report and figures
# ~20 s a run). Attack time grows about linearly with the examples attacked, so 30 examples
# give ~250 s a seed and 3 seeds ~12.5 minutes: inside the default's 15 with room for a slower
# machine. The full preset adds telescope, adult and bio (training on <= 12,000 rows ~9-10 s a
# cell, attacks on 6 to 74 mutable features ~6-10 s): ~85 s a seed-arm across the 6 tables,
# 10 seeds x 9 arms ~2.1 hours of the 3 allowed.
DEFAULT_SEEDS = 3
FULL_SEEDS = 10


@dataclass(frozen=True)
class StudyConfig:
    preset: str
    datasets: tuple
    arms: tuple
    seeds: tuple
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    attack: AttackConfig = field(default_factory=AttackConfig)
    max_rows: Optional[int] = None   # stratified subsample of each table (None: all rows)
    device: str = "cpu"
    group: Optional[str] = None      # --group COL of a user table (split by groups)

    def cell_settings(self) -> dict:
        """What a finished cell's numbers depend on. (group only when given, so the settings of
        runs from before the option still match.)"""
        d = self.to_dict()
        keys = ("model", "train", "attack", "max_rows", "device") + (
            ("group",) if self.group is not None else ())
        return {k: d[k] for k in keys}

    def to_dict(self) -> dict:
        return _jsonable(dataclasses.asdict(self))


def _jsonable(obj):
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        return obj
    return repr(obj)  # surrogates and other small value objects


PRESETS = {
    # End to end in well under a minute: the tests run it. Its attacks are far weaker than the
    # other presets' (few steps, no restarts, 20 gradient-free queries): a smoke test only,
    # and the report says so (attack_checks.FULL_STRENGTH).
    "quick": StudyConfig(
        preset="quick", datasets=("breast_cancer",),
        arms=("dense_fast_sigmoid", "topk_5", "aw_0.2", "mlp"), seeds=(0, 1),
        model=ModelConfig(hidden=(32, 32), T=8),
        train=TrainConfig(epochs=12, patience=4),
        attack=AttackConfig(eps_linf=(0.1, 5.0), eps_l2=(0.1, 5.0), pgd_steps=5, pgd_restarts=1,
                            apgd_steps=5, apgd_restarts=1, square_queries=20, max_examples=60,
                            surrogates=(G.atan(alpha=10),)),
        max_rows=300),
    # The README's main command: <= 15 minutes on a 2-core CPU. DEFAULT_SEEDS below.
    "default": StudyConfig(preset="default", datasets=DEFAULT_DATASETS, arms=tuple(ARMS),
                           seeds=tuple(range(DEFAULT_SEEDS))),
    # >= 10 seeds for the statistics; <= 3 hours on the same CPU (FULL_SEEDS below).
    "full": StudyConfig(preset="full", datasets=DEFAULT_DATASETS + FULL, arms=tuple(ARMS),
                        seeds=tuple(range(FULL_SEEDS)), max_rows=20000),
}
