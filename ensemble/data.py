"""Loading, validation, task inference, the optional holdout split and folds.

Everything here is pure pandas/numpy: no Ray. The output, :class:`PreparedData`,
holds one float32 feature matrix for all rows (categoricals as integer codes,
missing values as NaN), the encoded target and the fold id of every row
(``-1`` for holdout rows, when a holdout is asked for). Feature columns that
carry nothing (constant, or empty) are dropped with a warning and listed.
Each learner does its own preprocessing on top.
"""

from __future__ import annotations

import difflib
import hashlib
import logging
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.model_selection import KFold, StratifiedKFold, train_test_split

from .exceptions import DataError

__all__ = [
    "FeatureSchema",
    "PreparedData",
    "assign_folds",
    "repeat_folds",
    "infer_task",
    "load_table",
    "prepare",
]

logger = logging.getLogger(__name__)

_SKLEARN = ("breast_cancer", "digits", "wine", "diabetes", "iris", "california_housing")
# An integer-valued target with at most this many distinct values is taken as
# classes (letter has 26); more looks like a count or a price: regression.
_MAX_INFERRED_CLASSES = 50


def load_table(source: str) -> tuple[pd.DataFrame, str]:
    """Load a table and a content hash.

    Parameters
    ----------
    source : str
        ``.parquet``, ``.csv``, ``.tsv`` (optionally ``.gz``), a directory of
        Parquet files, ``sklearn:NAME`` or
        ``synthetic:TASK[,rows=N][,features=N][,seed=N]``.

    Returns
    -------
    frame : DataFrame
    sha256 : str
        Hash of the file bytes (or of the generated frame).
    """
    if source.startswith("sklearn:"):
        frame = _load_sklearn(source.split(":", 1)[1])
        return frame, _frame_hash(frame)
    if source.startswith("synthetic:"):
        frame = _load_synthetic(source.split(":", 1)[1])
        return frame, _frame_hash(frame)
    from . import storage

    if storage.is_uri(source):  # s3://, gs://: fetched once into a local cache
        if not storage.exists(source):
            raise DataError(
                f"data file {source!r} does not exist; check the --data path"
            )
        path = storage.fetch(source)
    else:
        path = Path(source)
    if not path.exists():
        raise DataError(f"data file {source!r} does not exist; check the --data path")
    name = path.name.lower()
    try:
        if path.is_dir() or name.endswith((".parquet", ".pq")):
            frame = pd.read_parquet(path)
        elif name.endswith((".csv", ".csv.gz", ".tsv", ".tsv.gz", ".txt", ".txt.gz")):
            sep = "\t" if ".tsv" in name else ","
            _check_header(path, sep)  # pandas would rename a repeat to "name.1"
            frame = pd.read_csv(path, sep=sep)
        else:
            raise DataError(
                f"data file {source!r} has an unsupported format; use .parquet, "
                ".csv or .tsv (optionally .gz), sklearn:NAME or synthetic:TASK"
            )
    except DataError:
        raise
    except Exception as exc:  # pyarrow/pandas raise many types for corrupt files
        first = (
            str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        )
        raise DataError(
            f"data file {source!r} cannot be read ({first[:160]}); check that it is a "
            "valid, complete file of the format its name says"
        ) from exc
    return frame, _file_hash(path)


def _check_header(path: Path, sep: str) -> None:
    import csv
    import gzip

    opener: Any = gzip.open if path.name.lower().endswith(".gz") else open
    with opener(path, "rt", newline="") as fh:
        header = next(csv.reader(fh, delimiter=sep), [])
    dup = sorted({c for c in header if header.count(c) > 1})
    if dup:
        raise DataError(
            f"duplicate column names {dup} in {str(path)!r}; rename them so each "
            "column is unique"
        )


