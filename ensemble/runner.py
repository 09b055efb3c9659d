"""One ``ensemble fit`` run, stage by stage.

:func:`fit_run` checks the input, opens the run directory and runs the stages
on one :class:`RunContext`:

1. folds       ``folds.parquet``
2. members     tuned configurations (``ensemble.tune``) or each learner's
               defaults → ``trials.parquet``
3. fits        every (member, fold) on the fit pool (``ensemble.pool``)
4. OOF         the OOF rows as a Ray Dataset → ``oof/`` (``ensemble.oof``)
5. fusions     scored by nested CV on the OOF rows (``ensemble.fuse``)
6. tables      leaderboard, holdout, fits, fusion weights; the chosen model;
               the complete manifest

The time policy of a ``--time-limit`` run is in ``ensemble.budget``; Ray is
imported by the stage modules, not here.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from . import budget as budget_mod
from . import leaderboard as lb
from . import storage
from .artifacts import RunDirectory, now_iso, versions
from .budget import Budget
from .config import RunConfig
from .data import PreparedData, load_table, prepare
from .exceptions import BaseLearnerFailed, ConfigError, DataError, RunStateError
from .learners import FitContext, get
from .metrics import METRICS, default_metric, score
from .specs import FitOutcome, FitResult, FitTask, FusionOutcome, MemberSpec
from .warm import WarmStart

__all__ = ["RunContext", "RunResult", "fit_run", "load_and_prepare", "resume_config"]

logger = logging.getLogger(__name__)

#: ``on_fit(result, n_done, n_total)`` as each (member, fold) fit finishes.
FitHook = Callable[[FitResult, int, int], None]
#: ``on_trial(learner, n_done, best_cv_score)`` as each Tune trial finishes.
TrialHook = Callable[[str, int, float], None]


@dataclass
class RunResult:
    """What :func:`fit_run` returns.

    Attributes
    ----------
    run_dir : RunDirectory
    leaderboard : DataFrame
        One row per member and fusion.
    best : str
        Name of the chosen model.
    manifest : dict
    """

    run_dir: RunDirectory
    leaderboard: pd.DataFrame
    best: str
    manifest: dict[str, Any]


@dataclass
class RunContext:
    """What every stage of one run reads.

    Attributes
    ----------
    config : RunConfig
    data : PreparedData
    run : RunDirectory
    metric : str
        The metric that ranks models.
    budget : Budget
        The instants of the stages (all None without a time limit).
    on_fit, on_trial : callable, optional
        Progress hooks.
    resume : bool
        Whether this continues an interrupted run.
    warm : WarmStart, optional
        The earlier run that warm-startable members start from.
    """

    config: RunConfig
    data: PreparedData
    run: RunDirectory
    metric: str
    budget: Budget
    on_fit: FitHook | None = None
    on_trial: TrialHook | None = None
    resume: bool = False
    warm: WarmStart | None = None

    @property
    def fit_context(self) -> FitContext:
        """The task layout every learner is given."""
        d = self.data
        return FitContext(
            task=d.task,
            n_classes=d.n_classes,
            cat_mask=tuple(bool(b) for b in d.schema.cat_mask),
            n_categories=tuple(d.schema.n_categories),
            seed=self.config.seed,
        )

    @property
    def train_rows(self) -> np.ndarray:
        """Row ids of the rows in the folds."""
        return self.data.row_id[self.data.fold >= 0]

    @property
    def holdout_rows(self) -> np.ndarray:
        """Row ids of the holdout rows."""
        return self.data.row_id[self.data.fold == -1]


def load_and_prepare(config: RunConfig) -> PreparedData:
    """Load and validate the table named by the config."""
    if not config.data:
        raise DataError(
            "no data given; pass --data PATH (or `data:` in the config file)"
        )
    if not config.target:
        raise DataError(
            "no target column given; pass --target COL (or `target:` in the config)"
        )
    frame, sha = load_table(config.data)
    return prepare(
        frame,
        config.target,
        task=config.task,
        n_folds=config.n_folds,
        holdout=config.holdout,
        seed=config.seed,
        drop_columns=config.drop_columns,
        data_sha256=sha,
    )


# Fields that may differ between a run and its resumption: where Ray runs and
# how much it prints do not change a run's numbers.
_RESUME_FREE = ("verbose", "address", "out", "run_id", "report")


def resume_config(
    run_dir: str | os.PathLike[str], overrides: dict[str, Any] | None = None
) -> RunConfig:
    """The configuration of an unfinished run, for ``--resume``.

    Parameters
    ----------
    run_dir : path-like
        The run directory to continue.
    overrides : dict, optional
        Values given again on the command line; each must equal the run's own
        (except ``verbose`` and ``address``), or the run would not be the same.

    Returns
    -------
    RunConfig

    Raises
    ------
    RunStateError
        When ``run_dir`` is not a run directory.
    ConfigError
        When an override differs from the run's configuration.
    """
    run = RunDirectory.open(run_dir)
    saved = dict(run.read_manifest().get("config") or {})
    config = RunConfig.from_dict(saved)
    changes = {k: v for k, v in (overrides or {}).items() if v is not None}
    if changes:
        given = RunConfig.from_dict({**saved, **changes}).to_dict()
        base = config.to_dict()
        k = _first_difference(base, given)
        if k is not None:
            raise ConfigError(
                f"--resume continues run {run.run_id!r} with its own config, but "
                f"`{k}` is {given[k]!r} here and {base[k]!r} in the run; drop the "
                "option, or start a new run"
            )
        config = config.replace(
            **{k: v for k, v in changes.items() if k in ("verbose", "address")}
        )
    return config.replace(out=run.out, run_id=run.run_id)


def fit_run(
    config: RunConfig,
    *,
    data: PreparedData | None = None,
    on_fit: FitHook | None = None,
    on_trial: TrialHook | None = None,
    resume: bool = False,
) -> RunResult:
    """Run the whole pipeline and write a complete run directory.

    Bad input raises before anything is written. Once the directory exists, any
    failure marks the manifest ``failed`` (with the error) and re-raises. A
    process killed outright leaves the manifest ``running``; ``resume=True``
    continues such a run (or a failed one) where it stopped.

    Parameters
    ----------
    config : RunConfig
        The run's configuration.
    data : PreparedData, optional
        The table already loaded by :func:`load_and_prepare` (callers validate
        input before connecting to Ray); loaded from ``config`` when None.
    on_fit : callable, optional
        Progress hook called as each (member, fold) fit finishes.
    on_trial : callable, optional
        Progress hook called as each Tune trial finishes:
        ``(learner, n_done, best_cv_score)``.
    resume : bool, default=False
        Continue the unfinished run ``<config.out>/<config.run_id>`` (see
        :func:`resume_config`): its finished Tune trials and its finished
        (member, fold) fits are reused, everything after them is computed as
        in an uninterrupted run. The data must be unchanged. ``time_limit``
        counts again from the resumption.

    Returns
    -------
    RunResult
    """
    budget = Budget(time.monotonic(), config.time_limit)
    if data is None:
        data = load_and_prepare(config)
    metric, warm = _check_before_writing(config, data)
    run = _open_run(config, resume)
    with run.lock():
        if resume:
            _check_resumable(run, config, data)
        ctx = RunContext(
            config, data, run, metric, budget, on_fit, on_trial, resume, warm
        )
        return _locked_run(ctx)


def _check_before_writing(
    config: RunConfig, data: PreparedData
) -> tuple[str, WarmStart | None]:
    """The run's metric and warm start, or a one-line error before any write."""
    from .pool import check_object_store

    for key in config.learners:
        get(key).check_params(dict(config.learner_params.get(key, {})))
    metric = config.metric or default_metric(data.task)
    if data.task not in METRICS[metric].tasks:
        valid = [m for m, spec in METRICS.items() if data.task in spec.tasks]
        raise DataError(
            f"metric {metric!r} does not apply to a {data.task} task; use one of "
            + ", ".join(valid)
        )
    check_object_store(data.X.nbytes + data.y.nbytes + data.fold.nbytes)
    warm = None
    if config.warm_start:
        from .warm import warm_source

        schema = data.schema.to_dict()
        warm = warm_source(
            config.warm_start,
            {"task": data.task, "classes": data.classes, "schema": schema},
        )
    return metric, warm


