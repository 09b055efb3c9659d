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
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timezone
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
    save_dir: str | None = None,
) -> None:
    """One trial: CV over the training folds, reporting after every fold.

    With ``save_dir`` the trial fits exactly what a member would (no tuning
    overrides) and keeps each fold's model and OOF predictions there, so a
    chosen trial becomes a member without being fitted again.
    """
    cls = get(learner)
    params = dict(config) if save_dir else {**config, **cls.tuning_overrides}
    device = "cuda" if ray.get_gpu_ids() else "cpu"
    ctx = replace(context, device=device, n_threads=1)
    trial_dir = None
    if save_dir is not None:
        trial_dir = Path(save_dir) / tune.get_context().get_trial_id()
    losses: list[float] = []
    scores: list[float] = []
    for k in range(n_folds):
        train, valid = fold != k, fold == k
        started = datetime.now(timezone.utc)
        t0 = time.perf_counter()
        model = cls(params, context=ctx).fit(X[train], y[train])
        fit_s = time.perf_counter() - t0
        t1 = time.perf_counter()
        pred = model.predict(X[valid])
        predict_s = time.perf_counter() - t1
        if trial_dir is not None:
            _save_fold(trial_dir / f"fold{k}", model, pred, started, fit_s, predict_s)
        s = score(metric, y[valid], pred, context.n_classes)
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


def _save_fold(
    path: Path,
    model: Any,
    pred: np.ndarray,
    started: datetime,
    fit_s: float,
    predict_s: float,
) -> None:
    """A trial's fold: its model, OOF predictions and timings (``fit.json``)."""
    model.save(path)
    np.save(path / "oof.npy", pred)
    rc = ray.get_runtime_context()
    info = {
        "node_id": rc.get_node_id(),
        "worker": f"tune:{os.getpid()}",
        "started_at": started.isoformat(),
        "fit_s": fit_s,
        "predict_s": predict_s,
        "truncated": bool(model.truncated_),
    }
    # Written last, renamed into place: a fold without it (a trial killed while
    # saving) is not reused.
    tmp = path / "fit.json.tmp"
    tmp.write_text(json.dumps(info))
    os.replace(tmp, path / "fit.json")


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
    save_dir: Path | None

    @property
    def n_folds(self) -> int:
        return int(self.fold.max()) + 1

    def family(
        self,
        key: str,
        space: dict[str, tuple[Any, ...]],
        fixed: dict[str, Any],
        known: list[tuple[dict[str, Any], float]],
        time_budget_s: float | None,
    ) -> pd.DataFrame:
        """Search one family; one row per trial (recovered ones included).

        ``known`` holds configurations already scored (the family's portfolio
        members, as ``(params, loss)``): the searcher is told them, and the
        family's defaults are tried first only when they are not among them.
        """
        cls = get(key)
        experiment = self.storage / key
        done = _finished_trials(experiment, self.n_folds) if self.resume else []
        if done:
            logger.info("resume: %s keeps %d finished trials", key, len(done))
        rows = [_recovered_row(key, t, list(space), fixed, self.metric) for t in done]
        n_trials = None if self.n_trials is None else self.n_trials - len(done)
        if n_trials is not None and n_trials <= 0:
            return _frame(rows)
        seen = [
            ({k: t["config"].get(k) for k in space}, float(t["loss"])) for t in done
        ]
        for params, loss in known:
            if set(space) <= set(params):
                seen.append(({k: _clamp(params[k], space[k]) for k in space}, loss))
        defaults = cls.check_params(fixed)
        first = {k: _clamp(defaults[k], space[k]) for k in space}
        box = budget.trial_fold_box(time_budget_s, self.n_folds)
        tuner = self._tuner(
            key, space, fixed, first, seen, n_trials, time_budget_s, box
        )
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
        first: dict[str, Any],
        seen: list[tuple[dict[str, Any], float]],
        n_trials: int | None,
        time_budget_s: float | None,
        fold_box_s: float | None,
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
                context=replace(self.context, time_box_s=fold_box_s),
                metric=self.metric,
                n_folds=self.n_folds,
                save_dir=None if self.save_dir is None else str(self.save_dir / key),
            ),
            res,
        )
        return tune.Tuner(
            trainable,
            param_space={**to_tune_space(space), **fixed},
            tune_config=tune.TuneConfig(
                metric="loss",
                mode="min",
                search_alg=self._searcher(first, seen),
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
                callbacks=[_Progress(key, self.metric, self.on_trial)],
            ),
        )

    def _searcher(
        self, first: dict[str, Any], seen: list[tuple[dict[str, Any], float]]
    ) -> Any:
        """Optuna TPE or random search, told the configurations already scored.

        The defaults run first unless they were scored already.
        """
        points = [p for p, _ in seen]
        queued = [] if first in points else [first]
        if self.search == "random":
            # Another stream after a resume: the seed's first draws were run.
            return BasicVariantGenerator(
                points_to_evaluate=queued, random_state=self.seed + len(seen)
            )
        import optuna

        # "A new study created in memory" per family is noise, not progress.
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        if not seen:
            return OptunaSearch(points_to_evaluate=queued, seed=self.seed)
        return _ResumedOptuna(
            queued,
            points_to_evaluate=points,
            evaluated_rewards=[loss for _, loss in seen],
            seed=self.seed,
        )


