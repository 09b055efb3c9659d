"""The fusion layer: pure numpy/torch strategies fitted on OOF predictions."""

from __future__ import annotations

from typing import Any

from ..exceptions import UnknownFusionError
from ._base import BaseFusion, check_preds
from .average import AverageFusion
from .nested import FusionScore, calibrate_nested, nested_cv
from .neural import NeuralFusion
from .selection import SelectionFusion
from .stacking import StackingFusion
from .two_level import TwoLevelFusion
from .weighted import WeightedFusion

__all__ = [
    "AverageFusion",
    "BaseFusion",
    "FusionScore",
    "NeuralFusion",
    "SelectionFusion",
    "StackingFusion",
    "TwoLevelFusion",
    "WeightedFusion",
    "available",
    "calibrate_nested",
    "check_preds",
    "make",
    "nested_cv",
]

# Registry key -> (class, default parameters). Keys are what configs, the
# leaderboard and fusion.parquet use.
_FUSIONS: dict[str, tuple[type[BaseFusion], dict[str, Any]]] = {
    "average": (AverageFusion, {}),
    "weighted": (WeightedFusion, {}),
    "selection": (SelectionFusion, {}),
    "stacking": (StackingFusion, {}),
    "stacking_nonneg": (StackingFusion, {"positive": True}),
    "stacking_lgbm": (StackingFusion, {"meta": "lgbm", "passthrough": True}),
    "neural": (NeuralFusion, {"use_features": True}),
    "two_level": (TwoLevelFusion, {}),
}


def available() -> list[str]:
    """Registered fusion keys."""
    return list(_FUSIONS)


def make(key: str, **params: Any) -> BaseFusion:
    """An unfitted fusion by key, with ``params`` over its defaults."""
    if key not in _FUSIONS:
        raise UnknownFusionError(
            f"unknown fusion {key!r}; valid: {', '.join(_FUSIONS)}"
        )
    cls, defaults = _FUSIONS[key]
    return cls(**{**defaults, **params})