def _open_run(config: RunConfig, resume: bool) -> RunDirectory:
    if not resume:
        return RunDirectory.create(config.out, config.run_id)
    if not config.run_id:
        raise ConfigError("resume needs the run's run_id")
    if storage.is_uri(config.out):
        return RunDirectory.open(storage.join(config.out, config.run_id))
    return RunDirectory.open(Path(config.out) / config.run_id)


def _first_difference(saved: dict[str, Any], now: dict[str, Any]) -> str | None:
    """The first config key (besides :data:`_RESUME_FREE`) whose value changed."""
    return next(
        (k for k in now if k not in _RESUME_FREE and saved.get(k) != now[k]), None
    )


def _check_resumable(run: RunDirectory, config: RunConfig, data: PreparedData) -> None:
    manifest = run.read_manifest()
    if manifest.get("status") == "complete":
        raise RunStateError(
            f"run {run.run_id!r} is already complete; nothing to resume"
        )
    if manifest.get("data_sha256") != data.data_sha256:
        raise DataError(
            f"the data differs from the data run {run.run_id!r} was started with "
            f"(sha256 {str(manifest.get('data_sha256'))[:12]}…); resume with the "
            "same data, or start a new run"
        )
    saved = dict(manifest.get("config") or {})
    now = config.to_dict()
    k = _first_difference(saved, now)
    if k is not None:
        raise ConfigError(
            f"the config differs from run {run.run_id!r}'s (`{k}`: {now[k]!r} vs "
            f"{saved.get(k)!r}); resume with the run's own config, or start a new run"
        )


