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

from ._base import FitContext, Learner, register, sklearn_predict

#: ``min_samples_leaf="auto"`` by task. Measured on the shared tables (one
#: 80/20 split, 100 trees, test AUC / log loss / RMSE against leaf 1): binary
#: tables score better with leaves of 5 (adult rf AUC 0.9028 → 0.9140, et
#: 0.8866 → 0.9064; bank rf 0.9276 → 0.9300) at a quarter of the nodes;
#: regression scores the same with leaves of 2 (california rf RMSE 48,861 →
#: 48,814, house_8L 31,327 → 31,274) at under half the nodes; many-class
#: probabilities need full depth (letter rf log loss 0.275 → 0.324 at 2).
MIN_SAMPLES_LEAF = {"binary": 5, "regression": 2, "multiclass": 1}


class _ForestLearner(Learner):
    _classes: ClassVar[tuple[type, type]]
    default_params: ClassVar[dict[str, Any]] = {
        "n_estimators": 200,  # AUC flat past ~200 trees on adult; fit time linear
        "max_features": "sqrt",  # classic choice; regression uses 1.0 unless set
        # "auto": by task (MIN_SAMPLES_LEAF); bigger leaves shrink the trees
        "min_samples_leaf": "auto",
        "max_depth": None,
        # A bound on the trees however many rows (AutoGluon's): reached only
        # past ~50k rows, where it keeps a forest's model and its prediction
        # from growing with the table.
        "max_leaf_nodes": 15_000,
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
        if p["min_samples_leaf"] == "auto":
            p["min_samples_leaf"] = MIN_SAMPLES_LEAF[ctx.task]
        cls = clf_cls if ctx.is_classification else reg_cls
        self.model_ = cls(**p, n_jobs=ctx.n_threads, random_state=ctx.seed)
        self.model_.fit(X, y)

    def _overridden(self) -> set[str]:
        return {k for k, v in self.params.items() if v != self.default_params.get(k)}

    def _predict(self, X: np.ndarray) -> np.ndarray:
        if len(X) <= FEW_ROWS:
            return _sum_trees(self.model_, X, self.context)
        threads = min(getattr(self, "predict_threads", 1), len(X) // FEW_ROWS)
        if threads < 2:
            return sklearn_predict(self.model_, X, self.context)
        # Rows in parallel, each part through every tree in order: the same
        # sums as one call, unlike joblib's trees in parallel (n_jobs), whose
        # sums follow the order in which the trees finish.
        from concurrent.futures import ThreadPoolExecutor

        parts = np.array_split(X, threads)
        with ThreadPoolExecutor(max_workers=threads) as pool:
            outs = list(
                pool.map(lambda Z: sklearn_predict(self.model_, Z, self.context), parts)
            )
        return np.concatenate(outs)


#: Up to this many rows a forest predicts tree by tree here rather than
#: through joblib, whose per-tree dispatch is most of a small batch's time
#: (one row, 200 trees: 9.9 ms through joblib, 2.1 ms here); above, a loaded
#: model splits the rows over its ``predict_threads`` (10,000 adult rows,
#: two forests and seven boosters on 2 CPUs: 0.91 s → 0.76 s).
FEW_ROWS = 1000


def _sum_trees(model: Any, X: np.ndarray, context: FitContext) -> np.ndarray:
    """The forest's prediction, summed in sklearn's own order (equal to the bit).

    ``predict_proba`` / ``predict`` of a forest with ``n_jobs=1`` add the
    trees' outputs one after the other into a float64 array and divide by
    their number; this is that loop without the joblib dispatch.
    """
    Z = model._validate_X_predict(X)
    trees = model.estimators_
    if not context.is_classification:
        out = np.zeros(Z.shape[0], dtype=np.float64)
        for tree in trees:
            out += tree.predict(Z, check_input=False)
        out /= len(trees)
        return out
    proba = np.zeros((Z.shape[0], model.n_classes_), dtype=np.float64)
    for tree in trees:
        proba += tree.predict_proba(Z, check_input=False)
    proba /= len(trees)
    if proba.shape[1] == context.n_classes:
        return proba
    full = np.zeros((len(proba), context.n_classes))
    full[:, np.asarray(model.classes_, dtype=int)] = proba
    return full


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
