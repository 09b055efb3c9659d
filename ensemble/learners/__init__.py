"""Base learners behind a registry of short keys.

Each family lives in its own module and registers itself on import:
``linear``, ``knn``, ``rf``, ``et``, ``hgb``, ``lgbm``, ``xgb``, ``cat``, ``mlp``.
"""

from __future__ import annotations

from . import (  # noqa: F401  (registration)
    catboost,
    forest,
    hgb,
    knn,
    lightgbm,
    linear,
    mlp,
    xgboost,
)
from ._base import FitContext, Learner, available, get, register

__all__ = ["FitContext", "Learner", "available", "get", "register"]
