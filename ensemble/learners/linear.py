"""Linear models: logistic regression (classification) and ridge (regression)."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
from sklearn.linear_model import LogisticRegression, Ridge

from ._base import JOBLIB_COMPRESS, Learner, register, sklearn_predict
from ._preprocess import OneHotScaler


@register
class LinearLearner(Learner):
    """Logistic regression or ridge over one-hot categoricals and scaled numerics."""

    key = "linear"
    default_params: ClassVar[dict[str, Any]] = {
        "C": 1.0,  # inverse L2 strength (classification); 1.0 = sklearn's default
        "alpha": 1.0,  # ridge L2 strength (regression); sklearn's default
        "max_iter": 500,  # lbfgs converges well inside this on scaled inputs
    }

    search_space: ClassVar[dict[str, tuple[Any, ...]]] = {
        "C": ("loguniform", 1e-3, 1e2),
        "alpha": ("loguniform", 1e-3, 1e2),
    }

    def _fit(self, X: np.ndarray, y: np.ndarray) -> None:
        ctx = self.context
        self.pre_ = OneHotScaler(ctx.cat_mask, ctx.n_categories).fit(X)
        Z = self.pre_.transform(X, np.float64)
        if ctx.is_classification:
            model: Any = LogisticRegression(
                C=self.params["C"], max_iter=self.params["max_iter"]
            )
        else:
            model = Ridge(alpha=self.params["alpha"])
        model.fit(Z, y)
        self.model_ = model

    def _predict(self, X: np.ndarray) -> np.ndarray:
        return sklearn_predict(
            self.model_, self.pre_.transform(X, np.float64), self.context
        )

    def _save(self, path: Any) -> None:
        import joblib

        joblib.dump((self.pre_, self.model_), path, compress=JOBLIB_COMPRESS)

    def _load(self, path: Any) -> None:
        import joblib

        self.pre_, self.model_ = joblib.load(path)