def _locked_run(ctx: RunContext) -> RunResult:
    """The stages between the first manifest and the last; a failure is recorded."""
    run = ctx.run
    if ctx.resume:
        history = list(run.read_manifest().get("resumed_at") or [])
        run.write_manifest(
            status="running",
            finished_at=None,
            error=None,
            resumed_at=[*history, now_iso()],
            versions=versions(),
        )
    else:
        _write_first_manifest(ctx)
    try:
        result = _run_stages(ctx)
    except BaseException as exc:
        run.write_manifest(
            status="failed",
            finished_at=now_iso(),
            error=f"{type(exc).__name__}: {exc}"[:2000],
        )
        raise
    run.clear_checkpoints()
    if ctx.config.report:
        _write_report(run)
    if run.remote is not None:  # everything is uploaded: drop the staging copy
        shutil.rmtree(run.path.parent, ignore_errors=True)
    logger.info(
        "run %s complete in %.1f s", run.run_id, time.monotonic() - ctx.budget.start
    )
    return result


def _write_report(run: RunDirectory) -> None:
    try:  # the run is complete and usable either way
        from .report import write_report

        write_report(run.path)
        run.sync("report.html")
    except Exception as exc:  # noqa: BLE001 - a figure must not fail a run
        logger.warning("report.html not written: %s: %s", type(exc).__name__, exc)


def _write_first_manifest(ctx: RunContext) -> None:
    data, config = ctx.data, ctx.config
    ctx.run.write_manifest(
        run_id=ctx.run.run_id,
        status="running",
        task=data.task,
        target=data.target,
        classes=data.classes,
        n_rows=data.n_rows,
        n_features=len(data.schema.columns),
        data_sha256=data.data_sha256,
        config=config.to_dict(),
        seed=config.seed,
        versions=versions(),
        started_at=now_iso(),
        finished_at=None,
        best=None,
        metric=ctx.metric,
        schema=data.schema.to_dict(),
    )


# -- the stages --------------------------------------------------------------------


