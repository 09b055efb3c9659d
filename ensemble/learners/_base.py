"""Learner base class, fit context and the registry of short keys."""

from __future__ import annotations

import json
import os
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from ..exceptions import ConfigError, NotFittedError, UnknownLearnerError

__all__ = ["FitContext", "Learner", "available", "get", "register"]

_REGISTRY: dict[str, type[Learner]] = {}

#: zlib level of pickled scikit-learn models: a forest's arrays shrink ~4x
#: for a few seconds of saving (the native boosters' files are small anyway).
JOBLIB_COMPRESS = 3


@dataclass(frozen=True)
class FitContext:
    """What a learner needs to know about the task and where it runs.

    Parameters
    ----------
    task : str
        ``binary``, ``multiclass`` or ``regression``.
    n_classes : int
        Number of classes (0 for regression).
    cat_mask : tuple of bool
        Which feature columns hold categorical codes.
    n_categories : tuple of int
        Category count per column (0 for numeric).
    seed : int, default=0
        Seed for every random choice of the learner.
    n_threads : int, default=1
        Threads the learner may use (the CPUs its actor reserved).
    device : str, default="cpu"
        ``"cpu"`` or ``"cuda"``.
    time_box_s : float, optional
        Wall seconds the fit may take (set by the fit stage under a time
        limit). Learners with ``time_boxed`` stop adding boosting rounds when
        it runs out and keep the best rounds so far; the others ignore it.
    predict_rows : int, default=0
        Rows the fitted model will predict (the OOF fold): the boosters end
        their rounds early when predicting them would outlast
        ``predict_reserve_s`` (:class:`ensemble.learners._split.PredictCost`).
    predict_reserve_s : float, default=0.0
        Seconds kept for that prediction after the time box.
    """

    task: str
    n_classes: int
    cat_mask: tuple[bool, ...]
    n_categories: tuple[int, ...] = field(default=())
    seed: int = 0
    n_threads: int = 1
    device: str = "cpu"
    time_box_s: float | None = None
    predict_rows: int = 0
    predict_reserve_s: float = 0.0

    @property
    def is_classification(self) -> bool:
        """True for binary and multiclass tasks."""
        return self.task != "regression"


