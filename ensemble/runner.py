"""One ``ensemble fit`` run, stage by stage (orchestration; Ray lives in train.py).

load → validate → folds → Ray actors fit every (member, fold) → OOF Ray Dataset →
fusion scored by nested CV → leaderboard → complete manifest.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from . import fusion as fusion_mod
from . import storage
from .artifacts import RunDirectory, now_iso, versions
from .config import RunConfig
from .data import PreparedData, load_table, prepare
from .exceptions import BaseLearnerFailed, ConfigError, DataError, RunStateError
from .learners import FitContext, get
from .metrics import METRICS, default_metric, score, score_all, to_loss

__all__ = ["RunResult", "fit_run", "pred_columns", "resume_config"]

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


def pred_columns(classes: list[Any]) -> list[str]:
    """Names of the prediction columns: ``pred_<class>`` or ``pred``."""
    return [f"pred_{c}" for c in classes] if classes else ["pred"]


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
    on_fit: Callable[[Any, int, int], None] | None = None,
    on_trial: Callable[[str, int, float], None] | None = None,
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
    on_trial : callable, optional
        Progress hook called as each Tune trial finishes:
        ``(learner, n_done, best_cv_score)``.
    on_fit : callable, optional
        Progress hook called as each (member, fold) fit finishes.
    resume : bool, default=False
        Continue the unfinished run ``<config.out>/<config.run_id>`` (see
        :func:`resume_config`): its finished Tune families and trials and its
        finished (member, fold) fits are reused, everything after them is
        computed as in an uninterrupted run. The data must be unchanged.
        ``time_limit`` counts again from the resumption.

    Returns
    -------
    RunResult
    """
    t0 = time.monotonic()
    budget = _Budget(t0, config.time_limit)
    if data is None:
        data = load_and_prepare(config)
    for key in config.learners:  # parameter errors before anything is written
        get(key).check_params(dict(config.learner_params.get(key, {})))
    metric = config.metric or default_metric(data.task)
    if data.task not in METRICS[metric].tasks:
        valid = [m for m, spec in METRICS.items() if data.task in spec.tasks]
        raise DataError(
            f"metric {metric!r} does not apply to a {data.task} task; use one of "
            + ", ".join(valid)
        )
    from . import train

    train.check_object_store(data.X.nbytes + data.y.nbytes + data.fold.nbytes)
    warm = None
    if config.warm_start:  # checked before anything is written
        from .warm import warm_source

        warm = warm_source(
            config.warm_start,
            {
                "task": data.task,
                "classes": data.classes,
                "schema": data.schema.to_dict(),
            },
        )

    if resume:
        if not config.run_id:
            raise ConfigError("resume needs the run's run_id")
        run = RunDirectory.open(
            storage.join(config.out, config.run_id)
            if storage.is_uri(config.out)
            else Path(config.out) / config.run_id
        )
    else:
        run = RunDirectory.create(config.out, config.run_id)
    with run.lock():
        if resume:
            _check_resumable(run, config, data)
        return _locked_run(
            config, data, run, metric, budget, on_fit, on_trial, resume, warm
        )


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


def _locked_run(
    config: RunConfig,
    data: PreparedData,
    run: RunDirectory,
    metric: str,
    budget: _Budget,
    on_fit: Callable[[Any, int, int], None] | None,
    on_trial: Callable[[str, int, float], None] | None,
    resume: bool,
    warm: Any = None,
) -> RunResult:
    t0 = budget.start
    if resume:
        history = list(run.read_manifest().get("resumed_at") or [])
        run.write_manifest(
            status="running",
            finished_at=None,
            error=None,
            resumed_at=[*history, now_iso()],
            versions=versions(),
        )
    else:
        _write_first_manifest(run, config, data, metric)
    try:
        result = _run_stages(
            config, data, run, metric, budget, on_fit, on_trial, resume, warm
        )
    except BaseException as exc:
        run.write_manifest(
            status="failed",
            finished_at=now_iso(),
            error=f"{type(exc).__name__}: {exc}"[:2000],
        )
        raise
    run.clear_checkpoints()
    try:  # the run is complete and usable either way
        from .report import write_report

        if config.report:
            write_report(run.path)
            run.sync("report.html")
    except Exception as exc:  # noqa: BLE001 - a figure must not fail a run
        logger.warning("report.html not written: %s: %s", type(exc).__name__, exc)
    if run.remote is not None:  # everything is uploaded: drop the staging copy
        shutil.rmtree(run.path.parent, ignore_errors=True)
    logger.info("run %s complete in %.1f s", run.run_id, time.monotonic() - t0)
    return result


