"""Base learners behind a registry of short keys.

Each family lives in its own module and registers itself on import:
``linear``, ``rf``, ``et``, ``hgb``, ``lgbm``, ``xgb``, ``mlp``.
"""

from __future__ import annotations

from . import forest, hgb, lightgbm, linear, mlp, xgboost  # noqa: F401  (registration)
from ._base import FitContext, Learner, available, get, register

__all__ = ["FitContext", "Learner", "available", "get", "register"]
