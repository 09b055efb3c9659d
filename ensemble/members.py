"""The members of a run: the portfolio, a search where it pays, repeats.

Three stages, each a function of the :class:`~ensemble.context.RunContext`
and of what the stages before it fitted (:class:`Fitted`):

1. :func:`fit_portfolio`: every family's defaults and portfolio
   configurations, fitted on the fit pool in value order;
2. :func:`search`: Ray Tune on the families that lead the OOF leaderboard
   (``ensemble.budget.search_plan``); a chosen trial's folds are reused when
   they are the run's own folds;
3. :func:`repeat`: the strongest members fitted again on fresh fold
   assignments while time is left, kept where the averaged OOF score gains.

How much time each gets is ``ensemble.budget``'s to say.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from . import budget as budget_mod
from . import leaderboard as lb
from . import storage
from .artifacts import fold_name
from .context import RunContext
from .data import repeat_folds
from .exceptions import BaseLearnerFailed
from .learners import get
from .metrics import score, to_loss
from .specs import REFIT_FOLD, FitOutcome, FitResult, FitTask, MemberSpec
from .tune import empty_trials, tune_learners

__all__ = ["Fitted", "fit_portfolio", "fit_tasks", "portfolio", "repeat", "search"]

logger = logging.getLogger(__name__)

#: Trials per family when a run tunes without a time limit or ``n_trials``.
DEFAULT_TRIALS = 10


@dataclass
class Fitted:
    """The members fitted so far.

    Attributes
    ----------
    specs : list of MemberSpec
        Members with every fold fitted, in the order they were planned.
    results : list of FitResult
        Their fits, every repeat kept.
    folds : list of ndarray
        Fold ids of every row in each repeat (``folds[0]``: the run's folds).
    failed : dict
        Member → reason, for members dropped after a failed fit.
    skipped : list of str
        Members the time limit left out.
    slots : int
        Fits the cluster ran at once.
    """

    specs: list[MemberSpec]
    results: list[FitResult]
    folds: list[np.ndarray]
    failed: dict[str, str] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)
    slots: int = 1

    def of(self, member: str) -> list[FitResult]:
        """The fits of ``member``."""
        return [r for r in self.results if r.member == member]

    def losses(self, ctx: RunContext) -> dict[str, float]:
        """Each member's OOF loss (its repeats averaged)."""
        y = ctx.data.y[ctx.train_rows]
        return {
            s.name: to_loss(
                ctx.metric,
                score(
                    ctx.metric,
                    y,
                    lb.member_oof(self.of(s.name), self.folds),
                    ctx.data.n_classes,
                ),
            )
            for s in self.specs
        }


# -- 1. the portfolio -----------------------------------------------------------


def portfolio(ctx: RunContext) -> list[MemberSpec]:
    """Every family's defaults, then its portfolio configurations.

    A user's ``learner_params`` for a family apply to all its configurations.
    """
    config = ctx.config
    specs = []
    n_rows = len(ctx.train_rows)
    # the rows in the folds (every row, without a copy, unless a holdout)
    X = ctx.data.X[ctx.train_rows] if ctx.data.has_holdout else ctx.data.X
    for key in config.learners:
        if n_rows > budget_mod.MAX_ROWS.get(key, n_rows) and _default_learners(config):
            logger.info(
                "%s left out: %d rows (it is fitted up to %d)",
                key,
                n_rows,
                budget_mod.MAX_ROWS[key],
            )
            continue
        cls = get(key)
        fixed = dict(config.learner_params.get(key, {}))
        default = cls.check_params(fixed)
        specs.append(MemberSpec(key, key, default))
        if config.portfolio:
            for name, params in cls.portfolio.items():
                merged = cls.check_params({**params, **fixed})
                # a user's learner_params can make it the default member again
                same = merged == default
                if same or not cls.portfolio_applies(merged, X, ctx.fit_context):
                    logger.info("%s_%s left out: same model as %s here", key, name, key)
                    continue
                specs.append(MemberSpec(f"{key}_{name}", key, merged))
    if ctx.warm is not None:
        specs = [ctx.warm.adapt(spec) for spec in specs]
    return specs


def _default_learners(config: Any) -> bool:
    """Whether the families are the default list.

    A user's own list is fitted as asked, whatever the rows.
    """
    from .config import DEFAULT_LEARNERS

    return tuple(config.learners) == DEFAULT_LEARNERS


def fit_portfolio(ctx: RunContext) -> Fitted:
    """Fit the portfolio on the run's folds; raise if no member survived."""
    specs = portfolio(ctx)
    folds = [ctx.data.fold]
    outcome = _fit(ctx, _tasks(ctx, specs), folds)
    _raise_if_empty(outcome)
    done = {r.member for r in outcome.results}
    kept = [s for s in specs if s.name in done]
    return Fitted(
        kept, outcome.results, folds, outcome.failed, outcome.skipped, outcome.slots
    )


def _tasks(ctx: RunContext, specs: list[MemberSpec], repeat: int = 0) -> list[FitTask]:
    """One task per (member, fold); under a deadline, queued by value.

    A member whose folds would take much of the fits' window goes after the
    ones that would not (:func:`ensemble.budget.is_dear`).
    """
    data = ctx.data
    shape = (ctx.fold_rows, data.X.shape[1], data.n_classes)
    start_by = ctx.budget.fits_start_by
    if start_by is not None:
        from .pool import cluster_slots

        slots = cluster_slots(ctx.config.cpus_per_fit)
        window = start_by - time.monotonic()
    tasks = []
    for spec in specs:
        cls = get(spec.learner)
        cost = spec.fold_s or budget_mod.fold_seconds(
            spec.learner, *shape, member=spec.name
        )
        rank = budget_mod.value_rank(spec.name, spec.learner)
        priority = 0.0
        if start_by is not None:
            dear = budget_mod.is_dear(cost, ctx.config.n_folds, slots, window)
            priority = budget_mod.priority(rank, cost, dear, cls.time_boxed)
        for k in range(ctx.config.n_folds):
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
                    repeat=repeat,
                )
            )
    return tasks