def _write_first_manifest(
    run: RunDirectory, config: RunConfig, data: PreparedData, metric: str
) -> None:
    run.write_manifest(
        run_id=run.run_id,
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
        metric=metric,
        schema=data.schema.to_dict(),
    )


def _run_stages(
    config: RunConfig,
    data: PreparedData,
    run: RunDirectory,
    metric: str,
    budget: _Budget,
    on_fit: Callable[[Any, int, int], None] | None,
    on_trial: Callable[[str, int, float], None] | None,
    resume: bool = False,
    warm: Any = None,
) -> RunResult:
    from . import train  # Ray is imported only here, at run time

    run.write_table(
        "folds.parquet", pd.DataFrame({"row_id": data.row_id, "fold": data.fold})
    )
    saved = run.load_checkpoints("members.pkl") if resume else []
    if saved:
        members_specs = saved[0]
        logger.info("resume: %d members from the earlier tuning", len(members_specs))
    else:
        members_specs = _member_specs(
            config, data, run, metric, budget, on_trial, resume
        )
        if warm is not None:
            members_specs = [warm.adapt(spec) for spec in members_specs]
        run.save_checkpoint("members.pkl", members_specs)
    t_fit = time.monotonic()
    outcome = _fit_members(
        config, data, run, members_specs, budget, on_fit, resume, warm
    )
    fit_wall = time.monotonic() - t_fit
    cols = pred_columns(data.classes)

    # OOF rows become a Ray Dataset, written as the oof/ Parquet dataset; the
    # fusion layer is fed from that same Dataset.
    ds = train.oof_dataset(_oof_frames(outcome.results, data, cols))
    tmp = run.tmp_dir("oof")
    train.write_dataset(ds, str(tmp))
    run.commit_dir(tmp, "oof")
    oof = train.dataset_to_pandas(ds)

    members = [s.name for s in members_specs if s.name in set(oof["member"])]
    train_rows = data.row_id[data.fold >= 0]
    hold_rows = data.row_id[data.fold == -1]
    y_train, y_hold = data.y[train_rows], data.y[hold_rows]
    P = _stack(oof, members, train_rows, cols)  # (n_train, m[, K])
    H = _stack_holdout(outcome.results, members)
    k = data.n_classes

    board_rows: list[dict[str, Any]] = []
    holdout_frames: list[pd.DataFrame] = []
    for i, m in enumerate(members):
        fit_s = sum(r.fit_s for r in outcome.results if r.member == m)
        oof_score = score(metric, y_train, P[:, i], k)
        board_rows.append(
            _board_row(
                m, "member", metric, oof_score, data.task, y_hold, H[:, i], k, fit_s
            )
        )
        holdout_frames.append(_holdout_frame(m, hold_rows, data, H[:, i], cols))

    specs = _fusion_specs(config, metric, len(members))
    fused = (
        train.fuse_all(
            specs,
            P,
            y_train,
            data.fold[train_rows],
            data.X[train_rows],
            H,
            data.X[hold_rows],
            metric=metric,
            deadline=budget.fusion_deadline(),
        )
        if specs
        else []
    )
    weight_rows: list[dict[str, Any]] = []
    for f in fused:
        board_rows.append(
            _board_row(
                f.key,
                "fusion",
                metric,
                f.oof_score,
                data.task,
                y_hold,
                f.holdout_pred,
                k,
                f.fit_s,
            )
        )
        holdout_frames.append(
            _holdout_frame(f.key, hold_rows, data, f.holdout_pred, cols)
        )
        for who, w, output in f.fusion.member_weights():
            name = str(who) if isinstance(who, str) else members[int(who)]
            weight_rows.append(
                {"fusion": f.key, "member": name, "weight": w, "output": output}
            )

    board = pd.DataFrame(board_rows)
    best = _choose(board)
    board["best"] = board["model"] == best
    run.write_table("holdout.parquet", pd.concat(holdout_frames, ignore_index=True))
    run.write_table("fits.parquet", _fits_frame(outcome.results))
    run.write_table("leaderboard.parquet", board)
    run.write_table(
        "fusion.parquet",
        pd.DataFrame(weight_rows, columns=["fusion", "member", "weight", "output"]),
    )
    _save_fusions(run, {f.key: f.fusion for f in fused}, members)
    slots = max(outcome.slots, 1)
    # Over the fits this session ran (a resumed run reuses some from before).
    fresh = [r for r in outcome.results if not getattr(r, "resumed", False)]
    efficiency = sum(r.fit_s for r in fresh) / max(fit_wall * slots, 1e-9)
    manifest = run.write_manifest(
        status="complete",
        finished_at=now_iso(),
        best=best,
        members=members,
        fusions=[f.key for f in fused],
        failed_members=outcome.failed,
        skipped_members=outcome.skipped,
        timing={
            "fit_wall_s": round(fit_wall, 3),
            "slots": slots,
            "parallel_efficiency": round(efficiency, 4),
        },
    )
    return RunResult(run, board, best, manifest)


