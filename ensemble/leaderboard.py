"""The run's tables, built from fit and fusion results (pandas, no Ray).

Each member's fold predictions are gathered into one OOF prediction per row
(the mean over its repeats), scored into the leaderboard's rows, and laid out
as the contract's Parquet tables (``oof/``, ``fusion_oof.parquet``,
``holdout.parquet``, ``fits.parquet``, ``leaderboard.parquet``,
``fusion.parquet``). :func:`choose` picks the model ``predict`` uses.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from .metrics import score, score_all, to_loss
from .specs import FitResult, FusionOutcome

__all__ = [
    "SIMPLICITY",
    "board_row",
    "choose",
    "fits_frame",
    "fold_scores",
    "holdout_frame",
    "member_holdout",
    "member_oof",
    "oof_frame",
    "pred_columns",
    "stack_oof",
    "weight_rows",
]

#: How steady each kind of model's OOF score is as a guide to new rows, for
#: :func:`choose` (lower first): the average fits nothing; the constrained
#: combinations (simplex weights, Caruana selection, non-negative stacking)
#: fit a few bounded numbers and average their members' errors; then the
#: unconstrained stacker and a single member (one of twenty picked by its own
#: noisy score); then the models fitted on the OOF predictions with many
#: parameters.
SIMPLICITY = {
    "average": 0,
    "weighted": 1,
    "selection": 1,
    "stacking_nonneg": 1,
    "stacking": 2,
    "member": 2,
    "stacking_lgbm": 3,
    "neural": 4,
    "two_level": 5,
}
#: Prefer a simpler model unless a more complex one is better by more than
#: this many standard errors of their per-fold score difference.
CHOICE_SE = 1.0


def pred_columns(classes: Sequence[Any]) -> list[str]:
    """Names of the prediction columns: ``pred_<class>`` or ``pred``."""
    return [f"pred_{c}" for c in classes] if classes else ["pred"]


def member_oof(results: Sequence[FitResult], folds: Sequence[np.ndarray]) -> np.ndarray:
    """One member's OOF prediction of every row in the folds, in row order.

    ``folds[r]`` is the fold id of each row in repeat ``r``; each repeat
    predicts every row once, and the repeats are averaged (in repeat order).

    Examples
    --------
    >>> from types import SimpleNamespace as R
    >>> f0, f1 = np.array([0, 1, 0, 1]), np.array([1, 0, 0, 1])
    >>> res = [R(repeat=0, fold=0, oof_pred=np.array([1.0, 3.0])),
    ...        R(repeat=0, fold=1, oof_pred=np.array([2.0, 4.0])),
    ...        R(repeat=1, fold=0, oof_pred=np.array([2.0, 3.0])),
    ...        R(repeat=1, fold=1, oof_pred=np.array([1.0, 4.0]))]
    >>> member_oof(res, [f0, f1]).tolist()
    [1.0, 2.0, 3.0, 4.0]
    """
    rows = np.flatnonzero(folds[0] >= 0)
    total: np.ndarray | None = None
    repeats = sorted({r.repeat for r in results})
    for rep in repeats:
        fold = folds[rep]
        mine = [r for r in results if r.repeat == rep]
        shape = (len(fold),) + np.shape(mine[0].oof_pred)[1:]
        full = np.full(shape, np.nan)
        for r in mine:
            full[fold == r.fold] = r.oof_pred
        total = full[rows] if total is None else total + full[rows]
    assert total is not None
    return np.asarray(total / len(repeats), dtype=np.float64)


def member_holdout(results: Sequence[FitResult]) -> np.ndarray:
    """A member's holdout prediction: the mean over all its fold models."""
    # In (repeat, fold) order: results arrive in completion order, and another
    # summation order changes ties (forests give multiples of 1/n_trees).
    mine = sorted(results, key=lambda r: (r.repeat, r.fold))
    return np.asarray(np.mean([r.holdout_pred for r in mine], axis=0), np.float64)


def oof_frame(
    name: str,
    rows: np.ndarray,
    fold: np.ndarray,
    y_true: Sequence[Any],
    pred: np.ndarray,
    cols: list[str],
    *,
    key: str = "member",
) -> pd.DataFrame:
    """``<key>, row_id, fold, y_true, pred…`` of the rows in the folds."""
    f = pd.DataFrame(pred.reshape(len(rows), -1), columns=cols)
    f.insert(0, "y_true", y_true)
    f.insert(0, "fold", fold.astype(np.int64))
    f.insert(0, "row_id", rows)
    f.insert(0, key, name)
    return f


def stack_oof(
    oof: pd.DataFrame, members: Sequence[str], row_ids: np.ndarray, cols: list[str]
) -> np.ndarray:
    """``(n_rows, n_members[, n_classes])`` from the long OOF frame."""
    blocks = []
    for m in members:
        part = oof[oof["member"] == m].set_index("row_id").loc[row_ids, cols].to_numpy()
        blocks.append(part)
    P = np.stack(blocks, axis=1).astype(np.float64)
    return P[:, :, 0] if cols == ["pred"] else P


def fold_scores(
    metric: str, y: np.ndarray, pred: np.ndarray, fold: np.ndarray, n_classes: int
) -> list[float]:
    """The metric on each fold's rows (the spread that :func:`choose` weighs)."""
    return [
        score(metric, y[fold == k], pred[fold == k], n_classes) for k in np.unique(fold)
    ]


