"""One ``ensemble fit`` run, stage by stage.

:func:`fit_run` checks the input, opens the run directory and runs the stages
on one :class:`~ensemble.context.RunContext`:

1. folds       ``folds.parquet``
2. portfolio   every family's defaults and portfolio configurations on the
               fit pool (``ensemble.members``, ``ensemble.pool``)
3. search      Ray Tune where it pays (``ensemble.tune``) → ``trials.parquet``
4. repeats     the strongest members on fresh fold assignments
5. OOF         each member's OOF rows as a Ray Dataset → ``oof/``
6. fusions     scored by nested CV on the OOF rows (``ensemble.fuse``)
7. tables      leaderboard, fusion OOF, holdout (when asked for), fits,
               fusion weights; the chosen model; the complete manifest

The time policy of a ``--time-limit`` run is in ``ensemble.budget``; Ray is
imported by the stage modules, not here.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from . import budget as budget_mod
from . import refit, storage
from .artifacts import RunDirectory, now_iso, versions
from .budget import Budget
from .config import RunConfig
from .context import FitHook, RunContext, TrialHook
from .data import PreparedData, load_table, prepare
from .exceptions import (
    ConfigError,
    DataError,
    DiskFullError,
    RunStateError,
    is_disk_full,
)
from .learners import get
from .members import Fitted
from .metrics import METRICS, default_metric
from .refit import Refitted
from .scoring import Scored
from .warm import WarmStart

__all__ = ["RunContext", "RunResult", "fit_run", "load_and_prepare", "resume_config"]

logger = logging.getLogger(__name__)


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
    manifest, out, run_id = RunDirectory.peek(run_dir)
    saved = dict(manifest.get("config") or {})
    config = RunConfig.from_dict(saved)
    changes = {k: v for k, v in (overrides or {}).items() if v is not None}
    if changes:
        given = RunConfig.from_dict({**saved, **changes}).to_dict()
        base = config.to_dict()
        k = _first_difference(base, given)
        if k is not None:
            raise ConfigError(
                f"--resume continues run {run_id!r} with its own config, but "
                f"`{k}` is {given[k]!r} here and {base[k]!r} in the run; drop the "
                "option, or start a new run"
            )
        config = config.replace(
            **{k: v for k, v in changes.items() if k in ("verbose", "address")}
        )
    return config.replace(out=out, run_id=run_id)


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
    budget = budget.with_fusions(
        _fusion_seconds(config, data, _configured_members(config))
    )
    try:
        run = _open_run(config, resume)
    except OSError as exc:
        raise _disk_full(config.out) if is_disk_full(exc) else exc from exc
    try:
        with run.lock():
            if resume:
                _check_resumable(run, config, data)
            ctx = RunContext(
                config, data, run, metric, budget, on_fit, on_trial, resume, warm
            )
            return _locked_run(ctx)
    except OSError as exc:  # a disk too full to take even the lock file
        if not is_disk_full(exc) or isinstance(exc, DiskFullError):
            raise
        if not resume and not (run.path / "manifest.json").exists():
            shutil.rmtree(run.path, ignore_errors=True)  # nothing half-written
        raise _disk_full(run.location) from exc
    finally:
        if run.remote is not None:
            # Every file was uploaded as it was written (the manifest last,
            # `complete` or `failed`): the local staging copy has served, on
            # success and on failure alike.
            shutil.rmtree(run.path.parent, ignore_errors=True)


def _disk_full(where: str) -> DiskFullError:
    return DiskFullError(
        f"the disk of {where} is full (no space left on device); free some space "
        "or write the run elsewhere (--out)"
    )


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


def _search_may_add(config: RunConfig) -> int:
    """Members a search may add: the best of its (at most) two families."""
    return 2 * config.top_n if config.tuning else 0


def _configured_members(config: RunConfig) -> int:
    """Members the configuration may fit: defaults, portfolio, searched."""
    from .learners import get

    n = len(config.learners) + _search_may_add(config)
    if config.portfolio:
        n += sum(len(get(k).portfolio) for k in config.learners)
    return n


def _fusion_seconds(config: RunConfig, data: PreparedData, n_members: int) -> float:
    """The fusions' expected seconds over ``n_members``, for a limited run."""
    from .pool import cluster_slots

    if config.time_limit is None or not config.fusions:
        return 0.0
    outputs = data.n_classes if data.n_classes > 2 else 1
    n_rows = int((data.fold >= 0).sum())
    return budget_mod.fusion_seconds(
        config.fusions, n_rows, n_members, outputs, cluster_slots(1)
    )


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
    try:
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
        result = _run_stages(ctx)
    except BaseException as exc:
        err = exc
        if is_disk_full(exc) and not isinstance(exc, DiskFullError):
            err = _disk_full(run.location)
        run.record_failure(f"{type(err).__name__}: {err}"[:2000])
        if err is not exc:
            raise err from exc
        raise
    run.clear_checkpoints()
    if ctx.config.report:
        _write_report(run)
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
    from . import members as stage
    from . import scoring

    # When each stage ended, in seconds from the start (of this session, for a
    # resumed run): what the budget planned can be checked against it.
    stages: dict[str, float] = {}

    def ended(name: str) -> None:
        stages[name] = round(time.monotonic() - ctx.budget.start, 3)

    folds = pd.DataFrame({"row_id": ctx.data.row_id, "fold": ctx.data.fold})
    ctx.run.write_table("folds.parquet", folds)
    fitted = stage.fit_portfolio(ctx)
    ended("portfolio")
    _size_late_windows(ctx, fitted, _search_may_add(ctx.config))
    fitted = stage.search(ctx, fitted)
    ended("search")
    _size_late_windows(ctx, fitted)
    fitted = stage.repeat(ctx, fitted)
    ended("repeats")
    scored = scoring.score(ctx, fitted)
    ended("fusions")
    refitted = refit.refit(ctx, fitted, scored.used)
    ended("refit")
    return _finish(ctx, fitted, scored, refitted, stages)