@dataclass(frozen=True)
class _Budget:
    """Deadlines (``time.monotonic()``) of each stage under ``--time-limit``."""

    start: float
    limit: float | None

    def _at(self, fraction: float) -> float | None:
        return None if self.limit is None else self.start + fraction * self.limit

    @property
    def tune_s(self) -> float | None:
        # Tuning gets 45%: member fits (top-N per family x folds) and fusion
        # scoring need most of the rest on a small cluster.
        return None if self.limit is None else 0.45 * self.limit

    @property
    def fit_end(self) -> float | None:
        return self._at(0.80)  # no new (member, fold) fit starts after this

    @property
    def fit_finish(self) -> float | None:
        return self._at(0.90)  # every fit should have ended by then

    @property
    def fusion_end(self) -> float | None:
        return self._at(0.96)  # leaves time to write the run directory

    def fusion_deadline(self) -> float | None:
        """The fusion stage's deadline, never less than a short floor from now.

        Fits that started before the fit deadline run to their end and may eat
        the fusion time; the floor (5% of the limit, 2-10 s) still lets the
        cheap fusions (average, weighted, stacking: well under a second on
        the shared tables) finish, so a late run still ends fused.
        """
        end = self.fusion_end
        if end is None or self.limit is None:
            return None
        floor = min(10.0, max(2.0, 0.05 * self.limit))
        return max(end, time.monotonic() + floor)


#: Below this, a search finishes too few trials to beat the defaults.
MIN_TUNE_S = 20.0


def _slots() -> int:
    import ray

    return max(1, int(ray.cluster_resources().get("CPU", 1)))


def _fold_seconds(key: str, data: PreparedData, n_folds: int) -> float:
    n_fold_train = int((data.fold >= 0).sum() * (n_folds - 1) / max(n_folds, 1))
    return get(key).expected_seconds(n_fold_train, data.X.shape[1], data.n_classes)


def _member_seconds(spec: Any, data: PreparedData, n_folds: int) -> float:
    """Expected seconds of one fold of a member: its tuning trial's, if timed."""
    measured = getattr(spec, "fold_s", None)  # members.pkl of older runs lack it
    if measured is not None and measured > 0:
        return float(measured)
    return _fold_seconds(spec.learner, data, n_folds)


