"""Planning a --time-limit: tuning budget, members that fit, fusion order."""

from __future__ import annotations

import time
from types import SimpleNamespace

import numpy as np
import pytest

from ensemble import runner
from ensemble.config import RunConfig
from ensemble.learners import get
from ensemble.tune import MemberSpec


def data(n_rows: int, n_features: int, n_classes: int = 2):
    fold = np.arange(n_rows) % 6 - 1  # 1/6 holdout, 5 folds
    return SimpleNamespace(fold=fold, X=np.zeros((1, n_features)), n_classes=n_classes)


@pytest.fixture(autouse=True)
def two_slots(monkeypatch):
    monkeypatch.setattr(runner, "_slots", lambda: 2)


def test_expected_seconds_scale_with_cells_and_classes():
    lgbm, xgb, rf = get("lgbm"), get("xgb"), get("rf")
    base = lgbm.expected_seconds(100_000, 10, 2) - 0.3
    assert base == pytest.approx(2.3)
    assert lgbm.expected_seconds(200_000, 10, 2) - 0.3 == pytest.approx(2 * base)
    assert lgbm.expected_seconds(100_000, 10, 26) - 0.3 == pytest.approx(26 * base)
    assert xgb.expected_seconds(100_000, 10, 26) - 0.3 == pytest.approx(5 * 26 * base)
    assert rf.expected_seconds(100_000, 10, 26) == rf.expected_seconds(100_000, 10, 2)


def budget(limit: float):
    return runner._Budget(time.monotonic(), limit)


def test_tuning_only_when_the_fits_leave_time_for_it():
    config = RunConfig(learners=("linear", "lgbm", "mlp"), time_limit=600, top_n=2)
    small = data(10_000, 10)
    assert runner._tuning_budget(config, small, budget(600)) == pytest.approx(
        0.45 * 600, rel=0.01
    )
    big = data(2_000_000, 50)  # the default fits alone exceed the limit
    assert runner._tuning_budget(config, big, budget(600)) == 0.0
    tight = RunConfig(learners=("linear", "lgbm"), time_limit=40)
    assert runner._tuning_budget(tight, small, budget(40)) == 0.0  # < MIN_TUNE_S


def test_tuning_budget_counts_each_family_once():
    """Second-best configs are extras the fit stage drops first: not reserved."""
    d = data(20_000, 8, n_classes=0)
    one = RunConfig(learners=("linear", "lgbm", "xgb"), time_limit=120, top_n=1)
    three = RunConfig(learners=("linear", "lgbm", "xgb"), time_limit=120, top_n=3)
    b = budget(120)
    assert runner._tuning_budget(one, d, b) == pytest.approx(
        runner._tuning_budget(three, d, b), abs=0.5
    )
    assert runner._tuning_budget(three, d, b) > 0


def test_short_limits_tune_before_the_non_core_families():
    # california-sized regression at 120 s: all seven default families need
    # ~87 s of fits on 2 slots (too little left to tune), the core ones (linear
    # and the boosters) ~6 s, so tuning gets its 45% and rf/et/mlp wait.
    d = data(20_640, 8, n_classes=0)
    every = RunConfig(time_limit=120)
    assert runner._tuning_budget(every, d, budget(120)) == pytest.approx(54, abs=1)
    # without core families in the list there is nothing to put first
    no_core = RunConfig(learners=("rf", "et", "mlp"), time_limit=120)
    assert runner._tuning_budget(no_core, d, budget(120)) == 0.0
    # letter-sized multiclass: the boosters alone exceed the limit
    letter = data(20_000, 16, n_classes=26)
    assert runner._tuning_budget(every, letter, budget(120)) == 0.0


def test_member_seconds_prefers_the_timed_trial():
    d = data(60_000, 10)
    timed = MemberSpec("lgbm", "lgbm", {}, 1, fold_s=7.5)
    untimed = MemberSpec("lgbm", "lgbm", {}, 1)
    assert runner._member_seconds(timed, d, 5) == 7.5
    assert runner._member_seconds(untimed, d, 5) == pytest.approx(
        get("lgbm").expected_seconds(40_000, 10, 2)
    )


def test_forest_regression_costs_more_than_classification():
    for key, factor in (("rf", 6.5), ("et", 3.5)):
        cls = get(key)
        clf = cls.expected_seconds(100_000, 10, 2)
        assert cls.expected_seconds(100_000, 10, 0) == pytest.approx(factor * clf)
    lgbm = get("lgbm")
    assert lgbm.expected_seconds(100_000, 10, 0) == lgbm.expected_seconds(
        100_000, 10, 2
    )


def test_fusions_are_scored_cheapest_first():
    config = RunConfig(fusions=("two_level", "neural", "average", "stacking"))
    keys = [k for k, _ in runner._fusion_specs(config, "roc_auc", 4)]
    assert keys == ["average", "stacking", "neural", "two_level"]


def test_deadline_priority_orders_rank_then_cheapest():
    p = runner._priority
    assert p(1, 0.5) < p(1, 60.0) < p(1, 5000.0) < p(2, 0.1)
    # a core family (booster) before any other family of the same rank
    assert p(1, 5000.0, core=True) < p(1, 0.1, core=False) < p(2, 0.1, core=True)
    # within them, a tuned configuration before the defaults
    assert p(1, 5000.0, tuned=True) < p(1, 0.1) < p(1, 0.1, core=False, tuned=True)
    # distinguishable next to the rank at every realistic cost
    assert p(1, 1.0) != p(1, 1.5) and p(1, 1e5) < p(2, 0.0)


def test_fusion_deadline_keeps_a_floor_after_late_fits():
    late = runner._Budget(time.monotonic() - 200, 120)  # fits overran the limit
    assert late.fusion_deadline() - time.monotonic() == pytest.approx(6.0, abs=0.5)
    early = runner._Budget(time.monotonic(), 120)
    assert early.fusion_deadline() == pytest.approx(early.start + 0.96 * 120)
    assert runner._Budget(time.monotonic(), None).fusion_deadline() is None


def test_short_tuning_budgets_go_to_the_boosters_they_can_afford():
    from ensemble.learners import FitContext
    from ensemble.tune import _families_to_tune

    ctx = FitContext(task="regression", n_classes=0, cat_mask=(), n_categories=())
    keys = ("linear", "rf", "et", "hgb", "lgbm", "xgb", "mlp")
    small = np.zeros((16_000, 8), np.float32)
    # 37 s affords one family (MIN_FAMILY_S = 20): LightGBM, not linear
    assert _families_to_tune(keys, small, ctx, 5, 2, 37.0) == ["lgbm"]
    assert _families_to_tune(keys, small, ctx, 5, 2, 70.0) == ["hgb", "lgbm", "xgb"]
    # letter-like: 26 classes make an XGBoost trial (~140 s) too dear
    letter = FitContext(task="multiclass", n_classes=26, cat_mask=(), n_categories=())
    big = np.zeros((16_000, 16), np.float32)
    assert _families_to_tune(keys, big, letter, 5, 2, 200.0) == ["rf", "hgb", "lgbm"]