def _fit(ctx: RunContext, tasks: list[FitTask], folds: list[np.ndarray]) -> FitOutcome:
    """:func:`fit_tasks` by the fits' instants of the budget."""
    budget = ctx.budget
    return fit_tasks(
        ctx,
        tasks,
        folds,
        start_by=budget.fits_start_by,
        finish_by=budget.fits_finish_by,
    )


def fit_tasks(
    ctx: RunContext,
    tasks: list[FitTask],
    folds: list[np.ndarray],
    *,
    start_by: float | None,
    finish_by: float | None,
) -> FitOutcome:
    """Fit ``tasks`` on the fit pool, checkpointing each fit as it arrives.

    No fit starts after ``start_by``, and every fit should end by
    ``finish_by`` (``time.monotonic()`` instants; None: no limit). A resumed
    run does not fit again the folds whose member, repeat, fold and
    parameters match a checkpoint. A task's ``member`` may be ``name@r`` (a
    repeat, planned as a unit of its own); results carry the plain name.
    """
    from .pool import FitPool, put_data

    reused = _checkpointed(ctx, tasks)
    todo = [t for t in tasks if _task_key(t) not in reused]
    if reused:
        logger.info("resume: %d fits reused, %d to run", len(reused), len(todo))
    params_of = {t.member: t.params for t in tasks}
    # Reused fits count as done: the hook reports the fits that run now.
    ctx.progress_done += len(reused)
    ctx.progress_total += len(reused)

    def on_result(result: FitResult, n_done: int, n_total: int) -> None:
        result = _plain(result)
        ctx.run.save_checkpoint(
            _checkpoint_name(result),
            {"params": params_of[_pool_name(result)], "result": result},
        )
        _notify(ctx, result)

    data = ctx.data
    pool = FitPool(
        put_data(data.X, data.y, *folds),
        ctx.fit_context,
        lambda name, k: ctx.run.model_target(
            _split_name(name)[0], k, _split_name(name)[1]
        ),
        cpus_per_fit=ctx.config.cpus_per_fit,
        start_by=start_by,
        finish_by=finish_by,
        on_result=on_result,
        env_vars=storage.credentials_env() if ctx.run.remote is not None else None,
        # Repeats past the deadline are expected, not news; a refit left out
        # keeps its fold models (``ensemble.refit`` says so).
        optional=any(t.repeat or t.fold == REFIT_FOLD for t in tasks),
    )
    ctx.progress_total += len(todo)
    if ctx.run.remote is None:  # a URI run's models go to the store, not here
        ctx.run.check_room(_bytes_to_write(ctx, todo), f"fitting {len(todo)} folds")
    t0 = time.monotonic()
    outcome = pool.run(todo)
    ctx.fit_wall += time.monotonic() - t0
    dropped = set(outcome.failed) | set(outcome.skipped)
    outcome.results = sorted(
        [*map(_plain, outcome.results)]
        + [r for key, r in reused.items() if _pool_key(key) not in dropped],
        key=lambda r: (r.member, r.repeat, r.fold),
    )
    for member, reason in outcome.failed.items():
        logger.warning("member %s dropped: %s", member, reason)
    return outcome


