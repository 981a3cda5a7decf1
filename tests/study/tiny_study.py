"""The tiny study most CLI tests run in place of the quick preset (a few seconds a run): iris,
the dense twin, the MLP and TopK 25%, one seed, 8 hidden units, 3 time steps, two epochs, PGD of
two steps on 20 examples. Tests take the `tiny` fixture (tests/study/conftest.py) and call
`study(...)`; the Ray driver of test_study_fanout imports this module by name in its own process."""

from __future__ import annotations

import dataclasses

from snnkernels import cli
from snnkernels.study import config as C
from snnkernels.study.arms import ModelConfig
from snnkernels.study.attacks import AttackConfig
from snnkernels.study.train import TrainConfig

TINY = dataclasses.replace(
    C.PRESETS["quick"], datasets=("iris",), arms=("dense_fast_sigmoid", "mlp", "topk_25"),
    seeds=(0,), model=ModelConfig(hidden=(8,), T=3), train=TrainConfig(epochs=2, patience=1),
    attack=AttackConfig(eps_linf=(0.5, 50.0), eps_l2=(50.0,), attacks=("pgd",),
                        pgd_steps=2, pgd_restarts=1, max_examples=20, surrogates=(),
                        linearized=False),
    max_rows=None)


def study(*args) -> int:
    """`snnkernels study` on the quick preset (TINY under the `tiny` fixture), no progress bars."""
    return cli.main(["study", "--preset", "quick", "--no-progress", *args])


def refused(capsys, *args) -> str:
    """Run `study(*args)`, assert that it is refused (exit 2) with one line on stderr and no
    traceback, and return that line."""
    assert study(*args) == 2
    err = capsys.readouterr().err.strip()
    assert err and "\n" not in err and "Traceback" not in err
    return err
