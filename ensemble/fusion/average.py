"""Simple average of member probabilities or values."""

from __future__ import annotations

import numpy as np

from ._base import BaseFusion, weighted_mean


class AverageFusion(BaseFusion):
    """Unweighted mean of the members: the baseline every fusion must beat.

    Examples
    --------
    >>> import numpy as np
    >>> P = np.array([[1.0, 3.0], [2.0, 4.0]])
    >>> AverageFusion().fit(P, [2.0, 3.0]).predict(P)
    array([2., 3.])
    """

    min_members = 1

    def _fit(self, P: np.ndarray, y: np.ndarray, X: np.ndarray | None) -> None:
        self.weights_ = np.full(P.shape[1], 1.0 / P.shape[1])

    def _predict(self, P: np.ndarray, X: np.ndarray | None) -> np.ndarray:
        return weighted_mean(P, self.weights_)
