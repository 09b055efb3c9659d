"""Honest scoring of fusions by cross-validation over the OOF rows."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.base import clone

from ..metrics import score, to_loss
from ._base import BaseFusion, check_preds, fit_temperature, sharpen

__all__ = ["FusionScore", "calibrate_nested", "nested_cv"]


@dataclass
class FusionScore:
    """Result of :func:`nested_cv`.

    Attributes
    ----------
    score : float
        Metric of the cross-fitted predictions over all OOF rows.
    preds : ndarray
        Cross-fitted predictions, one per OOF row.
    """

    score: float
    preds: np.ndarray


def nested_cv(
    fusion: BaseFusion,
    oof_preds: np.ndarray,
    y: np.ndarray,
    folds: np.ndarray,
    *,
    metric: str,
    X: Any | None = None,
) -> FusionScore:
    """Score a fusion on OOF rows it was not fitted on.

    For each fold ``k`` a clone is fitted on the OOF rows of the other folds and
    predicts fold ``k``; the metric is computed on the assembled predictions.
    A fusion fitted and scored on the same rows would look better than it is.

    Parameters
    ----------
    fusion : BaseFusion
        Unfitted fusion (it is cloned, never fitted in place).
    oof_preds : ndarray
        Member OOF predictions, ``(n, m[, c])``.
    y : ndarray of shape (n,)
        Targets.
    folds : ndarray of shape (n,)
        Fold id of each OOF row.
    metric : str
        Metric name.
    X : ndarray of shape (n, p), optional
        Raw features, for fusions that use them.

    Returns
    -------
    FusionScore
    """
    P = check_preds(oof_preds, y)
    out = np.zeros((P.shape[0],) + P.shape[2:])
    for k in np.unique(folds):
        test = folds == k
        Xtr = None if X is None else X[~test]
        Xte = None if X is None else X[test]
        est = clone(fusion).fit(P[~test], y[~test], Xtr)
        out[test] = est.predict(P[test], Xte)
    n_classes = P.shape[2] if P.ndim == 3 else 0
    return FusionScore(score(metric, y, out, n_classes), out)


def calibrate_nested(
    nested: FusionScore, y: np.ndarray, folds: np.ndarray, *, metric: str
) -> tuple[FusionScore, float] | None:
    """A temperature for a fusion's probabilities, when it helps out of fold.

    The fusion's cross-fitted predictions are honest, so a temperature fitted
    on them is too; to score it without bias it is cross-fitted the same way
    (fitted on the other folds' rows, applied to each fold's). A weighted
    average of members that disagree is under-confident; a temperature fixes
    that, and cannot change a row's ranking of the classes.

    Parameters
    ----------
    nested : FusionScore
        From :func:`nested_cv` (classification probabilities).
    y, folds : ndarray of shape (n,)
        Targets and the fold id of each OOF row.
    metric : str
        The run's metric: the temperature is kept only if it improves it.

    Returns
    -------
    (FusionScore, float) or None
        The calibrated score and predictions, and the power (1 / temperature)
        fitted on every row; None when it does not improve the score.
    """
    P = nested.preds
    out = np.empty_like(P)
    for k in np.unique(folds):
        test = folds == k
        out[test] = sharpen(P[test], fit_temperature(P[~test], y[~test]))
    calibrated = FusionScore(score(metric, y, out, P.shape[1]), out)
    if not to_loss(metric, calibrated.score) < to_loss(metric, nested.score):
        return None
    return calibrated, fit_temperature(P, y)
