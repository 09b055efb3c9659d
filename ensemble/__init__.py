"""ensemble: distributed ensemble training on Ray.

Point it at a table and a target column; it fits every base learner on every
fold with Ray actors, fuses the out-of-fold predictions and writes every result
to a Parquet run directory.
"""

from __future__ import annotations

from .config import RunConfig
from .exceptions import (
    BaseLearnerFailed,
    ConfigError,
    DataError,
    EnsembleError,
    FusionError,
    NotFittedError,
    RunStateError,
    UnknownLearnerError,
)

__version__ = "0.1.0"

__all__ = [
    "BaseLearnerFailed",
    "ConfigError",
    "DataError",
    "EnsembleError",
    "FusionError",
    "NotFittedError",
    "RunConfig",
    "RunStateError",
    "UnknownLearnerError",
    "__version__",
]
