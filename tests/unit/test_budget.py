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


def test_plan_members_keeps_the_cheap_ones_that_fit():
    config = RunConfig(learners=("linear", "lgbm", "mlp", "rf"))
    d = data(600_000, 50)  # 400k rows per fold: linear ~8 s, lgbm ~46 s, rf ~200 s
    specs = [MemberSpec(k, k, {}) for k in ("mlp", "rf", "lgbm", "linear")]
    kept, skipped = runner._plan_members(specs, d, config, time.monotonic() + 120)
    assert [s.name for s in kept] == ["lgbm", "linear"]  # input order kept
    assert skipped == ["rf", "mlp"]  # cheapest first, the rest does not fit
    kept, skipped = runner._plan_members(specs, d, config, time.monotonic() + 1)
    assert [s.name for s in kept] == ["linear"] and len(skipped) == 3
    kept, skipped = runner._plan_members(specs, d, config, time.monotonic() + 1e6)
    assert len(kept) == 4 and skipped == []


def test_second_best_configs_come_after_every_family_best():
    config = RunConfig(learners=("linear", "lgbm"))
    d = data(600_000, 50)
    specs = [
        MemberSpec("lgbm", "lgbm", {}, 1),
        MemberSpec("linear_2", "linear", {}, 2),
        MemberSpec("linear", "linear", {}, 1),
    ]
    # room for linear (~40 s) + lgbm (~230 s) but not a third member
    kept, skipped = runner._plan_members(specs, d, config, time.monotonic() + 110)
    assert {s.name for s in kept} == {"lgbm", "linear"} and skipped == ["linear_2"]


def test_fusions_are_scored_cheapest_first():
    config = RunConfig(fusions=("two_level", "neural", "average", "stacking"))
    keys = [k for k, _ in runner._fusion_specs(config, "roc_auc", 4)]
    assert keys == ["average", "stacking", "neural", "two_level"]


def test_deadline_priority_orders_rank_then_cheapest():
    p = runner._priority
    assert p(1, 0.5) < p(1, 60.0) < p(1, 5000.0) < p(2, 0.1)
    # distinguishable next to the rank at every realistic cost
    assert p(1, 1.0) != p(1, 1.5) and p(1, 1e5) < p(2, 0.0)


def test_fusion_deadline_keeps_a_floor_after_late_fits():
    late = runner._Budget(time.monotonic() - 200, 120)  # fits overran the limit
    assert late.fusion_deadline() - time.monotonic() == pytest.approx(6.0, abs=0.5)
    early = runner._Budget(time.monotonic(), 120)
    assert early.fusion_deadline() == pytest.approx(early.start + 0.96 * 120)
    assert runner._Budget(time.monotonic(), None).fusion_deadline() is None
