"""ensemble: distributed ensemble training on Ray.

Point it at a table and a target column; it fits every base learner on every
fold with Ray actors, fuses the out-of-fold predictions and writes every result
to a Parquet run directory.
"""

from __future__ import annotations

from typing import Any

from .config import RunConfig
from .exceptions import (
    BaseLearnerFailed,
    ConfigError,
    DataError,
    EnsembleError,
    FusionError,
    RunStateError,
    UnknownFusionError,
    UnknownLearnerError,
)

__version__ = "0.1.0"

_LAZY = {"EnsembleClassifier", "EnsembleRegressor", "load"}


def __getattr__(name: str) -> Any:
    # scikit-learn estimators load on first use: `import ensemble` stays light.
    if name in _LAZY:
        from . import estimator

        return getattr(estimator, name)
    if name == "NotFittedError":  # it derives from scikit-learn's (see there)
        from . import exceptions

        return exceptions.NotFittedError
    raise AttributeError(f"module 'ensemble' has no attribute {name!r}")


__all__ = [
    "BaseLearnerFailed",
    "ConfigError",
    "DataError",
    "EnsembleClassifier",
    "EnsembleError",
    "EnsembleRegressor",
    "FusionError",
    "NotFittedError",
    "RunConfig",
    "RunStateError",
    "UnknownFusionError",
    "UnknownLearnerError",
    "__version__",
    "load",
]
