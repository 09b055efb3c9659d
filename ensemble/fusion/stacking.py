"""Stacking: a meta-learner over member predictions (optionally plus features)."""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.optimize import minimize
from sklearn.linear_model import LinearRegression, LogisticRegression, Ridge
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from ._base import BaseFusion, log_odds

__all__ = ["StackingFusion"]


class _NonNegativePooling:
    """Log-linear pooling with non-negative member weights (classification).

    ``logit_c = sum_i w_i * log p_ic + b_c`` with ``w >= 0`` shared across
    classes: the non-negative meta-learner H2O recommends, which cannot flip a
    member's sign and so stays stable when members are highly correlated.
    """

    def __init__(self, l2: float) -> None:
        self.l2 = l2

    def _inputs(self, P: np.ndarray) -> np.ndarray:
        return np.log(np.clip(P, 1e-6, 1.0))  # (n, m, k)

    def fit(self, P: np.ndarray, y: np.ndarray) -> _NonNegativePooling:
        L = self._inputs(P)
        n, m, k = L.shape
        Y = np.eye(k)[y.astype(int)]

        def loss(theta: np.ndarray) -> tuple[float, np.ndarray]:
            w, b = theta[:m], theta[m:]
            z = np.einsum("nmk,m->nk", L, w) + b
            z -= z.max(axis=1, keepdims=True)
            logq = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
            q = np.exp(logq)
            r = (q - Y) / n
            value = -np.sum(Y * logq) / n + self.l2 * float(w @ w)
            gw = np.einsum("nk,nmk->m", r, L) + 2 * self.l2 * w
            return value, np.r_[gw, r.sum(axis=0)]

        theta0 = np.r_[np.full(m, 1.0 / m), np.zeros(k)]
        bounds = [(0.0, None)] * m + [(None, None)] * k
        res = minimize(loss, theta0, jac=True, method="L-BFGS-B", bounds=bounds)
        self.coef_ = res.x[:m]
        self.intercept_ = res.x[m:]
        return self

    def predict_proba(self, P: np.ndarray) -> np.ndarray:
        z = np.einsum("nmk,m->nk", self._inputs(P), self.coef_) + self.intercept_
        z -= z.max(axis=1, keepdims=True)
        e = np.exp(z)
        out: np.ndarray = e / e.sum(axis=1, keepdims=True)
        return out


