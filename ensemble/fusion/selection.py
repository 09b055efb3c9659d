"""Greedy ensemble selection with replacement (Caruana et al., 2004)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ._base import BaseFusion, weighted_mean

_EPS = 1e-15


def _default_loss(y: np.ndarray, f: np.ndarray) -> float:
    if f.ndim == 2:
        p = np.clip(f[np.arange(len(y)), y.astype(int)], _EPS, 1.0)
        return float(-np.mean(np.log(p)))
    return float(np.mean((f - y) ** 2))


class SelectionFusion(BaseFusion):
    """Forward selection of members with replacement; weights = selection counts.

    Parameters
    ----------
    n_iterations : int, default=25
        Selection rounds. 25 is AutoGluon's default; TabRepo found no gain past
        it, and fewer rounds keep the ensemble sparse and hard to overfit.
    loss : callable, optional
        ``loss(y, fused) -> float``, lower is better; log loss / MSE if None.
    random_state : int, default=0
        Breaks ties between equally good members reproducibly.

    Attributes
    ----------
    weights_ : ndarray of shape (n_members,)
        Selection counts of the best prefix, normalised to sum to 1.
    counts_ : ndarray of shape (n_members,)
        Raw selection counts of the best prefix.
    trajectory_ : list of float
        Loss after each round.
    """

    def __init__(self, n_iterations: int = 25,
                 loss: Callable[[np.ndarray, np.ndarray], float] | None = None,
                 random_state: int = 0) -> None:
        self.n_iterations = n_iterations
        self.loss = loss
        self.random_state = random_state

    def _fit(self, P: np.ndarray, y: np.ndarray) -> None:
        loss = self.loss or _default_loss
        rng = np.random.RandomState(self.random_state)
        m = P.shape[1]
        total = np.zeros_like(P[:, 0])
        order: list[int] = []
        trajectory: list[float] = []
        for it in range(self.n_iterations):
            scores = np.array([loss(y, (total + P[:, j]) / (it + 1)) for j in range(m)])
            best = np.flatnonzero(scores == scores.min())
            j = int(rng.choice(best)) if len(best) > 1 else int(best[0])
            total = total + P[:, j]
            order.append(j)
            trajectory.append(float(scores[j]))
        # Keep the best prefix: later rounds may only add noise.
        stop = int(np.argmin(trajectory)) + 1
        self.counts_ = np.bincount(order[:stop], minlength=m)
        self.weights_ = self.counts_ / self.counts_.sum()
        self.trajectory_ = trajectory

    def _predict(self, P: np.ndarray) -> np.ndarray:
        return weighted_mean(P, self.weights_)