def _file_hash(path: Path) -> str:
    h = hashlib.sha256()
    files = (
        sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    )
    for p in files:
        with open(p, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def _frame_hash(frame: pd.DataFrame) -> str:
    values = pd.util.hash_pandas_object(frame, index=False).to_numpy()
    return hashlib.sha256(
        values.tobytes() + ",".join(map(str, frame.columns)).encode()
    ).hexdigest()


def _load_sklearn(name: str) -> pd.DataFrame:
    from sklearn import datasets

    if name not in _SKLEARN:
        raise DataError(
            f"unknown dataset sklearn:{name}; choose one of {', '.join(_SKLEARN)}"
        )
    if name == "california_housing":  # needs a download; not available offline
        raise DataError(
            "sklearn:california_housing needs a download; pass a file instead"
        )
    loader = getattr(datasets, f"load_{name}")
    bunch = loader(as_frame=True)
    frame = bunch.frame.copy()
    if "target" not in frame.columns:
        frame["target"] = bunch.target
    return frame


def _load_synthetic(spec: str) -> pd.DataFrame:
    from sklearn.datasets import make_classification, make_regression

    task, *opts = spec.split(",")
    kw: dict[str, int] = {"rows": 1000, "features": 20, "seed": 0, "classes": 2}
    for opt in opts:
        key, _, value = opt.partition("=")
        if key not in kw or not value.isdigit():
            raise DataError(
                f"bad synthetic option {opt!r}; use rows=N, features=N, seed=N, "
                "classes=N"
            )
        kw[key] = int(value)
    n, p, seed = kw["rows"], kw["features"], kw["seed"]
    if task == "classification":
        X, y = make_classification(
            n_samples=n,
            n_features=p,
            n_informative=max(2, p // 2),
            n_redundant=p // 5,
            n_classes=kw["classes"],
            flip_y=0.03,
            random_state=seed,
        )
    elif task == "regression":
        X, y = make_regression(
            n_samples=n,
            n_features=p,
            n_informative=max(1, p // 2),
            noise=10.0,
            random_state=seed,
        )
    else:
        raise DataError(
            f"unknown synthetic task {task!r}; use classification or regression"
        )
    frame = pd.DataFrame(X.astype(np.float32), columns=[f"x{i}" for i in range(p)])
    frame["target"] = y
    return frame


@dataclass(frozen=True)
class FeatureSchema:
    """Feature columns, their kinds and category vocabularies.

    Parameters
    ----------
    columns : tuple of str
        Feature column names in matrix order.
    kinds : tuple of str
        ``"numeric"`` or ``"categorical"`` per column.
    categories : dict
        For each categorical column, its categories in code order (as strings).
    dtypes : dict
        The original pandas dtype of each column, for checks at predict time.
    """

    columns: tuple[str, ...]
    kinds: tuple[str, ...]
    categories: dict[str, list[str]] = field(default_factory=dict)
    dtypes: dict[str, str] = field(default_factory=dict)

    @property
    def cat_mask(self) -> np.ndarray:
        """Boolean mask of categorical columns."""
        return np.array([k == "categorical" for k in self.kinds], dtype=bool)

    @property
    def n_categories(self) -> list[int]:
        """Number of categories per column (0 for numeric)."""
        return [len(self.categories.get(c, [])) for c in self.columns]

    @classmethod
    def infer(cls, frame: pd.DataFrame) -> FeatureSchema:
        """Infer kinds and vocabularies from a training frame."""
        kinds, cats, dtypes = [], {}, {}
        for col in frame.columns:
            s = frame[col]
            dtypes[col] = str(s.dtype)
            if pd.api.types.is_bool_dtype(s) or pd.api.types.is_numeric_dtype(s):
                kinds.append("numeric")
            else:
                kinds.append("categorical")
                values = s.dropna().astype(str).unique().tolist()
                cats[col] = sorted(values)
        return cls(tuple(map(str, frame.columns)), tuple(kinds), cats, dtypes)

    def transform(self, frame: pd.DataFrame) -> np.ndarray:
        """Encode a frame as a float32 matrix (unseen categories become NaN)."""
        out = np.empty((len(frame), len(self.columns)), dtype=np.float32)
        for j, (col, kind) in enumerate(zip(self.columns, self.kinds, strict=True)):
            s = frame[col]
            if kind == "numeric":
                out[:, j] = pd.to_numeric(s, errors="coerce").to_numpy(
                    dtype=np.float64, na_value=np.nan
                )
            else:
                # Vectorised lookup: unseen categories get code -1, then NaN.
                vocab = pd.Index(self.categories[col])
                codes = vocab.get_indexer(s.astype("string")).astype(np.float64)
                codes[codes < 0] = np.nan
                out[:, j] = codes
        return out

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (stored in the manifest)."""
        return {
            "columns": list(self.columns),
            "kinds": list(self.kinds),
            "categories": self.categories,
            "dtypes": self.dtypes,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FeatureSchema:
        """Inverse of :meth:`to_dict`."""
        return cls(
            tuple(d["columns"]),
            tuple(d["kinds"]),
            dict(d["categories"]),
            dict(d["dtypes"]),
        )


@dataclass(frozen=True)
class PreparedData:
    """A validated table ready for training.

    Attributes
    ----------
    X : ndarray of shape (n_rows, n_features), float32
        All rows, training and holdout.
    y : ndarray of shape (n_rows,)
        Encoded class ids (int64) or values (float64).
    fold : ndarray of shape (n_rows,), int64
        Fold id of each training row, ``-1`` for holdout rows.
    task : str
        ``binary``, ``multiclass`` or ``regression``.
    classes : list
        Original class labels in code order (empty for regression).
    schema : FeatureSchema
    target : str
    data_sha256 : str
    dropped_columns : dict
        Feature columns left out because they carry nothing, with the reason
        (``"constant"`` or ``"empty"``).
    """

    X: np.ndarray
    y: np.ndarray
    fold: np.ndarray
    task: str
    classes: list[Any]
    schema: FeatureSchema
    target: str
    data_sha256: str
    dropped_columns: dict[str, str] = field(default_factory=dict)

    @property
    def n_rows(self) -> int:
        """Number of rows, training and holdout."""
        return int(self.X.shape[0])

    @property
    def n_classes(self) -> int:
        """Number of classes (0 for regression)."""
        return len(self.classes)

    @property
    def row_id(self) -> np.ndarray:
        """Row ids: the position of each row in the input table."""
        return np.arange(self.n_rows, dtype=np.int64)

    @property
    def n_folds(self) -> int:
        """Number of folds."""
        return int(self.fold.max()) + 1

    @property
    def has_holdout(self) -> bool:
        """Whether some rows are held out of every fit."""
        return bool((self.fold < 0).any())


def infer_task(y: pd.Series) -> str:
    """Infer the task from the target column.

    Strings, booleans and categoricals are classes; integer-valued numbers with
    at most 50 distinct values are classes too; anything else is regression.
    """
    n_unique = y.nunique(dropna=True)
    if not pd.api.types.is_numeric_dtype(y) or pd.api.types.is_bool_dtype(y):
        return "binary" if n_unique <= 2 else "multiclass"
    values = y.dropna().to_numpy(dtype=np.float64)
    integer_valued = bool(
        np.all(np.isfinite(values)) and np.all(values == np.round(values))
    )
    if integer_valued and n_unique <= _MAX_INFERRED_CLASSES:
        return "binary" if n_unique <= 2 else "multiclass"
    return "regression"


def _python_scalar(v: Any) -> Any:
    return v.item() if isinstance(v, np.generic) else v


def assign_folds(
    y: np.ndarray, *, task: str, n_folds: int, holdout: float, seed: int
) -> np.ndarray:
    """Optional holdout split, then k folds, shuffled with ``seed``, stratified.

    Parameters
    ----------
    y : ndarray of shape (n_rows,)
        Encoded target.
    task : str
        Task; stratify unless ``"regression"``.
    n_folds : int
        Number of folds.
    holdout : float
        Fraction of rows held out (0: none; every row is in a fold).
    seed : int
        Seed for both the split and the folds.

    Returns
    -------
    ndarray of shape (n_rows,)
        Fold id per row, ``-1`` for holdout rows.
    """
    n = len(y)
    classify = task != "regression"
    idx = np.arange(n)
    train_idx = idx
    if holdout > 0:
        # Always shuffled: tables often come sorted by time or label, and
        # unshuffled folds then score nonsense (bank_marketing: AUC 0.34).
        train_idx, _ = train_test_split(
            idx,
            test_size=holdout,
            random_state=seed,
            shuffle=True,
            stratify=y if classify else None,
        )
        train_idx = np.sort(train_idx)
    fold = np.full(n, -1, dtype=np.int64)
    fold[train_idx] = _kfold(y[train_idx], classify, n_folds, seed)
    return fold


def repeat_folds(
    y: np.ndarray, fold: np.ndarray, *, task: str, repeat: int, seed: int
) -> np.ndarray:
    """Fresh fold ids for the rows in ``fold``'s folds (repeated bagging).

    Repeat 0 is ``fold`` itself; repeat ``r`` deals the same rows (the holdout
    stays out) into as many folds with another seed, so each row is predicted
    again by models that never saw it, each trained beside other rows.

    Examples
    --------
    >>> y = np.array([0, 1] * 6)
    >>> f0 = assign_folds(y, task="binary", n_folds=3, holdout=0.0, seed=0)
    >>> f1 = repeat_folds(y, f0, task="binary", repeat=1, seed=0)
    >>> sorted(np.bincount(f1).tolist()), bool((f1 != f0).any())
    ([4, 4, 4], True)
    """
    if repeat == 0:
        return fold
    rows = np.flatnonzero(fold >= 0)
    out = fold.copy()
    n_folds = int(fold.max()) + 1
    out[rows] = _kfold(
        y[rows], task != "regression", n_folds, seed + _REPEAT_SEED_STEP * repeat
    )
    return out


# Seeds of the repeats' fold assignments: seed + 7919 * repeat (a prime far from
# the small seeds users pick, so repeat r of seed s never equals repeat 0 of s+1).
_REPEAT_SEED_STEP = 7919


def _kfold(y: np.ndarray, classify: bool, n_folds: int, seed: int) -> np.ndarray:
    """Fold id of each row: shuffled k-fold, stratified for classes."""
    splitter: StratifiedKFold | KFold
    if classify:
        splitter = StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    else:
        splitter = KFold(n_splits=n_folds, shuffle=True, random_state=seed)
    fold = np.empty(len(y), dtype=np.int64)
    with warnings.catch_warnings():
        # A class with fewer rows than folds is absent from some folds: that is
        # expected (and reported by prepare), not worth sklearn's warning.
        warnings.simplefilter("ignore", UserWarning)
        for k, (_, val) in enumerate(splitter.split(np.zeros(len(y)), y)):
            fold[val] = k
    return fold


def prepare(
    frame: pd.DataFrame,
    target: str,
    *,
    task: str = "auto",
    n_folds: int = 5,
    holdout: float = 0.0,
    seed: int = 0,
    drop_columns: tuple[str, ...] = (),
    data_sha256: str = "",
) -> PreparedData:
    """Validate a table and turn it into :class:`PreparedData`.

    Raises
    ------
    DataError
        With one line naming the problem and the fix.
    """
    _check_columns(frame, target, drop_columns)
    y_raw = frame[target]
    n_missing = int(y_raw.isna().sum())
    if n_missing:
        raise DataError(
            f"target column {target!r} has {n_missing} missing values; drop those rows "
            "or fill the target before fitting"
        )
    if task == "auto":
        task = infer_task(y_raw)
    features = frame.drop(columns=[target, *drop_columns])
    dropped = _useless_columns(features)
    features = features.drop(columns=list(dropped))
    y, classes, task = _encode_target(y_raw, target, task)
    _check_rows(len(frame), y, classes, n_folds=n_folds, holdout=holdout)
    schema = FeatureSchema.infer(features)
    return PreparedData(
        X=schema.transform(features),
        y=y,
        fold=assign_folds(y, task=task, n_folds=n_folds, holdout=holdout, seed=seed),
        task=task,
        classes=classes,
        schema=schema,
        target=target,
        data_sha256=data_sha256,
        dropped_columns=dropped,
    )


def _check_columns(
    frame: pd.DataFrame, target: str, drop_columns: tuple[str, ...]
) -> None:
    cols = [str(c) for c in frame.columns]
    dup = sorted({c for c in cols if cols.count(c) > 1})
    if dup:
        raise DataError(
            f"duplicate column names {dup}; rename them so each column is unique"
        )
    if len(frame) == 0:
        raise DataError("the table has no rows; check the data file")
    if target not in frame.columns:
        close = difflib.get_close_matches(target, cols, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise DataError(
            f"target column {target!r} is not in the table; {hint}columns: "
            + ", ".join(cols[:20])
            + (" …" if len(cols) > 20 else "")
        )
    missing_drop = [c for c in drop_columns if c not in frame.columns]
    if missing_drop:
        raise DataError(f"drop_columns names columns not in the table: {missing_drop}")


def _useless_columns(features: pd.DataFrame) -> dict[str, str]:
    """Feature columns that carry nothing: ``{name: "empty" | "constant"}``.

    A column with one value (or none) cannot help a model; it is left out with
    a warning (a broken export shows in the log and in the manifest's
    ``dropped_columns``) rather than failing a run over a harmless oddity.
    """
    if features.shape[1] == 0:
        raise DataError(
            "the table has no feature columns besides the target; add features"
        )
    dropped: dict[str, str] = {}
    for col in features.columns:
        if features[col].isna().all():
            dropped[str(col)] = "empty"
        elif features[col].nunique() <= 1:
            dropped[str(col)] = "constant"
    if len(dropped) == features.shape[1]:
        first = next(iter(dropped))
        raise DataError(
            f"every feature column is constant or empty (e.g. {first!r}); the "
            "target cannot be learned from them: check the data export"
        )
    for kind in ("empty", "constant"):
        cols = [c for c, why in dropped.items() if why == kind]
        if cols:
            logger.warning(
                "dropped %d %s feature column(s): %s",
                len(cols),
                kind,
                ", ".join(cols[:10]) + (" …" if len(cols) > 10 else ""),
            )
    return dropped


def _encode_target(
    y_raw: pd.Series, target: str, task: str
) -> tuple[np.ndarray, list[Any], str]:
    """The encoded target, its classes in code order, and the settled task."""
    if task == "regression":
        if not pd.api.types.is_numeric_dtype(y_raw) or pd.api.types.is_bool_dtype(
            y_raw
        ):
            raise DataError(
                f"target column {target!r} is not numeric but task is regression; use "
                "--task binary/multiclass or a numeric target"
            )
        y = y_raw.to_numpy(dtype=np.float64)
        if not np.all(np.isfinite(y)):
            raise DataError(
                f"target column {target!r} has infinite values; remove them"
            )
        return y, [], task
    uniques = pd.unique(y_raw)
    try:
        ordered = sorted(uniques)
    except TypeError:
        ordered = sorted(uniques, key=str)
    classes = [_python_scalar(v) for v in ordered]
    if len(classes) < 2:
        raise DataError(
            f"target column {target!r} has a single class ({classes[0]!r}); a "
            "classifier needs at least two"
        )
    if task == "binary" and len(classes) > 2:
        raise DataError(
            f"task is binary but target {target!r} has {len(classes)} classes; use "
            "--task multiclass"
        )
    if task == "multiclass" and len(classes) == 2:
        task = "binary"
    code = {c: i for i, c in enumerate(ordered)}
    return y_raw.map(code).to_numpy(dtype=np.int64), classes, task


def _check_rows(
    n_rows: int, y: np.ndarray, classes: list[Any], *, n_folds: int, holdout: float
) -> None:
    """Enough rows for the folds, and every class in training and OOF rows.

    With a holdout, a class needs a row in the holdout and one in every fold.
    Without, a class needs two rows (one to train on while another is
    predicted); a class with fewer rows than folds is absent from some folds,
    which every learner handles (its probability there is learnt from the
    other folds), so it is a warning.
    """
    n_train = n_rows - math.ceil(n_rows * holdout)
    if n_train < n_folds * 2:
        after = f" after a {holdout:.0%} holdout" if holdout else ""
        raise DataError(
            f"{n_rows} rows are too few for {n_folds} folds{after}; give more rows "
            "or lower --folds"
        )
    if not classes:
        return
    counts = np.bincount(y, minlength=len(classes))
    need = math.ceil(n_folds / (1 - holdout)) + 1 if holdout else 2
    rare = [(classes[i], int(c)) for i, c in enumerate(counts) if c < need]
    if rare:
        label, count = rare[0]
        what = f"{n_folds} stratified folds plus a holdout" if holdout else "OOF"
        raise DataError(
            f"class {label!r} has {count} rows, too few for {what} predictions "
            f"(needs >= {need}); merge rare classes, drop them"
            + (", or lower --folds" if holdout else "")
        )
    thin = [(classes[i], int(c)) for i, c in enumerate(counts) if c < n_folds]
    if thin:
        logger.warning(
            "class %r has %d rows, fewer than the %d folds: some folds train "
            "without it",
            thin[0][0],
            thin[0][1],
            n_folds,
        )
