"""The time policy of a run under ``--time-limit``, in one place.

Pure functions and constants (no Ray): what each stage may spend, in what
order the work is queued, and how long one booster fold may run. Every instant
is a ``time.monotonic()`` value, named for what it bounds:

``start_by``
    the last moment a piece of work may begin;
``finish_by``
    the moment it should have ended.

A run of limit ``L`` that started at ``t0`` is laid out as::

    t0 ── portfolio ── search ── repeats ─┬─ fusions ─┬─ refit ─┬─ tables ── t0 + L
         fits start_by (L - R - F - W) ┘            │          │
         fits finish_by (start_by + its tail)       │          refit finish_by (L - W)
                           fusions finish_by (L - R - W)

1. **Portfolio**: every family's default and portfolio configurations, queued
   in value order (:data:`VALUE_ORDER`), a member whose folds would take
   much of the window after the ones that would not, cheapest first
   (:func:`is_dear`, :func:`priority`); the
   fit stage replays its queue against the fit instants
   (``ensemble.schedule``) and time-boxes the booster and MLP folds
   (:func:`time_box`), so what cannot finish is dropped.
2. **Search** where it pays (:func:`search_plan`): the families that lead the
   OOF leaderboard get trials, in proportion to how close they are to the top,
   only when their measured fold times afford several trials.
3. **Repeats** (repeated bagging): the strongest members are fitted again on
   fresh fold assignments until the fits' ``start_by``, so the budget is spent.
4. **Fusions**, cheapest first (:data:`FUSION_ORDER`), until their
   ``finish_by``; ``F`` is their estimated time (:func:`fusion_seconds`), for
   the members the configuration may fit at the start, re-sized for the
   members fitted after the portfolio and after the search.
5. **Refit** (``ensemble.refit``): the chosen model's members fitted once on
   every row, for prediction; ``R`` is their estimated time
   (:func:`refit_seconds`, from the portfolio's measured folds, at most
   :data:`REFIT_SHARE` of the limit), and ``W`` what writing the run
   directory and the report takes.

Fit times are estimated from calibrated costs (:data:`FIT_COST`), measured on
the 2-core development machine; they plan, never promise: the fit stage
corrects them with the folds that finished, and the later stages use the
measured times of the portfolio's folds.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from .nn import auto_batch_size

__all__ = [
    "BOX_FIT_SHARE",
    "CONFIG_COST",
    "DEAR_SHARE",
    "FIT_COST",
    "FUSION_ORDER",
    "MIN_BOX_FRACTION",
    "MIN_REFIT_BOX_FRACTION",
    "MIN_REPEAT_BOX_FRACTION",
    "MAX_ROWS",
    "MIN_TRIALS",
    "REFIT_BOX_FIT_SHARE",
    "REFIT_OVERHEAD_S",
    "REFIT_SHARE",
    "REFIT_SLACK",
    "REPLAN_S",
    "UNKNOWN_FUSION_COST",
    "VALUE_ORDER",
    "Budget",
    "FitCost",
    "fit_box",
    "fold_seconds",
    "fusion_order",
    "fusion_seconds",
    "is_dear",
    "priority",
    "refit_seconds",
    "repeat_candidates",
    "search_plan",
    "time_box",
    "trial_fold_box",
    "value_rank",
]

# -- stages -----------------------------------------------------------------------
#: Seconds kept at the end for what follows the fusions and the refit: the
#: leaderboard's metrics, the tables, the manifest and the report (a share of
#: the limit, within these bounds). The fusions and the refit end at their
#: deadlines, so this covers only that tail (on letter, 26 classes, the report
#: takes 5 s); more would come out of the fits, where a few seconds decide
#: whether a dear member is fitted (pendigits' CatBoost at 3.5%).
WRITE_SHARE = 0.015
WRITE_S = (2.0, 15.0)
#: The fusions get at least this share of the limit, and at most this one.
FUSION_SHARE = (0.03, 0.15)
#: The refit on every row takes at most this share of the limit: a member
#: whose refit does not fit in it keeps predicting with its fold models.
REFIT_SHARE = 0.15
#: The refit's window over its estimate, and the seconds each refit adds
#: (dispatch, saving). The estimate is for every member, and a fusion often
#: uses fewer (6 of 13 on house_8L at b2abdfa, whose refits took 15 s of a
#: 43 s window); without the overhead, a window of exactly the estimate left 6
#: of 13 members of an adult run on their fold models.
REFIT_SLACK = 1.2
REFIT_OVERHEAD_S = 1.0
#: A fit that starts at the fits' ``start_by`` may still run for its fold's
#: time; under a limit the booster folds are boxed to end by ``finish_by``,
#: and no fold starts that is expected to end after it (``ensemble.schedule``),
#: so the tail only absorbs a fold that overruns its estimate (at 4%, the
#: last fits of the b2abdfa runs ended 10-12 s before ``finish_by``).
FITS_TAIL_SHARE = 0.015
#: Least share of the limit worth searching: below it, repeats use the time.
MIN_SEARCH_SHARE = 0.15
#: The search never takes more than this share of the time the portfolio left
#: (the repeats, which never hurt, get the rest).
MAX_SEARCH_SHARE = 0.5
#: Least seconds of search worth giving a family: Ray Tune's start-up and the
#: first trial's folds (measured: ~8 s of start-up on 2 CPUs).
MIN_FAMILY_S = 20.0
#: A family is searched only when its share affords this many full trials at
#: the fold times its portfolio members measured (ASHA stops poor trials after
#: a fold, so that is several more configurations).
MIN_TRIALS = 3
#: Families searched at most: the leaders of the OOF leaderboard.
MAX_SEARCHED = 2
#: A family whose best member is more than this (relative) behind the best one
#: is not searched: tuning rarely closes such a gap (no 120 linear trials).
SEARCH_GAP = 0.02
#: Members repeated at most (the strongest by OOF score): the fusions weight
#: few members, and a repeat of a weak one changes nothing.
MAX_REPEATED = 6
#: Repeats per member at most: the gain of averaging more fold assignments
#: flattens out (AutoGluon bags up to 20 sets).
MAX_REPEATS = 20

#: Members in the order they are worth fitting when time is short: the
#: boosters first (strong on tables), then the models whose errors differ
#: (the MLP, the forests, kNN), the linear model (nearly free) and
#: HistGradientBoosting (close to LightGBM). Names not listed go last; tuned
#: members take their family's place.
VALUE_ORDER = (
    "lgbm",
    "cat",
    "xgb",
    "lgbm_xt",
    "linear",
    "mlp",
    "mlp_plain",
    "lgbm_large",
    "rf",
    "et",
    "hgb",
    "knn",
    "knn_local",
)
#: Under a deadline, a member whose folds would take more than this share of
#: the fits' window (on all the slots) is queued after every member that would
#: not, the dear ones cheapest first: at fd77007, CatBoost's 26-class folds
#: took 200 s of letter's 225 s of fits, and kNN, ExtraTrees and the MLP
#: (1.7-27 s a fold) were skipped; at 2ec40d2, in value order, CatBoost and
#: XGBoost still came before the MLP, and none of the three was fitted.
DEAR_SHARE = 0.25
#: A portfolio configuration's fold time over its family's default's, where it
#: differs: extremely randomised trees need more rounds to converge, the large
#: configuration grows 128 leaves at a lower rate. Fold walls (fit and
#: predict) measured at 2ec40d2 over the default LightGBM's: letter (26
#: classes) lgbm_xt 3.2 (its folds cut by their time box), pendigits (10)
#: lgbm_xt 0.7 and lgbm_large 1.9.
CONFIG_COST = {"lgbm_xt": 2.0, "lgbm_large": 2.0}

#: Families left out of a run's portfolio above this many rows in the folds:
#: kNN's prediction grows with the rows squared (2.8 s of a 2.9 s fold on
#: adult's 31k training rows), and on large tables it rarely leads.
MAX_ROWS = {"knn": 20_000}

# -- the fit stage ------------------------------------------------------------------
#: While no fit finishes, the plan is re-checked this often (seconds), so a
#: fold far past its estimate is caught while it runs.
REPLAN_S = 1.0
#: A time-boxed fold's fit gets this share of its box; predicting the OOF rows
#: and saving the model take the rest (with many rounds on dense numeric data,
#: predicting took ~22% as long as fitting: scale benchmark).
BOX_FIT_SHARE = 0.75
#: A fit with no rows to predict (the refit on every row, without a holdout)
#: keeps only a little of its box to save the model.
REFIT_BOX_FIT_SHARE = 0.95
#: A time-boxed fold whose box is shorter than this fraction of its expected
#: time is as good as late (a booster cut to a few rounds is not worth a slot).
MIN_BOX_FRACTION = 0.25
#: The same for a repeat's fold: a repeat is kept only where it makes its
#: member's OOF score better, which a repeat cut well short of its member's
#: folds does not (krkopt: a repeat stage of 27 s whose folds were all
#: dropped, while the fusions ran past the limit).
MIN_REPEAT_BOX_FRACTION = 0.75
#: And for the refit on every row: a refit its box cut short is thrown away
#: (``ensemble.refit``), so it starts only when its whole expected time fits
#: (with the share of the box kept to save, :data:`REFIT_BOX_FIT_SHARE`).
MIN_REFIT_BOX_FRACTION = 1.1

# -- fusions ------------------------------------------------------------------------
#: Fusions in the order they are scored: cheapest first, so a deadline drops the
#: slow ones (of the two stackings, the non-negative pooling first: it is the
#: one chosen on letter and fars). Unknown keys go last.
FUSION_ORDER = (
    "average",
    "weighted",
    "stacking_nonneg",
    "stacking",
    "selection",
    "stacking_lgbm",
    "neural",
    "two_level",
)
#: Seconds of nested CV plus refit of each fusion, as ``(per million OOF
#: row-members, per million OOF cells)``: rows x members, and that times the
#: outputs (1, or the classes above two). Least squares over the ten shared
#: tables' 300 s runs of ``benchmarks/quality.py`` at f3480d7, rounded up
#: (about 1.3x; the two-level fusion's ~70 s per binary row-member as
#: measured). The neural and two-level fusions cost per row-member whatever
#: the classes (neural 2.6 s on pendigits' 10 classes, 12.2 s on binary
#: adult, where one cost per cell had said 31 s and 18 s); the linear
#: stackings and the weights cost per cell (stacking 18.9 s on fars' 8
#: classes, 0.4 s on adult).
FUSION_COST: dict[str, tuple[float, float]] = {
    "average": (0.1, 0.3),
    "weighted": (0.5, 2.6),
    "stacking": (0.5, 7.0),
    "stacking_nonneg": (0.5, 3.5),
    "selection": (13.0, 0.3),
    "stacking_lgbm": (0.0, 17.0),
    "neural": (27.0, 1.1),
    "two_level": (62.0, 9.0),
}
#: An unknown (user-registered) fusion's cost: in each term, the known
#: fusions' dearest.
UNKNOWN_FUSION_COST = (62.0, 17.0)
#: After fits that overran, fusions still get this share of the limit (within
#: FUSION_FLOOR_S), so a late run ends fused: the cheap ones take under a
#: second on most shared tables, but ~10 s each on letter (26 classes x 16k
#: rows), where at 15 s the pooling that wins there did not finish.
FUSION_FLOOR_SHARE = 0.07
FUSION_FLOOR_S = (5.0, 20.0)


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
# Fit and predict of one fold on adult (31k rows x 14 columns, 1 CPU), measured
# in a --time-limit 300 run; regression factors on california.
FIT_COST: dict[str, FitCost] = {
    # One-hot columns and a coefficient vector per class: per fold (5 folds of
    # the whole table, no time limit, 2 fits at once, at f89e6da) adult 0.89 s,
    # krkopt (18 classes) 2.3 s, fars (8 classes, 29 columns one-hot to 426)
    # 59 s: 1.6 s per million raw cells on adult, 10-15x that per cell on 8-18
    # classes (the one-hot width, unknown to the plan, spreads it).
    "linear": FitCost(1.6, per_class=1.5),
    # kNN stores the rows: predicting its fold is the work (2.8 s of 2.9 s).
    "knn": FitCost(6.6),
    # 200 trees, 100 while tuning (rf 9.4 s a fold on california against 1.4 s
    # on adult's cells; et 3.8 s against 1.1 s).
    "rf": FitCost(15.8, regression=6.5, tuning_ratio=2.0),
    "et": FitCost(14.0, regression=3.5, tuning_ratio=2.0),
    # Boosters: the refit on the whole fold (1.1x the rounds), skipped while
    # tuning, roughly doubles a fit.
    "hgb": FitCost(6.2, per_class=1.0, tuning_ratio=2.2),
    "lgbm": FitCost(4.4, per_class=1.0, tuning_ratio=2.2),
    # letter: ~5x LightGBM's rate per class
    "xgb": FitCost(5.7, per_class=5.0, tuning_ratio=2.2),
    # CatBoost: symmetric trees, no refit. Many classes cost more than a tree
    # per class: pendigits (10 classes) 63 s a fold on 8.8k rows (same runs
    # as linear's), 3.5x a tree per class at adult's rate.
    "cat": FitCost(12.8, per_class=3.5),
    # adult (31k rows, batch 256): 26 s a fold with two layers; the third
    # layer of the default (512-256-128) costs ~15% more
    "mlp": FitCost(60.0, s_per_step=5.8e-3),
}


def fold_seconds(
    key: str, n_rows: int, n_features: int, n_classes: int, member: str = ""
) -> float:
    """Expected seconds of one fold fit of learner ``key`` on one CPU.

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
    member : str, default=""
        The member's name: a portfolio configuration in :data:`CONFIG_COST`
        costs that many times its family's default.

    Examples
    --------
    >>> round(fold_seconds("lgbm", 100_000, 10, 2), 2)
    4.7
    >>> round(fold_seconds("lgbm", 100_000, 10, 26) - 0.3, 2)  # a tree per class
    114.4
    >>> round(fold_seconds("lgbm", 100_000, 10, 2, member="lgbm_xt"), 2)
    9.1
    """
    cost = FIT_COST.get(key, FitCost())
    factor = CONFIG_COST.get(member, 1.0)
    if cost.s_per_step:
        rows = int(0.9 * n_rows)  # early stopping holds out a tenth
        batch = auto_batch_size("auto", rows)
        steps = _MLP_MAX_EPOCHS * rows / batch
        seconds = steps * cost.s_per_step * max(1.0, batch / 256)
        return factor * seconds + FIT_OVERHEAD_S
    k = cost.per_class * n_classes if cost.per_class and n_classes > 2 else 1.0
    k *= cost.regression if n_classes < 2 else 1.0
    cells = n_rows * max(n_features, 1) / 1e6
    return factor * cost.s_per_mcell * cells * k + FIT_OVERHEAD_S


def tuning_ratio(key: str) -> float:
    """A member's fold time over its tuning trial's, for learner ``key``."""
    return FIT_COST.get(key, FitCost()).tuning_ratio


def fusion_seconds(
    keys: Iterable[str], n_rows: int, n_members: int, n_outputs: int, n_cpus: int
) -> float:
    """Expected wall seconds of scoring the fusions ``keys`` on ``n_cpus``.

    Examples
    --------
    >>> round(fusion_seconds(["weighted", "neural"], 40_000, 10, 1, 2), 1)
    11.2
    >>> round(fusion_seconds(["neural"], 40_000, 10, 10, 2), 1)  # per row-member
    15.2
    """
    row_members = n_rows * max(n_members, 1) / 1e6
    outputs = max(n_outputs, 1)

    def cost(key: str) -> float:
        per_row_member, per_cell = FUSION_COST.get(key, UNKNOWN_FUSION_COST)
        return row_members * (per_row_member + per_cell * outputs)

    costs = [cost(k) for k in keys]
    # One Ray task per fusion: the dearest bounds the wall however many CPUs.
    return max(sum(costs) / max(n_cpus, 1), max(costs, default=0.0))


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
    fusion_s : float, default=0.0
        The fusions' expected seconds (:func:`fusion_seconds`); their window
        is kept within :data:`FUSION_SHARE` of the limit.
    refit_s : float, default=0.0
        The refit's expected seconds (:func:`refit_seconds`); its window is
        at most :data:`REFIT_SHARE` of the limit.

    Examples
    --------
    >>> b = Budget(start=0.0, limit=300.0, fusion_s=20.0)
    >>> b.fusions_finish_by(now=250.0), b.fits_finish_by, b.fits_start_by
    (295.5, 275.5, 271.0)
    >>> b.fusions_finish_by(now=299.0)  # fits overran: a short floor remains
    319.0
    >>> r = b.with_refit(30.0)  # the refit's window comes before the fusions'
    >>> r.fits_finish_by, r.fusions_finish_by(now=245.5), r.refit_finish_by
    (245.5, 265.5, 295.5)
    >>> Budget(0.0, None).fits_start_by is None
    True
    """

    start: float
    limit: float | None
    fusion_s: float = 0.0
    refit_s: float = 0.0

    @property
    def end(self) -> float | None:
        """``start + limit``."""
        return None if self.limit is None else self.start + self.limit

    @property
    def _write_s(self) -> float:
        assert self.limit is not None
        low, high = WRITE_S
        return min(high, max(low, WRITE_SHARE * self.limit))

    @property
    def _fusion_window(self) -> float:
        assert self.limit is not None
        low, high = FUSION_SHARE
        return min(high * self.limit, max(low * self.limit, self.fusion_s))

    @property
    def _refit_window(self) -> float:
        assert self.limit is not None
        return min(REFIT_SHARE * self.limit, self.refit_s)

    @property
    def refit_cap(self) -> float | None:
        """The refit window's largest size (:data:`REFIT_SHARE` of the limit)."""
        return None if self.limit is None else REFIT_SHARE * self.limit

    @property
    def fits_finish_by(self) -> float | None:
        """Every fit should have ended by this; then the fusions start."""
        if self.end is None:
            return None
        return self.end - self._write_s - self._refit_window - self._fusion_window

    @property
    def refit_finish_by(self) -> float | None:
        """Every refit on all rows should have ended by this (then the tables)."""
        if self.end is None:
            return None
        return self.end - self._write_s

    @property
    def fits_start_by(self) -> float | None:
        """No new (member, fold) fit starts after this."""
        if self.fits_finish_by is None or self.limit is None:
            return None
        return self.fits_finish_by - FITS_TAIL_SHARE * self.limit

    def fusions_finish_by(self, now: float | None = None) -> float | None:
        """The end of fusion scoring, never less than a short floor after ``now``.

        Fits that ended late (a long portfolio runs into the refit's window,
        which is sized only from its measured folds) eat the later windows;
        the fusions keep the floor, which lets the cheap ones finish, and the
        refit gets the rest: on pendigits a fuller fusion window left one
        member refitted (0.0237-0.0243 log loss, against 0.0213 with seven).

        Examples
        --------
        >>> b = Budget(0.0, 300.0, fusion_s=20.0).with_refit(30.0)
        >>> b.fusions_finish_by(now=245.5)  # on time: the refit keeps its 30 s
        265.5
        >>> b.fusions_finish_by(now=255.5)  # 10 s late: the floor, 20 s
        275.5
        """
        if self.end is None or self.limit is None:
            return None
        low, high = FUSION_FLOOR_S
        floor = min(high, max(low, FUSION_FLOOR_SHARE * self.limit))
        now = time.monotonic() if now is None else now
        return max(self.end - self._write_s - self._refit_window, now + floor)

    def fusions_extended_by_refit(self, refit_s: float) -> float | None:
        """The fusions' deadline when the refit needs only ``refit_s``.

        The refit's window is sized for every member, but only the chosen
        model's are refitted: once the fusions that finished show which
        members the best of them uses, the fusions still running may take the
        rest (adult at ``3d918c6``: ``neural`` and ``two_level`` were stopped
        and the run ended 15 s early, the window sized for ten refits, four
        used). Never earlier than :meth:`fusions_finish_by`.

        Examples
        --------
        >>> b = Budget(0.0, 300.0, fusion_s=20.0).with_refit(40.0)
        >>> b.fusions_finish_by(now=200.0), b.fusions_extended_by_refit(10.0)
        (255.5, 285.5)
        """
        if self.end is None or self.limit is None:
            return None
        return self.end - self._write_s - min(self._refit_window, refit_s)

    def with_fusions(self, fusion_s: float) -> Budget:
        """The same budget with the fusions' window sized for ``fusion_s``."""
        return Budget(self.start, self.limit, fusion_s, self.refit_s)

    def with_refit(self, refit_s: float) -> Budget:
        """The same budget with the refit's window sized for ``refit_s``."""
        return Budget(self.start, self.limit, self.fusion_s, refit_s)

    def search_seconds(self, now: float) -> float:
        """Seconds the search may take of what the portfolio left (0: none).

        Examples
        --------
        >>> Budget(0.0, 300.0).search_seconds(100.0)  # half of what is left
        91.0
        >>> Budget(0.0, 300.0).search_seconds(240.0)  # too little: repeats only
        0.0
        """
        if self.fits_start_by is None or self.limit is None:
            return 0.0
        left = self.fits_start_by - now
        if left < MIN_SEARCH_SHARE * self.limit:
            return 0.0
        return MAX_SEARCH_SHARE * left


