"""The time policy (ensemble.budget): stage instants, tuning, queue and fusion order."""

from __future__ import annotations

import time

import pytest

from ensemble import budget
from ensemble.budget import Budget, fold_seconds


def wall(n_rows: int, n_features: int, n_classes: int = 2, slots: int = 2):
    """fits_wall(keys) of every default fold fit of ``keys`` on 5 folds."""
    n_fold = int(n_rows * 5 / 6 * 4 / 5)  # 1/6 holdout, 5 folds

    def fits_wall(keys):
        cpu = sum(fold_seconds(k, n_fold, n_features, n_classes) for k in keys)
        return cpu * 5 / slots

    return fits_wall


def test_fold_seconds_scale_with_cells_and_classes():
    base = fold_seconds("lgbm", 100_000, 10, 2) - 0.3
    assert base == pytest.approx(2.3)
    assert fold_seconds("lgbm", 200_000, 10, 2) - 0.3 == pytest.approx(2 * base)
    assert fold_seconds("lgbm", 100_000, 10, 26) - 0.3 == pytest.approx(26 * base)
    assert fold_seconds("xgb", 100_000, 10, 26) - 0.3 == pytest.approx(5 * 26 * base)
    assert fold_seconds("rf", 100_000, 10, 26) == fold_seconds("rf", 100_000, 10, 2)
    # an unregistered key gets a cost, not an error
    assert fold_seconds("mine", 1_000_000, 1, 2) == pytest.approx(1.3)


def test_forest_regression_costs_more_than_classification():
    for key, factor in (("rf", 6.5), ("et", 3.5)):
        clf = fold_seconds(key, 100_000, 10, 2) - 0.3
        assert fold_seconds(key, 100_000, 10, 0) - 0.3 == pytest.approx(factor * clf)
    assert fold_seconds("lgbm", 100_000, 10, 0) == fold_seconds("lgbm", 100_000, 10, 2)


def test_mlp_cost_follows_its_optimiser_steps():
    # adult-sized folds (batch 256) cost more per step than letter's (batch 128)
    adult = fold_seconds("mlp", 31_000, 14, 2)
    letter = fold_seconds("mlp", 13_000, 16, 26)
    assert 10 < adult < 20 and 10 < letter < 30
    # the cost does not follow the cells: more features, same steps
    assert fold_seconds("mlp", 31_000, 100, 2) == adult


def test_tuning_only_when_the_fits_leave_time_for_it():
    b = Budget(time.monotonic(), 600)
    small = wall(10_000, 10)
    tune_s, later = b.tuning_seconds(b.start, small, ["linear", "lgbm", "mlp"])
    assert tune_s == pytest.approx(0.45 * 600) and later == []
    big = wall(2_000_000, 50)  # the default fits alone exceed the limit
    assert b.tuning_seconds(b.start, big, ["linear", "lgbm", "mlp"]) == (0.0, [])
    tight = Budget(time.monotonic(), 40)
    assert tight.tuning_seconds(tight.start, small, ["linear", "lgbm"])[0] == 0.0


def test_short_limits_tune_before_the_non_core_families():
    # california-sized regression at 120 s: all seven default families need
    # ~87 s of fits on 2 slots (too little left to tune), the core ones (linear
    # and the boosters) ~6 s, so tuning gets its 45% and rf/et/mlp wait.
    b = Budget(time.monotonic(), 120)
    every = ["linear", "rf", "et", "hgb", "lgbm", "xgb", "mlp"]
    tune_s, later = b.tuning_seconds(b.start, wall(20_640, 8, 0), every)
    assert tune_s == pytest.approx(54, abs=1) and later == ["rf", "et", "mlp"]
    # without core families in the list there is nothing to put first
    no_core = ["rf", "et", "mlp"]
    assert b.tuning_seconds(b.start, wall(20_640, 8, 0), no_core) == (0.0, [])
    # letter-sized multiclass: the boosters alone exceed the limit
    assert b.tuning_seconds(b.start, wall(20_000, 16, 26), every) == (0.0, [])


