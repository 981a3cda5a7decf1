"""The study's configuration and its presets.

A run folder is tied to the settings that define a cell's result (model, training, attacks, data
size, device): resuming with other settings is refused, while datasets, arms and seeds may be
added to a run folder later (each (dataset, arm, seed) cell stands alone).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Optional

from .. import surrogate as G
from .arms import ARMS, DENSE_TWIN, STANDARD_ARMS, ModelConfig
from .attacks import AttackConfig
from .data import FULL
from .endpoints import AnalysisPlan
from .train import TrainConfig

DEFAULT_DATASETS = ("breast_cancer", "wine", "digits")
# Preset sizes, from CPU seconds (one thread, so other processes' load inflates them little) of
# AttackConfig's attacks on this project's 2-core CPU. An attack's time is mostly per-iteration
# overhead, nearly independent of the 30 to 100 rows attacked, so the seeds are what the budget
# buys. One seed of the default tables (27 cells): ~354 s, ~12-13 s a cell (breast_cancer and
# wine ~11, digits ~15; training and cost measurement ~2 of that), start-up and report ~20 s.
# 3 seeds: ~17 minutes measured on a loaded machine, ~12-14 on an idle one (the earlier, weaker
# attacks ran 1.2-1.4x faster idle than measured loaded): the most seeds that fit 15 minutes.
# The full preset adds telescope, adult and bio at ~21-23 s a cell (their training, ~9-10 s, plus
# these attacks on 6 to 74 mutable features): ~945 s a seed for 54 cells, 10 seeds ~2.6 hours.
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
    # endpoints, margins and tests, declared before the run; not a cell setting (analysis only)
    analysis: AnalysisPlan = field(default_factory=AnalysisPlan)
    widths: tuple = ()               # hidden widths as a grid factor (--hidden a,b); () : model's
    steps: tuple = ()                # time steps T as a grid factor (--steps a,b); () : model's
    timing_steps: int = 0            # interleaved timing phase: steps per arm (0: no phase)

    def cell_settings(self) -> dict:
        """What a finished cell's numbers depend on. (group only when given, so the settings of
        runs from before the option still match; so are widths and steps.)"""
        d = self.to_dict()
        keys = ("model", "train", "attack", "max_rows", "device") + tuple(
            k for k in ("group", "widths", "steps") if getattr(self, k) not in (None, ()))
        return {k: d[k] for k in keys}

    def grid(self) -> list:
        """The (width, T) points of the cell grid; None where that factor has a single value
        (the model's), so such cells keep the plain (dataset, arm, seed) key."""
        return [(w, t) for w in (self.widths or (None,)) for t in (self.steps or (None,))]

    def model_at(self, width: Optional[int], T: Optional[int]) -> ModelConfig:
        """The network of the grid point (width, T): every hidden layer `width` wide."""
        changes = {}
        if width is not None:
            changes["hidden"] = (width,) * len(self.model.hidden)
        if T is not None:
            changes["T"] = T
        return dataclasses.replace(self.model, **changes)

    def to_dict(self) -> dict:
        d = _jsonable(dataclasses.asdict(self))
        d["analysis"] = _jsonable(self.analysis.declaration())
        return d


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
    # The README's main command: <= 15 minutes on a 2-core CPU with --jobs 2 (scripts/main.sh).
    "default": StudyConfig(preset="default", datasets=DEFAULT_DATASETS, arms=STANDARD_ARMS,
                           seeds=tuple(range(DEFAULT_SEEDS))),
    # >= 10 seeds for the statistics; <= 3 hours on the same CPU (FULL_SEEDS below).
    "full": StudyConfig(preset="full", datasets=DEFAULT_DATASETS + FULL, arms=STANDARD_ARMS,
                        seeds=tuple(range(FULL_SEEDS)), max_rows=20000),
}


def _scale_preset() -> StudyConfig:
    """Where sparsity can pay: wide layers and long sequences on tables large enough to need
    them (synthetic make_classification tables, plus telescope and adult when installed)."""
    from .data import dataset_file
    from .synthetic import SYNTHETIC

    installed = tuple(d for d in ("telescope", "adult") if dataset_file(d) is not None)
    return StudyConfig(preset="scale", datasets=tuple(SYNTHETIC) + installed,
                       arms=(DENSE_TWIN, "topk_1", "topk_5", "aw_0.2", "mlp", "pgd_at",
                             "pgd_at_topk_5"), seeds=(0, 1, 2),
                       widths=(128, 512, 2048), steps=(10, 25), timing_steps=200)


PRESETS["scale"] = _scale_preset()
