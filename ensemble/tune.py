"""Hyperparameter search for every learner family with Ray Tune.

One ``Tuner`` per family, run one after another, each using the whole cluster.
The objective is the run metric by k-fold CV over the **training rows only**:
the holdout rows are never passed to a trial. Each trial reports its running
CV loss after every fold, so ASHA stops poor configurations after one or two
folds. Optuna TPE (seeded) searches by default; the learner's default
configuration is always evaluated first, so a tuned family can only match or
beat its defaults on CV. The best ``top_n`` finished trials of each family
become ensemble members.
"""

from __future__ import annotations

import json
import logging
import math
import os
import pickle
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import ray
from ray import tune

from .artifacts import REQUIRED_COLUMNS
from .learners import FitContext, get
from .metrics import score, to_loss

__all__ = ["MemberSpec", "TuneOutcome", "to_tune_space", "tune_learners"]

logger = logging.getLogger(__name__)

# Least tuning time worth giving a family: Tuner start-up plus one 5-fold trial
# of a mid-sized learner on adult (~40k rows) on one core.
MIN_FAMILY_S = 20.0


@dataclass(frozen=True)
class MemberSpec:
    """An ensemble member: a learner key and its parameters."""

    name: str
    learner: str
    params: dict[str, Any]
    rank: int = 1  # 1 = the family's best configuration
    #: Expected seconds of one fold fit, from the tuning trial's measured time
    #: (None: not tuned; the learner's calibrated estimate applies).
    fold_s: float | None = None


@dataclass
class TuneOutcome:
    """Members chosen by tuning and one row per trial."""

    members: list[MemberSpec]
    trials: pd.DataFrame


def to_tune_space(space: dict[str, tuple[Any, ...]]) -> dict[str, Any]:
    """Turn a learner's declared space into Ray Tune domains."""
    out: dict[str, Any] = {}
    for name, spec in space.items():
        kind = spec[0]
        if kind == "uniform":
            out[name] = tune.uniform(spec[1], spec[2])
        elif kind == "loguniform":
            out[name] = tune.loguniform(spec[1], spec[2])
        elif kind == "int":
            out[name] = tune.randint(spec[1], spec[2] + 1)
        elif kind == "int_log":
            out[name] = tune.lograndint(spec[1], spec[2] + 1)
        elif kind == "choice":
            out[name] = tune.choice(list(spec[1]))
        else:
            raise ValueError(f"unknown space kind {kind!r} for {name!r}")
    return out


def _trainable(
    config: dict[str, Any],
    *,
    learner: str,
    X: np.ndarray,
    y: np.ndarray,
    fold: np.ndarray,
    context: FitContext,
    metric: str,
    n_folds: int,
) -> None:
    """One trial: CV over the training folds, reporting after every fold."""
    cls = get(learner)
    params = {**config, **cls.tuning_overrides}
    device = "cuda" if ray.get_gpu_ids() else "cpu"
    ctx = replace(context, device=device, n_threads=1)
    losses: list[float] = []
    scores: list[float] = []
    for k in range(n_folds):
        train, valid = fold != k, fold == k
        model = cls(params, context=ctx).fit(X[train], y[train])
        s = score(metric, y[valid], model.predict(X[valid]), context.n_classes)
        loss = to_loss(metric, s)
        losses.append(loss if math.isfinite(loss) else 1e12)
        scores.append(s)
        tune.report(
            {
                "loss": float(np.mean(losses)),
                "cv_score": float(np.mean(scores)),
                "folds": k + 1,
            }
        )