class StackingFusion(BaseFusion):
    """A meta-learner fitted on the members' OOF predictions.

    Classification features are log-odds (binary: one logit per member, the
    redundant complement dropped) or log-probabilities (multiclass); regression
    features are the predictions themselves.

    Parameters
    ----------
    meta : {"linear", "lgbm"}, default="linear"
        Logistic regression / ridge, or a small LightGBM.
    positive : bool, default=False
        Non-negative member weights (H2O's choice): log-linear pooling for
        classification, non-negative least squares for regression. Only with
        ``meta="linear"`` and without passthrough.
    passthrough : bool, default=False
        Also feed the raw features to the meta-learner.
    C : float, default=0.1
        Inverse L2 strength of the logistic meta-learner, on standardised
        meta-features. Members' log-odds are highly collinear and, for many
        classes, numerous (26 classes x 7 members = 182 on letter): 0.1 beat 1.0
        and 0.01 in nested CV there (log loss 0.130 vs 0.190 / 0.141).
    alpha : float, default=1.0
        Ridge strength (regression).
    random_state : int, default=0
        Seed of the LightGBM meta-learner.

    Attributes
    ----------
    final_estimator_ : estimator
        The fitted meta-learner.
    """

    def __init__(
        self,
        meta: str = "linear",
        *,
        positive: bool = False,
        passthrough: bool = False,
        C: float = 0.1,
        alpha: float = 1.0,
        random_state: int = 0,
    ) -> None:
        self.meta = meta
        self.positive = positive
        self.passthrough = passthrough
        self.C = C
        self.alpha = alpha
        self.random_state = random_state

    @property
    def uses_features(self) -> bool:
        """Whether raw features are fed too (passthrough)."""
        return bool(self.passthrough)

    def _features(self, P: np.ndarray, X: np.ndarray | None, fit: bool) -> np.ndarray:
        base = log_odds(P) if P.ndim == 3 else P
        if X is None:
            return base
        if self.meta == "linear":
            from ..learners._preprocess import OneHotScaler

            if fit:
                mask = (False,) * X.shape[1]
                self.scaler_ = OneHotScaler(mask, (0,) * X.shape[1]).fit(X)
            X = self.scaler_.transform(X, np.float64)
        return np.hstack([base, X])

    def _fit(self, P: np.ndarray, y: np.ndarray, X: np.ndarray | None) -> None:
        if self.meta not in ("linear", "lgbm"):
            raise ValueError(f"`meta` must be 'linear' or 'lgbm'; got {self.meta!r}")
        if self.positive and (self.meta != "linear" or self.passthrough):
            raise ValueError("`positive=True` needs meta='linear' and no passthrough")
        clf = P.ndim == 3
        est: Any
        if self.positive:
            est = (
                _NonNegativePooling(l2=1e-4) if clf else LinearRegression(positive=True)
            )
            est.fit(P, y)
            self.final_estimator_ = est
            if clf:
                self.classes_seen_ = np.arange(P.shape[2])
            return
        Z = self._features(P, X, fit=True)
        if self.meta == "lgbm":
            est = _lgbm(clf, self.random_state)
        elif clf:
            est = make_pipeline(
                StandardScaler(), LogisticRegression(C=self.C, max_iter=1000)
            )
        else:
            est = Ridge(alpha=self.alpha)
        est.fit(Z, y.astype(int) if clf else y)
        if clf:
            self.classes_seen_ = np.asarray(est.classes_).astype(int)
        self.final_estimator_ = est

    def _predict(self, P: np.ndarray, X: np.ndarray | None) -> np.ndarray:
        est = self.final_estimator_
        if P.ndim == 3:
            inputs = P if self.positive else self._features(P, X, fit=False)
            proba = est.predict_proba(inputs)
            out = np.zeros((len(P), P.shape[2]))
            out[:, self.classes_seen_] = proba
            return out
        inputs = P if self.positive else self._features(P, X, fit=False)
        pred: np.ndarray = est.predict(inputs)
        return pred

    def unused_members(self) -> list[int]:
        """With ``positive=True``, the members whose coefficient is exactly 0.

        Their inputs are multiplied by that 0 (a log-probability of a constant
        prediction, or a value), so they cannot change the output.
        """
        if not self.positive:
            return []
        coef = np.ravel(self.final_estimator_.coef_)
        return [int(i) for i in np.flatnonzero(coef[: self.n_members_] == 0)]

    def member_weights(self) -> list[tuple[int | str, float, str]]:
        """Coefficients per member (per class for multiclass linear stacking)."""
        est = self.final_estimator_
        m = self.n_members_
        if self.meta == "lgbm":
            # Split gain of each member's meta-features, normalised to sum to 1.
            gain = np.asarray(est.booster_.feature_importance("gain"), dtype=float)
            width = self.n_classes_ if self.n_classes_ > 2 else 1
            per = gain[: m * width].reshape(m, width).sum(axis=1)
            total = per.sum() or 1.0
            return [(i, float(per[i] / total), "") for i in range(m)]
        # Linear stacking: coefficients on standardised meta-features.
        coef = np.atleast_2d(est[-1].coef_ if hasattr(est, "steps") else est.coef_)
        if self.n_classes_ > 2 and not self.positive:
            rows: list[tuple[int | str, float, str]] = []
            # coef: (n_classes_seen, m * n_classes) over log-probabilities; report
            # each member's coefficient on its own log-probability of class c.
            for r, c in enumerate(self.classes_seen_):
                for i in range(m):
                    rows.append((i, float(coef[r, i * self.n_classes_ + c]), str(c)))
            return rows
        return [(i, float(coef[0, i]), "") for i in range(m)]


def _lgbm(classification: bool, seed: int) -> Any:
    import lightgbm as lgb

    # Small and strongly regularised: the meta-features are few and already
    # strong, so a deep booster would only memorise the OOF rows.
    params: dict[str, Any] = {
        "n_estimators": 150,
        "learning_rate": 0.05,
        "num_leaves": 15,
        "min_child_samples": 50,
        "subsample": 0.8,
        "subsample_freq": 1,
        "colsample_bytree": 0.8,
        "reg_lambda": 1.0,
        "random_state": seed,
        "n_jobs": 1,
        "deterministic": True,
        "force_row_wise": True,
        "verbosity": -1,
    }
    return (
        lgb.LGBMClassifier(**params) if classification else lgb.LGBMRegressor(**params)
    )