#: A fold model's size before any of its learner's was written (bytes); the
#: measured mean replaces it as soon as one exists.
DEFAULT_FOLD_BYTES = 1 << 20


def _bytes_to_write(ctx: RunContext, tasks: list[FitTask]) -> int:
    """Bytes the fits of ``tasks`` will write: fold models, checkpoints, OOF.

    A fold model is expected to be as large as the member's (else its
    learner's) fold models already on disk; the checkpoint holds its OOF
    predictions; the run's OOF tables take as much again.
    """
    models = ctx.run.path / "models"
    sizes: dict[str, list[int]] = {}  # by member, and by learner
    for member in models.iterdir() if models.is_dir() else []:
        for fold in member.iterdir():
            meta = fold / "meta.json"
            if not meta.is_file():
                continue
            size = sum(f.stat().st_size for f in fold.rglob("*") if f.is_file())
            sizes.setdefault(member.name, []).append(size)
            key = json.loads(meta.read_text())["key"]
            sizes.setdefault(f"learner:{key}", []).append(size)
    outputs = max(ctx.data.n_classes, 1)
    oof = len(ctx.data.fold) // max(ctx.config.n_folds, 1) * outputs * 8
    total = 0
    for t in tasks:
        seen = sizes.get(_split_name(t.member)[0]) or sizes.get(f"learner:{t.learner}")
        total += int(np.mean(seen)) if seen else DEFAULT_FOLD_BYTES
        total += 3 * oof  # its checkpoint, and its share of oof/ and the tables
    return total


def _notify(ctx: RunContext, result: FitResult) -> None:
    ctx.progress_done += 1
    if ctx.on_fit is not None:
        ctx.on_fit(result, ctx.progress_done, max(ctx.progress_total, 1))


def _split_name(name: str) -> tuple[str, int]:
    """``name@r`` → ``(name, r)``; a plain name is repeat 0."""
    member, _, rep = name.partition("@")
    return member, int(rep or 0)


def _pool_name(result: FitResult) -> str:
    return result.member if result.repeat == 0 else f"{result.member}@{result.repeat}"


def _plain(result: FitResult) -> FitResult:
    """A result of a ``name@r`` task, as the member's own (repeat ``r``)."""
    member, rep = _split_name(result.member)
    return replace(result, member=member, repeat=rep) if rep else result


def _task_key(t: FitTask) -> tuple[str, int, int]:
    return (_split_name(t.member)[0], t.repeat, t.fold)


def _pool_key(key: tuple[str, int, int]) -> str:
    member, rep, _ = key
    return member if rep == 0 else f"{member}@{rep}"


def _checkpoint_name(r: FitResult) -> str:
    return f"fits/{r.member}/{fold_name(r.fold, r.repeat)}.pkl"


def _checkpointed(
    ctx: RunContext, tasks: list[FitTask]
) -> dict[tuple[str, int, int], FitResult]:
    """Fits an interrupted run finished, for the tasks whose parameters match."""
    if not ctx.resume:
        return {}
    saved: dict[tuple[str, int, int], tuple[dict[str, Any], FitResult]] = {}
    for entry in ctx.run.load_checkpoints("fits/"):
        r = entry["result"]
        r.resumed = True
        saved[(r.member, r.repeat, r.fold)] = (entry["params"], r)
    out = {}
    for t in tasks:
        hit = saved.get(_task_key(t))
        if hit is not None and hit[0] == t.params:
            out[_task_key(t)] = hit[1]
    return out