class _Progress(tune.Callback):
    """Calls ``on_trial(learner, n_done, best_score)`` as trials finish."""

    def __init__(
        self,
        learner: str,
        metric: str,
        on_trial: Callable[[str, int, float], None] | None,
    ) -> None:
        self.learner = learner
        self.metric = metric
        self.on_trial = on_trial
        self.done = 0
        self.best = math.nan

    def __getstate__(self) -> dict[str, Any]:
        # Tune pickles its callbacks with the experiment state; the hook (which
        # may hold a terminal) is not part of that state.
        return {**self.__dict__, "on_trial": None}

    def on_trial_complete(
        self, iteration: int, trials: list[Any], trial: Any, **info: Any
    ) -> None:
        self.done += 1
        s = (trial.last_result or {}).get("cv_score")
        if s is not None and (
            math.isnan(self.best)
            or to_loss(self.metric, s) < to_loss(self.metric, self.best)
        ):
            self.best = float(s)
        if self.on_trial is not None:
            self.on_trial(self.learner, self.done, self.best)


def tune_learners(
    learners: Sequence[str],
    X: np.ndarray,
    y: np.ndarray,
    fold: np.ndarray,
    context: FitContext,
    *,
    metric: str,
    storage: str | Path,
    time_budget_s: float | None,
    n_trials: int | None,
    top_n: int = 2,
    search: str = "optuna",
    seed: int = 0,
    fixed_params: dict[str, dict[str, Any]] | None = None,
    on_trial: Callable[[str, int, float], None] | None = None,
    verbose: int = 1,
    resume: bool = False,
) -> TuneOutcome:
    """Tune each learner family and pick its best ``top_n`` configurations.

    Parameters
    ----------
    learners : sequence of str
        Learner keys.
    X, y, fold : ndarray
        **Training rows only** (fold ids ``0..k-1``); callers drop the holdout.
    context : FitContext
        Task layout.
    metric : str
        Objective metric.
    storage : path
        Absolute directory for Tune's experiment state (inside the run directory).
    time_budget_s : float or None
        Budget of the whole tuning stage, split evenly across families.
    n_trials : int or None
        Trials per family (None: as many as the budget allows).
    top_n : int, default=2
        Members per family.
    search : {"optuna", "random"}, default="optuna"
        Search algorithm.
    seed : int, default=0
        Seeds the searcher.
    fixed_params : dict, optional
        Per-learner parameters that are not searched (user overrides).
    on_trial : callable, optional
        Progress hook ``(learner, n_done, best_cv_score)``.
    verbose : int, default=1
        At 2 and above Tune prints its own trial table as well.
    resume : bool, default=False
        Continue an interrupted tuning stage in ``storage``: families that
        finished are read back, an interrupted family's experiment is restored
        with ``Tuner.restore`` (its finished trials are not run again).

    Returns
    -------
    TuneOutcome
    """
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search import BasicVariantGenerator
    from ray.tune.search.optuna import OptunaSearch

    if search == "optuna":
        import optuna

        # "A new study created in memory" per family is noise, not progress.
        optuna.logging.set_verbosity(optuna.logging.WARNING)
    if np.any(fold < 0):
        raise ValueError("tune_learners takes training rows only (fold >= 0)")
    n_folds = int(fold.max()) + 1
    resources = ray.cluster_resources()
    n_cpu = max(1, int(resources.get("CPU", 1)))
    gpus = float(resources.get("GPU", 0))
    members: list[MemberSpec] = []
    frames: list[pd.DataFrame] = []
    stage_end = time.monotonic() + time_budget_s if time_budget_s else None
    tuned = list(learners)
    if time_budget_s:
        tuned = _families_to_tune(learners, X, context, n_folds, n_cpu, time_budget_s)
        if len(tuned) < len(learners):
            logger.info("budget tunes only %s", ", ".join(tuned) or "no family")
    storage = Path(storage).absolute()
    # Save Tune's experiment state every second (default: adaptive, often
    # tens of seconds), so a killed driver loses at most the last second.
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "1")
    for i, key in enumerate(learners):
        cls = get(key)
        done_file = storage / f"{key}.family.pkl"
        if resume and done_file.is_file():
            with open(done_file, "rb") as fh:
                saved_members, saved_trials = pickle.load(fh)
            logger.info(
                "resume: %s was tuned before (%d trials)", key, len(saved_trials)
            )
            members.extend(saved_members)
            frames.append(saved_trials)
            continue
        fixed = dict((fixed_params or {}).get(key, {}))
        space = {k: v for k, v in cls.search_space.items() if k not in fixed}
        if key not in tuned:
            space = {}
        if not space:
            members.append(MemberSpec(key, key, cls.check_params(fixed)))
            continue
        budget = None
        if stage_end is not None:
            left = sum(1 for k in learners[i:] if k in tuned)
            budget = max(1.0, (stage_end - time.monotonic()) / left)
        defaults = cls.check_params(fixed)
        first = [{k: _clamp(defaults[k], space[k]) for k in space}]
        searcher: Any
        if search == "optuna":
            searcher = OptunaSearch(points_to_evaluate=first, seed=seed)
        else:
            searcher = BasicVariantGenerator(
                points_to_evaluate=first, random_state=seed
            )
        res: dict[str, float] = {"cpu": 1}
        if gpus >= 0.5 and cls.uses_gpu:
            res["gpu"] = 0.5
        trainable = tune.with_resources(
            tune.with_parameters(
                _trainable,
                learner=key,
                X=X,
                y=y,
                fold=fold,
                context=context,
                metric=metric,
                n_folds=n_folds,
            ),
            res,
        )
        param_space = {**to_tune_space(space), **fixed}
        experiment = storage / key
        tuner: tune.Tuner
        if resume and tune.Tuner.can_restore(str(experiment)):
            logger.info("resume: restoring the interrupted %s search", key)
            tuner = tune.Tuner.restore(
                str(experiment),
                trainable=trainable,
                resume_unfinished=True,
                resume_errored=True,
                param_space=param_space,
            )
        else:
            if experiment.exists():  # a start that never saved any state
                shutil.rmtree(experiment)
            tuner = tune.Tuner(
                trainable,
                param_space=param_space,
                tune_config=tune.TuneConfig(
                    metric="loss",
                    mode="min",
                    search_alg=searcher,
                    # Folds are the resource: stop a poor trial after 1 or 2 folds.
                    scheduler=ASHAScheduler(
                        max_t=n_folds, grace_period=1, reduction_factor=3
                    ),
                    num_samples=n_trials if n_trials else -1,
                    time_budget_s=budget,
                    reuse_actors=True,  # ≈0.15 s per trial instead of ≈1 s
                    max_concurrent_trials=n_cpu,
                ),
                run_config=tune.RunConfig(
                    name=key,
                    storage_path=str(storage),
                    verbose=1 if verbose >= 2 else 0,
                    callbacks=[_Progress(key, metric, on_trial)],
                ),
            )
        t0 = time.monotonic()
        grid = tuner.fit()
        df = grid.get_dataframe()
        logger.info(
            "tuned %s: %d trials in %.1f s", key, len(df), time.monotonic() - t0
        )
        trials = _trial_rows(key, df, list(space), fixed, metric, n_folds)
        finished = trials[trials.status == "complete"].copy()
        finished["_loss"] = [to_loss(metric, s) for s in finished.cv_score]
        finished = finished.sort_values(["_loss", "trial_id"])
        chosen: list[str] = []
        for rank, (_, row) in enumerate(finished.head(top_n).iterrows()):
            name = key if rank == 0 else f"{key}_{rank + 1}"
            params = cls.check_params(json.loads(row.params))
            fold_s = row.time_s / n_folds * cls.tuning_cost_ratio
            members.append(
                MemberSpec(
                    name,
                    key,
                    params,
                    rank + 1,
                    fold_s=float(fold_s) if math.isfinite(fold_s) else None,
                )
            )
            chosen.append(row.trial_id)
            trials.loc[trials.trial_id == row.trial_id, "member"] = name
        if not chosen:  # no trial finished in time: the defaults still serve
            logger.warning("no %s trial finished every fold; using its defaults", key)
            members.append(MemberSpec(key, key, defaults))
            family = [members[-1]]
        else:
            family = members[-len(chosen) :]
        frames.append(trials)
        # The family is done: a resumed run reads it back instead of re-tuning.
        tmp = done_file.with_name(done_file.name + ".tmp")
        with open(tmp, "wb") as fh:
            pickle.dump((family, trials), fh)
        tmp.replace(done_file)
    all_trials = pd.concat(frames, ignore_index=True) if frames else _empty_trials()
    return TuneOutcome(members, all_trials)


