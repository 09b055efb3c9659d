"""Bagged tree ensembles: random forest and extra trees."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
from sklearn.ensemble import (
    ExtraTreesClassifier,
    ExtraTreesRegressor,
    RandomForestClassifier,
    RandomForestRegressor,
)

from ._base import Learner, register, sklearn_predict


class _ForestLearner(Learner):
    _classes: ClassVar[tuple[type, type]]
    default_params: ClassVar[dict[str, Any]] = {
        "n_estimators": 200,  # AUC flat past ~200 trees on adult; fit time linear
        "max_features": "sqrt",  # classic choice; regression uses 1.0 unless set
        "min_samples_leaf": 1,  # fully grown trees, the forest averages the variance
        "max_depth": None,
    }

    search_space: ClassVar[dict[str, tuple[Any, ...]]] = {
        "max_features": ("choice", ["sqrt", 0.3, 0.5, 0.8]),
        "min_samples_leaf": ("int_log", 1, 20),
    }
    # Fewer trees while tuning: the ranking of configs settles long before 200.
    tuning_overrides: ClassVar[dict[str, Any]] = {"n_estimators": 100}

    def _fit(self, X: np.ndarray, y: np.ndarray) -> None:
        ctx = self.context
        p = dict(self.params)
        clf_cls, reg_cls = self._classes
        if not ctx.is_classification and "max_features" not in self._overridden():
            p["max_features"] = 1.0
        cls = clf_cls if ctx.is_classification else reg_cls
        self.model_ = cls(**p, n_jobs=ctx.n_threads, random_state=ctx.seed)
        self.model_.fit(X, y)

    def _overridden(self) -> set[str]:
        return {k for k, v in self.params.items() if v != self.default_params.get(k)}

    def _predict(self, X: np.ndarray) -> np.ndarray:
        return sklearn_predict(self.model_, X, self.context)


@register
class RandomForestLearner(_ForestLearner):
    """Random forest (sklearn; handles missing values natively)."""

    key = "rf"
    _classes = (RandomForestClassifier, RandomForestRegressor)


@register
class ExtraTreesLearner(_ForestLearner):
    """Extremely randomised trees (sklearn; handles missing values natively)."""

    key = "et"
    _classes = (ExtraTreesClassifier, ExtraTreesRegressor)