def _tuning_budget(config: RunConfig, data: PreparedData, budget: _Budget) -> float:
    """Seconds of tuning the time limit affords (0 = fit the defaults only).

    The member fits come first: each family's best configuration on every
    fold, at the learners' calibrated fit times over the cluster's CPUs, with
    20% slack (second-best configurations are extras the fit stage drops
    first when time runs short). Tuning gets what is left before the fit
    deadline, at most 45% of the limit. When that is less than MIN_TUNE_S
    (too few trials to beat the defaults), tuning comes before the non-core
    families (forests, MLP): it gets what the core ones (boosters, linear)
    leave, and the fit stage fits the others only if time is left. If even
    that is too short, no tuning runs and the defaults are fitted at once.
    """
    assert budget.limit is not None and budget.fit_end is not None
    slots = max(1, _slots() // max(1, config.cpus_per_fit))

    def need_wall(keys: Sequence[str]) -> float:
        cpu_s = sum(_fold_seconds(k, data, config.n_folds) for k in keys)
        return 1.2 * cpu_s * config.n_folds / slots

    available = budget.fit_end - time.monotonic()
    cap = 0.45 * budget.limit
    everything = need_wall(config.learners)
    tune_s = min(cap, available - everything)
    if tune_s >= MIN_TUNE_S:
        logger.info(
            "budget: %.0f s of tuning, ~%.0f s for the fits", tune_s, everything
        )
        return tune_s
    core = [k for k in config.learners if get(k).core]
    tune_s = min(cap, available - need_wall(core)) if core else 0.0
    if tune_s >= MIN_TUNE_S:
        logger.info(
            "budget: %.0f s of tuning before the non-core families (%s), which "
            "are fitted if time is left",
            tune_s,
            ", ".join(k for k in config.learners if k not in core),
        )
        return tune_s
    logger.info(
        "budget: no tuning (member fits need ~%.0f s of the %.0f s left)",
        everything,
        available,
    )
    return 0.0


def _priority(
    rank: int, seconds: float, core: bool = True, tuned: bool = False
) -> float:
    """Queue priority under a deadline (lower first).

    Rank first (every family's best configuration before any second-best),
    then the core families (boosters, linear) before the others, then the
    tuned configurations (the time limit paid for them, and they are usually
    the strongest members) before the defaults, then cheaper first.
    ``seconds`` is scaled into [0, 0.1], far above float resolution next to
    ``rank`` (an earlier ``cost / 1e18`` vanished there and the queue fell
    back to longest-first).
    """
    group = (0.0 if core else 0.5) + (0.0 if tuned else 0.25)
    return rank + group + min(max(seconds, 0.0), 1e6) / 1e7


def _member_specs(
    config: RunConfig,
    data: PreparedData,
    run: RunDirectory,
    metric: str,
    budget: _Budget,
    on_trial: Callable[[str, int, float], None] | None,
    resume: bool = False,
) -> list[Any]:
    """Members: tuned configurations, or each learner's defaults (plus overrides)."""
    from .tune import MemberSpec, _empty_trials, tune_learners

    tune_s = budget.tune_s
    if config.tuning and budget.limit is not None and not config.n_trials:
        tune_s = _tuning_budget(config, data, budget)
    if not config.tuning or (tune_s is not None and tune_s <= 0):
        run.write_table("trials.parquet", _empty_trials())
        return [
            MemberSpec(
                k, k, get(k).check_params(dict(config.learner_params.get(k, {})))
            )
            for k in config.learners
        ]
    train_rows = data.fold >= 0
    outcome = tune_learners(
        config.learners,
        data.X[train_rows],  # the holdout rows never reach a trial
        data.y[train_rows],
        data.fold[train_rows],
        _context(config, data),
        metric=metric,
        storage=run.path / "tune",
        time_budget_s=tune_s,
        n_trials=config.n_trials,
        top_n=config.top_n,
        search=config.search,
        seed=config.seed,
        fixed_params={k: dict(v) for k, v in config.learner_params.items()},
        on_trial=on_trial,
        verbose=config.verbose,
        resume=resume,
    )
    run.write_table("trials.parquet", outcome.trials)
    if (run.path / "tune").is_dir():
        run.sync("tune")
    return outcome.members


def _context(config: RunConfig, data: PreparedData) -> FitContext:
    return FitContext(
        task=data.task,
        n_classes=data.n_classes,
        cat_mask=tuple(bool(b) for b in data.schema.cat_mask),
        n_categories=tuple(data.schema.n_categories),
        seed=config.seed,
    )


def _fit_members(
    config: RunConfig,
    data: PreparedData,
    run: RunDirectory,
    specs: list[Any],
    budget: _Budget,
    on_fit: Callable[[Any, int, int], None] | None,
    resume: bool = False,
    warm: Any = None,
) -> Any:
    """Fit every (member, fold) on Ray actors; raise if no member survived.

    Each finished fit is checkpointed as it arrives; on resume the fits whose
    member, fold and parameters match a checkpoint are not run again. Under a
    time limit the fit stage plans (and re-plans as folds finish) which
    members can finish by the fit deadline; the others are not fitted.
    """
    from . import train

    deadline = budget.fit_end
    done: dict[tuple[str, int], Any] = {}
    if resume:
        for entry in run.load_checkpoints("fits/"):
            result = entry["result"]
            result.resumed = True
            done[(result.member, result.fold)] = (entry["params"], result)
    ctx = _context(config, data)
    tasks = []
    for spec in specs:
        cls = get(spec.learner)
        cost = _member_seconds(spec, data, config.n_folds)
        for k in range(config.n_folds):
            tasks.append(
                train.FitTask(
                    member=spec.name,
                    learner=spec.learner,
                    params=spec.params,
                    fold=k,
                    cost=cost,
                    uses_gpu=cls.uses_gpu,
                    time_boxed=cls.time_boxed,
                    # Under a deadline: every family's best config first, core
                    # families (boosters) first, tuned ones first, cheapest
                    # first, so the limit drops second-best and slow members,
                    # never the strong ones.
                    priority=(
                        _priority(
                            spec.rank,
                            cost,
                            cls.core,
                            getattr(spec, "fold_s", None) is not None,
                        )
                        if deadline is not None
                        else 0
                    ),
                    init_state=(
                        warm.state(spec.name, spec.learner, k)
                        if warm is not None
                        else None
                    ),
                )
            )
    params_of = {spec.name: spec.params for spec in specs}
    reused = []
    todo = []
    for t in tasks:
        hit = done.get((t.member, t.fold))
        if hit is not None and hit[0] == t.params:
            reused.append(hit[1])
        else:
            todo.append(t)
    if reused:
        logger.info("resume: %d fits reused, %d to run", len(reused), len(todo))

    def on_result(result: Any, n_done: int, n_total: int) -> None:
        run.save_checkpoint(
            f"fits/{result.member}/fold{result.fold}.pkl",
            {"params": params_of[result.member], "result": result},
        )
        if on_fit is not None:
            on_fit(result, n_done + len(reused), n_total + len(reused))

    shared = train.put_data(data.X, data.y, data.fold)
    outcome = train.fit_all(
        todo,
        shared,
        ctx,
        run.model_target,
        cpus_per_fit=config.cpus_per_fit,
        deadline=deadline,
        finish_by=budget.fit_finish,
        on_result=on_result,
        env_vars=storage.credentials_env() if run.remote is not None else None,
    )
    dropped = set(outcome.failed) | set(outcome.skipped)
    outcome.results = sorted(
        [*outcome.results, *(r for r in reused if r.member not in dropped)],
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


def _oof_frames(
    results: list[Any], data: PreparedData, cols: list[str]
) -> list[pd.DataFrame]:
    frames = []
    for r in results:
        fold_rows = data.row_id[data.fold == r.fold]
        f = pd.DataFrame(r.oof_pred.reshape(len(fold_rows), -1), columns=cols)
        f.insert(0, "fold", np.int64(r.fold))
        f.insert(0, "row_id", fold_rows)
        f.insert(0, "member", r.member)
        frames.append(f)
    return frames


#: Relative cost of scoring each fusion by nested CV (adult: two_level 21 s,
#: selection 8 s, neural 8 s, stacking_lgbm 2 s, the others < 0.5 s).
FUSION_COST = {
    "average": 0,
    "weighted": 1,
    "stacking": 2,
    "stacking_nonneg": 3,
    "stacking_lgbm": 4,
    "neural": 5,
    "selection": 6,
    "two_level": 7,
}


def _fusion_specs(
    config: RunConfig, metric: str, n_members: int
) -> list[tuple[str, dict[str, Any]]]:
    """(key, params) of each configured fusion that has enough members."""
    specs = []
    # Cheapest first: under a deadline the slow ones are the ones dropped.
    for key in sorted(config.fusions, key=lambda k: FUSION_COST.get(k, 9)):
        proto = fusion_mod.make(key)
        if n_members < proto.min_members:
            logger.info("fusion %s skipped: it needs more members", key)
            continue
        params: dict[str, Any] = {}
        if "random_state" in proto.get_params():
            params["random_state"] = config.seed
        if key == "selection":
            params["metric"] = metric  # select for the metric the run ranks by
        specs.append((key, params))
    return specs


def _stack(
    oof: pd.DataFrame, members: list[str], row_ids: np.ndarray, cols: list[str]
) -> np.ndarray:
    """(n_rows, n_members[, n_classes]) from the long OOF frame."""
    blocks = []
    for m in members:
        part = oof[oof["member"] == m].set_index("row_id").loc[row_ids, cols].to_numpy()
        blocks.append(part)
    P = np.stack(blocks, axis=1).astype(np.float64)
    return P[:, :, 0] if cols == ["pred"] else P


def _stack_holdout(results: list[Any], members: list[str]) -> np.ndarray:
    """Holdout predictions per member: the mean over its fold models."""
    blocks = []
    for m in members:
        # In fold order: results arrive in completion order, and a different
        # summation order changes ties (forests give multiples of 1/n_trees).
        mine = sorted((r for r in results if r.member == m), key=lambda r: r.fold)
        preds = [r.holdout_pred for r in mine]
        blocks.append(np.mean(preds, axis=0))
    return np.stack(blocks, axis=1).astype(np.float64)


def _board_row(
    model: str,
    kind: str,
    metric: str,
    oof_score: float,
    task: str,
    y_hold: np.ndarray,
    pred: np.ndarray,
    k: int,
    fit_s: float,
) -> dict[str, Any]:
    hold = score_all(task, y_hold, pred, k)
    row: dict[str, Any] = {
        "model": model,
        "kind": kind,
        "metric": metric,
        "oof_score": oof_score,
        "holdout_score": hold[metric],
    }
    row.update(hold)
    row["fit_s"] = fit_s
    return row


def _holdout_frame(
    model: str, rows: np.ndarray, data: PreparedData, pred: np.ndarray, cols: list[str]
) -> pd.DataFrame:
    y = data.y[rows]
    y_true = [data.classes[i] for i in y] if data.classes else y
    f = pd.DataFrame(pred.reshape(len(rows), -1), columns=cols)
    f.insert(0, "y_true", y_true)
    f.insert(0, "row_id", rows)
    f.insert(0, "model", model)
    return f


def _fits_frame(results: list[Any]) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {
                "member": r.member,
                "learner": r.learner,
                "fold": r.fold,
                "node_id": r.node_id,
                "worker": r.worker,
                "gpu": r.gpu,
                "started_at": r.started_at,
                "fit_s": r.fit_s,
                "predict_s": r.predict_s,
                "n_train": r.n_train,
                "resumed": bool(getattr(r, "resumed", False)),
                # Stopped at its time box (a booster with fewer rounds).
                "truncated": bool(getattr(r, "truncated", False)),
            }
            for r in sorted(results, key=lambda r: (r.member, r.fold))
        ]
    )


def _choose(board: pd.DataFrame) -> str:
    """The model with the best OOF (nested-CV for fusions) score; holdout unused."""
    losses = [
        to_loss(m, s) if not math.isnan(s) else math.inf
        for m, s in zip(board["metric"], board["oof_score"], strict=True)
    ]
    return str(board["model"].iloc[int(np.argmin(losses))])


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