def _raise_if_empty(outcome: FitOutcome) -> None:
    if outcome.results:
        return
    first = next(iter(outcome.failed.items()), None)
    if first:
        raise BaseLearnerFailed(first[0], -1, first[1])
    raise BaseLearnerFailed(
        "*",
        -1,
        "the time limit ended the run before any member finished every fold; "
        "raise --time-limit",
    )


# -- 2. the search ------------------------------------------------------------------


def search(ctx: RunContext, fitted: Fitted) -> Fitted:
    """Tune the families where it pays; add their best trials as members.

    Writes ``trials.parquet`` (empty when nothing is searched).
    """
    tuned: list[MemberSpec] = []
    saved = ctx.run.load_checkpoints("tuned.pkl") if ctx.resume else []
    if saved:
        tuned = list(saved[0])
        logger.info("resume: %d tuned members from the earlier search", len(tuned))
    elif ctx.config.tuning:
        plan = _search_plan(ctx, fitted)
        if plan:
            tuned = _tune(ctx, fitted, plan)
        ctx.run.save_checkpoint("tuned.pkl", tuned)
    if not (ctx.run.path / "trials.parquet").exists():
        ctx.run.write_table("trials.parquet", empty_trials())
    if not tuned:
        return fitted
    results: list[FitResult] = []
    refit: list[FitTask] = []
    for spec in (s for s in tuned if s.trial_dir):
        # An interrupted run may have taken some folds from the trial already
        # (their checkpoints hold them); a fold that left the trial's folder
        # without a checkpoint is fitted again.
        tasks = _tasks(ctx, [spec])
        done = _checkpointed(ctx, tasks)
        for task in tasks:
            if _task_key(task) in done:
                results.append(done[_task_key(task)])
            elif _trial_fold_saved(spec, task.fold):
                results.append(_take_trial_fold(ctx, spec, task.fold))
            else:
                refit.append(task)
        ctx.run.sync(f"models/{spec.name}")
    # The other trials' folds were only worth keeping until the choice.
    shutil.rmtree(ctx.run.path / "tune" / "folds", ignore_errors=True)
    todo = refit + _tasks(ctx, [s for s in tuned if not s.trial_dir])
    outcome = _fit(ctx, todo, fitted.folds) if todo else None
    if outcome is not None:
        results += outcome.results
    names = {r.member for r in results}
    return Fitted(
        fitted.specs + [s for s in tuned if s.name in names],
        fitted.results + results,
        fitted.folds,
        {**fitted.failed, **(outcome.failed if outcome else {})},
        fitted.skipped + (outcome.skipped if outcome else []),
        fitted.slots,
    )


def _search_plan(ctx: RunContext, fitted: Fitted) -> dict[str, float | None]:
    """Family → seconds of search (None: ``n_trials`` without a limit)."""
    from .pool import cluster_slots

    searchable = [k for k in ctx.config.learners if get(k).search_space]
    if ctx.budget.limit is None:
        return dict.fromkeys(searchable)
    search_s = ctx.budget.search_seconds(time.monotonic())
    losses: dict[str, float] = {}
    trial_s: dict[str, float] = {}
    member_loss = fitted.losses(ctx)
    for key in searchable:
        mine = [s.name for s in fitted.specs if s.learner == key]
        default = fitted.of(key)
        if not mine or not default:
            continue
        losses[key] = min(member_loss[m] for m in mine)
        fold_s = float(np.mean([r.fit_s + r.predict_s + r.save_s for r in default]))
        trial_s[key] = fold_s * ctx.config.n_folds
    n_cpus = cluster_slots(1)
    plan = budget_mod.search_plan(losses, trial_s, search_s, n_cpus)
    if plan:
        logger.info(
            "search: %s",
            ", ".join(f"{k} {s:.0f} s" for k, s in plan.items()),
        )
    return dict(plan)


