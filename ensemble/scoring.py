"""The scoring stage: OOF Dataset, fusions, leaderboard, the choice, the tables.

From the fitted members (:class:`ensemble.members.Fitted`): each member's OOF
predictions (its repeats averaged) go through a Ray Dataset into ``oof/``; the
fusions are scored by nested CV on them (``ensemble.fuse``); every candidate
gets a leaderboard row and its per-fold scores; the model ``predict`` uses is
chosen (``ensemble.leaderboard.choose``); the tables are written and the
models the chosen model does not need are let go.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
import pandas as pd

from . import leaderboard as lb
from . import refit
from .artifacts import RunDirectory
from .context import RunContext
from .members import Fitted
from .metrics import to_loss
from .specs import FusionOutcome

__all__ = ["Scored", "score"]


@dataclass
class Scored:
    """What the scoring stage decided and wrote.

    Attributes
    ----------
    members : list of str
        Every member, in order.
    fused : list of FusionOutcome
    board : DataFrame
        The leaderboard (with ``best``).
    best : str
        The chosen model.
    kept : list of str
        The models whose files the run keeps.
    used : list of str
        The members the chosen model predicts with (those its fusion weighs
        by more than exactly zero; the chosen member alone).
    """

    members: list[str]
    fused: list[FusionOutcome]
    board: pd.DataFrame
    best: str
    kept: list[str]
    used: list[str]


def score(ctx: RunContext, fitted: Fitted) -> Scored:
    """Score every member and fusion, choose, and write the run's tables."""
    run = ctx.run
    _write_folds(ctx, fitted)
    names = [s.name for s in fitted.specs]
    cols = lb.pred_columns(ctx.data.classes)
    oof = _write_oof(ctx, fitted, names, cols)
    P = lb.stack_oof(oof, names, ctx.train_rows, cols)  # (n, m[, K]), from oof/
    H = np.stack([lb.member_holdout(fitted.of(m)) for m in names], axis=1)
    fused = _fuse(ctx, fitted, P, H, names)
    board, fold_scores = _score(ctx, fitted, names, P, H, fused)
    best = lb.choose(board, fold_scores)
    board["best"] = board["model"] == best
    _write_predictions(ctx, names, fused, cols, H)
    run.write_table("fits.parquet", lb.fits_frame(fitted.results))
    run.write_table("leaderboard.parquet", board)
    run.write_table("fusion.parquet", lb.weight_rows(fused, names))
    _save_fusions(run, {f.key: f.fusion for f in fused}, names)
    used = _used_members(best, fused, names)
    kept = _keep_models(ctx, best, fused, names, used)
    return Scored(names, fused, board, best, kept, used)


def _write_folds(ctx: RunContext, fitted: Fitted) -> None:
    """``folds.parquet`` again when repeats were kept: ``fold_r<r>`` columns."""
    used = sorted({r.repeat for r in fitted.results} - {0})
    if not used:
        return
    frame = pd.DataFrame({"row_id": ctx.data.row_id, "fold": ctx.data.fold})
    for rep in used:
        frame[f"fold_r{rep}"] = fitted.folds[rep]
    ctx.run.write_table("folds.parquet", frame)


def _y_true(ctx: RunContext, rows: np.ndarray) -> Any:
    y = ctx.data.y[rows]
    return [ctx.data.classes[i] for i in y] if ctx.data.classes else y


def _write_oof(
    ctx: RunContext, fitted: Fitted, names: list[str], cols: list[str]
) -> pd.DataFrame:
    """Each member's OOF predictions (repeats averaged) through a Ray Dataset."""
    from .oof import write_oof

    rows = ctx.train_rows
    y_true = _y_true(ctx, rows)
    fold = ctx.data.fold[rows]
    frames = [
        lb.oof_frame(
            m, rows, fold, y_true, lb.member_oof(fitted.of(m), fitted.folds), cols
        )
        for m in names
    ]
    return write_oof(ctx.run, frames)


def _fuse(
    ctx: RunContext, fitted: Fitted, P: np.ndarray, H: np.ndarray, names: list[str]
) -> list[FusionOutcome]:
    from .fuse import fuse_all, fusion_specs

    specs = fusion_specs(
        ctx.config.fusions,
        metric=ctx.metric,
        seed=ctx.config.seed,
        n_members=len(names),
    )
    if not specs:
        return []
    data = ctx.data
    finish_by = ctx.budget.fusions_finish_by()
    return fuse_all(
        specs,
        P,
        data.y[ctx.train_rows],
        data.fold[ctx.train_rows],
        data.X[ctx.train_rows],
        H,
        data.X[ctx.holdout_rows],
        metric=ctx.metric,
        finish_by=finish_by,
        extend=partial(_refit_aware_deadline, ctx, fitted, names, finish_by)
        if ctx.config.refit
        else None,
    )


