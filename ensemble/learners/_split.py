"""Inner validation split of a training fold, and the early-stopping budget."""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np
from sklearn.model_selection import train_test_split

#: Share of a training fold held out for early stopping (the boosters and the
#: MLP): enough rows to see the validation curve turn, few enough to cost
#: little (the boosters refit on the whole fold afterwards).
INNER_VALID = 0.1


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


def pop_rounds(params: dict[str, Any]) -> tuple[dict[str, Any], int, int, bool]:
    """Split booster params into (library params, max rounds, patience, refit)."""
    p = dict(params)
    return (
        p,
        int(p.pop("max_rounds")),
        int(p.pop("early_stopping_rounds")),
        bool(p.pop("refit")),
    )


def refit_rounds(best_rounds: int) -> int:
    """Rounds for the refit on the whole fold: 10% more rows, 10% more rounds."""
    return max(1, round(best_rounds * 1.1))


class TimeBox:
    """The wall-clock allowance of one fit, counted from its creation.

    Parameters
    ----------
    seconds : float or None
        The allowance (None: unlimited).

    Examples
    --------
    >>> TimeBox(None).expired(), TimeBox(-1.0).expired()
    (False, True)
    """

    def __init__(self, seconds: float | None) -> None:
        self.seconds = seconds
        self.start = time.monotonic()

    def left(self) -> float:
        """Seconds left (``inf`` when unlimited)."""
        if self.seconds is None:
            return math.inf
        return self.seconds - (time.monotonic() - self.start)

    def expired(self) -> bool:
        """Whether the allowance is spent."""
        return self.left() <= 0

    def affords_refit(self, stage_rounds: int, rounds: int) -> bool:
        """Whether a refit of ``rounds`` on the whole fold ends inside the box.

        Called when the early-stopping stage, begun with the box, has just run
        ``stage_rounds`` on the rows left after the inner split; the refit's
        rounds cost as much each, scaled up to the whole fold's rows.
        """
        if self.seconds is None:
            return True
        stage_s = time.monotonic() - self.start
        need = stage_s * rounds / max(stage_rounds, 1) / (1 - INNER_VALID)
        return need <= self.left()
