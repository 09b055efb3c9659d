"""LightGBM gradient boosting (native format: model text file)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from ._base import Learner, register
from ._split import (
    INNER_VALID,
    PredictCost,
    TimeBox,
    inner_split,
    pop_rounds,
    refit_rounds,
)

#: ``min_sum_hessian_in_leaf`` of multiclass fits. A class of a few rows that
#: the trees already predict with confidence leaves a tiny hessian in its
#: leaves, and LightGBM's default (1e-3) lets those leaves take huge values:
#: on shuttle (classes of 10-50 rows) some test rows got probability 1e-15 for
#: their class and early stopping ended at 48 rounds. One split of each shared
#: multiclass table, test log loss, default -> 0.1 (``benchmarks/README.md``):
#: shuttle 0.0754 -> 0.0018, fars 0.554 -> 0.447, krkopt 0.285 -> 0.258,
#: pendigits 0.0425 -> 0.0371, letter 0.1203 -> 0.1162, sleep 0.5973 -> 0.5983.
MULTICLASS_MIN_HESSIAN = 0.1


@register
class LightGBMLearner(Learner):
    """LightGBM with native categoricals and early stopping on an inner split."""

    key = "lgbm"
    _model_file = "model.txt"
    default_params: ClassVar[dict[str, Any]] = {
        "learning_rate": 0.05,  # half the default; early stopping picks the rounds
        "num_leaves": 31,  # LightGBM's default
        "min_child_samples": 20,  # LightGBM's default
        "feature_fraction": 0.9,  # mild column sampling decorrelates the trees
        "bagging_fraction": 1.0,
        "lambda_l2": 0.0,
        "extra_trees": False,  # random thresholds: off by default, a portfolio entry
        # None: MULTICLASS_MIN_HESSIAN for multiclass, LightGBM's 1e-3 otherwise.
        "min_sum_hessian_in_leaf": None,
        # A cap high enough for slow rates; early stopping (and, under a time
        # limit, the fold's time box) ends far sooner.
        "max_rounds": 10_000,
        "early_stopping_rounds": 50,  # patience at lr 0.05
        # Refit on the whole training fold for the early-stopped number of rounds
        # (scaled up for 10% more rows): the inner split then costs no data.
        "refit": True,
    }

    # AutoGluon's zero-shot LightGBM configurations (TabRepo): extremely
    # randomised trees, and a larger, slower model.
    portfolio: ClassVar[dict[str, dict[str, Any]]] = {
        "xt": {"extra_trees": True},
        "large": {
            "num_leaves": 128,
            "learning_rate": 0.03,
            "min_child_samples": 5,
            "feature_fraction": 0.9,
        },
    }

    search_space: ClassVar[dict[str, tuple[Any, ...]]] = {
        "num_leaves": ("int_log", 8, 256),
        "learning_rate": ("loguniform", 0.01, 0.2),
        "min_child_samples": ("int_log", 5, 100),
        "feature_fraction": ("uniform", 0.4, 1.0),
        "bagging_fraction": ("uniform", 0.6, 1.0),
        "lambda_l2": ("loguniform", 1e-3, 10.0),
    }
    tuning_overrides: ClassVar[dict[str, Any]] = {"refit": False}
    time_boxed = True

    def _fit(self, X: np.ndarray, y: np.ndarray) -> None:
        import lightgbm as lgb

        ctx = self.context
        p, max_rounds, patience, refit = pop_rounds(self.params)
        if p["min_sum_hessian_in_leaf"] is None:
            multi = ctx.task == "multiclass"
            p["min_sum_hessian_in_leaf"] = MULTICLASS_MIN_HESSIAN if multi else 1e-3
        params: dict[str, Any] = {
            **p,
            "num_threads": ctx.n_threads,
            "seed": ctx.seed,
            "deterministic": True,
            "force_row_wise": True,  # with deterministic: same trees on every machine
            "verbosity": -1,
            "bagging_freq": 1 if p["bagging_fraction"] < 1 else 0,
        }
        if ctx.task == "binary":
            params.update(objective="binary", metric="binary_logloss")
        elif ctx.task == "multiclass":
            params.update(
                objective="multiclass", num_class=ctx.n_classes, metric="multi_logloss"
            )
        else:
            params.update(objective="regression", metric="l2")
        cats = [int(i) for i in np.flatnonzero(ctx.cat_mask)]
        tr, va = inner_split(
            y, classify=ctx.is_classification, fraction=INNER_VALID, seed=ctx.seed
        )
        dtrain = lgb.Dataset(
            X[tr], y[tr], categorical_feature=cats or "auto", free_raw_data=True
        )
        dvalid = lgb.Dataset(X[va], y[va], reference=dtrain)
        box = TimeBox(ctx.time_box_s)
        probe = X[va[: PredictCost.PROBE_ROWS]]
        cost = PredictCost(ctx.predict_rows, ctx.predict_reserve_s, len(probe))
        stop = _TimeBoxStop(
            box,
            cost,
            lambda model: model.predict(probe, num_threads=self.predict_threads),
        )
        callbacks: list[Callable[..., Any]] = [
            lgb.early_stopping(patience, verbose=False)
        ]
        if ctx.time_box_s is not None:
            callbacks.append(stop)
        model = lgb.train(
            params,
            dtrain,
            num_boost_round=max_rounds,
            valid_sets=[dvalid],
            callbacks=callbacks,
        )
        self.truncated_ = stop.hit
        if refit and not stop.hit:
            rounds = refit_rounds(model.best_iteration)
            stage = model.current_iteration()
            if box.affords_refit(stage, rounds, extra=cost.overrun(rounds)):
                full = lgb.Dataset(X, y, categorical_feature=cats or "auto")
                model = lgb.train(params, full, num_boost_round=rounds)
                model.best_iteration = rounds
            else:  # keep the early-stopped model: the refit would overrun
                self.truncated_ = True
        self.model_ = model

    def _predict(self, X: np.ndarray) -> np.ndarray:
        return np.asarray(
            self.model_.predict(
                X,
                num_iteration=self.model_.best_iteration,
                num_threads=self.predict_threads,
            )
        )

    def _save(self, path: Path) -> None:
        self.model_.save_model(str(path), num_iteration=self.model_.best_iteration)

    def _load(self, path: Path) -> None:
        import lightgbm as lgb

        self.model_ = lgb.Booster(model_file=str(path))


class _TimeBoxStop:
    """LightGBM callback: stop at the time box, keeping the best round so far.

    The box ends early by what predicting the fold would overrun its reserve
    (``cost``, timed on ``probe(model)``).
    """

    order = 40  # after early_stopping (30)
    before_iteration = False

    def __init__(
        self,
        box: TimeBox,
        cost: PredictCost,
        probe: Callable[[Any], Any],
    ) -> None:
        self.box = box
        self.cost = cost
        self.probe = probe
        self.curve: list[float] = []  # the validation loss of every round
        self.hit = False

    def __call__(self, env: Any) -> None:
        self.curve.append(float(env.evaluation_result_list[0][2]))
        rounds = env.iteration + 1 - env.begin_iteration
        if not self.cost.box_spent(self.box, rounds, lambda: self.probe(env.model)):
            return
        import lightgbm as lgb

        self.hit = True
        best = int(np.argmin(self.curve))  # every metric used here is a loss
        raise lgb.callback.EarlyStopException(best, env.evaluation_result_list)