def _tune(
    ctx: RunContext, fitted: Fitted, plan: dict[str, float | None]
) -> list[MemberSpec]:
    config, data = ctx.config, ctx.data
    train = data.fold >= 0  # the holdout rows never reach a trial
    member_loss = fitted.losses(ctx)
    known = {
        key: [(s.params, member_loss[s.name]) for s in fitted.specs if s.learner == key]
        for key in plan
    }
    # Trials reuse is for the run's own folds on a local run directory: with a
    # holdout, a trial has not predicted the holdout rows.
    reuse = not data.has_holdout and ctx.run.remote is None
    outcome = tune_learners(
        plan,
        data.X[train],
        data.y[train],
        data.fold[train],
        ctx.fit_context,
        metric=ctx.metric,
        storage=ctx.run.path / "tune",
        n_trials=config.n_trials
        or (DEFAULT_TRIALS if ctx.budget.limit is None else None),
        top_n=config.top_n,
        search=config.search,
        seed=config.seed,
        fixed_params={k: dict(v) for k, v in config.learner_params.items()},
        known=known,
        save_dir=ctx.run.path / "tune" / "folds" if reuse else None,
        on_trial=ctx.on_trial,
        verbose=config.verbose,
        resume=ctx.resume,
    )
    ctx.run.write_table("trials.parquet", outcome.trials)
    if (ctx.run.path / "tune").is_dir():
        ctx.run.sync("tune")
    return outcome.members


def _trial_fold_saved(spec: MemberSpec, k: int) -> bool:
    src = Path(str(spec.trial_dir)) / f"fold{k}"
    return (src / "fit.json").is_file() and (src / "oof.npy").is_file()


def _take_trial_fold(ctx: RunContext, spec: MemberSpec, k: int) -> FitResult:
    """A chosen trial's saved fold as the member's fit (moved into models/)."""
    n_classes = ctx.data.n_classes
    empty = np.empty((0, n_classes) if n_classes else (0,))
    src = Path(str(spec.trial_dir)) / f"fold{k}"
    info = json.loads((src / "fit.json").read_text())
    oof = np.load(src / "oof.npy")
    target = ctx.run.model_dir(spec.name, k)
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(target, ignore_errors=True)
    (src / "fit.json").unlink()
    (src / "oof.npy").unlink()
    shutil.move(str(src), str(target))
    fold = ctx.data.fold
    result = FitResult(
        member=spec.name,
        learner=spec.learner,
        fold=k,
        oof_pred=oof,
        holdout_pred=empty,
        node_id=str(info["node_id"]),
        worker=str(info["worker"]),
        gpu=False,
        started_at=datetime.fromisoformat(info["started_at"]),
        fit_s=float(info["fit_s"]),
        predict_s=float(info["predict_s"]),
        n_train=int(((fold >= 0) & (fold != k)).sum()),
        truncated=bool(info["truncated"]),
    )
    ctx.run.save_checkpoint(
        _checkpoint_name(result), {"params": spec.params, "result": result}
    )
    return result


def _helps(
    ctx: RunContext, y: np.ndarray, fold: np.ndarray, old: np.ndarray, new: np.ndarray
) -> bool:
    """Whether ``new`` OOF predictions are no worse than ``old`` beyond noise."""
    metric, k = ctx.metric, ctx.data.n_classes
    diff = np.array(
        [
            to_loss(metric, a) - to_loss(metric, b)
            for a, b in zip(
                lb.fold_scores(metric, y, new, fold, k),
                lb.fold_scores(metric, y, old, fold, k),
                strict=True,
            )
        ]
    )
    worse = to_loss(metric, score(metric, y, new, k)) - to_loss(
        metric, score(metric, y, old, k)
    )
    se = float(np.std(diff, ddof=1) / np.sqrt(len(diff))) if len(diff) > 1 else 0.0
    return bool(worse <= lb.CHOICE_SE * se)


# -- 3. repeats ---------------------------------------------------------------------


def repeat(ctx: RunContext, fitted: Fitted) -> Fitted:
    """Fit the strongest members again on fresh fold assignments.

    Under a time limit the repeats run until the fits' ``start_by`` (up to
    ``config.repeats`` or :data:`ensemble.budget.MAX_REPEATS` per member);
    without one, every member gets ``config.repeats`` (default 1: none). A
    member keeps its repeats while each makes its averaged OOF score better;
    the fold models of a repeat it does not keep are deleted.
    """
    config, budget, data = ctx.config, ctx.budget, ctx.data
    limited = budget.limit is not None
    n = config.repeats or (budget_mod.MAX_REPEATS if limited else 1)
    if n <= 1:
        return fitted
    start_by = budget.fits_start_by
    if start_by is not None and time.monotonic() >= start_by:
        return fitted
    losses = fitted.losses(ctx)
    members = budget_mod.repeat_candidates(losses) if limited else list(losses)
    folds = [fitted.folds[0]] + [
        repeat_folds(data.y, data.fold, task=data.task, repeat=r, seed=config.seed)
        for r in range(1, n)
    ]
    tasks = _repeat_tasks(ctx, fitted, members, n)
    outcome = _fit(ctx, tasks, folds)
    # A repeat's fold stopped at the deadline or killed with its member may
    # have begun writing its model: it is no model of the run.
    for name, rep, k in unreturned(tasks, outcome.results):
        _remove_fold(ctx, name, k, rep)
    kept = _kept_repeats(ctx, fitted, outcome.results, folds)
    return Fitted(
        fitted.specs,
        fitted.results + kept,
        folds,
        fitted.failed,
        fitted.skipped,
        fitted.slots,
    )


