"""Hyperparameter search for every learner family with Ray Tune.

One ``Tuner`` per family, run one after another, each using the whole cluster.
The objective is the run metric by k-fold CV over the **training rows only**:
the holdout rows are never passed to a trial. Each trial reports its running
CV loss after every fold, so ASHA stops poor configurations after one or two
folds. Optuna TPE (seeded) searches by default; the learner's default
configuration is always evaluated first, so a tuned family can only match or
beat its defaults on CV. The best ``top_n`` finished trials of each family
become ensemble members.

A resumed run reads back the families that finished (``<family>.family.pkl``)
and, for the family that was interrupted, every trial that had reported all
its folds (from Tune's per-trial ``result.json``, written as each fold ends),
then searches only for the rest. Tune's own experiment state is not needed: a
driver killed while Tune wrote it leaves it unreadable.
"""

from __future__ import annotations

import json
import logging
import math
import os
import pickle
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import ray
from ray import tune
from ray.tune.schedulers import ASHAScheduler
from ray.tune.search import BasicVariantGenerator
from ray.tune.search.optuna import OptunaSearch

from . import budget
from .artifacts import REQUIRED_COLUMNS
from .learners import FitContext, get
from .metrics import score, to_loss
from .specs import MemberSpec

__all__ = ["TuneOutcome", "empty_trials", "to_tune_space", "tune_learners"]

logger = logging.getLogger(__name__)

_TRIAL_COLUMNS = [*REQUIRED_COLUMNS["trials.parquet"], "folds", "member"]


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


def empty_trials() -> pd.DataFrame:
    """``trials.parquet`` of a run that tuned nothing."""
    return pd.DataFrame(columns=_TRIAL_COLUMNS)


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


class _ResumedOptuna(OptunaSearch):
    """Optuna told the finished trials of an interrupted search.

    The points still to run are queued first (``OptunaSearch`` takes either
    evaluated points or points to run, not both).
    """

    def __init__(self, queued: list[dict[str, Any]], **kwargs: Any) -> None:
        self._queued = queued
        super().__init__(**kwargs)

    def _setup_study(self, mode: Any) -> None:
        super()._setup_study(mode)
        study: Any = self._ot_study
        for point in self._queued:
            study.enqueue_trial(point)


class _Progress(tune.Callback):
    """Calls ``on_trial(learner, n_done, best_score)`` as trials finish."""

    def __init__(
        self,
        learner: str,
        metric: str,
        on_trial: Callable[[str, int, float], None] | None,
        done: int = 0,
        best: float = math.nan,
    ) -> None:
        self.learner = learner
        self.metric = metric
        self.on_trial = on_trial
        self.done = done
        self.best = best

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