def test_stage_instants_and_the_fusion_floor():
    late = Budget(time.monotonic() - 200, 120)  # fits overran the limit
    finish_by = late.fusions_finish_by()
    assert finish_by is not None
    assert finish_by - time.monotonic() == pytest.approx(6.0, abs=0.5)
    early = Budget(time.monotonic(), 120)
    assert early.fusions_finish_by() == pytest.approx(early.start + 0.96 * 120)
    assert early.fits_start_by == pytest.approx(early.start + 96)
    assert early.fits_finish_by == pytest.approx(early.start + 108)
    unlimited = Budget(time.monotonic(), None)
    assert unlimited.fusions_finish_by() is None
    assert unlimited.fits_start_by is None and unlimited.max_tune_s is None
    with pytest.raises(ValueError, match="needs a time limit"):
        unlimited.tuning_seconds(0.0, wall(100, 2), ["lgbm"])


def test_fusions_are_scored_cheapest_first():
    keys = ["two_level", "mine", "neural", "average", "stacking"]
    assert budget.fusion_order(keys) == [
        "average",
        "stacking",
        "neural",
        "two_level",
        "mine",
    ]


def test_deadline_priority_orders_rank_then_core_then_tuned_then_cheapest():
    def p(rank, s, core=True, tuned=False):
        return budget.priority(rank, s, core=core, tuned=tuned)

    assert p(1, 0.5) < p(1, 60.0) < p(1, 5000.0) < p(2, 0.1)
    # a core family (booster) before any other family of the same rank
    assert p(1, 5000.0, core=True) < p(1, 0.1, core=False) < p(2, 0.1, core=True)
    # within them, a tuned configuration before the defaults
    assert p(1, 5000.0, tuned=True) < p(1, 0.1) < p(1, 0.1, core=False, tuned=True)
    # distinguishable next to the rank at every realistic cost
    assert p(1, 1.0) != p(1, 1.5) and p(1, 1e5) < p(2, 0.0)
    assert budget.is_core("lgbm") and not budget.is_core("rf")


def test_short_tuning_budgets_go_to_the_boosters_they_can_afford():
    keys = ("linear", "rf", "et", "hgb", "lgbm", "xgb", "mlp")

    def trials(n_rows, n_features, n_classes):
        fold_rows = int(n_rows * 4 / 5)
        return {
            k: fold_seconds(k, fold_rows, n_features, n_classes)
            * 5
            / budget.tuning_ratio(k)
            for k in keys
        }

    small = trials(16_000, 8, 0)
    # 37 s affords one family (MIN_FAMILY_S = 20): LightGBM, not linear
    assert budget.tuning_order(keys, small, 37.0, 2) == ["lgbm"]
    assert budget.tuning_order(keys, small, 70.0, 2) == ["hgb", "lgbm", "xgb"]
    # letter-like: 26 classes make an XGBoost trial (~140 s) too dear
    letter = trials(16_000, 16, 26)
    assert budget.tuning_order(keys, letter, 200.0, 2) == ["rf", "hgb", "lgbm"]


def test_fit_tasks_carry_the_tuned_fold_time_and_their_priority():
    from ensemble.config import RunConfig
    from ensemble.data import prepare
    from ensemble.runner import RunContext, _fit_tasks
    from ensemble.specs import MemberSpec
    from tests.conftest import make_table

    data = prepare(make_table(600), "target", n_folds=3)
    config = RunConfig(n_folds=3, time_limit=60)
    ctx = RunContext(config, data, None, "roc_auc", Budget(time.monotonic(), 60))
    specs = [
        MemberSpec("lgbm", "lgbm", {}, 1, fold_s=7.5),
        MemberSpec("rf", "rf", {}, 1),
        MemberSpec("lgbm_2", "lgbm", {}, 2, fold_s=0.1),
    ]
    tasks = _fit_tasks(ctx, specs)
    assert [(t.member, t.fold) for t in tasks[:3]] == [("lgbm", k) for k in range(3)]
    cost = {t.member: t.cost for t in tasks}
    assert cost["lgbm"] == 7.5  # the trial's measured fold time
    n_fold = int(len(data.y[data.fold >= 0]) * 2 / 3)
    assert cost["rf"] == fold_seconds("rf", n_fold, data.X.shape[1], 2)
    prio = {t.member: t.priority for t in tasks}
    assert prio["lgbm"] < prio["rf"] < prio["lgbm_2"]  # tuned core, other, rank 2
    assert all(t.time_boxed == (t.learner == "lgbm") for t in tasks)
    free = RunContext(
        config.replace(time_limit=None),
        data,
        None,
        "roc_auc",
        Budget(time.monotonic(), None),
    )
    assert {t.priority for t in _fit_tasks(free, specs)} == {0.0}