def tune_learners(
    budgets: Mapping[str, float | None],
    X: np.ndarray,
    y: np.ndarray,
    fold: np.ndarray,
    context: FitContext,
    *,
    metric: str,
    storage: str | Path,
    n_trials: int | None,
    top_n: int = 2,
    search: str = "optuna",
    seed: int = 0,
    fixed_params: Mapping[str, Mapping[str, Any]] | None = None,
    known: Mapping[str, list[tuple[dict[str, Any], float]]] | None = None,
    save_dir: str | Path | None = None,
    on_trial: Callable[[str, int, float], None] | None = None,
    verbose: int = 1,
    resume: bool = False,
) -> TuneOutcome:
    """Tune each learner family and pick its best ``top_n`` configurations.

    Parameters
    ----------
    budgets : mapping
        Family → seconds of search (None: until ``n_trials``), searched in
        this order (``ensemble.budget.search_plan`` decides them).
    X, y, fold : ndarray
        **Training rows only** (fold ids ``0..k-1``); callers drop the holdout.
    context : FitContext
        Task layout.
    metric : str
        Objective metric.
    storage : path
        Absolute directory for Tune's experiment state (inside the run directory).
    n_trials : int or None
        Trials per family (None: as many as the budget allows).
    top_n : int, default=2
        Members per family: ``<key>_tuned``, ``<key>_tuned_2``, …
    search : {"optuna", "random"}, default="optuna"
        Search algorithm.
    seed : int, default=0
        Seeds the searcher.
    fixed_params : mapping, optional
        Per-learner parameters that are not searched (user overrides).
    known : mapping, optional
        Per-learner ``(params, loss)`` already scored on these folds (the
        portfolio members): the searcher is told them instead of re-running.
    save_dir : path, optional
        When the folds are the run's own (no holdout), trials keep each fold's
        model and OOF predictions here, and a chosen trial's member carries
        ``trial_dir``: it is not fitted again.
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
        Only the families with a search space and at least one trial that
        finished every fold contribute members.
    """
    if np.any(fold < 0):
        raise ValueError("tune_learners takes training rows only (fold >= 0)")
    s = _Search(
        X=X,
        y=y,
        fold=fold,
        context=context,
        metric=metric,
        storage=Path(storage).absolute(),
        n_trials=n_trials,
        top_n=top_n,
        search=search,
        seed=seed,
        on_trial=on_trial,
        verbose=verbose,
        resume=resume,
        save_dir=None if save_dir is None else Path(save_dir).absolute(),
    )
    members: list[MemberSpec] = []
    frames: list[pd.DataFrame] = []
    for key, family_s in budgets.items():
        cls = get(key)
        done_file = s.storage / f"{key}.family.pkl"
        if resume and done_file.is_file():
            family, trials = pickle.loads(done_file.read_bytes())
            logger.info("resume: %s was tuned before (%d trials)", key, len(trials))
        else:
            fixed = dict((fixed_params or {}).get(key, {}))
            space = {k: v for k, v in cls.search_space.items() if k not in fixed}
            if not space:
                continue
            seen = list((known or {}).get(key, []))
            trials = s.family(key, space, fixed, seen, family_s)
            family = _chosen(key, trials, s)
            _save_family(done_file, family, trials)
        members.extend(family)
        frames.append(trials)
    all_trials = pd.concat(frames, ignore_index=True) if frames else empty_trials()
    return TuneOutcome(members, all_trials)


def _chosen(key: str, trials: pd.DataFrame, s: _Search) -> list[MemberSpec]:
    """The family's best ``top_n`` finished trials as members.

    They are named ``<key>_tuned``, ``<key>_tuned_2``, … and marked in
    ``trials``; a trial whose folds were saved (``save_dir``) brings them along.
    """
    cls = get(key)
    finished = trials[trials.status == "complete"].copy()
    finished["_loss"] = [to_loss(s.metric, v) for v in finished.cv_score]
    finished = finished.sort_values(["_loss", "trial_id"])
    family = []
    for rank, (_, row) in enumerate(finished.head(s.top_n).iterrows()):
        name = f"{key}_tuned" if rank == 0 else f"{key}_tuned_{rank + 1}"
        saved = None if s.save_dir is None else s.save_dir / key / str(row.trial_id)
        reuse = saved is not None and all(
            (saved / f"fold{k}" / "fit.json").is_file() for k in range(s.n_folds)
        )
        ratio = 1.0 if reuse else budget.tuning_ratio(key)
        fold_s = row.time_s / s.n_folds * ratio
        family.append(
            MemberSpec(
                name,
                key,
                cls.check_params(json.loads(row.params)),
                rank + 1,
                fold_s=float(fold_s) if math.isfinite(fold_s) else None,
                trial_dir=str(saved) if reuse else None,
            )
        )
        trials.loc[trials.trial_id == row.trial_id, "member"] = name
    if not family:
        logger.warning("no %s trial finished every fold: no tuned member", key)
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