def refit_seconds(
    fold_seconds: Iterable[float],
    n_folds: int,
    slots: int,
    cap: float | None = None,
    save_seconds: Iterable[float] | None = None,
) -> float:
    """Expected wall seconds of refitting members on every row.

    A refit trains on ``n_folds / (n_folds - 1)`` times a fold's rows; the
    refits share ``slots``, but the dearest bounds the wall however many.

    Each refit takes ``n_folds / (n_folds - 1)`` of a fold's fit time,
    saving its model as long as a fold's (``save_seconds``, in the same
    order; default none) and :data:`REFIT_OVERHEAD_S` more; the window is
    :data:`REFIT_SLACK` times that.
    A member whose own refit, with that slack, would outlast ``cap`` (the
    window's largest size) is left out: it keeps its fold models however large
    the window, so sizing the window for it would only take the time from the
    fusions (krkopt's LightGBM, 18 classes, 45 s a fold: its refit was never
    started and the run ended 18 s early).

    Examples
    --------
    >>> round(refit_seconds([8.0, 4.0, 4.0], n_folds=5, slots=2), 2)  # 1.2 * 23 / 2
    13.8
    >>> # the MLP's refit bounds it
    >>> round(refit_seconds([40.0, 1.0], n_folds=5, slots=2), 2)
    61.2
    >>> # ... unless it cannot fit in a 45 s window: the cheap one's is sized
    >>> round(refit_seconds([40.0, 1.0], n_folds=5, slots=2, cap=45.0), 2)
    2.7
    >>> # a forest that takes 4 s to save: 1.2 * (5 + 4 + 1)
    >>> round(refit_seconds([4.0], n_folds=5, slots=2, save_seconds=[4.0]), 2)
    12.0
    >>> refit_seconds([], n_folds=5, slots=2)
    0.0
    """
    scale = n_folds / max(n_folds - 1, 1)
    fits = list(fold_seconds)
    saves = [0.0] * len(fits) if save_seconds is None else list(save_seconds)
    times = [scale * t + s + REFIT_OVERHEAD_S for t, s in zip(fits, saves, strict=True)]
    if cap is not None:
        times = [t for t in times if REFIT_SLACK * t <= cap]
    return REFIT_SLACK * max(sum(times) / max(slots, 1), max(times, default=0.0))