#: A family is tuned only when its budget affords this many full trials
#: (ASHA stops poor trials after a fold, so that is several more configs).
MIN_TRIALS = 3


def _families_to_tune(
    learners: Sequence[str],
    X: np.ndarray,
    context: FitContext,
    n_folds: int,
    n_cpu: int,
    time_budget_s: float,
) -> list[str]:
    """The families a tuning budget is spent on, in the order given.

    A family needs ~MIN_FAMILY_S to finish even its default trial: with less
    per family, only the ``tune_priority`` first (boosters) are tuned. In that
    order, a family is added while every chosen family's share of the budget
    still affords MIN_TRIALS of its trials (every fold, at the calibrated fit
    time) on the cluster's CPUs; the others keep their defaults.
    """
    fold_rows = int(X.shape[0] * (n_folds - 1) / max(n_folds, 1))

    def trial_s(key: str) -> float:
        cls = get(key)
        fold = cls.expected_seconds(fold_rows, X.shape[1], context.n_classes)
        return fold * n_folds / cls.tuning_cost_ratio

    n_fit = max(1, int(time_budget_s // MIN_FAMILY_S))
    chosen: list[str] = []
    dearest = 0.0  # the costliest trial among the chosen families
    for key in sorted(learners, key=lambda k: get(k).tune_priority):
        if len(chosen) == n_fit:
            break
        worst = max(dearest, trial_s(key))
        # every chosen family still affords MIN_TRIALS in its share
        if MIN_TRIALS * worst <= time_budget_s / (len(chosen) + 1) * n_cpu:
            chosen.append(key)
            dearest = worst
    return [k for k in learners if k in chosen]


def _empty_trials() -> pd.DataFrame:
    return pd.DataFrame(
        columns=[*REQUIRED_COLUMNS["trials.parquet"], "folds", "member"]
    )


def _trial_rows(
    key: str,
    df: pd.DataFrame,
    searched: list[str],
    fixed: dict[str, Any],
    metric: str,
    n_folds: int,
) -> pd.DataFrame:
    rows = []
    for _, r in df.iterrows():
        params = {p: _plain(r.get(f"config/{p}")) for p in searched}
        params.update(fixed)
        folds = int(r["folds"]) if "folds" in r and not pd.isna(r["folds"]) else 0
        error = bool(r.get("error", False)) if "error" in r else False
        status = "error" if error else ("complete" if folds == n_folds else "stopped")
        rows.append(
            {
                "learner": key,
                "trial_id": str(r["trial_id"]),
                "params": json.dumps(params, sort_keys=True),
                "cv_score": float(r["cv_score"]) if "cv_score" in r else math.nan,
                "metric": metric,
                "time_s": float(r.get("time_total_s", math.nan)),
                "status": status,
                "folds": folds,
                "member": None,
            }
        )
    return pd.DataFrame(rows) if rows else _empty_trials()


def _clamp(value: Any, spec: tuple[Any, ...]) -> Any:
    """A default moved inside its search domain (e.g. L2 = 0 on a log scale)."""
    if spec[0] == "choice":
        return value if value in spec[1] else spec[1][0]
    low, high = spec[1], spec[2]
    clamped = min(max(value, low), high)
    return int(clamped) if spec[0] in ("int", "int_log") else float(clamped)


def _plain(v: Any) -> Any:
    if isinstance(v, np.generic):
        return v.item()
    return v
