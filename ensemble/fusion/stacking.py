"""Stacking: a linear meta-learner over member predictions."""

from __future__ import annotations

import numpy as np
from sklearn.linear_model import LinearRegression, LogisticRegression, Ridge

from ._base import BaseFusion, log_odds


class StackingFusion(BaseFusion):
    """Logistic regression on member log-odds, or (non-negative) linear regression.

    Parameters
    ----------
    C : float, default=1.0
        Inverse L2 strength of the logistic meta-learner; log-odds features are
        on one scale, so the default needs no tuning.
    positive : bool, default=True
        Regression only: non-negative coefficients (Breiman's stacked
        regression, as H2O does); ridge with ``alpha`` otherwise.
    alpha : float, default=1.0
        Ridge strength when ``positive=False``.

    Attributes
    ----------
    final_estimator_ : estimator
        The fitted meta-learner.
    """

    def __init__(self, C: float = 1.0, positive: bool = True, alpha: float = 1.0) -> None:
        self.C = C
        self.positive = positive
        self.alpha = alpha

    def _fit(self, P: np.ndarray, y: np.ndarray) -> None:
        if P.ndim == 3:
            est = LogisticRegression(C=self.C, max_iter=1000)
            est.fit(log_odds(P), y.astype(int))
            self.classes_seen_ = est.classes_.astype(int)
        else:
            est = LinearRegression(positive=True) if self.positive else Ridge(alpha=self.alpha)
            est.fit(P, y)
        self.final_estimator_ = est

    def _predict(self, P: np.ndarray) -> np.ndarray:
        if P.ndim == 3:
            proba = self.final_estimator_.predict_proba(log_odds(P))
            out = np.zeros((len(P), P.shape[2]))
            out[:, self.classes_seen_] = proba
            return out
        return self.final_estimator_.predict(P)

    def member_weights(self) -> list[tuple[int, float, str]]:
        """Coefficients per member (per class for multiclass)."""
        coef = np.atleast_2d(self.final_estimator_.coef_)
        m = self.n_members_
        if self.n_classes_ > 2:
            rows = []
            # coef: (n_classes_seen, m * n_classes) over log-probabilities; report
            # each member's coefficient on its own log-probability of class c.
            for r, c in enumerate(self.classes_seen_):
                for i in range(m):
                    rows.append((i, float(coef[r, i * self.n_classes_ + c]), str(c)))
            return rows
        return [(i, float(coef[0, i]), "") for i in range(m)]