def board_row(
    model: str,
    kind: str,
    *,
    metric: str,
    task: str,
    n_classes: int,
    y_oof: np.ndarray,
    oof_pred: np.ndarray,
    y_hold: np.ndarray,
    hold_pred: np.ndarray,
    fit_s: float,
) -> dict[str, Any]:
    """A leaderboard row.

    ``oof_score`` is the metric on the OOF predictions (cross-fitted for
    fusions). The metric columns are computed on the holdout when the run has
    one, else on the OOF predictions; ``scored_on`` says which.
    """
    oof_score = score(metric, y_oof, oof_pred, n_classes)
    if len(y_hold):
        scores, on = score_all(task, y_hold, hold_pred, n_classes), "holdout"
        holdout_score = scores[metric]
    else:
        scores, on = score_all(task, y_oof, oof_pred, n_classes), "oof"
        holdout_score = math.nan
    row: dict[str, Any] = {
        "model": model,
        "kind": kind,
        "metric": metric,
        "oof_score": oof_score,
        "holdout_score": holdout_score,
    }
    row.update(scores)
    row["scored_on"] = on
    row["fit_s"] = fit_s
    return row


def holdout_frame(
    model: str,
    rows: np.ndarray,
    y_true: Sequence[Any],
    pred: np.ndarray,
    cols: list[str],
) -> pd.DataFrame:
    """``model, row_id, y_true, pred…`` of the holdout rows."""
    f = pd.DataFrame(pred.reshape(len(rows), -1), columns=cols)
    f.insert(0, "y_true", y_true)
    f.insert(0, "row_id", rows)
    f.insert(0, "model", model)
    return f


def fits_frame(results: Sequence[FitResult]) -> pd.DataFrame:
    """``fits.parquet``: one row per (member, repeat, fold) fit."""
    return pd.DataFrame(
        [
            {
                "member": r.member,
                "learner": r.learner,
                "fold": r.fold,
                "node_id": r.node_id,
                "worker": r.worker,
                "gpu": r.gpu,
                "submitted_at": r.submitted_at or r.started_at,
                "started_at": r.started_at,
                "fit_s": r.fit_s,
                "predict_s": r.predict_s,
                "save_s": r.save_s,
                "n_train": r.n_train,
                "resumed": r.resumed,
                # Stopped at its time box (fewer rounds or epochs).
                "truncated": r.truncated,
                "repeat": r.repeat,
            }
            for r in sorted(results, key=lambda r: (r.member, r.repeat, r.fold))
        ]
    )


def weight_rows(fused: Sequence[FusionOutcome], members: Sequence[str]) -> pd.DataFrame:
    """``fusion.parquet``: each fusion's weight of each member (and class)."""
    rows = []
    for f in fused:
        for who, w, output in f.fusion.member_weights():
            name = str(who) if isinstance(who, str) else members[int(who)]
            rows.append(
                {"fusion": f.key, "member": name, "weight": w, "output": output}
            )
    return pd.DataFrame(rows, columns=["fusion", "member", "weight", "output"])


def choose(board: pd.DataFrame, folds: Mapping[str, Sequence[float]]) -> str:
    """The model ``predict`` uses: the simplest within the noise of the best.

    About twenty candidates are ranked on OOF scores that often differ in the
    fourth digit, so the top one is partly luck. The noise of a candidate
    against the best is the standard error of their per-fold score
    difference (``std / sqrt(n_folds)``, from ``folds``: model → per-fold
    scores); the candidates are tried from the simplest (:data:`SIMPLICITY`,
    then the better score), and the first whose overall OOF loss is within
    :data:`CHOICE_SE` standard errors of the best is chosen. The holdout is
    never used.

    Examples
    --------
    >>> board = pd.DataFrame({"model": ["weighted", "two_level"],
    ...     "kind": ["fusion", "fusion"], "metric": ["roc_auc"] * 2,
    ...     "oof_score": [0.9300, 0.9301]})
    >>> noisy = {"weighted": [0.92, 0.94, 0.93], "two_level": [0.93, 0.93, 0.9303]}
    >>> choose(board, noisy)  # 1e-4 better, but fold to fold it varies more
    'weighted'
    >>> steady = {"weighted": [0.92, 0.94, 0.93],
    ...           "two_level": [0.9201, 0.9401, 0.9301]}
    >>> choose(board, steady)  # better on every fold by the same margin
    'two_level'
    """
    metric = str(board["metric"].iloc[0])
    models = [str(m) for m in board["model"]]
    loss = {
        m: (to_loss(metric, s) if not math.isnan(s) else math.inf)
        for m, s in zip(models, board["oof_score"], strict=True)
    }
    best = min(models, key=lambda m: loss[m])
    kinds = dict(zip(models, board["kind"], strict=True))

    def simplicity(m: str) -> int:
        return SIMPLICITY.get(m if kinds[m] == "fusion" else "member", 9)

    for m in sorted(models, key=lambda m: (simplicity(m), loss[m])):
        if m == best:
            return best
        pairs = zip(folds.get(m, []), folds.get(best, []), strict=False)
        diff = np.array([to_loss(metric, a) - to_loss(metric, b) for a, b in pairs])
        if len(diff) < 2 or not np.all(np.isfinite(diff)):
            continue  # no noise to weigh (or no finite score): not chosen
        se = float(np.std(diff, ddof=1) / math.sqrt(len(diff)))
        if loss[m] - loss[best] <= CHOICE_SE * se:
            return m
    return best
