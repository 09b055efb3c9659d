"""Greedy ensemble selection with replacement (Caruana et al., 2004)."""

from __future__ import annotations

import math

import numpy as np

from ..metrics import METRICS, score, to_loss
from ._base import BaseFusion, weighted_mean


class SelectionFusion(BaseFusion):
    """Forward selection of members with replacement; weights = selection counts.

    Parameters
    ----------
    n_iterations : int, default=25
        Selection rounds. 25 is AutoGluon's default; TabRepo found no gain past
        it, and fewer rounds keep the ensemble sparse and hard to overfit.
    metric : str, optional
        Metric that selection optimises (any name in ``ensemble.metrics``);
        log loss (classification) or MSE (regression) when None.
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

    def __init__(
        self, n_iterations: int = 25, metric: str | None = None, random_state: int = 0
    ) -> None:
        self.n_iterations = n_iterations
        self.metric = metric
        self.random_state = random_state

    def _loss(self, y: np.ndarray, fused: np.ndarray) -> float:
        name = self.metric or ("log_loss" if fused.ndim == 2 else "mse")
        if name not in METRICS:
            raise ValueError(f"`metric` must be a metric name; got {name!r}")
        k = fused.shape[1] if fused.ndim == 2 else 0
        value = to_loss(name, score(name, y, fused, k))
        return math.inf if math.isnan(value) else value

    def _fit(self, P: np.ndarray, y: np.ndarray, X: np.ndarray | None) -> None:
        loss = self._loss
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

    def _predict(self, P: np.ndarray, X: np.ndarray | None) -> np.ndarray:
        return weighted_mean(P, self.weights_)

    def unused_members(self) -> list[int]:
        """Members with weight exactly zero (see ``BaseFusion.unused_members``)."""
        return [int(i) for i in np.flatnonzero(self.weights_ == 0)]
