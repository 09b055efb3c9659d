"""XGBoost gradient boosting (native format: JSON model), GPU when available."""

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


@register
class XGBoostLearner(Learner):
    """XGBoost ``hist`` trees, on ``cuda`` inside a GPU actor, early-stopped."""

    key = "xgb"
    uses_gpu = True
    _model_file = "model.json"
    default_params: ClassVar[dict[str, Any]] = {
        "eta": 0.05,  # early stopping picks the rounds, so a slow rate is cheap
        "max_depth": 6,  # XGBoost's default
        "subsample": 0.9,  # mild row sampling
        "colsample_bytree": 0.9,  # mild column sampling
        "min_child_weight": 1.0,
        "lambda": 1.0,
        "max_rounds": 10_000,  # a cap for slow rates; early stopping ends sooner
        "early_stopping_rounds": 50,
        # Refit on the whole training fold for the early-stopped rounds (+10%).
        "refit": True,
    }

    search_space: ClassVar[dict[str, tuple[Any, ...]]] = {
        "max_depth": ("int", 3, 10),
        "eta": ("loguniform", 0.01, 0.2),
        "subsample": ("uniform", 0.5, 1.0),
        "colsample_bytree": ("uniform", 0.4, 1.0),
        "min_child_weight": ("loguniform", 0.5, 20.0),
        "lambda": ("loguniform", 1e-2, 10.0),
    }
    tuning_overrides: ClassVar[dict[str, Any]] = {"refit": False}
    time_boxed = True

    def _dmatrix(
        self, X: np.ndarray, y: np.ndarray | None = None, nthread: int | None = None
    ) -> Any:
        import xgboost as xgb

        types = ["c" if c else "q" for c in self.context.cat_mask]
        return xgb.DMatrix(
            X,
            label=y,
            feature_types=types,
            enable_categorical=True,
            nthread=nthread or self.context.n_threads,
        )

    def _fit(self, X: np.ndarray, y: np.ndarray) -> None:
        import xgboost as xgb

        ctx = self.context
        p, max_rounds, patience, refit = pop_rounds(self.params)
        params: dict[str, Any] = {
            **p,
            "tree_method": "hist",
            "device": "cuda" if ctx.device == "cuda" else "cpu",
            "nthread": ctx.n_threads,
            "seed": ctx.seed,
            "max_cat_to_onehot": 1,
            "verbosity": 0,
        }
        if ctx.task == "binary":
            params.update(objective="binary:logistic", eval_metric="logloss")
        elif ctx.task == "multiclass":
            params.update(
                objective="multi:softprob",
                num_class=ctx.n_classes,
                eval_metric="mlogloss",
            )
        else:
            params.update(objective="reg:squarederror", eval_metric="rmse")
        tr, va = inner_split(
            y, classify=ctx.is_classification, fraction=INNER_VALID, seed=ctx.seed
        )
        dtrain, dvalid = self._dmatrix(X[tr], y[tr]), self._dmatrix(X[va], y[va])
        box = TimeBox(ctx.time_box_s)
        probe = X[va[: PredictCost.PROBE_ROWS]]
        cost = PredictCost(ctx.predict_rows, ctx.predict_reserve_s, len(probe))

        def predict_probe(model: Any) -> None:
            # a new DMatrix each time: XGBoost caches predictions per DMatrix
            model.predict(self._dmatrix(probe))

        stop = _time_box_stop(box, cost, predict_probe)
        model = xgb.train(
            params,
            dtrain,
            num_boost_round=max_rounds,
            evals=[(dvalid, "valid")],
            early_stopping_rounds=patience,
            verbose_eval=False,
            callbacks=[stop] if ctx.time_box_s is not None else None,
        )
        self.truncated_ = stop.hit
        rounds = (stop.best if stop.hit else model.best_iteration) + 1
        if refit and not stop.hit:
            full = refit_rounds(rounds)
            stage = model.num_boosted_rounds()
            if box.affords_refit(stage, full, extra=cost.overrun(full)):
                rounds = full
                model = xgb.train(
                    params,
                    self._dmatrix(X, y),
                    num_boost_round=rounds,
                    verbose_eval=False,
                )
            else:  # keep the early-stopped model: the refit would overrun
                self.truncated_ = True
        # Keep only the rounds that predict uses (drops the early-stopped tail).
        self.model_ = model[:rounds]

    def _predict(self, X: np.ndarray) -> np.ndarray:
        rng = (0, self.model_.num_boosted_rounds())
        threads = self.predict_threads
        if getattr(self, "nthread_", None) != threads:
            self.model_.set_param({"nthread": threads})
            self.nthread_ = threads
        return np.asarray(
            self.model_.predict(self._dmatrix(X, nthread=threads), iteration_range=rng)
        )

    def _save(self, path: Path) -> None:
        self.model_.save_model(str(path))

    def _load(self, path: Path) -> None:
        import xgboost as xgb

        self.model_ = xgb.Booster()
        self.model_.load_model(str(path))
        self.model_.set_param({"device": "cpu", "nthread": self.context.n_threads})


def _time_box_stop(box: TimeBox, cost: PredictCost, probe: Callable[[Any], Any]) -> Any:
    """An XGBoost callback that stops training when ``box`` is spent.

    The box ends early by what predicting the fold would overrun its reserve
    (``cost``, timed on ``probe(model)``). It
    records the best round so far (``best``, 0-based) from the validation
    curve: it may run before the early-stopping callback has recorded one.
    """
    import xgboost as xgb

    class TimeBoxStop(xgb.callback.TrainingCallback):
        hit = False
        best = 0

        def after_iteration(self, model: Any, epoch: int, evals_log: Any) -> bool:
            self.hit = cost.box_spent(box, epoch + 1, lambda: probe(model))
            if self.hit:
                curve = next(iter(evals_log["valid"].values()))
                self.best = int(np.argmin(curve))  # every metric here is a loss
            return self.hit

    return TimeBoxStop()