def unreturned(
    tasks: list[FitTask], results: list[FitResult]
) -> list[tuple[str, int, int]]:
    """``(member, repeat, fold)`` of the tasks that brought back no result.

    Examples
    --------
    >>> from types import SimpleNamespace as T
    >>> tasks = [T(member="lgbm@1", repeat=1, fold=k) for k in range(3)]
    >>> unreturned(tasks, [T(member="lgbm", repeat=1, fold=1)])
    [('lgbm', 1, 0), ('lgbm', 1, 2)]
    """
    back = {(r.member, r.repeat, r.fold) for r in results}
    return [key for key in map(_task_key, tasks) if key not in back]


def _remove_fold(ctx: RunContext, member: str, fold: int, repeat: int) -> None:
    """Delete one fold model of ``member``, here and in the run's store."""
    ctx.run.remove(f"models/{member}/{fold_name(fold, repeat)}")


def _repeat_tasks(
    ctx: RunContext, fitted: Fitted, members: list[str], n: int
) -> list[FitTask]:
    """Repeat ``r`` of every member before repeat ``r + 1`` of any."""
    specs = {s.name: s for s in fitted.specs}
    tasks = []
    for r in range(1, n):
        for rank, name in enumerate(members):
            mine = fitted.of(name)
            fold_s = float(np.mean([x.fit_s + x.predict_s + x.save_s for x in mine]))
            spec = replace(specs[name], name=f"{name}@{r}", fold_s=fold_s)
            for t in _tasks(ctx, [spec], repeat=r):
                priority = r * len(members) + rank if ctx.budget.limit else 0.0
                tasks.append(
                    replace(
                        t,
                        priority=priority,
                        min_box=budget_mod.MIN_REPEAT_BOX_FRACTION,
                    )
                )
    return tasks


def _kept_repeats(
    ctx: RunContext,
    fitted: Fitted,
    results: list[FitResult],
    folds: list[np.ndarray],
) -> list[FitResult]:
    """The repeats that do not make each member's averaged OOF score worse.

    Averaging fold assignments lowers a member's variance, so a repeat is kept
    unless its member's OOF loss with it is worse than without it by more than
    the noise (one standard error of the per-fold difference, as in
    :func:`ensemble.leaderboard.choose`): a repeat cut short by the time
    limit, say. Repeats are added in order; the first one left out ends the
    member's. The fold models of the repeats left out are deleted (the fitted
    ensemble averages every fold model it finds).
    """
    y = ctx.data.y[ctx.train_rows]
    fold0 = folds[0][ctx.train_rows]
    kept: list[FitResult] = []
    for name in sorted({r.member for r in results}):
        mine = fitted.of(name)
        for rep in sorted({r.repeat for r in results if r.member == name}):
            extra = [r for r in results if r.member == name and r.repeat == rep]
            if len(extra) < ctx.config.n_folds or not _helps(
                ctx,
                y,
                fold0,
                lb.member_oof(mine, folds),
                lb.member_oof(mine + extra, folds),
            ):
                break
            mine = mine + extra
            kept += extra
    kept_ids = {id(r) for r in kept}
    dropped = [r for r in results if id(r) not in kept_ids]
    for r in dropped:
        _remove_fold(ctx, r.member, r.fold, r.repeat)
    if kept:
        logger.info(
            "repeats: %d fits kept of %d (members %s)",
            len(kept),
            len(results),
            ", ".join(sorted({r.member for r in kept})),
        )
    return kept
