"""Weights on the simplex, optimised on OOF predictions for the task loss."""

from __future__ import annotations

import numpy as np
from scipy.optimize import minimize

from ._base import BaseFusion, weighted_mean

_EPS = 1e-15


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max())
    return e / e.sum()


class WeightedFusion(BaseFusion):
    """Convex combination of members.

    Parameters
    ----------
    method : {"optimize", "score"}, default="optimize"
        ``"optimize"`` minimises log loss (classification) or MSE (regression)
        over the simplex with a softmax parametrisation (L-BFGS); ``"score"``
        sets weights proportional to each member's inverse loss.

    Attributes
    ----------
    weights_ : ndarray of shape (n_members,)
        Non-negative, summing to 1.
    """

    def __init__(self, method: str = "optimize") -> None:
        self.method = method

    def _loss(self, P: np.ndarray, y: np.ndarray, w: np.ndarray) -> float:
        f = weighted_mean(P, w)
        if P.ndim == 3:
            p = np.clip(f[np.arange(len(y)), y.astype(int)], _EPS, 1.0)
            return float(-np.mean(np.log(p)))
        return float(np.mean((f - y) ** 2))

    def _fit(self, P: np.ndarray, y: np.ndarray, X: np.ndarray | None) -> None:
        m = P.shape[1]
        if self.method == "score":
            losses = np.array([self._loss(P, y, np.eye(m)[i]) for i in range(m)])
            inv = 1.0 / np.maximum(losses, 1e-12)
            self.weights_ = inv / inv.sum()
            return
        if self.method != "optimize":
            raise ValueError(
                f"`method` must be 'optimize' or 'score'; got {self.method!r}"
            )
        scale = self._loss(P, y, np.full(m, 1.0 / m)) or 1.0
        res = minimize(
            lambda z: self._loss(P, y, _softmax(z)) / scale,
            np.zeros(m),
            method="L-BFGS-B",
        )
        w = _softmax(res.x)
        w[w < 1e-4] = 0.0  # drop dust weights so the fusion reads clearly
        self.weights_ = w / w.sum()

    def _predict(self, P: np.ndarray, X: np.ndarray | None) -> np.ndarray:
        return weighted_mean(P, self.weights_)

    def unused_members(self) -> list[int]:
        """Members with weight exactly zero (see ``BaseFusion.unused_members``)."""
        return [int(i) for i in np.flatnonzero(self.weights_ == 0)]
