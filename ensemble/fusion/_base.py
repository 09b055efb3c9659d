"""Shared base of every fusion strategy (numpy only, no Ray)."""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.base import BaseEstimator

from ..exceptions import FusionError, NotFittedError

__all__ = [
    "BaseFusion",
    "check_preds",
    "fit_temperature",
    "log_odds",
    "sharpen",
    "weighted_mean",
]

_EPS = 1e-6  # probability clip for log-odds: bounds them to about ±14


def check_preds(
    oof_preds: Any, y: Any | None = None, *, min_members: int = 1
) -> np.ndarray:
    """Validate a prediction stack.

    Parameters
    ----------
    oof_preds : array-like
        ``(n_samples, n_models, n_classes)`` probabilities or
        ``(n_samples, n_models)`` values.
    y : array-like, optional
        Targets, one per sample.
    min_members : int, default=1
        Least number of members accepted.

    Returns
    -------
    ndarray of float64
    """
    P = np.asarray(oof_preds, dtype=np.float64)
    if P.ndim not in (2, 3):
        raise FusionError(
            "`oof_preds` must have shape (n_samples, n_models[, n_classes]); got "
            f"{P.ndim} dimension(s) {P.shape}"
        )
    if P.shape[1] < min_members:
        raise FusionError(
            f"fusion needs at least {min_members} members; got {P.shape[1]}. With one "
            "member there is nothing to fuse: use the member itself"
        )
    if not np.all(np.isfinite(P)):
        bad = np.argwhere(
            ~np.isfinite(P).reshape(P.shape[0], P.shape[1], -1).all(axis=2)
        )
        raise FusionError(
            f"`oof_preds` contains NaN or infinite values (first at row {bad[0][0]}, "
            f"member {bad[0][1]}); fix or drop that member"
        )
    if y is not None and len(np.asarray(y)) != P.shape[0]:
        raise FusionError(
            f"`y` must have one entry per row of `oof_preds`; got {len(np.asarray(y))} "
            f"targets for {P.shape[0]} rows"
        )
    return P


def _check_X(X: Any, n: int) -> np.ndarray | None:
    if X is None:
        return None
    A = np.asarray(X, dtype=np.float32)
    if A.ndim != 2 or A.shape[0] != n:
        raise FusionError(
            f"`X` must have shape (n_samples, n_features) with {n} rows; got {A.shape}"
        )
    return A


