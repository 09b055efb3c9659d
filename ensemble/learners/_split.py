"""Inner validation split of a training fold, for early stopping."""

from __future__ import annotations

import numpy as np
from sklearn.model_selection import train_test_split


def inner_split(
    y: np.ndarray, *, classify: bool, fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Indices (train, valid) of a seeded, stratified-when-possible split.

    The OOF fold is never used for early stopping: that would leak its labels
    into its own predictions and flatter every OOF score.
    """
    idx = np.arange(len(y))
    strat = None
    if classify:
        counts = np.bincount(np.asarray(y, dtype=int))
        if counts[counts > 0].min() >= 2:
            strat = y
    tr, va = train_test_split(
        idx, test_size=fraction, random_state=seed, stratify=strat
    )
    return np.sort(tr), np.sort(va)
