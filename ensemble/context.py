"""What every stage of one run reads: :class:`RunContext`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from .artifacts import RunDirectory
from .budget import Budget
from .config import RunConfig
from .data import PreparedData
from .learners import FitContext
from .specs import FitResult
from .warm import WarmStart

__all__ = ["FitHook", "RunContext", "TrialHook"]

#: ``on_fit(result, n_done, n_total)`` as each (member, fold) fit finishes.
FitHook = Callable[[FitResult, int, int], None]
#: ``on_trial(learner, n_done, best_cv_score)`` as each Tune trial finishes.
TrialHook = Callable[[str, int, float], None]


@dataclass
class RunContext:
    """What every stage of one run reads.

    Attributes
    ----------
    config : RunConfig
    data : PreparedData
    run : RunDirectory
    metric : str
        The metric that ranks models.
    budget : Budget
        The instants of the stages (all None without a time limit).
    on_fit, on_trial : callable, optional
        Progress hooks.
    resume : bool
        Whether this continues an interrupted run.
    warm : WarmStart, optional
        The earlier run that warm-startable members start from.
    fit_wall : float
        Seconds the fit pools have run so far (for the parallel efficiency).
    progress_done, progress_total : int
        Fits finished and fits planned so far, over every pool of the run
        (what ``on_fit`` reports).
    """

    config: RunConfig
    data: PreparedData
    run: RunDirectory
    metric: str
    budget: Budget
    on_fit: FitHook | None = None
    on_trial: TrialHook | None = None
    resume: bool = False
    warm: WarmStart | None = None
    fit_wall: float = field(default=0.0)
    progress_done: int = field(default=0)
    progress_total: int = field(default=0)

    @property
    def fit_context(self) -> FitContext:
        """The task layout every learner is given."""
        d = self.data
        return FitContext(
            task=d.task,
            n_classes=d.n_classes,
            cat_mask=tuple(bool(b) for b in d.schema.cat_mask),
            n_categories=tuple(d.schema.n_categories),
            seed=self.config.seed,
        )

    @property
    def train_rows(self) -> np.ndarray:
        """Row ids of the rows in the folds."""
        return self.data.row_id[self.data.fold >= 0]

    @property
    def holdout_rows(self) -> np.ndarray:
        """Row ids of the holdout rows (none by default)."""
        return self.data.row_id[self.data.fold == -1]

    @property
    def fold_rows(self) -> int:
        """Training rows of one fold fit."""
        n = self.config.n_folds
        return int(len(self.train_rows) * (n - 1) / n)