class BaseFusion(BaseEstimator):
    """Base of the fusion layer: ``fit(oof_preds, y[, X])`` then ``predict``.

    A 3-D ``oof_preds`` means classification (probabilities per class), a 2-D
    one regression. ``X`` (raw features, float32 with NaN for missing) is used
    only by fusions that look at features (``uses_features``). Subclasses
    implement ``_fit`` and ``_predict``; ``predict`` returns probabilities
    ``(n, n_classes)`` or values ``(n,)``.
    """

    min_members = 2

    @property
    def uses_features(self) -> bool:
        """Whether ``fit`` / ``predict`` read the raw features ``X``."""
        return False

    def fit(self, oof_preds: Any, y: Any, X: Any | None = None) -> BaseFusion:
        """Fit on out-of-fold predictions of the members and the true targets."""
        P = check_preds(oof_preds, y, min_members=self.min_members)
        self.n_members_ = P.shape[1]
        self.n_classes_ = P.shape[2] if P.ndim == 3 else 0
        Xc = _check_X(X, P.shape[0]) if self.uses_features else None
        self.n_features_ = None if Xc is None else Xc.shape[1]
        self._fit(P, np.asarray(y), Xc)
        return self

    def predict(self, preds: Any, X: Any | None = None) -> np.ndarray:
        """Fused probabilities or values for a stack of member predictions."""
        if not hasattr(self, "n_members_"):
            raise NotFittedError(f"{type(self).__name__} is not fitted; call fit first")
        P = check_preds(preds)
        expected = (self.n_members_,) + ((self.n_classes_,) if self.n_classes_ else ())
        if P.shape[1:] != expected:
            raise FusionError(
                f"predictions must have shape (n, {', '.join(map(str, expected))}) as "
                f"in fit; got {P.shape}"
            )
        Xc = _check_X(X, P.shape[0]) if self.n_features_ is not None else None
        if self.n_features_ is not None and (
            Xc is None or Xc.shape[1] != self.n_features_
        ):
            raise FusionError(
                f"{type(self).__name__} was fitted with {self.n_features_} raw "
                "features; pass the same X columns to predict"
            )
        out = np.asarray(self._predict(P, Xc), dtype=np.float64)
        if self.n_classes_:
            out = np.clip(out, 0.0, 1.0)
            out = out / np.maximum(out.sum(axis=1, keepdims=True), 1e-300)
            # set by the fusion stage when a temperature helped its nested score
            power = getattr(self, "sharpen_", None)
            if power is not None:
                out = sharpen(out, power)
        return out

    def unused_members(self) -> list[int]:
        """Members whose predictions cannot change this fusion's output.

        Their weight is exactly zero, so any prediction in their place (a run
        that keeps only the models its chosen fusion needs passes a constant)
        gives the same output to the bit. Fusions that cannot say return none.
        """
        return []

    def member_weights(self) -> list[tuple[int | str, float, str]]:
        """``(member index, weight, output)`` rows for fusion.parquet."""
        w = getattr(self, "weights_", None)
        if w is None:
            return []
        return [(i, float(v), "") for i, v in enumerate(w)]

    def _fit(self, P: np.ndarray, y: np.ndarray, X: np.ndarray | None) -> None:
        raise NotImplementedError

    def _predict(self, P: np.ndarray, X: np.ndarray | None) -> np.ndarray:
        raise NotImplementedError


def weighted_mean(P: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Weighted average over the member axis."""
    return np.tensordot(w, np.moveaxis(P, 1, 0), axes=1)


def log_odds(P: np.ndarray) -> np.ndarray:
    """Meta-features for classifiers: logit (binary) or log-probabilities.

    For binary tasks only the positive-class column is kept: the other is its
    complement and would only add a collinear feature.
    """
    Q = np.clip(P, _EPS, 1 - _EPS)
    if Q.shape[2] == 2:
        return np.log(Q[:, :, 1]) - np.log(Q[:, :, 0])
    L = np.log(Q)
    return L.reshape(L.shape[0], -1)


#: Range of the power :func:`fit_temperature` searches (temperatures 1/5..5).
_POWER_RANGE = (0.2, 5.0)


def sharpen(P: np.ndarray, power: float) -> np.ndarray:
    """Probabilities raised to ``power`` and renormalised: temperature scaling.

    ``softmax(log(P) / T)`` with ``power = 1 / T``; above 1 it sharpens,
    below 1 it softens. The order of the classes in a row never changes.

    Examples
    --------
    >>> sharpen(np.array([[0.6, 0.3, 0.1]]), 2.0).round(3)
    array([[0.783, 0.196, 0.022]])
    """
    L = power * np.log(np.clip(P, 1e-15, 1.0))
    L -= L.max(axis=1, keepdims=True)
    E = np.exp(L)
    return E / E.sum(axis=1, keepdims=True)


def fit_temperature(P: np.ndarray, y: np.ndarray) -> float:
    """The power (1 / temperature) of :func:`sharpen` with the least log loss.

    One parameter fitted on ``(n, n_classes)`` probabilities and their labels,
    by a bounded scalar search; AutoGluon calibrates its final model the same
    way for probability metrics (``calibrate="auto"``).
    """
    from scipy.optimize import minimize_scalar

    idx = np.arange(len(y)), np.asarray(y, dtype=int)

    def loss(power: float) -> float:
        return float(-np.mean(np.log(np.clip(sharpen(P, power)[idx], 1e-15, 1.0))))

    res = minimize_scalar(loss, bounds=_POWER_RANGE, method="bounded")
    return float(res.x)