def value_rank(name: str, learner: str) -> int:
    """A member's place in :data:`VALUE_ORDER` (its family's when not listed)."""
    for key in (name, learner):
        if key in VALUE_ORDER:
            return VALUE_ORDER.index(key)
    return len(VALUE_ORDER)


def is_dear(fold_s: float, n_folds: int, slots: int, window: float) -> bool:
    """Whether a member's folds would take over :data:`DEAR_SHARE` of ``window``.

    ``fold_s`` is one fold's expected seconds; the folds share ``slots``.

    Examples
    --------
    >>> is_dear(68.5, 5, 2, 200.0), is_dear(9.5, 5, 2, 200.0)  # letter: cat, lgbm
    (True, False)
    """
    return fold_s * n_folds / max(slots, 1) > DEAR_SHARE * max(window, 0.0)


def priority(
    rank: int, seconds: float, dear: bool = False, boxed: bool = False
) -> float:
    """Queue priority of a member's folds under a deadline (lower first).

    The members that are not ``dear`` (:func:`is_dear`) first, by value
    (``rank``: :func:`value_rank`), then cheaper first; then the dear ones:
    first the time-``boxed`` ones (the boosters, the MLP: their folds stop at
    their share of the time left, so they end every fold with fewer rounds),
    then the rest (a forest or linear model is only worth its folds if its
    estimate holds, and one over it is dropped with the slot time spent),
    each cheapest first: a dear member takes much of what is left, so the
    cheap ones end while the dearest could not have, and the fusions get more
    members. In the first tier ``seconds`` is scaled into [0, 0.1], far above
    float resolution next to ``rank``; in the others it alone orders.

    Examples
    --------
    >>> priority(0, 5000.0) < priority(1, 0.1) < priority(1, 60.0)
    True
    >>> priority(10, 1.0) < priority(0, 60.0, dear=True)  # kNN before CatBoost
    True
    >>> priority(5, 27.0, dear=True) < priority(1, 68.0, dear=True)  # MLP first
    True
    >>> # fars: LightGBM (boxed, 66 s a fold) before linear (36 s, not boxed)
    >>> priority(0, 66.0, dear=True, boxed=True) < priority(4, 36.0, dear=True)
    True
    """
    seconds = min(max(seconds, 0.0), 1e6)
    if dear:
        return len(VALUE_ORDER) + (1 if boxed else 2) + seconds / 1e6
    return rank + seconds / 1e7