def _run_stages(ctx: RunContext) -> RunResult:
    folds = pd.DataFrame({"row_id": ctx.data.row_id, "fold": ctx.data.fold})
    ctx.run.write_table("folds.parquet", folds)
    specs = _members(ctx)
    t_fit = time.monotonic()
    fits = _fit_members(ctx, specs)
    fit_wall = time.monotonic() - t_fit
    cols = lb.pred_columns(ctx.data.classes)
    oof = _write_oof(ctx, fits.results, cols)
    members = [s.name for s in specs if s.name in set(oof["member"])]
    P = lb.stack_oof(oof, members, ctx.train_rows, cols)  # (n, m[, K])
    H = lb.stack_holdout(fits.results, members)
    fused = _fuse(ctx, P, H, len(members))
    board, holdout = _score(ctx, members, fits.results, P, H, fused, cols)
    return _finish(ctx, members, fits, fused, board, holdout, fit_wall)


def _members(ctx: RunContext) -> list[MemberSpec]:
    """Tuned configurations, or each learner's defaults (plus overrides).

    Chosen once: a resumed run reads them back from its checkpoint.
    """
    saved = ctx.run.load_checkpoints("members.pkl") if ctx.resume else []
    if saved:
        logger.info("resume: %d members from the earlier tuning", len(saved[0]))
        return list(saved[0])
    config = ctx.config
    tune_s = _tuning_seconds(ctx)
    if not config.tuning or (tune_s is not None and tune_s <= 0):
        from .tune import empty_trials

        ctx.run.write_table("trials.parquet", empty_trials())
        specs = [
            MemberSpec(
                k, k, get(k).check_params(dict(config.learner_params.get(k, {})))
            )
            for k in config.learners
        ]
    else:
        specs = _tune(ctx, tune_s)
    if ctx.warm is not None:
        specs = [ctx.warm.adapt(spec) for spec in specs]
    ctx.run.save_checkpoint("members.pkl", specs)
    return specs


def _tuning_seconds(ctx: RunContext) -> float | None:
    """The tuning stage's budget (None: no time limit)."""
    config, data, budget = ctx.config, ctx.data, ctx.budget
    if budget.limit is None or not config.tuning or config.n_trials:
        return budget.max_tune_s
    from .pool import cluster_slots

    slots = cluster_slots(config.cpus_per_fit)
    n_fold = int(len(ctx.train_rows) * (config.n_folds - 1) / config.n_folds)
    shape = (n_fold, data.X.shape[1], data.n_classes)

    def fits_wall(keys: list[str]) -> float:
        cpu_s = sum(budget_mod.fold_seconds(k, *shape) for k in keys)
        return cpu_s * config.n_folds / slots

    now = time.monotonic()
    tune_s, later = budget.tuning_seconds(now, fits_wall, config.learners)
    if tune_s and later:
        logger.info(
            "budget: %.0f s of tuning before the non-core families (%s), which "
            "are fitted if time is left",
            tune_s,
            ", ".join(later),
        )
    elif tune_s:
        logger.info("budget: %.0f s of tuning", tune_s)
    else:
        logger.info(
            "budget: no tuning (member fits need ~%.0f s of the %.0f s left)",
            fits_wall(list(config.learners)),
            (budget.fits_start_by or now) - now,
        )
    return tune_s


def _tune(ctx: RunContext, tune_s: float | None) -> list[MemberSpec]:
    from .tune import tune_learners

    config, data = ctx.config, ctx.data
    train = data.fold >= 0  # the holdout rows never reach a trial
    outcome = tune_learners(
        config.learners,
        data.X[train],
        data.y[train],
        data.fold[train],
        ctx.fit_context,
        metric=ctx.metric,
        storage=ctx.run.path / "tune",
        time_budget_s=tune_s,
        n_trials=config.n_trials,
        top_n=config.top_n,
        search=config.search,
        seed=config.seed,
        fixed_params={k: dict(v) for k, v in config.learner_params.items()},
        on_trial=ctx.on_trial,
        verbose=config.verbose,
        resume=ctx.resume,
    )
    ctx.run.write_table("trials.parquet", outcome.trials)
    if (ctx.run.path / "tune").is_dir():
        ctx.run.sync("tune")
    return outcome.members


