"""CatBoost gradient boosting (native format: ``.cbm``), native categoricals."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from ._base import Learner, register
from ._split import INNER_VALID, TimeBox, inner_split, pop_rounds, refit_rounds


@register
class CatBoostLearner(Learner):
    """CatBoost with native categoricals, early-stopped on an inner split.

    Categorical codes become CatBoost categories (missing: their own category),
    so its ordered target statistics see the categories themselves, which the
    other boosters only see as integer codes or LightGBM's partitions. On a
    GPU actor it trains with ``task_type="GPU"``; the time box (a callback)
    works on the CPU only, so a GPU fold relies on its round cap.
    """

    key = "cat"
    uses_gpu = True
    _model_file = "model.cbm"
    default_params: ClassVar[dict[str, Any]] = {
        "learning_rate": 0.05,  # AutoGluon's CatBoost rate; early stopping picks rounds
        "depth": 6,  # CatBoost's default (symmetric trees)
        "l2_leaf_reg": 3.0,  # CatBoost's default
        "max_rounds": 10_000,  # a cap for slow rates; the time box ends sooner
        "early_stopping_rounds": 50,
        # No refit by default: CatBoost is the slowest booster per round, and
        # the time a refit costs buys more as another member or a repeat.
        "refit": False,
    }
    search_space: ClassVar[dict[str, tuple[Any, ...]]] = {
        "learning_rate": ("loguniform", 0.02, 0.2),
        "depth": ("int", 4, 8),
        "l2_leaf_reg": ("loguniform", 1.0, 10.0),
    }
    time_boxed = True

    def _pool(self, X: np.ndarray, y: np.ndarray | None = None) -> Any:
        import catboost
        import pandas as pd

        cats = np.flatnonzero(self.context.cat_mask)
        if not len(cats):
            return catboost.Pool(X, label=y)
        frame = pd.DataFrame(X)
        for j in cats:
            # CatBoost takes categories as integers or strings, never NaN.
            codes = X[:, j]
            frame[j] = np.where(np.isnan(codes), -1, codes).astype(np.int64)
        return catboost.Pool(frame, label=y, cat_features=[int(j) for j in cats])

    def _model(self, params: dict[str, Any], rounds: int) -> Any:
        import catboost

        ctx = self.context
        common = {
            **params,
            "iterations": rounds,
            "random_seed": ctx.seed,
            "thread_count": ctx.n_threads,
            "task_type": "GPU" if ctx.device == "cuda" else "CPU",
            "allow_writing_files": False,  # no catboost_info/ in the cwd
            "verbose": False,
        }
        if ctx.task == "regression":
            return catboost.CatBoostRegressor(loss_function="RMSE", **common)
        loss = "Logloss" if ctx.task == "binary" else "MultiClass"
        return catboost.CatBoostClassifier(loss_function=loss, **common)

    def _fit(self, X: np.ndarray, y: np.ndarray) -> None:
        ctx = self.context
        p, max_rounds, patience, refit = pop_rounds(self.params)
        tr, va = inner_split(
            y, classify=ctx.is_classification, fraction=INNER_VALID, seed=ctx.seed
        )
        box = TimeBox(ctx.time_box_s)
        stop = _TimeBoxStop(box)
        model = self._model(p, max_rounds)
        boxed = ctx.time_box_s is not None and ctx.device != "cuda"
        model.fit(
            self._pool(X[tr], y[tr]),
            eval_set=self._pool(X[va], y[va]),
            early_stopping_rounds=patience,
            use_best_model=True,
            callbacks=[stop] if boxed else None,
        )
        self.truncated_ = stop.hit
        if refit and not stop.hit:
            rounds = refit_rounds(model.get_best_iteration() + 1)
            if box.affords_refit(model.tree_count_, rounds):
                model = self._model(p, rounds)
                model.fit(self._pool(X, y))
            else:  # keep the early-stopped model: the refit would overrun
                self.truncated_ = True
        self.model_ = model

    def _predict(self, X: np.ndarray) -> np.ndarray:
        pool = self._pool(X)
        if self.context.is_classification:
            proba = self.model_.predict_proba(pool, thread_count=self.predict_threads)
            return _full_width(
                np.asarray(proba), self.model_.classes_, self.context.n_classes
            )
        return np.asarray(self.model_.predict(pool, thread_count=self.predict_threads))

    def _save(self, path: Path) -> None:
        self.model_.save_model(str(path))

    def _load(self, path: Path) -> None:
        import catboost

        cls = (
            catboost.CatBoostClassifier
            if self.context.is_classification
            else catboost.CatBoostRegressor
        )
        self.model_ = cls()
        self.model_.load_model(str(path))


def _full_width(proba: np.ndarray, classes: Any, n_classes: int) -> np.ndarray:
    """One column per class: a class missing from a training fold gets zeros."""
    if proba.shape[1] == n_classes:
        return proba
    out = np.zeros((len(proba), n_classes))
    out[:, np.asarray(classes, dtype=int)] = proba
    return out


class _TimeBoxStop:
    """CatBoost callback: stop at the time box.

    ``use_best_model`` then keeps the best round so far on the inner split.
    """

    def __init__(self, box: TimeBox) -> None:
        self.box = box
        self.hit = False

    def after_iteration(self, info: Any) -> bool:
        self.hit = self.box.expired()
        return not self.hit
