import gzip

import numpy as np
import pandas as pd
import pytest

from ensemble.data import FeatureSchema, infer_task, load_table, prepare
from ensemble.exceptions import DataError
from tests.conftest import make_table, shared_dataset


@pytest.mark.parametrize(
    ("values", "task"),
    [
        (["a", "b", "a"], "binary"),
        ([True, False, True], "binary"),
        (["a", "b", "c"], "multiclass"),
        ([0, 1, 1, 0], "binary"),
        ([1, 2, 3, 26, 5], "multiclass"),
        ([0.5, 1.5, 2.25], "regression"),
        (list(range(100)), "regression"),
    ],
)
def test_infer_task(values, task):
    assert infer_task(pd.Series(values)) == task


@pytest.mark.parametrize("fmt", ["csv", "csv.gz", "tsv", "tsv.gz", "parquet"])
def test_load_formats_roundtrip(tmp_path, fmt):
    frame = make_table(50)
    path = tmp_path / f"t.{fmt}"
    if fmt == "parquet":
        frame.to_parquet(path)
    else:
        sep = "\t" if fmt.startswith("tsv") else ","
        text = frame.to_csv(sep=sep, index=False)
        if fmt.endswith(".gz"):
            path.write_bytes(gzip.compress(text.encode()))
        else:
            path.write_text(text)
    loaded, sha = load_table(str(path))
    assert list(loaded.columns) == list(frame.columns)
    assert len(loaded) == 50 and len(sha) == 64
    pd.testing.assert_series_equal(
        loaded["x2"], frame["x2"], check_dtype=False, atol=1e-9
    )


@pytest.mark.parametrize(
    ("name", "n", "task"),
    [
        ("breast_cancer", 569, "binary"),
        ("digits", 1797, "multiclass"),
        ("wine", 178, "multiclass"),
        ("diabetes", 442, "regression"),
    ],
)
def test_sklearn_datasets(name, n, task):
    frame, _ = load_table(f"sklearn:{name}")
    assert len(frame) == n and "target" in frame
    # digits has pixels that are blank in every image: the user drops them.
    blank = tuple(c for c in frame if frame[c].nunique() == 1)
    assert prepare(frame, "target", drop_columns=blank).task == task


def test_prepare_mixed_types_and_missing():
    frame = make_table(300)
    frame.loc[3, "colour"] = None
    d = prepare(frame, "target", n_folds=3, holdout=0.2, seed=0)
    assert d.task == "binary" and d.classes == ["no", "yes"]
    assert d.schema.kinds == ("numeric", "numeric", "categorical")
    assert d.schema.categories["colour"] == ["blue", "green", "red"]
    assert d.X.dtype == np.float32 and d.X.shape == (300, 3)
    assert np.isnan(d.X[3, 2])
    assert np.isnan(d.X[:, 0]).any()
    assert set(np.unique(d.fold)) == {-1, 0, 1, 2}


def test_schema_transform_unseen_category_is_missing():
    schema = FeatureSchema.infer(pd.DataFrame({"c": ["a", "b"], "x": [1.0, 2.0]}))
    X = schema.transform(pd.DataFrame({"c": ["b", "zzz"], "x": [3.0, 4.0]}))
    assert X[0, 0] == 1.0 and np.isnan(X[1, 0])
    assert FeatureSchema.from_dict(schema.to_dict()) == schema


def test_constant_and_empty_columns_are_dropped_with_a_warning(caplog):
    frame = make_table(100)
    frame["const"] = 1
    frame["empty"] = np.nan
    with caplog.at_level("WARNING", logger="ensemble.data"):
        d = prepare(frame, "target", n_folds=3)
    assert d.dropped_columns == {"const": "constant", "empty": "empty"}
    assert "const" not in d.schema.columns and "empty" not in d.schema.columns
    assert d.X.shape[1] == 3
    assert "dropped 1 constant feature column(s): const" in caplog.text
    assert "dropped 1 empty feature column(s): empty" in caplog.text
    # the same as leaving them out by hand
    by_hand = prepare(frame, "target", n_folds=3, drop_columns=("const", "empty"))
    np.testing.assert_array_equal(d.X, by_hand.X)
    assert by_hand.dropped_columns == {}


