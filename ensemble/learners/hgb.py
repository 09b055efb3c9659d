"""scikit-learn's histogram gradient boosting."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
from sklearn.ensemble import (
    HistGradientBoostingClassifier,
    HistGradientBoostingRegressor,
)

from ._base import Learner, register, sklearn_predict
from ._split import INNER_VALID, refit_rounds

# HGB bins categoricals into at most 255 bins; codes of wider columns stay numeric.
_MAX_CAT_BINS = 255


@register
class HGBLearner(Learner):
    """HistGradientBoosting with native categoricals and early stopping."""

    key = "hgb"
    default_params: ClassVar[dict[str, Any]] = {
        "learning_rate": 0.06,  # with early stopping, slower rates generalise better
        "max_iter": 1000,  # an upper bound: early stopping ends far sooner
        "max_leaf_nodes": 31,  # sklearn's default
        "min_samples_leaf": 20,  # sklearn's default
        "l2_regularization": 0.0,
        "max_features": 1.0,
        # Refit on the whole training fold for the early-stopped iterations (+10%).
        "refit": True,
    }

    search_space: ClassVar[dict[str, tuple[Any, ...]]] = {
        "learning_rate": ("loguniform", 0.02, 0.2),
        "max_leaf_nodes": ("int_log", 8, 128),
        "min_samples_leaf": ("int_log", 5, 100),
        "l2_regularization": ("loguniform", 1e-3, 10.0),
        "max_features": ("uniform", 0.5, 1.0),
    }
    tuning_overrides: ClassVar[dict[str, Any]] = {"refit": False}

    def _fit(self, X: np.ndarray, y: np.ndarray) -> None:
        ctx = self.context
        n_cat = np.asarray(ctx.n_categories or [0] * len(ctx.cat_mask))
        cat = np.asarray(ctx.cat_mask, dtype=bool) & (n_cat <= _MAX_CAT_BINS)
        cls = (
            HistGradientBoostingClassifier
            if ctx.is_classification
            else HistGradientBoostingRegressor
        )
        params = dict(self.params)
        refit = bool(params.pop("refit"))
        self.model_ = cls(
            **params,
            categorical_features=cat if cat.any() else None,
            early_stopping=True,
            # an inner split of the training fold, never the OOF fold
            validation_fraction=INNER_VALID,
            n_iter_no_change=20,
            random_state=ctx.seed,
        )
        self.model_.fit(X, y)
        if refit:
            rounds = refit_rounds(self.model_.n_iter_)
            self.model_.set_params(max_iter=rounds, early_stopping=False)
            self.model_.fit(X, y)

    def _predict(self, X: np.ndarray) -> np.ndarray:
        return sklearn_predict(self.model_, X, self.context)