@dataclass
class _Search:
    """What the search of every family shares (one run's tuning stage)."""

    X: np.ndarray
    y: np.ndarray
    fold: np.ndarray
    context: FitContext
    metric: str
    storage: Path
    n_trials: int | None
    top_n: int
    search: str
    seed: int
    on_trial: Callable[[str, int, float], None] | None
    verbose: int
    resume: bool

    @property
    def n_folds(self) -> int:
        return int(self.fold.max()) + 1

    def family(
        self,
        key: str,
        space: dict[str, tuple[Any, ...]],
        fixed: dict[str, Any],
        time_budget_s: float | None,
    ) -> pd.DataFrame:
        """Search one family; one row per trial (recovered ones included)."""
        cls = get(key)
        experiment = self.storage / key
        done = _finished_trials(experiment, self.n_folds) if self.resume else []
        if done:
            logger.info("resume: %s keeps %d finished trials", key, len(done))
        rows = [_recovered_row(key, t, list(space), fixed, self.metric) for t in done]
        n_trials = None if self.n_trials is None else self.n_trials - len(done)
        if n_trials is not None and n_trials <= 0:
            return _frame(rows)
        params = cls.check_params(fixed)
        defaults = {k: _clamp(params[k], space[k]) for k in space}
        tuner = self._tuner(key, space, fixed, defaults, done, n_trials, time_budget_s)
        t0 = time.monotonic()
        df = tuner.fit().get_dataframe()
        logger.info(
            "tuned %s: %d trials in %.1f s", key, len(df), time.monotonic() - t0
        )
        rows += _trial_rows(key, df, list(space), fixed, self.metric, self.n_folds)
        return _frame(rows)

    def _tuner(
        self,
        key: str,
        space: dict[str, tuple[Any, ...]],
        fixed: dict[str, Any],
        defaults: dict[str, Any],
        done: list[dict[str, Any]],
        n_trials: int | None,
        time_budget_s: float | None,
    ) -> tune.Tuner:
        resources = ray.cluster_resources()
        n_cpu = max(1, int(resources.get("CPU", 1)))
        res: dict[str, float] = {"cpu": 1}
        if float(resources.get("GPU", 0)) >= 0.5 and get(key).uses_gpu:
            res["gpu"] = 0.5
        trainable = tune.with_resources(
            tune.with_parameters(
                _trainable,
                learner=key,
                X=self.X,
                y=self.y,
                fold=self.fold,
                context=self.context,
                metric=self.metric,
                n_folds=self.n_folds,
            ),
            res,
        )
        best = min(
            (t["cv_score"] for t in done),
            key=lambda s: to_loss(self.metric, s),
            default=math.nan,
        )
        return tune.Tuner(
            trainable,
            param_space={**to_tune_space(space), **fixed},
            tune_config=tune.TuneConfig(
                metric="loss",
                mode="min",
                search_alg=self._searcher(space, defaults, done),
                # Folds are the resource: stop a poor trial after 1 or 2 folds.
                scheduler=ASHAScheduler(
                    max_t=self.n_folds, grace_period=1, reduction_factor=3
                ),
                num_samples=n_trials if n_trials else -1,
                time_budget_s=time_budget_s,
                reuse_actors=True,  # ≈0.15 s per trial instead of ≈1 s
                max_concurrent_trials=n_cpu,
            ),
            run_config=tune.RunConfig(
                name=key,
                storage_path=str(self.storage),
                verbose=1 if self.verbose >= 2 else 0,
                callbacks=[_Progress(key, self.metric, self.on_trial, len(done), best)],
            ),
        )

    def _searcher(
        self,
        space: dict[str, tuple[Any, ...]],
        defaults: dict[str, Any],
        done: list[dict[str, Any]],
    ) -> Any:
        """Optuna TPE or random search, defaults first, told the recovered trials."""
        seen = [{k: t["config"].get(k) for k in space} for t in done]
        first = [] if defaults in seen else [defaults]
        if self.search == "random":
            # Another stream after a resume: the seed's first draws were run.
            return BasicVariantGenerator(
                points_to_evaluate=first, random_state=self.seed + len(done)
            )
        import optuna

        # "A new study created in memory" per family is noise, not progress.
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        if not seen:
            return OptunaSearch(points_to_evaluate=first, seed=self.seed)
        return _ResumedOptuna(
            first,
            points_to_evaluate=seen,
            evaluated_rewards=[float(t["loss"]) for t in done],
            seed=self.seed,
        )


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
        Budget of the whole tuning stage, shared by the families tuned
        (:func:`ensemble.budget.tuning_order` picks them).
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
        Continue an interrupted tuning stage in ``storage``: finished families
        are read back, an interrupted family keeps the trials that ran every
        fold and searches only for the rest.

    Returns
    -------
    TuneOutcome
    """
    if np.any(fold < 0):
        raise ValueError("tune_learners takes training rows only (fold >= 0)")
    s = _Search(
        X,
        y,
        fold,
        context,
        metric,
        Path(storage).absolute(),
        n_trials,
        top_n,
        search,
        seed,
        on_trial,
        verbose,
        resume,
    )
    stage_end = time.monotonic() + time_budget_s if time_budget_s else None
    tuned = _families_to_tune(learners, s, time_budget_s)
    members: list[MemberSpec] = []
    frames: list[pd.DataFrame] = []
    for i, key in enumerate(learners):
        cls = get(key)
        done_file = s.storage / f"{key}.family.pkl"
        if resume and done_file.is_file():
            family, trials = pickle.loads(done_file.read_bytes())
            logger.info("resume: %s was tuned before (%d trials)", key, len(trials))
        else:
            fixed = dict((fixed_params or {}).get(key, {}))
            space = {k: v for k, v in cls.search_space.items() if k not in fixed}
            if key not in tuned or not space:
                members.append(MemberSpec(key, key, cls.check_params(fixed)))
                continue
            share = None
            if stage_end is not None:
                left = sum(1 for k in learners[i:] if k in tuned)
                share = max(1.0, (stage_end - time.monotonic()) / left)
            trials = s.family(key, space, fixed, share)
            family = _chosen(key, trials, fixed, s)
            _save_family(done_file, family, trials)
        members.extend(family)
        frames.append(trials)
    all_trials = pd.concat(frames, ignore_index=True) if frames else empty_trials()
    return TuneOutcome(members, all_trials)


def _families_to_tune(
    learners: Sequence[str], s: _Search, time_budget_s: float | None
) -> list[str]:
    """Every family without a budget; else those the budget affords."""
    if not time_budget_s:
        return list(learners)
    n_cpu = max(1, int(ray.cluster_resources().get("CPU", 1)))
    n_folds = s.n_folds
    fold_rows = int(s.X.shape[0] * (n_folds - 1) / max(n_folds, 1))
    trial_s = {
        k: budget.fold_seconds(k, fold_rows, s.X.shape[1], s.context.n_classes)
        * n_folds
        / budget.tuning_ratio(k)
        for k in learners
    }
    tuned = budget.tuning_order(learners, trial_s, time_budget_s, n_cpu)
    if len(tuned) < len(learners):
        logger.info("budget tunes only %s", ", ".join(tuned) or "no family")
    return tuned


def _chosen(
    key: str, trials: pd.DataFrame, fixed: dict[str, Any], s: _Search
) -> list[MemberSpec]:
    """The family's best ``top_n`` finished trials as members.

    They are marked in ``trials``; the defaults serve when no trial finished
    every fold.
    """
    cls = get(key)
    finished = trials[trials.status == "complete"].copy()
    finished["_loss"] = [to_loss(s.metric, v) for v in finished.cv_score]
    finished = finished.sort_values(["_loss", "trial_id"])
    family = []
    for rank, (_, row) in enumerate(finished.head(s.top_n).iterrows()):
        name = key if rank == 0 else f"{key}_{rank + 1}"
        fold_s = row.time_s / s.n_folds * budget.tuning_ratio(key)
        family.append(
            MemberSpec(
                name,
                key,
                cls.check_params(json.loads(row.params)),
                rank + 1,
                fold_s=float(fold_s) if math.isfinite(fold_s) else None,
            )
        )
        trials.loc[trials.trial_id == row.trial_id, "member"] = name
    if not family:
        logger.warning("no %s trial finished every fold; using its defaults", key)
        family.append(MemberSpec(key, key, cls.check_params(fixed)))
    return family


def _save_family(path: Path, family: list[MemberSpec], trials: pd.DataFrame) -> None:
    """The family is done: a resumed run reads it back instead of re-tuning."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(pickle.dumps((family, trials)))
    os.replace(tmp, path)


