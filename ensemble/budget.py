"""The time policy of a run under ``--time-limit``, in one place.

Pure functions and constants (no Ray): what each stage may spend, in what
order the work is queued, and how long one booster fold may run. Every instant
is a ``time.monotonic()`` value, named for what it bounds:

``start_by``
    the last moment a piece of work may begin;
``finish_by``
    the moment it should have ended.

A run of limit ``L`` that started at ``t0`` is laid out as::

    t0 ──── tuning (its allotment) ──── member fits ──── fusions ──── t0 + L
                                 fits start_by ─┘  │   fusions finish_by ─┘
                            (0.80 L)   fits finish_by (0.90 L)     (0.96 L)

Tuning gets what the member fits leave (:func:`tuning_seconds`); the fit stage
replays its queue against the two fit instants (``ensemble.schedule``) and
time-boxes the booster folds (:func:`time_box`); the fusions are scored
cheapest first (:data:`FUSION_ORDER`) until their ``finish_by``.

Fit times are estimated from calibrated costs (:data:`FIT_COST`), measured on
the 2-core development machine; they plan, never promise: the fit stage
corrects them with the folds that finished.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from .nn import auto_batch_size

__all__ = [
    "BOX_FIT_SHARE",
    "FIT_COST",
    "FUSION_ORDER",
    "MIN_BOX_FRACTION",
    "MIN_FAMILY_S",
    "MIN_TRIALS",
    "MIN_TUNE_S",
    "REPLAN_S",
    "Budget",
    "FitCost",
    "fold_seconds",
    "fusion_order",
    "is_core",
    "priority",
    "time_box",
    "tuning_order",
    "tuning_ratio",
]

# -- stages ---------------------------------------------------------------------
#: Fractions of the limit: the last start of a member fit, the moment every fit
#: should have ended, the end of fusion scoring (the rest writes the run).
FITS_START_BY = 0.80
FITS_FINISH_BY = 0.90
FUSIONS_FINISH_BY = 0.96
#: Tuning never takes more than this share: the member fits (every family's best
#: configuration on every fold) and the fusions need most of the rest.
MAX_TUNE_SHARE = 0.45
#: Slack on the estimated member fits before tuning gets the rest.
FIT_SLACK = 1.2
#: Below this, a search finishes too few trials to beat the defaults.
MIN_TUNE_S = 20.0
#: Least tuning time worth giving a family: Tuner start-up plus one 5-fold
#: trial of a mid-sized learner on adult (~40k rows) on one core.
MIN_FAMILY_S = 20.0
#: A family is tuned only when its share affords this many full trials (ASHA
#: stops poor trials after a fold, so that is several more configurations).
MIN_TRIALS = 3
#: Families that keep their fit time when a short limit must choose between
#: tuning and fitting everything: the boosters (strong) and the linear model
#: (nearly free). The others are fitted if time is left.
CORE_FAMILIES = frozenset({"linear", "hgb", "lgbm", "xgb"})
#: Order in which a short tuning budget is spent: the boosters gain most.
TUNE_ORDER = ("lgbm", "xgb", "hgb", "mlp", "rf", "et", "linear")

# -- the fit stage ---------------------------------------------------------------
#: While no fit finishes, the plan is re-checked this often (seconds), so a
#: fold far past its estimate is caught while it runs.
REPLAN_S = 1.0
#: A time-boxed fold's fit gets this share of its box; predicting the OOF rows
#: and saving the model take the rest (with many rounds on dense numeric data,
#: predicting took ~22% as long as fitting: scale benchmark).
BOX_FIT_SHARE = 0.75
#: A time-boxed fold whose box is shorter than this fraction of its expected
#: time is as good as late (a booster cut to a few rounds is not worth a slot).
MIN_BOX_FRACTION = 0.25

# -- fusions ---------------------------------------------------------------------
#: Fusions in the order they are scored: cheapest first, so a deadline drops the
#: slow ones (nested CV on adult: two_level 21 s, selection 8 s, neural 8 s,
#: stacking_lgbm 2 s, the others < 0.5 s). Unknown keys go last.
FUSION_ORDER = (
    "average",
    "weighted",
    "stacking",
    "stacking_nonneg",
    "stacking_lgbm",
    "neural",
    "selection",
    "two_level",
)
#: After fits that overran, fusions still get this share of the limit (within
#: FUSION_FLOOR_S), so a late run ends fused: the cheap ones take well under a
#: second on the shared tables.
FUSION_FLOOR_SHARE = 0.05
FUSION_FLOOR_S = (2.0, 10.0)


@dataclass(frozen=True)
class FitCost:
    """Calibrated cost of one default fold fit on one CPU.

    Attributes
    ----------
    s_per_mcell : float
        Seconds per million training cells (rows x features), on adult.
    per_class : float
        Multiclass boosters grow one tree per class a round: above two classes
        the cost is multiplied by ``per_class x n_classes`` (0: no effect).
    regression : float
        Regression over classification for the same cells (forests split on
        every feature and grow deeper trees).
    tuning_ratio : float
        A member's fold time over its tuning trial's (trials skip the refit or
        grow fewer trees).
    s_per_step : float
        For step-trained learners (the MLP), seconds per optimiser step; the
        cost then follows the steps, not the cells.
    """

    s_per_mcell: float = 1.0
    per_class: float = 0.0
    regression: float = 1.0
    tuning_ratio: float = 1.0
    s_per_step: float = 0.0


#: Seconds of fixed cost of any fit (start-up, the data copy).
FIT_OVERHEAD_S = 0.3
#: The MLP's default epoch cap (its optimiser steps set its cost).
_MLP_MAX_EPOCHS = 60
FIT_COST: dict[str, FitCost] = {
    "linear": FitCost(0.4),
    # 200 trees, 100 while tuning; regression measured on california
    # (rf 9.4 s a fold against 1.4 s; et 3.8 s against 1.1 s).
    "rf": FitCost(10.0, regression=6.5, tuning_ratio=2.0),
    "et": FitCost(8.0, regression=3.5, tuning_ratio=2.0),
    # Boosters: the refit on the whole fold (1.1x the rounds), skipped while
    # tuning, roughly doubles a fit.
    "hgb": FitCost(3.2, per_class=1.0, tuning_ratio=2.2),
    "lgbm": FitCost(2.3, per_class=1.0, tuning_ratio=2.2),
    # letter: 68 s a fold, ~5x LightGBM's rate per class
    "xgb": FitCost(2.3, per_class=5.0, tuning_ratio=2.2),
    # adult (31k rows, batch 256) 13 s a fold, letter (13k rows, batch 128) 18 s
    "mlp": FitCost(30.0, s_per_step=2.5e-3),
}


def fold_seconds(key: str, n_rows: int, n_features: int, n_classes: int) -> float:
    """Expected seconds of one default fold fit of learner ``key`` on one CPU.

    Parameters
    ----------
    key : str
        Learner key (unknown keys cost 1 s per million cells).
    n_rows : int
        Training rows of the fold.
    n_features : int
        Feature columns.
    n_classes : int
        Classes (0 for regression).

    Examples
    --------
    >>> round(fold_seconds("lgbm", 100_000, 10, 2), 2)
    2.6
    >>> round(fold_seconds("lgbm", 100_000, 10, 26) - 0.3, 2)  # a tree per class
    59.8
    """
    cost = FIT_COST.get(key, FitCost())
    if cost.s_per_step:
        rows = int(0.9 * n_rows)  # early stopping holds out a tenth
        batch = auto_batch_size("auto", rows)
        steps = _MLP_MAX_EPOCHS * rows / batch
        return steps * cost.s_per_step * max(1.0, batch / 256) + FIT_OVERHEAD_S
    k = cost.per_class * n_classes if cost.per_class and n_classes > 2 else 1.0
    k *= cost.regression if n_classes < 2 else 1.0
    cells = n_rows * max(n_features, 1) / 1e6
    return cost.s_per_mcell * cells * k + FIT_OVERHEAD_S


@dataclass(frozen=True)
class Budget:
    """The instants of one run's stages under a time limit.

    Parameters
    ----------
    start : float
        ``time.monotonic()`` when the run started (a resumed run counts again
        from its resumption).
    limit : float or None
        Seconds of the whole run; None means no limit, and every instant is None.

    Examples
    --------
    >>> b = Budget(start=100.0, limit=100.0)
    >>> b.fits_start_by, b.fits_finish_by, b.fusions_finish_by(now=150.0)
    (180.0, 190.0, 196.0)
    >>> b.fusions_finish_by(now=199.0)  # fits overran: a short floor remains
    204.0
    >>> Budget(0.0, None).fits_start_by is None
    True
    """

    start: float
    limit: float | None

    def _at(self, share: float) -> float | None:
        return None if self.limit is None else self.start + share * self.limit

    @property
    def fits_start_by(self) -> float | None:
        """No new (member, fold) fit starts after this."""
        return self._at(FITS_START_BY)

    @property
    def fits_finish_by(self) -> float | None:
        """Every fit should have ended by this."""
        return self._at(FITS_FINISH_BY)

    def fusions_finish_by(self, now: float | None = None) -> float | None:
        """The end of fusion scoring, never less than a short floor after ``now``.

        Fits that started before their ``start_by`` run to their end and may eat
        the fusion time; the floor still lets the cheap fusions finish.
        """
        end = self._at(FUSIONS_FINISH_BY)
        if end is None or self.limit is None:
            return None
        low, high = FUSION_FLOOR_S
        floor = min(high, max(low, FUSION_FLOOR_SHARE * self.limit))
        return max(end, (time.monotonic() if now is None else now) + floor)

    @property
    def max_tune_s(self) -> float | None:
        """The most tuning may take."""
        return None if self.limit is None else MAX_TUNE_SHARE * self.limit

    def tuning_seconds(
        self,
        now: float,
        fits_wall: Callable[[list[str]], float],
        learners: Sequence[str],
    ) -> tuple[float, list[str]]:
        """Seconds of tuning, and the families fitted only if time is left.

        The member fits come first: each family's best configuration on every
        fold (``fits_wall(keys)``: wall seconds on the cluster), with
        :data:`FIT_SLACK`. Tuning gets what is left before ``fits_start_by``, at
        most :data:`MAX_TUNE_SHARE` of the limit. When that is under
        :data:`MIN_TUNE_S`, tuning comes before the non-core families: it gets
        what the :data:`CORE_FAMILIES` leave, and the others are fitted only if
        time is left. If even that is too short, nothing is tuned (0.0).

        Examples
        --------
        >>> b = Budget(start=0.0, limit=120.0)  # fits start by 96 s
        >>> b.tuning_seconds(0.0, lambda keys: 5.0, ["lgbm"])  # capped at 45%
        (54.0, [])
        >>> slow_rf = lambda keys: 90.0 if "rf" in keys else 5.0
        >>> b.tuning_seconds(0.0, slow_rf, ["lgbm", "rf"])  # rf only if time is left
        (54.0, ['rf'])
        >>> b.tuning_seconds(0.0, lambda keys: 90.0, ["lgbm"])  # no time to tune
        (0.0, [])
        """
        if self.limit is None or self.fits_start_by is None:
            raise ValueError("tuning_seconds needs a time limit")
        available = self.fits_start_by - now
        cap = MAX_TUNE_SHARE * self.limit
        tune_s = min(cap, available - FIT_SLACK * fits_wall(list(learners)))
        if tune_s >= MIN_TUNE_S:
            return tune_s, []
        core = [k for k in learners if k in CORE_FAMILIES]
        if core:
            tune_s = min(cap, available - FIT_SLACK * fits_wall(core))
            if tune_s >= MIN_TUNE_S:
                return tune_s, [k for k in learners if k not in core]
        return 0.0, []


def tuning_order(
    learners: Sequence[str],
    trial_seconds: dict[str, float],
    budget_s: float,
    n_cpus: int,
) -> list[str]:
    """The families a tuning budget is spent on, in the order given.

    A family needs ~:data:`MIN_FAMILY_S` to finish even its default trial:
    with less per family, only the first in :data:`TUNE_ORDER` are tuned. In
    that order a family is added while every chosen family's share of the
    budget still affords :data:`MIN_TRIALS` of its trials (``trial_seconds``:
    every fold, on one CPU) on ``n_cpus``; the others keep their defaults.

    Examples
    --------
    >>> trial_s = {"linear": 1.0, "lgbm": 5.0, "xgb": 5.0}
    >>> tuning_order(["linear", "lgbm", "xgb"], trial_s, 37.0, 2)  # one family
    ['lgbm']
    >>> tuning_order(["linear", "lgbm", "xgb"], trial_s, 70.0, 2)  # three
    ['linear', 'lgbm', 'xgb']
    """
    rank = {k: i for i, k in enumerate(TUNE_ORDER)}
    n_fit = max(1, int(budget_s // MIN_FAMILY_S))
    chosen: list[str] = []
    dearest = 0.0  # the costliest trial among the chosen families
    for key in sorted(learners, key=lambda k: rank.get(k, len(TUNE_ORDER))):
        if len(chosen) == n_fit:
            break
        worst = max(dearest, trial_seconds[key])
        if MIN_TRIALS * worst <= budget_s / (len(chosen) + 1) * n_cpus:
            chosen.append(key)
            dearest = worst
    return [k for k in learners if k in chosen]


def is_core(key: str) -> bool:
    """Whether family ``key`` keeps its fit time when a short limit must choose."""
    return key in CORE_FAMILIES


def tuning_ratio(key: str) -> float:
    """A member's fold time over its tuning trial's, for learner ``key``."""
    return FIT_COST.get(key, FitCost()).tuning_ratio


def priority(rank: int, seconds: float, *, core: bool, tuned: bool) -> float:
    """Queue priority of a member's folds under a deadline (lower first).

    Rank first (every family's best configuration before any second-best),
    then the core families before the others, then the tuned configurations
    (the limit paid for them, and they are usually the strongest members)
    before the defaults, then cheaper first. ``seconds`` is scaled into
    [0, 0.1], far above float resolution next to ``rank``.

    Examples
    --------
    >>> priority(1, 5.0, core=True, tuned=True) < priority(1, 0.1, core=True,
    ...     tuned=False) < priority(1, 0.1, core=False, tuned=True)
    True
    """
    group = (0.0 if core else 0.5) + (0.0 if tuned else 0.25)
    return rank + group + min(max(seconds, 0.0), 1e6) / 1e7


def fusion_order(keys: Iterable[str]) -> list[str]:
    """``keys`` in the order they are scored (:data:`FUSION_ORDER`)."""
    rank = {k: i for i, k in enumerate(FUSION_ORDER)}
    return sorted(keys, key=lambda k: rank.get(k, len(FUSION_ORDER)))


def time_box(start: float, finish_by: float, folds_left: int, slots: int) -> float:
    """Seconds a time-boxed fold starting at ``start`` may take.

    The time left to ``finish_by`` is shared equally by the waves that the
    member's ``folds_left`` unfinished folds (this one, the ones not started
    and the ones running) need on ``slots`` actors, so every fold ends by the
    finish line when each keeps to its box, and the folds of one wave get the
    same box.

    Examples
    --------
    >>> time_box(0.0, 90.0, folds_left=5, slots=2)  # 3 waves of 30 s
    30.0
    >>> time_box(60.0, 90.0, folds_left=1, slots=2)
    30.0
    """
    waves = math.ceil(max(folds_left, 1) / max(slots, 1))
    return max(finish_by - start, 0.0) / waves