def _fit_members(ctx: RunContext, specs: list[MemberSpec]) -> FitOutcome:
    """Fit every (member, fold) on the pool; raise if no member survived.

    Each finished fit is checkpointed as it arrives; a resumed run does not
    fit again the folds whose member, fold and parameters match a checkpoint.
    """
    from .pool import FitPool, put_data

    tasks = _fit_tasks(ctx, specs)
    reused = _checkpointed_fits(ctx, tasks)
    todo = [t for t in tasks if (t.member, t.fold) not in reused]
    if reused:
        logger.info("resume: %d fits reused, %d to run", len(reused), len(todo))
    params_of = {spec.name: spec.params for spec in specs}

    def on_result(result: FitResult, n_done: int, n_total: int) -> None:
        ctx.run.save_checkpoint(
            f"fits/{result.member}/fold{result.fold}.pkl",
            {"params": params_of[result.member], "result": result},
        )
        if ctx.on_fit is not None:
            ctx.on_fit(result, n_done + len(reused), n_total + len(reused))

    data = ctx.data
    pool = FitPool(
        put_data(data.X, data.y, data.fold),
        ctx.fit_context,
        ctx.run.model_target,
        cpus_per_fit=ctx.config.cpus_per_fit,
        start_by=ctx.budget.fits_start_by,
        finish_by=ctx.budget.fits_finish_by,
        on_result=on_result,
        env_vars=storage.credentials_env() if ctx.run.remote is not None else None,
    )
    outcome = pool.run(todo)
    dropped = set(outcome.failed) | set(outcome.skipped)
    outcome.results = sorted(
        [*outcome.results, *(r for r in reused.values() if r.member not in dropped)],
        key=lambda r: (r.member, r.fold),
    )
    for member, reason in outcome.failed.items():
        logger.warning("member %s dropped: %s", member, reason)
    if not outcome.results:
        first = next(iter(outcome.failed.items()), None)
        if first:
            raise BaseLearnerFailed(first[0], -1, first[1])
        raise BaseLearnerFailed(
            "*",
            -1,
            "the time limit ended the run before any member finished every fold; "
            "raise --time-limit",
        )
    return outcome


def _fit_tasks(ctx: RunContext, specs: list[MemberSpec]) -> list[FitTask]:
    """One task per (member, fold); under a deadline, queued by priority."""
    config, data = ctx.config, ctx.data
    n_fold = int(len(ctx.train_rows) * (config.n_folds - 1) / config.n_folds)
    shape = (n_fold, data.X.shape[1], data.n_classes)
    deadline = ctx.budget.fits_start_by is not None
    tasks = []
    for spec in specs:
        cls = get(spec.learner)
        cost = spec.fold_s or budget_mod.fold_seconds(spec.learner, *shape)
        priority = (
            budget_mod.priority(
                spec.rank,
                cost,
                core=budget_mod.is_core(spec.learner),
                tuned=spec.tuned,
            )
            if deadline
            else 0.0
        )
        for k in range(config.n_folds):
            state = ctx.warm.state(spec.name, spec.learner, k) if ctx.warm else None
            tasks.append(
                FitTask(
                    member=spec.name,
                    learner=spec.learner,
                    params=spec.params,
                    fold=k,
                    cost=cost,
                    uses_gpu=cls.uses_gpu,
                    priority=priority,
                    time_boxed=cls.time_boxed,
                    init_state=state,
                )
            )
    return tasks


def _checkpointed_fits(
    ctx: RunContext, tasks: list[FitTask]
) -> dict[tuple[str, int], FitResult]:
    """Fits an interrupted run finished, for the tasks whose parameters match."""
    if not ctx.resume:
        return {}
    saved: dict[tuple[str, int], tuple[dict[str, Any], FitResult]] = {}
    for entry in ctx.run.load_checkpoints("fits/"):
        result = entry["result"]
        result.resumed = True
        saved[(result.member, result.fold)] = (entry["params"], result)
    reused = {}
    for t in tasks:
        hit = saved.get((t.member, t.fold))
        if hit is not None and hit[0] == t.params:
            reused[(t.member, t.fold)] = hit[1]
    return reused


def _write_oof(
    ctx: RunContext, results: list[FitResult], cols: list[str]
) -> pd.DataFrame:
    from .oof import write_oof

    frames = lb.oof_frames(results, ctx.data.row_id, ctx.data.fold, cols)
    return write_oof(ctx.run, frames)


