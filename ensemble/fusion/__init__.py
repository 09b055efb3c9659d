"""The fusion layer: pure numpy strategies fitted on OOF predictions."""

from __future__ import annotations

from typing import Any

from ..exceptions import UnknownLearnerError
from ._base import BaseFusion, check_preds
from .average import AverageFusion
from .select import FusionScore, nested_cv
from .selection import SelectionFusion
from .stacking import StackingFusion
from .weighted import WeightedFusion

__all__ = [
    "AverageFusion",
    "BaseFusion",
    "FusionScore",
    "SelectionFusion",
    "StackingFusion",
    "WeightedFusion",
    "available",
    "make",
    "check_preds",
    "nested_cv",
]

_FUSIONS: dict[str, type[BaseFusion]] = {
    "average": AverageFusion,
    "weighted": WeightedFusion,
    "selection": SelectionFusion,
    "stacking": StackingFusion,
}


def available() -> list[str]:
    """Registered fusion keys."""
    return list(_FUSIONS)


def make(key: str, **params: Any) -> BaseFusion:
    """An unfitted fusion by key."""
    if key not in _FUSIONS:
        raise UnknownLearnerError(f"unknown fusion {key!r}; valid: {', '.join(_FUSIONS)}")
    return _FUSIONS[key](**params)
