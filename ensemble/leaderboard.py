"""The run's tables, built from fit and fusion results (pandas, no Ray).

Predictions are stacked into the arrays the fusions take, scored into the
leaderboard's rows, and laid out as the contract's Parquet tables
(``oof/``, ``holdout.parquet``, ``fits.parquet``, ``leaderboard.parquet``,
``fusion.parquet``). :func:`choose` picks the model ``predict`` uses.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from .metrics import score_all, to_loss
from .specs import FitResult, FusionOutcome

__all__ = [
    "board_row",
    "choose",
    "fits_frame",
    "holdout_frame",
    "oof_frames",
    "pred_columns",
    "stack_holdout",
    "stack_oof",
    "weight_rows",
]


def pred_columns(classes: Sequence[Any]) -> list[str]:
    """Names of the prediction columns: ``pred_<class>`` or ``pred``."""
    return [f"pred_{c}" for c in classes] if classes else ["pred"]


def oof_frames(
    results: Sequence[FitResult], row_id: np.ndarray, fold: np.ndarray, cols: list[str]
) -> list[pd.DataFrame]:
    """One long frame per (member, fold): ``member, row_id, fold, pred…``."""
    frames = []
    for r in results:
        fold_rows = row_id[fold == r.fold]
        f = pd.DataFrame(r.oof_pred.reshape(len(fold_rows), -1), columns=cols)
        f.insert(0, "fold", np.int64(r.fold))
        f.insert(0, "row_id", fold_rows)
        f.insert(0, "member", r.member)
        frames.append(f)
    return frames


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


def stack_holdout(results: Sequence[FitResult], members: Sequence[str]) -> np.ndarray:
    """Holdout predictions per member: the mean over its fold models."""
    blocks = []
    for m in members:
        # In fold order: results arrive in completion order, and a different
        # summation order changes ties (forests give multiples of 1/n_trees).
        mine = sorted((r for r in results if r.member == m), key=lambda r: r.fold)
        blocks.append(np.mean([r.holdout_pred for r in mine], axis=0))
    return np.stack(blocks, axis=1).astype(np.float64)


def board_row(
    model: str,
    kind: str,
    *,
    metric: str,
    oof_score: float,
    task: str,
    y_hold: np.ndarray,
    pred: np.ndarray,
    n_classes: int,
    fit_s: float,
) -> dict[str, Any]:
    """A leaderboard row: the OOF score and every holdout metric of the task."""
    hold = score_all(task, y_hold, pred, n_classes)
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
    """``fits.parquet``: one row per (member, fold) fit."""
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
                "resumed": r.resumed,
                # Stopped at its time box (a booster with fewer rounds).
                "truncated": r.truncated,
            }
            for r in sorted(results, key=lambda r: (r.member, r.fold))
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


def choose(board: pd.DataFrame) -> str:
    """The model with the best OOF (nested-CV for fusions) score; holdout unused."""
    losses = [
        to_loss(m, s) if not math.isnan(s) else math.inf
        for m, s in zip(board["metric"], board["oof_score"], strict=True)
    ]
    return str(board["model"].iloc[int(np.argmin(losses))])