def search_plan(
    losses: Mapping[str, float],
    trial_seconds: Mapping[str, float],
    budget_s: float,
    n_cpus: int,
) -> dict[str, float]:
    """Seconds of search per family: the leaders, where trials can pay.

    Parameters
    ----------
    losses : mapping
        Each searchable family's best OOF loss (lower is better).
    trial_seconds : mapping
        Each family's trial on one CPU (every fold), from its measured folds.
    budget_s : float
        The search's seconds (:meth:`Budget.search_seconds`).
    n_cpus : int
        Trials run at once.

    Returns
    -------
    dict
        Family → seconds, best first; families not worth a search are left out:
        more than :data:`SEARCH_GAP` behind the best, beyond the first
        :data:`MAX_SEARCHED`, or too dear for :data:`MIN_TRIALS` trials in
        their share. Shares are proportional to ``1 - gap / SEARCH_GAP``, so the
        leader gets the most and a family at the edge of the gap next to none.

    Examples
    --------
    >>> search_plan({"lgbm": 0.30, "cat": 0.301, "linear": 0.40},
    ...             {"lgbm": 10, "cat": 20, "linear": 1}, 120.0, 2)
    {'lgbm': 64.9, 'cat': 55.1}
    >>> search_plan({"lgbm": 0.30}, {"lgbm": 100}, 120.0, 2)  # too dear
    {}
    """
    if not losses or budget_s <= 0:
        return {}
    best = min(losses.values())
    scale = abs(best) if best else 1.0
    weights = {}
    for key in sorted(losses, key=lambda k: losses[k])[:MAX_SEARCHED]:
        gap = (losses[key] - best) / scale
        if gap <= SEARCH_GAP:
            weights[key] = 1.0 - gap / SEARCH_GAP * 0.9
    while weights:
        total = sum(weights.values())
        plan = {k: round(budget_s * w / total, 1) for k, w in weights.items()}
        dear = [
            k
            for k, s in plan.items()
            if MIN_TRIALS * trial_seconds[k] > s * n_cpus or s < MIN_FAMILY_S
        ]
        if not dear:
            return plan
        weights.pop(max(dear, key=lambda k: losses[k]))
    return {}