def _finished_trials(experiment: Path, n_folds: int) -> list[dict[str, Any]]:
    """Trials of an interrupted search that reported every fold.

    Read from each trial's ``result.json`` (one JSON line per report); a line
    cut short by the kill is skipped.
    """
    out = []
    for result in sorted(experiment.glob("*/result.json")):
        last = None
        for line in result.read_text().splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            if row.get("folds") == n_folds and "config" in row:
                last = row
        if last is not None:
            out.append(last)
    return out


def _recovered_row(
    key: str,
    row: dict[str, Any],
    searched: list[str],
    fixed: dict[str, Any],
    metric: str,
) -> dict[str, Any]:
    params = {p: row["config"].get(p) for p in searched}
    params.update(fixed)
    return {
        "learner": key,
        "trial_id": str(row["trial_id"]),
        "params": json.dumps(params, sort_keys=True),
        "cv_score": float(row["cv_score"]),
        "metric": metric,
        "time_s": float(row.get("time_total_s", math.nan)),
        "status": "complete",
        "folds": int(row["folds"]),
        "member": None,
    }


def _trial_rows(
    key: str,
    df: pd.DataFrame,
    searched: list[str],
    fixed: dict[str, Any],
    metric: str,
    n_folds: int,
) -> list[dict[str, Any]]:
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
    return rows


def _frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    return pd.DataFrame(rows) if rows else empty_trials()


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
