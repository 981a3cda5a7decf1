"""Synthetic tables for the scale preset: scikit-learn's make_classification with a fixed
generator seed, so every run and every node sees the same rows. Half the features carry the
signal (a quarter informative, a quarter linear combinations of those), the rest is noise, and
1% of labels are flipped so that no arm reaches 100%."""

from __future__ import annotations

import numpy as np

ROWS = 50_000
GENERATOR_SEED = 0
SYNTHETIC = {"synthetic_64": 64, "synthetic_256": 256}  # name -> number of features


def load_synthetic(name: str):
    """The synthetic table `name` (one of SYNTHETIC) as a data.Table."""
    from sklearn.datasets import make_classification

    from .data import DataError, Table

    if name not in SYNTHETIC:
        raise DataError(f"unknown synthetic table {name!r}; choose from {', '.join(SYNTHETIC)}")
    features = SYNTHETIC[name]
    X, y = make_classification(n_samples=ROWS, n_features=features,
                               n_informative=features // 4, n_redundant=features // 4,
                               n_classes=2, flip_y=0.01, random_state=GENERATOR_SEED)
    return Table(name=name, X=X.astype(np.float32), y=y.astype(np.int64),
                 feature_names=[f"x{i}" for i in range(features)], class_names=["0", "1"],
                 metric="accuracy")