def _fuse(
    ctx: RunContext, P: np.ndarray, H: np.ndarray, n_members: int
) -> list[FusionOutcome]:
    from .fuse import fuse_all, fusion_specs

    specs = fusion_specs(
        ctx.config.fusions, metric=ctx.metric, seed=ctx.config.seed, n_members=n_members
    )
    if not specs:
        return []
    data = ctx.data
    return fuse_all(
        specs,
        P,
        data.y[ctx.train_rows],
        data.fold[ctx.train_rows],
        data.X[ctx.train_rows],
        H,
        data.X[ctx.holdout_rows],
        metric=ctx.metric,
        finish_by=ctx.budget.fusions_finish_by(),
    )


def _score(
    ctx: RunContext,
    members: list[str],
    results: list[FitResult],
    P: np.ndarray,
    H: np.ndarray,
    fused: list[FusionOutcome],
    cols: list[str],
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The leaderboard (members, then fusions) and the holdout predictions."""
    data, metric = ctx.data, ctx.metric
    k = data.n_classes
    hold_rows = ctx.holdout_rows
    y_train, y_hold = data.y[ctx.train_rows], data.y[hold_rows]
    y_true = [data.classes[i] for i in y_hold] if data.classes else y_hold
    scored: list[tuple[str, str, float, np.ndarray, float]] = []
    for i, m in enumerate(members):
        fit_s = sum(r.fit_s for r in results if r.member == m)
        oof_score = score(metric, y_train, P[:, i], k)
        scored.append((m, "member", oof_score, H[:, i], fit_s))
    for f in fused:
        scored.append((f.key, "fusion", f.oof_score, f.holdout_pred, f.fit_s))
    rows, frames = [], []
    for model, kind, oof_score, pred, fit_s in scored:
        rows.append(
            lb.board_row(
                model,
                kind,
                metric=metric,
                oof_score=oof_score,
                task=data.task,
                y_hold=y_hold,
                pred=pred,
                n_classes=k,
                fit_s=fit_s,
            )
        )
        frames.append(lb.holdout_frame(model, hold_rows, y_true, pred, cols))
    return pd.DataFrame(rows), pd.concat(frames, ignore_index=True)


def _finish(
    ctx: RunContext,
    members: list[str],
    fits: FitOutcome,
    fused: list[FusionOutcome],
    board: pd.DataFrame,
    holdout: pd.DataFrame,
    fit_wall: float,
) -> RunResult:
    """Write the tables and fusions, then the complete manifest."""
    run = ctx.run
    best = lb.choose(board)
    board["best"] = board["model"] == best
    run.write_table("holdout.parquet", holdout)
    run.write_table("fits.parquet", lb.fits_frame(fits.results))
    run.write_table("leaderboard.parquet", board)
    run.write_table("fusion.parquet", lb.weight_rows(fused, members))
    _save_fusions(run, {f.key: f.fusion for f in fused}, members)
    slots = max(fits.slots, 1)
    # Over the fits this session ran (a resumed run reuses some from before).
    fresh = [r for r in fits.results if not r.resumed]
    efficiency = sum(r.fit_s for r in fresh) / max(fit_wall * slots, 1e-9)
    manifest = run.write_manifest(
        status="complete",
        finished_at=now_iso(),
        best=best,
        members=members,
        fusions=[f.key for f in fused],
        failed_members=fits.failed,
        skipped_members=fits.skipped,
        timing={
            "fit_wall_s": round(fit_wall, 3),
            "slots": slots,
            "parallel_efficiency": round(efficiency, 4),
        },
    )
    return RunResult(run, board, best, manifest)


def _save_fusions(
    run: RunDirectory, fitted: dict[str, Any], members: list[str]
) -> None:
    import joblib

    fdir = run.path / "models" / "fusion"
    fdir.mkdir(parents=True, exist_ok=True)
    for key, est in fitted.items():
        target = fdir / f"{key}.joblib"
        tmp = target.with_name(target.name + ".tmp")
        joblib.dump({"members": members, "fusion": est}, tmp)
        tmp.replace(target)
    run.sync("models/fusion")