def _refit_aware_deadline(
    ctx: RunContext,
    fitted: Fitted,
    names: list[str],
    finish_by: float | None,
    done: list[FusionOutcome],
) -> float | None:
    """The fusions' deadline sized for refitting the best fusion's members.

    Only the refits that fit between the fusions' own deadline (``finish_by``)
    and the refit's end count: a refit with less room is not started
    (:data:`ensemble.budget.MIN_REFIT_BOX_FRACTION`), so keeping its window
    would only end the run early (letter, fits late: the fusions stopped at
    their floor for a LightGBM refit that then had 27 s of the 29 s it needed).
    """
    best = min(done, key=lambda f: to_loss(ctx.metric, f.oof_score))
    used = _used_members(best.key, done, names)
    cap = ctx.budget.refit_cap
    end = ctx.budget.refit_finish_by
    if cap is not None and end is not None and finish_by is not None:
        cap = min(cap, end - finish_by)
    return ctx.budget.fusions_extended_by_refit(
        refit.refit_seconds(ctx, fitted, used, cap=cap)
    )


def _score(
    ctx: RunContext,
    fitted: Fitted,
    names: list[str],
    P: np.ndarray,
    H: np.ndarray,
    fused: list[FusionOutcome],
) -> tuple[pd.DataFrame, dict[str, list[float]]]:
    """The leaderboard (members, then fusions) and each model's per-fold scores."""
    data, metric = ctx.data, ctx.metric
    k = data.n_classes
    y_oof, y_hold = data.y[ctx.train_rows], data.y[ctx.holdout_rows]
    fold = data.fold[ctx.train_rows]
    candidates: list[tuple[str, str, np.ndarray, np.ndarray, float]] = [
        (m, "member", P[:, i], H[:, i], sum(r.fit_s for r in fitted.of(m)))
        for i, m in enumerate(names)
    ]
    candidates += [
        (f.key, "fusion", f.oof_pred, f.holdout_pred, f.fit_s) for f in fused
    ]
    rows, per_fold = [], {}
    for model, kind, oof_pred, hold_pred, fit_s in candidates:
        rows.append(
            lb.board_row(
                model,
                kind,
                metric=metric,
                task=data.task,
                n_classes=k,
                y_oof=y_oof,
                oof_pred=oof_pred,
                y_hold=y_hold,
                hold_pred=hold_pred,
                fit_s=fit_s,
            )
        )
        per_fold[model] = lb.fold_scores(metric, y_oof, oof_pred, fold, k)
    return pd.DataFrame(rows), per_fold


def _write_predictions(
    ctx: RunContext,
    names: list[str],
    fused: list[FusionOutcome],
    cols: list[str],
    H: np.ndarray,
) -> None:
    """Write the fusions' cross-fitted predictions, and the holdout's.

    ``fusion_oof.parquet`` always (when there are fusions); ``holdout.parquet``
    only when the run has a holdout.
    """
    rows = ctx.train_rows
    y_true, fold = _y_true(ctx, rows), ctx.data.fold[rows]
    if fused:
        frames = [
            lb.oof_frame(f.key, rows, fold, y_true, f.oof_pred, cols, key="model")
            for f in fused
        ]
        ctx.run.write_table("fusion_oof.parquet", pd.concat(frames, ignore_index=True))
    if not ctx.data.has_holdout:
        return
    hold = ctx.holdout_rows
    y_hold = _y_true(ctx, hold)
    frames = [
        lb.holdout_frame(m, hold, y_hold, H[:, i], cols) for i, m in enumerate(names)
    ]
    frames += [
        lb.holdout_frame(f.key, hold, y_hold, f.holdout_pred, cols) for f in fused
    ]
    ctx.run.write_table("holdout.parquet", pd.concat(frames, ignore_index=True))


def _used_members(best: str, fused: list[FusionOutcome], names: list[str]) -> list[str]:
    """The members the chosen model predicts with."""
    for f in fused:
        if f.key == best:
            unused = {names[i] for i in f.fusion.unused_members()}
            return [m for m in names if m not in unused]
    return [best]


def _keep_models(
    ctx: RunContext,
    best: str,
    fused: list[FusionOutcome],
    names: list[str],
    used: list[str],
) -> list[str]:
    """Delete the fold models the chosen model does not need; the kept names.

    With ``keep_models="all"`` nothing goes. Otherwise the chosen model's
    ``used`` members stay (and the chosen fusion); the others' fold models
    and the other fusions go (their OOF predictions and scores stay).
    """
    fusions = {f.key: f for f in fused}
    if ctx.config.keep_models == "all":
        return sorted([*names, *fusions])
    keep = [*used, best] if best in fusions else [best]
    gone = [f"models/{m}" for m in names if m not in keep]
    gone += [f"models/fusion/{k}.joblib" for k in fusions if k != best]
    for rel in gone:
        ctx.run.remove(rel)
    return sorted(keep)


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
