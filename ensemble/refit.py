"""The refit stage: the chosen model's members fitted once more, on every row.

Each member of a run is fitted once per fold (and per repeat): its OOF
predictions, which score and fuse it, need that. To *predict*, one model per
member trained on every row in the folds does as well (it has seen a quarter
more rows than any fold model) at a fraction of the cost: one model to store,
load and run instead of ``folds × repeats``. AutoGluon calls this
``refit_full``. After the scoring stage has chosen the model, each member it
uses is refitted on every row with the same parameters (a booster stops early
on its own inner split, as in its folds), into ``models/<member>/full``; the
fitted ensemble predicts with it. With ``keep_models="chosen"`` the member's
fold models then go.

The chosen model's scores stay those of its fold models' OOF predictions (as
for AutoGluon's ``_FULL`` models, the refit has no rows left to score it on);
``benchmarks/quality.py`` measures both on rows neither saw. Under a time
limit the refits run in the window :class:`ensemble.budget.Budget` keeps for
them; a member whose refit cannot finish keeps its fold models. Members of a
family whose fold models' average predicts better than one model on every row
(``Learner.refits_on_every_row`` false: the MLP, k-NN) are not refitted.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import numpy as np

from . import budget as budget_mod
from .artifacts import REFIT_DIR
from .context import RunContext
from .learners import get
from .members import Fitted, fit_tasks
from .specs import REFIT_FOLD, FitResult, FitTask

__all__ = ["Refitted", "refit", "refit_seconds"]

logger = logging.getLogger(__name__)


@dataclass
class Refitted:
    """What the refit stage did.

    Attributes
    ----------
    members : list of str
        Members refitted on every row (``models/<member>/full``).
    skipped : list of str
        Members the time limit (or a failed refit) left on their fold models.
    bagged : list of str
        Members not refitted by design: their family predicts better with the
        average of its fold models (``Learner.refits_on_every_row``).
    results : list of FitResult
        The refits' fits.
    """

    members: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    bagged: list[str] = field(default_factory=list)
    results: list[FitResult] = field(default_factory=list)


def refit_seconds(
    ctx: RunContext,
    fitted: Fitted,
    members: list[str] | None = None,
    *,
    cap: float | None = None,
) -> float:
    """Expected wall seconds of refitting ``members`` (default: every one).

    A refit trains on ``folds / (folds - 1)`` times a fold's rows, so it takes
    that much longer than the member's measured mean fold; the refits share
    the cluster's slots. Members whose family is not refitted cost nothing,
    nor do those whose refit would not fit in ``cap`` seconds (default: the
    refit window's largest size).
    """
    n = ctx.config.n_folds
    names = [s.name for s in fitted.specs] if members is None else members
    names = _refitting(fitted, names)
    names = [m for m in names if fitted.of(m)]
    return budget_mod.refit_seconds(
        [float(np.mean([r.fit_s for r in fitted.of(m)])) for m in names],
        n,
        max(fitted.slots, 1),
        cap=ctx.budget.refit_cap if cap is None else cap,
        save_seconds=[float(np.mean([r.save_s for r in fitted.of(m)])) for m in names],
    )


def refit(ctx: RunContext, fitted: Fitted, members: list[str]) -> Refitted:
    """Refit ``members`` on every row in the folds; drop their fold models.

    Parameters
    ----------
    ctx : RunContext
    fitted : Fitted
        The run's members (their parameters and measured fold times).
    members : list of str
        The members the chosen model uses.

    Returns
    -------
    Refitted
    """
    if not ctx.config.refit or not members:
        return Refitted()
    refitting = _refitting(fitted, members)
    bagged = [m for m in members if m not in refitting]
    members = refitting
    if not members:
        return Refitted(bagged=bagged)
    finish_by = ctx.budget.refit_finish_by
    if finish_by is not None and time.monotonic() >= finish_by:
        logger.info("time limit: no time left to refit on every row")
        return Refitted(skipped=list(members), bagged=bagged)
    outcome = fit_tasks(
        ctx,
        _tasks(ctx, fitted, members),
        fitted.folds[:1],
        start_by=finish_by,
        finish_by=finish_by,
    )
    # A refit its time box stopped has fewer rounds than its folds chose: the
    # fold models predict better, so they stay.
    cut = {r.member for r in outcome.results if r.truncated}
    results = [r for r in outcome.results if r.member not in cut]
    done = [m for m in members if any(r.member == m for r in results)]
    skipped = [m for m in members if m not in done]
    # Those cut short, and those stopped at the deadline (maybe half-written).
    for name in skipped:
        ctx.run.remove(f"models/{name}/{REFIT_DIR}")
    if skipped:
        logger.info(
            "%s keep their fold models (the refit on every row did not finish "
            "in time, or failed)",
            ", ".join(skipped),
        )
    if ctx.config.keep_models != "all":
        _drop_fold_models(ctx, done)
    return Refitted(done, skipped, bagged, results)


def _refitting(fitted: Fitted, members: list[str]) -> list[str]:
    """The ``members`` whose learner refits on every row."""
    learner = {s.name: s.learner for s in fitted.specs}
    return [m for m in members if get(learner[m]).refits_on_every_row]


def _tasks(ctx: RunContext, fitted: Fitted, members: list[str]) -> list[FitTask]:
    """One refit per member, the members with the most fold models first.

    A member left on its fold models predicts with all of them, so under a
    deadline the refits that save the most prediction go first (the repeated
    members); then the cheapest, so a short window refits the most members
    (dearest first, pendigits' boosters took the window, their refits were
    cut by their time boxes and discarded, and ExtraTrees, 2 s a fold, was
    never refitted).
    """
    specs = {s.name: s for s in fitted.specs}
    n = ctx.config.n_folds
    tasks = []
    for name in members:
        spec = specs[name]
        cls = get(spec.learner)
        # a refit predicts no rows: a fold's predict time (35 s for krkopt's
        # LightGBM, 26,000 trees) is not part of its cost; saving the model is
        fold_s = float(np.mean([r.fit_s for r in fitted.of(name)]))
        save_s = float(np.mean([r.save_s for r in fitted.of(name)]))
        tasks.append(
            FitTask(
                member=name,
                learner=spec.learner,
                params=spec.params,
                fold=REFIT_FOLD,
                cost=fold_s * n / max(n - 1, 1) + save_s,
                uses_gpu=cls.uses_gpu,
                # fold models first, then cheaper first (the second term
                # stays below 0.1, far under one fold model's step)
                priority=-float(len(fitted.of(name))) + min(fold_s, 1e5) / 1e6,
                time_boxed=cls.time_boxed,
                min_box=budget_mod.MIN_REFIT_BOX_FRACTION,
            )
        )
    return tasks


def _drop_fold_models(ctx: RunContext, members: list[str]) -> None:
    """Delete the fold models of refitted members (their OOF predictions stay)."""
    for name in members:
        folder = ctx.run.path / "models" / name
        for sub in list(folder.iterdir()) if folder.is_dir() else []:
            if sub.name != REFIT_DIR:
                ctx.run.remove(f"models/{name}/{sub.name}")
