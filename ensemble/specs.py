"""The units of work of a run and their results, as plain data (no Ray).

A run turns learner configurations (:class:`MemberSpec`) into one
:class:`FitTask` per (member, fold); an actor turns each task into a
:class:`FitResult`; the fit pool gathers them into a :class:`FitOutcome`;
each fusion scored on the members' OOF predictions is a
:class:`FusionOutcome`. They live apart from the modules that run them, so
the pure modules (the planner, the leaderboard) are typed without Ray.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np

from .budget import MIN_BOX_FRACTION

__all__ = [
    "REFIT_FOLD",
    "FitOutcome",
    "FitResult",
    "FitTask",
    "FusionOutcome",
    "MemberSpec",
]

#: The ``fold`` of a refit: no row is left out, the model trains on every row
#: in the folds and predicts no OOF rows (``models/<member>/full``).
REFIT_FOLD = -2


@dataclass(frozen=True)
class MemberSpec:
    """An ensemble member: a learner key and its parameters.

    Attributes
    ----------
    name : str
        Member name (``lgbm``, ``lgbm_2``, …): the key of its OOF column.
    learner : str
        Learner registry key.
    params : dict
        Every parameter (the learner's defaults merged with the chosen ones).
    rank : int, default=1
        1 for a family's best configuration, 2 for its second-best, …
    fold_s : float or None, default=None
        Expected seconds of one fold, measured by its tuning trial (None: not
        tuned; the calibrated estimate applies).
    trial_dir : str or None, default=None
        Where its tuning trial saved a fitted model and OOF predictions for
        every fold of the run's own folds: the member is not fitted again.
    """

    name: str
    learner: str
    params: dict[str, Any]
    rank: int = 1
    fold_s: float | None = None
    trial_dir: str | None = None

    @property
    def tuned(self) -> bool:
        """Whether tuning chose (and timed) this configuration."""
        return self.fold_s is not None


@dataclass(frozen=True)
class FitTask:
    """One (member, fold) fit, as queued and sent to an actor.

    Attributes
    ----------
    member, learner : str
        Member name and learner key.
    params : dict
        The learner's parameters.
    fold : int
        The fold whose rows are predicted (and left out of training);
        :data:`REFIT_FOLD` for the refit on every row.
    repeat : int, default=0
        Which fold assignment: 0 is the run's folds, ``r`` the ``r``-th
        reshuffle of the same rows (repeated bagging).
    cost : float
        Expected seconds (the planner's starting estimate).
    uses_gpu : bool
        Whether the learner can use a GPU actor.
    priority : float, default=0.0
        Lower first. Without a time limit every task has priority 0 and the
        longest fit goes first (shortest makespan).
    time_boxed : bool, default=False
        The learner stops at a time box (``ensemble.budget.time_box``).
    time_box : float or None, default=None
        The box, set when the task is dispatched under a finish line.
    min_box : float, default=0.25
        Under a finish line, a time-boxed task whose box would be shorter than
        this fraction of its expected time is not started (the planner counts
        it late): :data:`ensemble.budget.MIN_BOX_FRACTION` for a fold, more
        where a fit cut short is thrown away (repeats, refits).
    init_state : bytes or None, default=None
        Warm start: the saved model whose weights the fit starts from.
    """

    member: str
    learner: str
    params: dict[str, Any]
    fold: int
    cost: float
    uses_gpu: bool
    priority: float = 0.0
    time_boxed: bool = False
    time_box: float | None = None
    min_box: float = MIN_BOX_FRACTION
    init_state: bytes | None = field(default=None, repr=False)
    repeat: int = 0


@dataclass
class FitResult:
    """What an actor returns for one (member, fold)."""

    member: str
    learner: str
    fold: int
    oof_pred: np.ndarray
    holdout_pred: np.ndarray
    node_id: str
    worker: str
    gpu: bool
    started_at: datetime
    fit_s: float
    predict_s: float
    n_train: int
    resumed: bool = False  # read back from a checkpoint by a resumed run
    truncated: bool = False  # stopped at its time box with fewer rounds
    repeat: int = 0  # which fold assignment (repeated bagging)
    # When the pool sent the fit (driver's clock); started_at minus this is
    # the wait for a Ray worker process. None for fits no pool sent (resumed).
    submitted_at: datetime | None = None
    # Seconds to write the fold model: a forest of many classes takes as long
    # to compress as to fit (krkopt's ExtraTrees, 1 GB a fold: ~4 s), which
    # the plans of repeats and refits must count.
    save_s: float = 0.0


@dataclass
class FitOutcome:
    """What the fit stage produced.

    Attributes
    ----------
    results : list of FitResult
        Every fit of every member that finished all its folds.
    failed : dict
        Member name → reason, for members dropped after a failed fit.
    skipped : list of str
        Members dropped because the time limit stopped their fits.
    slots : int
        Actors that ran fits.
    """

    results: list[FitResult]
    failed: dict[str, str] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)
    slots: int = 0


@dataclass
class FusionOutcome:
    """A fusion scored by nested CV, refitted on all OOF rows, applied to holdout.

    Attributes
    ----------
    key : str
        Fusion key.
    oof_score : float
        Its nested-CV score on the OOF rows.
    oof_pred : ndarray
        Its nested-CV (cross-fitted) predictions of the OOF rows.
    holdout_pred : ndarray
        Its predictions of the holdout rows (empty without a holdout).
    fusion : BaseFusion
        The fusion refitted on every OOF row.
    fit_s : float
        Seconds of scoring and refitting.
    """

    key: str
    oof_score: float
    oof_pred: np.ndarray
    holdout_pred: np.ndarray
    fusion: Any
    fit_s: float
