"""scikit-learn estimators backed by a full ``ensemble`` run on Ray.

``EnsembleClassifier().fit(X, y)`` runs the same pipeline as ``ensemble fit``
(folds, Ray, fusion, a run directory) and then predicts in-process with the
chosen model, held in memory; ``ensemble.load(run_dir)`` turns any complete run
directory back into a fitted estimator.

Without ``out=`` the run directory is a temporary one that the estimator owns:
it is removed when the estimator is garbage-collected (or the interpreter
exits), so a loop of fits (``cross_val_score``, ``GridSearchCV``, ``clone``)
leaves nothing behind. A pickled estimator carries its models and predicts
after its temporary run is gone.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import weakref
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, column_or_1d, validate_data

# Imported with this module, not in fit: a library that keeps an exception
# from its own import (optuna's optional dependencies, imported by Ray Tune)
# keeps the whole stack it was imported from alive, and a fit's frame holds
# the estimator, whose temporary run would then stay until exit.
from . import runtime
from .config import DEFAULT_FUSIONS, DEFAULT_LEARNERS, RunConfig
from .data import prepare
from .exceptions import DataError
from .model import FittedEnsemble
from .runner import fit_run

__all__ = ["EnsembleClassifier", "EnsembleRegressor", "load"]

_TARGET = "__ensemble_target__"
#: Name prefix of the temporary run directories of estimators fitted without
#: ``out=`` (``ensemble.load`` recognises a removed one).
TEMP_PREFIX = "ensemble-"


class _EnsembleBase(BaseEstimator):
    """Shared fit/predict of :class:`EnsembleClassifier` and the regressor."""

    def __init__(
        self,
        learners: Sequence[str] | None = None,
        fusions: Sequence[str] | None = None,
        *,
        portfolio: bool = True,
        repeats: int | None = None,
        keep_models: str = "chosen",
        refit: bool = True,
        n_folds: int = 5,
        holdout: float = 0.0,
        seed: int = 0,
        time_limit: float | None = None,
        n_trials: int | None = None,
        metric: str | None = None,
        learner_params: Mapping[str, Mapping[str, Any]] | None = None,
        out: str | None = None,
        address: str | None = None,
        report: bool = True,
        verbose: int = 0,
    ) -> None:
        self.learners = learners
        self.fusions = fusions
        self.portfolio = portfolio
        self.repeats = repeats
        self.keep_models = keep_models
        self.refit = refit
        self.n_folds = n_folds
        self.holdout = holdout
        self.seed = seed
        self.time_limit = time_limit
        self.n_trials = n_trials
        self.metric = metric
        self.learner_params = learner_params
        self.out = out
        self.address = address
        self.report = report
        self.verbose = verbose

    # -- helpers ---------------------------------------------------------------
    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True  # every learner handles missing values
        tags.non_deterministic = False
        return tags

    def _frame(self, X: Any, *, reset: bool) -> pd.DataFrame:
        """Validated features as a DataFrame (DataFrames keep their dtypes)."""
        if isinstance(X, pd.DataFrame):
            validate_data(
                self,
                X,
                reset=reset,
                skip_check_array=True,
            )
            if len(X) == 0:
                raise ValueError("Found array with 0 sample(s); at least 1 is required")
            frame = X.reset_index(drop=True)
            frame.columns = [str(c) for c in frame.columns]
            return frame
        arr = validate_data(
            self,
            X,
            reset=reset,
            dtype="numeric",
            ensure_all_finite="allow-nan",
            ensure_min_samples=2 if reset else 1,
        )
        names = getattr(self, "_columns", None)
        if reset or names is None:
            names = [f"x{i}" for i in range(arr.shape[1])]
        return pd.DataFrame(arr, columns=names)

    def _fit_frame(self, frame: pd.DataFrame, y: np.ndarray, task: str) -> None:
        if _TARGET in frame.columns:
            raise ValueError(f"a feature column may not be named {_TARGET!r}")
        self._release_run()  # a refit lets go of the previous temporary run
        self._columns = list(frame.columns)
        table = frame.copy()
        table[_TARGET] = y
        config = RunConfig(
            data=None,
            target=_TARGET,
            task=task,
            out=self.out or "",  # a temporary directory once the data is valid
            learners=tuple(self.learners or DEFAULT_LEARNERS),
            fusions=tuple(DEFAULT_FUSIONS if self.fusions is None else self.fusions),
            portfolio=self.portfolio,
            repeats=self.repeats,
            keep_models=self.keep_models,
            refit=self.refit,
            n_folds=self.n_folds,
            holdout=self.holdout,
            seed=self.seed,
            time_limit=self.time_limit,
            n_trials=self.n_trials,
            metric=self.metric,
            learner_params=dict(self.learner_params or {}),
            address=self.address,
            report=self.report,
            verbose=self.verbose,
        )
        data = prepare(
            table,
            _TARGET,
            task=task,
            n_folds=self.n_folds,
            holdout=self.holdout,
            seed=self.seed,
            data_sha256=pd.util.hash_pandas_object(table).sum().astype(str),
        )
        runtime.connect(self.address, verbose=self.verbose)  # kept for later fits
        out = self.out or tempfile.mkdtemp(prefix=TEMP_PREFIX)
        try:
            result = fit_run(config.replace(out=out), data=data)
        except BaseException:
            if self.out is None:
                shutil.rmtree(out, ignore_errors=True)
            raise
        self.run_dir_ = result.run_dir.location
        self.best_ = result.best
        self.leaderboard_ = result.leaderboard
        self.ensemble_ = FittedEnsemble(self.run_dir_)  # every model in memory
        if self.out is None:
            # The run is this estimator's: it goes when the estimator does (or
            # at exit). No reference to self, or it would never be collected.
            self._run_owner = weakref.finalize(self, shutil.rmtree, out, True)

    def _release_run(self) -> None:
        """Remove the temporary run this estimator owns, if any, now."""
        owner = self.__dict__.pop("_run_owner", None)
        if owner is not None:
            owner()

    def __getstate__(self) -> dict[str, Any]:
        # The models travel in the pickle (ensemble_ holds them in memory); the
        # ownership of a temporary directory does not.
        state = dict(super().__getstate__())
        state.pop("_run_owner", None)
        return state

    def _raw_predict(self, X: Any) -> np.ndarray:
        check_is_fitted(self, "ensemble_")
        frame = self._frame(X, reset=False)
        try:
            return self.ensemble_.predict_proba(frame)
        except DataError as exc:
            raise ValueError(str(exc)) from exc


class EnsembleClassifier(ClassifierMixin, _EnsembleBase):
    """A Ray-trained stacked ensemble as a scikit-learn classifier.

    Parameters
    ----------
    learners : sequence of str, optional
        Base learner keys (default: every family).
    fusions : sequence of str, optional
        Fusion keys (default: all); the best by nested CV is used.
    portfolio : bool, default=True
        Fit each family's portfolio configurations beside its defaults.
    repeats : int, optional
        Fold assignments per member (repeated bagging); default: as time
        allows under ``time_limit``, else 1.
    keep_models : {"chosen", "all"}, default="chosen"
        Models kept in the run directory (see ``RunConfig``).
    refit : bool, default=True
        Predict with the chosen model's members refitted on every row (see
        ``RunConfig``); False: with their fold models' average.
    n_folds : int, default=5
        Cross-validation folds that produce the out-of-fold predictions.
    holdout : float, default=0.0
        Fraction held out to score every model (never used to choose); 0
        trains on every row and scores on OOF predictions.
    seed : int, default=0
        Seed of the split, the folds and every learner.
    time_limit : float, optional
        Budget in seconds (turns on tuning).
    n_trials : int, optional
        Tune trials per learner family (turns on tuning).
    metric : str, optional
        Ranking metric (default ``roc_auc`` / ``log_loss``).
    learner_params : mapping, optional
        Per-learner parameter overrides.
    out : str, optional
        Parent of the run directory (default: a new temporary directory).
    address : str, optional
        Ray address; a local Ray is started when none is running.
    report : bool, default=True
        Write ``report.html`` into the run directory.
    verbose : int, default=0
        0 silent, 1 progress, 2 Ray's logs.

    Attributes
    ----------
    classes_ : ndarray
        Class labels, sorted.
    run_dir_ : str
        The complete run directory of the fit.
    best_ : str
        The chosen member or fusion.
    leaderboard_ : DataFrame
        One row per member and fusion.
    n_features_in_ : int
    feature_names_in_ : ndarray, only when fitted on a DataFrame

    Examples
    --------
    >>> from ensemble import EnsembleClassifier
    >>> clf = EnsembleClassifier(learners=["linear", "lgbm"])  # doctest: +SKIP
    >>> clf.fit(X, y)  # doctest: +SKIP
    >>> clf.predict_proba(X[:3])  # doctest: +SKIP
    """

    def fit(self, X: Any, y: Any) -> EnsembleClassifier:
        """Fit the ensemble on Ray.

        Parameters
        ----------
        X : array-like or DataFrame of shape (n_samples, n_features)
            Features; DataFrames may hold string categoricals and NaN.
        y : array-like of shape (n_samples,)
            Class labels.

        Returns
        -------
        self
        """
        frame = self._frame(X, reset=True)
        y = column_or_1d(np.asarray(y), warn=True)
        check_classification_targets(y)
        if len(y) != len(frame):
            raise ValueError(
                f"X has {len(frame)} samples but y has {len(y)}; they must match"
            )
        self.classes_ = np.unique(y)
        if len(self.classes_) < 2:
            raise ValueError(
                f"y has 1 class ({self.classes_[0]!r}); a classifier needs two"
            )
        self._fit_frame(frame, y, "binary" if len(self.classes_) == 2 else "multiclass")
        return self

    def predict_proba(self, X: Any) -> np.ndarray:
        """Class probabilities, columns in the order of ``classes_``."""
        return np.asarray(self._raw_predict(X), dtype=np.float64)

    def predict(self, X: Any) -> np.ndarray:
        """The most probable class of each row."""
        proba = self.predict_proba(X)  # first: raises NotFittedError before fit
        return self.classes_[np.argmax(proba, axis=1)]


class EnsembleRegressor(RegressorMixin, _EnsembleBase):
    """A Ray-trained stacked ensemble as a scikit-learn regressor.

    Parameters are those of :class:`EnsembleClassifier`; the default metric
    is ``rmse``.

    Attributes
    ----------
    run_dir_ : str
    best_ : str
    leaderboard_ : DataFrame
    n_features_in_ : int
    """

    def fit(self, X: Any, y: Any) -> EnsembleRegressor:
        """Fit the ensemble on Ray.

        Parameters
        ----------
        X : array-like or DataFrame of shape (n_samples, n_features)
        y : array-like of shape (n_samples,)

        Returns
        -------
        self
        """
        frame = self._frame(X, reset=True)
        y = column_or_1d(np.asarray(y), warn=True)
        if len(y) != len(frame):
            raise ValueError(
                f"X has {len(frame)} samples but y has {len(y)}; they must match"
            )
        try:
            y = y.astype(np.float64)
        except (TypeError, ValueError):
            raise ValueError("y must be numeric for a regressor") from None
        self._fit_frame(frame, y, "regression")
        return self

    def predict(self, X: Any) -> np.ndarray:
        """Predicted values."""
        return np.asarray(self._raw_predict(X), dtype=np.float64).reshape(-1)


def load(
    run_dir: str | os.PathLike[str], model: str | None = None
) -> EnsembleClassifier | EnsembleRegressor:
    """A fitted estimator from a complete run directory.

    Parameters
    ----------
    run_dir : path-like
        A complete run directory (``ensemble fit`` or ``Estimator.fit``).
    model : str, optional
        Member or fusion to predict with; the run's best when None.

    Returns
    -------
    EnsembleClassifier or EnsembleRegressor
        Ready to ``predict`` (no Ray needed); its parameters are the run's.
    """
    import json

    from .model import BUNDLE_FILE, is_bundle

    fitted = FittedEnsemble(run_dir, model)
    if is_bundle(fitted.run.path):  # one model, its scores, no run config
        info = json.loads((fitted.run.path / BUNDLE_FILE).read_text())
        config: dict[str, Any] = {}
        board = pd.DataFrame([{"model": fitted.model, **info.get("scores", {})}])
    else:
        config = fitted.run.read_manifest().get("config") or {}
        board = fitted.run.read_table("leaderboard.parquet")
    cls = EnsembleRegressor if fitted.task == "regression" else EnsembleClassifier
    est = cls(
        learners=list(config.get("learners") or []) or None,
        fusions=list(config.get("fusions") or []),
        portfolio=bool(config.get("portfolio", True)),
        repeats=config.get("repeats"),
        keep_models=str(config.get("keep_models") or "chosen"),
        refit=bool(config.get("refit", True)),
        n_folds=int(config.get("n_folds", 5)),
        holdout=float(config.get("holdout") or 0.0),
        seed=int(config.get("seed", 0)),
        time_limit=config.get("time_limit"),
        n_trials=config.get("n_trials"),
        metric=config.get("metric"),
        learner_params=config.get("learner_params") or None,
        out=fitted.run.out,
    )
    columns = list(fitted.schema.columns)
    est._columns = columns
    est.n_features_in_ = len(columns)
    if not all(c.startswith("x") and c[1:].isdigit() for c in columns):
        est.feature_names_in_ = np.asarray(columns, dtype=object)
    if fitted.classes:
        est.classes_ = np.asarray(fitted.classes)
    est.run_dir_ = fitted.run.location
    est.best_ = fitted.model
    est.leaderboard_ = board
    est.ensemble_ = fitted
    return est
