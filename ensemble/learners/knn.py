"""k-nearest neighbours on one-hot categoricals and scaled numerics."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from sklearn.neighbors import KNeighborsClassifier, KNeighborsRegressor

from ._base import JOBLIB_COMPRESS, Learner, register, sklearn_predict
from ._preprocess import OneHotScaler


@register
class KNNLearner(Learner):
    """Distance-weighted k-nearest neighbours: cheap to fit, unlike the trees.

    Its errors differ from the boosters' (a local vote instead of axis-aligned
    splits), which is what a fusion can use; on its own it is rarely strong.
    """

    key = "knn"
    default_params: ClassVar[dict[str, Any]] = {
        # 15 neighbours weighted by distance: smooth enough for probabilities
        # (5 gives few distinct values), local enough to differ from the trees.
        "n_neighbors": 15,
        "weights": "distance",
    }
    # Five neighbours: a sharper, more local vote whose errors differ from the
    # default's. Beside the default in a 6-member letter run (OOF, nested CV of
    # the non-negative pooling) it took the pooled log loss from 0.0847 to
    # 0.0830 for 0.3 s of fitting.
    portfolio: ClassVar[dict[str, dict[str, Any]]] = {"local": {"n_neighbors": 5}}
    # k neighbours among every row are a narrower vote than the folds' k
    # neighbours averaged: knn_local's refit predicted worse on all three
    # tables measured at f9d3298 (benchmarks/README.md).
    refits_on_every_row: ClassVar[bool] = False
    search_space: ClassVar[dict[str, tuple[Any, ...]]] = {
        "n_neighbors": ("int_log", 3, 100),
        "weights": ("choice", ["uniform", "distance"]),
    }

    def _fit(self, X: np.ndarray, y: np.ndarray) -> None:
        ctx = self.context
        # Integer columns stay one scaled distance each (see OneHotScaler).
        pre = OneHotScaler(ctx.cat_mask, ctx.n_categories, int_levels=False)
        self.pre_ = pre.fit(X)
        Z = self.pre_.transform(X, np.float64)
        cls = KNeighborsClassifier if ctx.is_classification else KNeighborsRegressor
        k = max(1, min(int(self.params["n_neighbors"]), len(Z) - 1))
        self.model_ = cls(
            n_neighbors=k, weights=self.params["weights"], n_jobs=ctx.n_threads
        ).fit(Z, y)

    def _predict(self, X: np.ndarray) -> np.ndarray:
        self.model_.n_jobs = self.predict_threads
        return sklearn_predict(
            self.model_, self.pre_.transform(X, np.float64), self.context
        )

    def _save(self, path: Path) -> None:
        import joblib

        joblib.dump((self.pre_, self.model_), path, compress=JOBLIB_COMPRESS)

    def _load(self, path: Path) -> None:
        import joblib

        self.pre_, self.model_ = joblib.load(path)