class Learner(ABC):
    """A base learner: one family behind a short registry key.

    Subclasses set ``key``, ``default_params`` and implement ``_fit``,
    ``_predict``, ``_save`` and ``_load``. ``predict`` returns probabilities of
    shape ``(n_samples, n_classes)`` for classification and values of shape
    ``(n_samples,)`` for regression.

    Parameters
    ----------
    params : dict, optional
        Overrides of ``default_params``; unknown names are a ``ConfigError``.
    context : FitContext
        Task, categorical layout, seed, threads and device.
    """

    key: ClassVar[str]
    #: Whether the learner can use a GPU when its actor has one.
    uses_gpu: ClassVar[bool] = False
    default_params: ClassVar[dict[str, Any]] = {}
    #: Named configurations fitted beside the defaults as members
    #: ``<key>_<name>`` (the portfolio): settings known to do well on tables
    #: and to differ from the defaults, tried before any search.
    portfolio: ClassVar[dict[str, dict[str, Any]]] = {}
    #: Hyperparameter search space (see ``ensemble.learners._space``).
    search_space: ClassVar[dict[str, tuple[Any, ...]]] = {}
    #: Parameters set during tuning trials only (speed; refit is uniform gain).
    tuning_overrides: ClassVar[dict[str, Any]] = {}
    #: Whether the fit honours ``FitContext.time_box_s`` (boosters and the MLP:
    #: training stops at the box with the rounds or epochs so far, so a fold
    #: cannot overrun).
    time_boxed: ClassVar[bool] = False
    #: Parameters that fix the shape of a warm-startable model (the weights of
    #: an earlier fit can seed a new one only with the same values); empty for
    #: learners that cannot warm-start.
    warm_start_params: ClassVar[tuple[str, ...]] = ()
    #: Whether the refit stage (``ensemble.refit``) fits the learner's members
    #: once more on every row. False where the average of the fold models
    #: predicts better than one model on all rows (the MLP, k-NN: the average
    #: is a bagged model, the refit a single one).
    refits_on_every_row: ClassVar[bool] = True
    _model_file: ClassVar[str] = "model.bin"

    def __init__(
        self, params: dict[str, Any] | None = None, *, context: FitContext
    ) -> None:
        self.params = self.check_params(params or {})
        self.context = context
        self.model_: Any = None
        #: Warm start: a saved model (:meth:`saved_state`) whose weights the fit
        #: starts from (learners with ``warm_start_params`` only).
        self.init_state: bytes | None = None
        #: Set by a fit that stopped at its time box (fewer rounds than asked).
        self.truncated_ = False
        #: Threads a prediction may use where the learner splits the rows
        #: itself (the forests); the fit's ``n_threads`` unless a loaded model
        #: is given the machine's.
        self.predict_threads = context.n_threads

    @classmethod
    def check_params(cls, params: dict[str, Any]) -> dict[str, Any]:
        """Merge ``params`` over the defaults, rejecting unknown names."""
        unknown = sorted(set(params) - set(cls.default_params))
        if unknown:
            raise ConfigError(
                f"unknown parameter(s) {unknown} for learner {cls.key!r}; valid: "
                f"{', '.join(sorted(cls.default_params))}"
            )
        return {**cls.default_params, **params}

    @classmethod
    def portfolio_applies(
        cls, params: dict[str, Any], X: np.ndarray, context: FitContext
    ) -> bool:
        """Whether a portfolio configuration is worth fitting on this table.

        A configuration that would fit the same model as the defaults here
        (the plain MLP on a table without integer-level columns) is left out.

        Parameters
        ----------
        params : dict
            The configuration, merged over the defaults.
        X : ndarray of shape (n_rows, n_features)
            The rows in the folds.
        context : FitContext
        """
        return True

    def fit(self, X: np.ndarray, y: np.ndarray) -> Learner:
        """Fit on a float32 matrix (categoricals as codes, NaN = missing)."""
        self._fit(_writable(X), np.asarray(y))
        return self

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Probabilities ``(n, n_classes)`` or values ``(n,)``."""
        if self.model_ is None:
            raise NotFittedError(f"learner {self.key!r} is not fitted; call fit first")
        out = np.asarray(self._predict(_writable(X)), dtype=np.float64)
        if self.context.is_classification:
            if out.ndim == 1:  # a positive-class vector
                out = np.column_stack([1.0 - out, out])
            out = np.clip(out, 0.0, 1.0)
            out /= np.maximum(out.sum(axis=1, keepdims=True), 1e-300)
        return out

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the fitted learner to directory ``path`` (model, then meta.json).

        ``meta.json`` is written last, so it marks a complete save: a fit
        killed while saving (the time limit, a lost worker) leaves a folder
        without it, which :func:`ensemble.artifacts.fold_dirs` skips.
        """
        p = Path(path)
        p.mkdir(parents=True, exist_ok=True)
        (p / "meta.json").unlink(missing_ok=True)  # an earlier save's marker
        meta = {"key": self.key, "params": self.params, "context": asdict(self.context)}
        self._save(p / self._model_file)
        # Written under another name and renamed: a process killed while
        # writing must leave no marker (an empty meta.json would count as a
        # complete save on resume).
        tmp = p / "meta.json.tmp"
        try:
            tmp.write_text(json.dumps(meta, default=_jsonable))
            os.replace(tmp, p / "meta.json")
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise

    @classmethod
    def saved_state(cls, path: str | os.PathLike[str]) -> bytes:
        """The model file that :meth:`save` wrote under ``path``, as bytes."""
        return (Path(path) / cls._model_file).read_bytes()

    @staticmethod
    def load(path: str | os.PathLike[str]) -> Learner:
        """Load a learner written by :meth:`save`."""
        p = Path(path)
        meta = json.loads((p / "meta.json").read_text())
        ctx = meta["context"]
        context = FitContext(
            **{
                **ctx,
                "cat_mask": tuple(ctx["cat_mask"]),
                "n_categories": tuple(ctx["n_categories"]),
            }
        )
        cls = get(meta["key"])
        learner = cls(meta["params"], context=context)
        learner._load(p / cls._model_file)
        return learner

    @abstractmethod
    def _fit(self, X: np.ndarray, y: np.ndarray) -> None: ...

    @abstractmethod
    def _predict(self, X: np.ndarray) -> np.ndarray: ...

    def _save(self, path: Path) -> None:
        import joblib

        joblib.dump(self.model_, path, compress=JOBLIB_COMPRESS)

    def _load(self, path: Path) -> None:
        import joblib

        self.model_ = joblib.load(path)


def sklearn_predict(model: Any, Z: np.ndarray, context: FitContext) -> np.ndarray:
    """Full-width probabilities (or values) from a fitted sklearn estimator.

    A class missing from a training fold has no column in ``predict_proba``;
    it gets a column of zeros so every fold's output has ``n_classes`` columns.
    """
    if not context.is_classification:
        return np.asarray(model.predict(Z))
    proba = model.predict_proba(Z)
    if proba.shape[1] == context.n_classes:
        return np.asarray(proba)
    out = np.zeros((len(proba), context.n_classes))
    out[:, np.asarray(model.classes_, dtype=int)] = proba
    return out


def _writable(X: np.ndarray) -> np.ndarray:
    """float32 array that libraries may write to.

    Arrays from Ray's object store are read-only, and some estimators (sklearn
    forests) refuse read-only buffers.
    """
    out = np.asarray(X, dtype=np.float32)
    return out if out.flags.writeable else out.copy()


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def register(cls: type[Learner]) -> type[Learner]:
    """Class decorator adding a learner to the registry under ``cls.key``."""
    _REGISTRY[cls.key] = cls
    return cls


# Listing order (simple to complex), independent of module import order.
_ORDER = ("linear", "knn", "rf", "et", "hgb", "lgbm", "xgb", "cat", "mlp")


def available() -> list[str]:
    """Registered learner keys, in the design's order (others after)."""
    rank = {k: i for i, k in enumerate(_ORDER)}
    return sorted(_REGISTRY, key=lambda k: (rank.get(k, len(_ORDER)), k))


def get(key: str) -> type[Learner]:
    """The learner class registered under ``key``."""
    try:
        return _REGISTRY[key]
    except KeyError:
        raise UnknownLearnerError(
            f"unknown learner {key!r}; valid: {', '.join(available())}"
        ) from None