def trial_fold_box(family_s: float | None, n_folds: int) -> float | None:
    """Seconds one fold of a tuning trial may take.

    Two trials in a row fit in the family's search time, so a slow
    configuration cannot eat all of it.

    Examples
    --------
    >>> trial_fold_box(100.0, 5), trial_fold_box(None, 5)
    (10.0, None)
    """
    return None if family_s is None else family_s / (2 * max(n_folds, 1))


def repeat_candidates(losses: Mapping[str, float]) -> list[str]:
    """The members worth repeating, best first: the first :data:`MAX_REPEATED`.

    Examples
    --------
    >>> repeat_candidates({"lgbm": 0.3, "linear": 0.4, "cat": 0.29})[:2]
    ['cat', 'lgbm']
    """
    return sorted(losses, key=lambda m: losses[m])[:MAX_REPEATED]


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


def fit_box(time_box: float, predict_rows: int) -> tuple[float, float]:
    """A time box split into the fit's allowance and the reserve after it.

    A fold's fit keeps :data:`BOX_FIT_SHARE` of its box: predicting its OOF
    rows and saving take the rest. A fit with no rows to predict (the refit on
    every row) keeps :data:`REFIT_BOX_FIT_SHARE`: with a quarter kept back, a
    booster's refit sized to its window was cut short and thrown away (letter,
    LightGBM: 27 s left for a 28 s refit, stopped at 20 s).

    Examples
    --------
    >>> fit_box(40.0, predict_rows=3200)
    (30.0, 10.0)
    >>> fit_box(40.0, predict_rows=0)
    (38.0, 2.0)
    """
    share = BOX_FIT_SHARE if predict_rows else REFIT_BOX_FIT_SHARE
    box = time_box * share
    return box, time_box - box
