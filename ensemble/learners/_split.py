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

    def expired(self, extra: float = 0.0) -> bool:
        """Whether the allowance is spent, or would be after ``extra`` seconds."""
        return self.left() <= extra

    def affords_refit(self, stage_rounds: int, rounds: int, extra: float = 0.0) -> bool:
        """Whether a refit of ``rounds`` on the whole fold ends inside the box.

        Called when the early-stopping stage, begun with the box, has just run
        ``stage_rounds`` on the rows left after the inner split; the refit's
        rounds cost as much each, scaled up to the whole fold's rows. ``extra``:
        seconds the box must still hold after the refit.
        """
        if self.seconds is None:
            return True
        stage_s = time.monotonic() - self.start
        need = stage_s * rounds / max(stage_rounds, 1) / (1 - INNER_VALID)
        return need + extra <= self.left()


class PredictCost:
    """What predicting a fold's rows will cost a booster, by its rounds.

    A time box bounds a fold's fit; predicting its OOF rows comes after, out
    of a reserve. With many rounds of many classes the prediction can outlast
    that reserve (letter's LightGBM extra-trees folds: 23 s to predict 3,200
    rows after 30 s of fitting), so a booster times a prediction of a few rows
    at 64, 128, 256, ... rounds, projects the whole prediction, and stops
    boosting early by what it would overrun. Later rounds grow deeper trees
    and cost more to predict (that fold: 7 ms a round at 300 rounds, 18 ms at
    1,300), so the projection goes on at the cost of the rounds since the
    previous timing, never below the average so far.

    Parameters
    ----------
    rows : int
        Rows the fold's model predicts once fitted (0: nothing to project).
    reserve_s : float
        Seconds kept for the prediction beyond the fit's box.
    probe_rows : int
        Rows of each timed prediction (at most ``PROBE_ROWS``).

    Examples
    --------
    >>> cost = PredictCost(rows=2560, reserve_s=5.0, probe_rows=128)
    >>> cost.due(63), cost.due(64)
    (False, True)
    >>> cost.observe(rounds=100, seconds=0.05)  # 1 s for the 2,560 rows
    >>> cost.seconds(300), cost.due(127), cost.due(128)
    (3.0, False, True)
    >>> cost.observe(rounds=200, seconds=0.15)  # 3 s: 2 s / 100
    >>> cost.seconds(300), cost.overrun(300)
    (5.0, 0.0)
    >>> cost.overrun(400)
    2.0
    """

    FIRST = 64
    PROBE_ROWS = 128

    def __init__(self, rows: int, reserve_s: float, probe_rows: int) -> None:
        self.rows = rows
        self.reserve_s = reserve_s
        self.probe_rows = probe_rows
        self.next = self.FIRST
        self.timed: list[tuple[int, float]] = []  # (rounds, seconds for rows)

    def due(self, rounds: int) -> bool:
        """Whether to time a prediction now (``rounds`` fitted so far)."""
        return self.rows > 0 and rounds >= self.next

    def observe(self, rounds: int, seconds: float) -> None:
        """Record that ``probe_rows`` took ``seconds`` to predict at ``rounds``."""
        self.timed.append((rounds, seconds * self.rows / max(self.probe_rows, 1)))
        while self.next <= rounds:
            self.next *= 2

    def seconds(self, rounds: int) -> float:
        """Projected seconds to predict ``rows`` with ``rounds``."""
        if not self.timed:
            return 0.0
        r1, s1 = self.timed[-1]
        per_round = s1 / max(r1, 1)
        if len(self.timed) > 1:
            r0, s0 = self.timed[-2]
            per_round = max(per_round, (s1 - s0) / max(r1 - r0, 1))
        return s1 + per_round * (rounds - r1)

    def overrun(self, rounds: int) -> float:
        """Seconds that prediction would outlast the reserve (0 if it fits)."""
        return max(0.0, self.seconds(rounds) - self.reserve_s)

    def box_spent(self, box: TimeBox, rounds: int, predict: Any) -> bool:
        """Whether a booster at ``rounds`` stops: ``box`` is spent, less the overrun.

        ``predict()`` predicts the ``probe_rows``; it is timed when due.
        """
        if self.due(rounds):
            t = time.perf_counter()
            predict()
            self.observe(rounds, time.perf_counter() - t)
        return box.expired(self.overrun(rounds))