def test_a_table_of_nothing_but_constant_columns_is_refused():
    frame = pd.DataFrame({"a": [1] * 20, "b": [np.nan] * 20, "target": [0, 1] * 10})
    with pytest.raises(DataError, match="every feature column is constant or empty"):
        prepare(frame, "target", n_folds=3)


def test_rare_classes_without_a_holdout(caplog):
    # 3 rows of 'b' in 5 folds: some folds train without it, which is handled
    frame = _frame_with(target=["a"] * 117 + ["b"] * 3)
    with caplog.at_level("WARNING", logger="ensemble.data"):
        d = prepare(frame, "target", n_folds=5)
    assert "class 'b' has 3 rows, fewer than the 5 folds" in caplog.text
    assert not d.has_holdout and (d.fold >= 0).all()
    # one row cannot be both trained on and predicted
    one = _frame_with(target=["a"] * 119 + ["b"])
    with pytest.raises(DataError, match="class 'b' has 1 rows, too few for OOF"):
        prepare(one, "target", n_folds=5)


def _frame_with(**changes):
    f = make_table(120)
    for k, v in changes.items():
        f[k] = v
    return f


@pytest.mark.parametrize(
    ("frame", "kwargs", "match"),
    [
        (
            make_table(50),
            {"target": "nope"},
            "target column 'nope' is not in the table",
        ),
        (make_table(50), {"target": "targt"}, "did you mean 'target'"),
        (make_table(0), {}, "the table has no rows"),
        (
            _frame_with(target=[None] * 3 + ["a", "b"] * 58 + ["a"]),
            {},
            "has 3 missing values",
        ),
        (_frame_with(target="x"), {}, "has a single class"),
        (make_table(8), {"n_folds": 5}, "too few for 5 folds"),
        (
            _frame_with(target=["a"] * 117 + ["b"] * 3),
            {"holdout": 0.2},
            "class 'b' has 3 rows, too few for 5 stratified folds plus a holdout",
        ),
        (
            _frame_with(target=["a", "b", "c"] * 40),
            {"task": "binary"},
            "task is binary but",
        ),
        (
            make_table(60),
            {"task": "regression"},
            "is not numeric but task is regression",
        ),
        (
            _frame_with(x1=1, x2=np.nan, colour="z"),
            {},
            "every feature column is constant or empty",
        ),
        (make_table(60)[["target"]], {}, "no feature columns besides the target"),
    ],
)
def test_bad_tables(frame, kwargs, match):
    kwargs = {"target": "target", **kwargs}
    with pytest.raises(DataError, match=match):
        prepare(frame, kwargs.pop("target"), **kwargs)


def test_duplicate_columns():
    frame = pd.DataFrame([[1, 2, 0], [3, 4, 1]], columns=["a", "a", "target"])
    with pytest.raises(DataError, match=r"duplicate column names \['a'\]"):
        prepare(frame, "target")


def test_missing_and_corrupt_files(tmp_path):
    with pytest.raises(DataError, match="does not exist; check the --data path"):
        load_table(str(tmp_path / "nope.csv"))
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(b"not parquet at all")
    with pytest.raises(DataError, match="cannot be read"):
        load_table(str(bad))
    odd = tmp_path / "x.xlsx"
    odd.write_text("x")
    with pytest.raises(DataError, match="unsupported format"):
        load_table(str(odd))
    with pytest.raises(DataError, match="unknown dataset sklearn:nope"):
        load_table("sklearn:nope")


def test_shared_datasets_infer_the_right_tasks():
    cases = {
        "adult.tsv.gz": ("target", "binary"),
        "letter.tsv.gz": ("target", "multiclass"),
        "california_housing.tsv.gz": ("target", "regression"),
    }
    for name, (target, task) in cases.items():
        frame, _ = load_table(str(shared_dataset(name)))
        assert infer_task(frame[target]) == task
    bank, _ = load_table(str(shared_dataset("bank_marketing.csv")))
    d = prepare(bank, "y")
    assert d.task == "binary" and d.classes == ["no", "yes"]
    assert d.schema.kinds.count("categorical") == 9


def test_synthetic_source():
    frame, sha = load_table("synthetic:classification,rows=500,features=8,seed=1")
    assert frame.shape == (500, 9)
    again, sha2 = load_table("synthetic:classification,rows=500,features=8,seed=1")
    assert sha == sha2
    with pytest.raises(DataError, match="bad synthetic option"):
        load_table("synthetic:classification,cols=3")
