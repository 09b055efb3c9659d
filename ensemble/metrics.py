"""Task metrics: name -> (function, greater_is_better, needs_proba).

Classification predictions are probability matrices ``(n_samples, n_classes)``
whose columns follow the encoded classes ``0..n_classes-1``; regression
predictions are vectors. Every function copes with a class missing from
``y_true`` (returns NaN where a score is undefined instead of raising) and never
emits zero-division warnings.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from sklearn import metrics as skm

__all__ = [
    "METRICS",
    "Metric",
    "default_metric",
    "metrics_for_task",
    "score",
    "score_all",
    "to_loss",
]

_EPS = 1e-15  # probability floor for log loss: keeps one confident miss finite


@dataclass(frozen=True)
class Metric:
    """A named metric.

    Parameters
    ----------
    name : str
        Registry key.
    fn : callable
        ``fn(y_true, pred, n_classes) -> float``.
    greater_is_better : bool
        Direction of improvement.
    needs_proba : bool
        Whether ``fn`` reads probabilities (True) or labels derived by argmax.
    tasks : tuple of str
        Tasks the metric applies to.
    """

    name: str
    fn: Callable[[np.ndarray, np.ndarray, int], float]
    greater_is_better: bool
    needs_proba: bool
    tasks: tuple[str, ...]


def _labels(pred: np.ndarray) -> np.ndarray:
    return np.asarray(pred).argmax(axis=1)


def _normalise(proba: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(proba, dtype=np.float64), _EPS, 1.0)
    return p / p.sum(axis=1, keepdims=True)


def _accuracy(y: np.ndarray, p: np.ndarray, k: int) -> float:
    return float(np.mean(_labels(p) == y))


def _prf(kind: str) -> Callable[[np.ndarray, np.ndarray, int], float]:
    fn = {
        "precision": skm.precision_score,
        "recall": skm.recall_score,
        "f1": skm.f1_score,
    }[kind]

    def metric(y: np.ndarray, p: np.ndarray, k: int) -> float:
        # Binary: the positive class is the second encoded class; multiclass: macro
        # over every class, present or not, with 0 where a ratio is undefined.
        average = "binary" if k == 2 else "macro"
        return float(
            fn(
                y,
                _labels(p),
                labels=list(range(k)) if k > 2 else None,
                average=average,
                zero_division=0.0,
                pos_label=1,
            )
        )

    return metric


def _binary_auc(pos: np.ndarray, score: np.ndarray) -> float:
    """ROC AUC as the Mann-Whitney statistic (ties count one half).

    The same number as ``sklearn.metrics.roc_auc_score`` without its input
    checks, which cost ~1 ms a call: the Caruana selection and the choice of a
    model compute thousands of them.

    Examples
    --------
    >>> _binary_auc(np.array([0, 0, 1, 1]), np.array([0.1, 0.4, 0.35, 0.8]))
    0.75
    """
    from scipy.stats import rankdata

    pos = np.asarray(pos, dtype=bool)
    n_pos = int(pos.sum())
    n_neg = len(pos) - n_pos
    ranks = rankdata(score)
    u = float(ranks[pos].sum()) - n_pos * (n_pos + 1) / 2
    return u / (n_pos * n_neg)


def _roc_auc(y: np.ndarray, p: np.ndarray, k: int) -> float:
    p = np.asarray(p, dtype=np.float64)
    y = np.asarray(y)
    if k == 2:
        pos = y == 1
        if pos.all() or not pos.any():
            return math.nan
        return _binary_auc(pos, p[:, 1])
    # One-vs-rest macro over the classes that have both positives and negatives
    # here (a class absent from y_true has no AUC).
    scores = []
    for c in range(k):
        pos = y == c
        if 0 < pos.sum() < len(y):
            scores.append(_binary_auc(pos, p[:, c]))
    return float(np.mean(scores)) if scores else math.nan


def _log_loss(y: np.ndarray, p: np.ndarray, k: int) -> float:
    p = _normalise(p)
    return float(-np.mean(np.log(p[np.arange(len(y)), np.asarray(y, dtype=int)])))


def _mse(y: np.ndarray, p: np.ndarray, k: int) -> float:
    return float(np.mean((np.asarray(y, float) - np.asarray(p, float)) ** 2))


def _rmse(y: np.ndarray, p: np.ndarray, k: int) -> float:
    return math.sqrt(_mse(y, p, k))


def _mae(y: np.ndarray, p: np.ndarray, k: int) -> float:
    return float(np.mean(np.abs(np.asarray(y, float) - np.asarray(p, float))))


def _r2(y: np.ndarray, p: np.ndarray, k: int) -> float:
    y = np.asarray(y, float)
    ss_tot = float(np.sum((y - y.mean()) ** 2))
    if len(y) < 2 or ss_tot == 0.0:
        return math.nan
    return 1.0 - float(np.sum((y - np.asarray(p, float)) ** 2)) / ss_tot


_CLF = ("binary", "multiclass")
_REG = ("regression",)

METRICS: dict[str, Metric] = {
    m.name: m
    for m in [
        Metric("accuracy", _accuracy, True, False, _CLF),
        Metric("precision", _prf("precision"), True, False, _CLF),
        Metric("recall", _prf("recall"), True, False, _CLF),
        Metric("f1", _prf("f1"), True, False, _CLF),
        Metric("roc_auc", _roc_auc, True, True, _CLF),
        Metric("log_loss", _log_loss, False, True, _CLF),
        Metric("mse", _mse, False, False, _REG),
        Metric("rmse", _rmse, False, False, _REG),
        Metric("mae", _mae, False, False, _REG),
        Metric("r2", _r2, True, False, _REG),
    ]
}


def default_metric(task: str) -> str:
    """Metric that ranks models by default: AUC, log loss or RMSE (as in AMLB)."""
    return {"binary": "roc_auc", "multiclass": "log_loss", "regression": "rmse"}[task]


def metrics_for_task(task: str) -> list[str]:
    """Names of every metric that applies to ``task``, in report order."""
    return [name for name, m in METRICS.items() if task in m.tasks]


def score(name: str, y_true: np.ndarray, pred: np.ndarray, n_classes: int = 0) -> float:
    """Compute one metric.

    Parameters
    ----------
    name : str
        Metric name from :data:`METRICS`.
    y_true : ndarray of shape (n_samples,)
        Encoded labels (classification) or values (regression).
    pred : ndarray
        Probabilities ``(n_samples, n_classes)`` or values ``(n_samples,)``.
    n_classes : int, default=0
        Number of classes; 0 for regression.

    Returns
    -------
    float
        The score; NaN when undefined on this sample (e.g. one class only).
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return METRICS[name].fn(np.asarray(y_true), np.asarray(pred), n_classes)


def score_all(
    task: str, y_true: np.ndarray, pred: np.ndarray, n_classes: int = 0
) -> dict[str, float]:
    """Every metric of the task, as ``{name: value}``."""
    return {
        name: score(name, y_true, pred, n_classes) for name in metrics_for_task(task)
    }


def to_loss(name: str, value: float) -> float:
    """Map a score to a loss (lower is better) for minimisation and ranking."""
    return -value if METRICS[name].greater_is_better else value