def _size_late_windows(ctx: RunContext, fitted: Fitted, more: int = 0) -> None:
    """Size the fusions' and the refit's windows from the members fitted.

    The fusions' for the members there are (and ``more`` to come), the
    refit's from their measured folds: the start could only guess either.
    """
    if ctx.budget.limit is None:
        return
    n_members = len({r.member for r in fitted.results}) + more
    ctx.budget = ctx.budget.with_fusions(
        _fusion_seconds(ctx.config, ctx.data, n_members)
    )
    if ctx.config.refit:
        ctx.budget = ctx.budget.with_refit(refit.refit_seconds(ctx, fitted))


def _finish(
    ctx: RunContext,
    fitted: Fitted,
    scored: Scored,
    refitted: Refitted,
    stages: dict[str, float],
) -> RunResult:
    """Write the complete manifest (``stages``: when each stage ended, in s)."""
    slots = max(fitted.slots, 1)
    names = scored.members
    # Over the fits this session ran (a resumed run reuses some from before);
    # fits of tuning trials ran outside the pools and count in neither.
    fresh = [
        r
        for r in [*fitted.results, *refitted.results]
        if not r.resumed and not r.worker.startswith("tune:")
    ]
    efficiency = sum(r.fit_s for r in fresh) / max(ctx.fit_wall * slots, 1e-9)
    manifest = ctx.run.write_manifest(
        status="complete",
        finished_at=now_iso(),
        best=scored.best,
        members=names,
        fusions=[f.key for f in scored.fused],
        # the fusions temperature scaled for log loss: the power of each
        calibrated={
            f.key: round(float(f.fusion.sharpen_), 6)
            for f in scored.fused
            if getattr(f.fusion, "sharpen_", None) is not None
        },
        failed_members=fitted.failed,
        skipped_members=fitted.skipped,
        dropped_columns=ctx.data.dropped_columns,
        kept_models=scored.kept,
        refit={
            "members": refitted.members,
            "kept_on_folds": refitted.skipped,
            "bagged": refitted.bagged,
            "fit_s": round(sum(r.fit_s for r in refitted.results), 3),
            "n_train": {r.member: r.n_train for r in refitted.results},
        },
        repeats={m: len({r.repeat for r in fitted.of(m)}) for m in names},
        timing={
            "fit_wall_s": round(ctx.fit_wall, 3),
            "slots": slots,
            "parallel_efficiency": round(efficiency, 4),
            "stages_s": stages,
        },
    )
    return RunResult(ctx.run, scored.board, scored.best, manifest)
