"""The time policy (ensemble.budget): stage instants, search, repeats, order."""

from __future__ import annotations

import time

import numpy as np
import pytest

from ensemble import budget
from ensemble.budget import Budget, fold_seconds


def test_fold_seconds_scale_with_cells_and_classes():
    base = fold_seconds("lgbm", 100_000, 10, 2) - 0.3
    assert base == pytest.approx(budget.FIT_COST["lgbm"].s_per_mcell)
    assert fold_seconds("lgbm", 200_000, 10, 2) - 0.3 == pytest.approx(2 * base)
    assert fold_seconds("lgbm", 100_000, 10, 26) - 0.3 == pytest.approx(26 * base)
    xgb = budget.FIT_COST["xgb"].s_per_mcell
    assert fold_seconds("xgb", 100_000, 10, 26) - 0.3 == pytest.approx(5 * 26 * xgb)
    assert fold_seconds("rf", 100_000, 10, 26) == fold_seconds("rf", 100_000, 10, 2)
    # an unregistered key gets a cost, not an error
    assert fold_seconds("mine", 1_000_000, 1, 2) == pytest.approx(1.3)


def test_forest_regression_costs_more_than_classification():
    for key, factor in (("rf", 6.5), ("et", 3.5)):
        clf = fold_seconds(key, 100_000, 10, 2) - 0.3
        assert fold_seconds(key, 100_000, 10, 0) - 0.3 == pytest.approx(factor * clf)
    assert fold_seconds("lgbm", 100_000, 10, 0) == fold_seconds("lgbm", 100_000, 10, 2)


def test_mlp_cost_follows_its_optimiser_steps():
    adult = fold_seconds("mlp", 31_000, 14, 2)
    letter = fold_seconds("mlp", 13_000, 16, 26)
    assert 20 < adult < 40 and 20 < letter < 60  # measured: 26 s on adult
    # the cost does not follow the cells: more features, same steps
    assert fold_seconds("mlp", 31_000, 100, 2) == adult


def test_stage_instants_leave_the_fusions_and_the_writing_their_time():
    b = Budget(0.0, 300.0, fusion_s=20.0)
    finish_by, start_by = b.fits_finish_by, b.fits_start_by
    assert finish_by is not None and start_by is not None
    # writing keeps 1.5% (4.5 s), the fusions their estimate
    assert finish_by == pytest.approx(300 - 4.5 - 20)
    assert start_by == pytest.approx(finish_by - 0.015 * 300)
    assert b.fusions_finish_by(now=finish_by) == pytest.approx(300 - 4.5)
    # the fusions' window stays within 3% and 15% of the limit
    assert Budget(0.0, 300.0, fusion_s=0.0).fits_finish_by == pytest.approx(286.5)
    assert Budget(0.0, 300.0, fusion_s=1e4).fits_finish_by == pytest.approx(250.5)
    assert b.with_fusions(1e4).fits_finish_by == pytest.approx(250.5)


def test_the_refit_gets_its_window_before_the_tables_and_keeps_its_order():
    b = Budget(0.0, 300.0, fusion_s=20.0).with_refit(30.0)
    # the refit's window moves the fits and the fusions 30 s earlier
    assert b.fits_finish_by == pytest.approx(300 - 4.5 - 20 - 30)
    assert b.fusions_finish_by(now=0.0) == pytest.approx(300 - 4.5 - 30)
    assert b.refit_finish_by == pytest.approx(300 - 4.5)
    # both windows survive resizing either; the refit's stays within 15%
    assert b.with_fusions(20.0) == b and b.with_refit(30.0) == b
    assert Budget(0.0, 300.0).with_refit(1e4).refit_finish_by == pytest.approx(295.5)
    assert Budget(0.0, 300.0).with_refit(1e4).fits_finish_by == pytest.approx(
        300 - 4.5 - 9 - 45
    )
    assert Budget(0.0, None).with_refit(30.0).refit_finish_by is None
    # a refit takes n/(n-1) of a mean fold and its overhead, with slack; the
    # slots share them
    assert budget.refit_seconds([4.0, 4.0], n_folds=5, slots=1) == pytest.approx(
        budget.REFIT_SLACK * (5.0 + 1.0) * 2
    )
    assert budget.refit_seconds([], n_folds=5, slots=2) == 0.0


def test_fits_that_ended_late_leave_the_fusions_their_floor_and_the_refit_the_rest():
    b = Budget(0.0, 300.0, fusion_s=40.0).with_refit(45.0)
    assert b.fits_finish_by == pytest.approx(300 - 4.5 - 40 - 45)
    # on time, each keeps its window
    assert b.fusions_finish_by(now=b.fits_finish_by) == pytest.approx(250.5)
    # 36 s late: the fusions get the floor (7% of the limit, at most 20 s)
    assert b.fusions_finish_by(now=246.5) == pytest.approx(266.5)
    assert b.refit_finish_by == pytest.approx(295.5)


def test_refits_go_most_fold_models_first_then_cheapest_first():
    from types import SimpleNamespace as NS

    from ensemble.pool import _queue_order
    from ensemble.refit import _tasks

    def fold(s: float) -> NS:
        return NS(fit_s=s, predict_s=0.0, save_s=0.0)

    runs = {
        "lgbm_xt": [fold(9.0)] * 5,
        "et": [fold(2.0)] * 5,
        "mlp": [fold(16.0)] * 5,
        "lgbm": [fold(30.0)] * 10,  # repeated: 10 fold models
    }
    fitted = NS(
        specs=[NS(name=m, learner=m.split("_")[0], params={}) for m in runs],
        of=lambda m: runs[m],
    )
    ctx = NS(config=NS(n_folds=5))
    tasks = _tasks(ctx, fitted, list(runs))  # type: ignore[arg-type]
    order = [t.member for t in sorted(tasks, key=_queue_order)]
    assert order == ["lgbm", "et", "lgbm_xt", "mlp"]


def test_a_refit_costs_its_folds_fit_and_save_time_not_their_predictions():
    from types import SimpleNamespace as NS

    from ensemble.refit import _tasks

    # krkopt's LightGBM: 45 s to fit a fold, 33 s to predict its 26,000 trees;
    # its ExtraTrees: 5 s to fit a fold, 6 s to save it (1 GB, compressed)
    runs = {
        "lgbm": [NS(fit_s=45.0, predict_s=33.0, save_s=0.5)] * 5,
        "et": [NS(fit_s=5.0, predict_s=0.4, save_s=6.0)] * 5,
    }
    fitted = NS(
        specs=[NS(name=m, learner=m, params={}) for m in runs], of=lambda m: runs[m]
    )
    lgbm, et = _tasks(NS(config=NS(n_folds=5)), fitted, list(runs))  # type: ignore[arg-type]
    assert lgbm.cost == pytest.approx(45.0 * 5 / 4 + 0.5)
    assert et.cost == pytest.approx(5.0 * 5 / 4 + 6.0)


def test_the_refit_window_is_not_sized_for_a_refit_that_cannot_fit_in_it():
    # krkopt at 300 s: LightGBM's refit (45 s a fold) outlasts the 45 s cap
    with_lgbm = budget.refit_seconds([45.0, 1.5, 4.2], n_folds=5, slots=2)
    assert with_lgbm > 45.0
    cheap = budget.refit_seconds([1.5, 4.2], n_folds=5, slots=2)
    capped = budget.refit_seconds([45.0, 1.5, 4.2], n_folds=5, slots=2, cap=45.0)
    assert capped == pytest.approx(cheap) and cheap < 10.0
    # a member just inside the cap still counts
    assert budget.refit_seconds([28.0], 5, 2, cap=45.0) == pytest.approx(
        budget.REFIT_SLACK * (28.0 * 1.25 + 1.0)
    )
    assert Budget(0.0, 300.0).refit_cap == pytest.approx(45.0)
    assert Budget(0.0, None).refit_cap is None


def test_no_time_left_to_refit_keeps_the_members_on_their_fold_models():
    from types import SimpleNamespace

    from ensemble.refit import Refitted, refit

    late = SimpleNamespace(
        config=SimpleNamespace(refit=True, keep_models="chosen"),
        budget=Budget(time.monotonic() - 400, 300.0),
    )
    fitted = SimpleNamespace(
        specs=[
            SimpleNamespace(name=n, learner=k)
            for n, k in [("lgbm", "lgbm"), ("mlp_plain", "mlp"), ("cat", "cat")]
        ]
    )
    out = refit(late, fitted, ["lgbm", "mlp_plain", "cat"])  # type: ignore[arg-type]
    # the MLP is never refitted: late or not, it predicts with its fold models
    assert out == Refitted(
        members=[], skipped=["lgbm", "cat"], bagged=["mlp_plain"], results=[]
    )
    off = SimpleNamespace(config=SimpleNamespace(refit=False), budget=late.budget)
    assert refit(off, None, ["lgbm"]) == Refitted()  # type: ignore[arg-type]


def test_the_fusion_floor_after_fits_that_overran():
    late = Budget(time.monotonic() - 400, 300)
    finish_by = late.fusions_finish_by()
    assert finish_by is not None
    assert finish_by - time.monotonic() == pytest.approx(20.0, abs=0.5)
    unlimited = Budget(time.monotonic(), None)
    assert unlimited.fusions_finish_by() is None
    assert unlimited.fits_start_by is None and unlimited.fits_finish_by is None
    assert unlimited.search_seconds(time.monotonic()) == 0.0


def test_search_gets_half_of_what_the_portfolio_left_if_it_is_enough():
    b = Budget(0.0, 300.0)
    start_by = b.fits_start_by
    assert start_by is not None
    assert b.search_seconds(100.0) == pytest.approx(0.5 * (start_by - 100.0))
    # less than 15% of the limit left: the repeats take it all
    assert b.search_seconds(start_by - 40.0) == 0.0


def test_search_plan_goes_to_the_leaders_it_can_pay_for():
    losses = {"lgbm": 0.300, "cat": 0.301, "xgb": 0.3015, "linear": 0.40}
    trial_s = {"lgbm": 10.0, "cat": 20.0, "xgb": 5.0, "linear": 1.0}
    plan = budget.search_plan(losses, trial_s, 120.0, 2)
    # the two leaders only; the best gets the larger share
    assert list(plan) == ["lgbm", "cat"]
    assert plan["lgbm"] > plan["cat"] > 0
    assert sum(plan.values()) == pytest.approx(120.0, abs=0.2)
    # a family far behind gets nothing, however cheap (no 120 linear trials)
    assert "linear" not in budget.search_plan(
        {"linear": 0.4, "lgbm": 0.3}, {"linear": 0.1, "lgbm": 1.0}, 120, 2
    )
    # a family whose trials are too dear for 3 of them in its share gets none
    dear = budget.search_plan(losses, {**trial_s, "lgbm": 500.0}, 120.0, 2)
    assert "lgbm" not in dear
    assert budget.search_plan({"lgbm": 0.3}, {"lgbm": 1.0}, 10.0, 2) == {}
    assert budget.search_plan({}, {}, 100.0, 2) == {}


def test_value_order_and_priority():
    assert budget.value_rank("lgbm", "lgbm") < budget.value_rank("cat", "cat")
    # a tuned member takes its family's place; an unknown name goes last
    assert budget.value_rank("lgbm_tuned", "lgbm") == budget.value_rank("lgbm", "lgbm")
    assert budget.value_rank("mine", "mine") == len(budget.VALUE_ORDER)
    p = budget.priority
    assert p(0, 5000.0) < p(1, 0.1) < p(1, 60.0) < p(2, 0.0)
    assert p(1, 1.0) != p(1, 1.5)
    # a dear member goes after every member that is not, whatever its value
    last = len(budget.VALUE_ORDER)
    assert p(last, 1e6) < p(0, 0.0, dear=True)
    # the dear ones go cheapest first, whatever their value
    mlp, cat = budget.value_rank("mlp", "mlp"), budget.value_rank("cat", "cat")
    assert cat < mlp
    assert p(mlp, 27.0, dear=True) < p(cat, 68.0, dear=True)
    assert p(cat, 27.0, dear=True) == p(mlp, 27.0, dear=True)
    # among the dear, the time-boxed ones (they end every fold) go first: on
    # fars LightGBM (66 s a fold) before linear (36 s), whose folds, a little
    # over their estimate, would not all end and be dropped
    lgbm, linear = (
        budget.value_rank("lgbm", "lgbm"),
        budget.value_rank("linear", "linear"),
    )
    assert p(lgbm, 66.0, dear=True, boxed=True) < p(linear, 36.0, dear=True)
    assert p(lgbm, 66.0, dear=True, boxed=True) < p(lgbm, 67.0, dear=True, boxed=True)
    assert p(last, 1e6) < p(0, 0.0, dear=True, boxed=True)


def test_a_portfolio_configuration_costs_its_factor_times_its_default():
    default = budget.fold_seconds("lgbm", 12_800, 16, 26)
    xt = budget.fold_seconds("lgbm", 12_800, 16, 26, member="lgbm_xt")
    overhead = budget.FIT_OVERHEAD_S
    factor = budget.CONFIG_COST["lgbm_xt"]
    assert xt - overhead == pytest.approx(factor * (default - overhead))
    assert factor > 1.0
    # a tuned member or a family's default: the family's cost
    assert budget.fold_seconds("lgbm", 12_800, 16, 26, member="lgbm@1") == default


def test_a_member_is_dear_when_its_folds_take_a_quarter_of_the_window():
    # 5 folds of 20 s on 2 slots: 50 s of wall, a quarter of 200 s
    assert not budget.is_dear(20.0, 5, 2, 200.0)
    assert budget.is_dear(20.1, 5, 2, 200.0)
    assert budget.is_dear(10.1, 5, 1, 200.0)  # one slot: twice the wall
    assert budget.is_dear(0.1, 5, 2, -1.0)  # past the window, everything is


def test_repeat_candidates_are_the_strongest_members():
    losses = {f"m{i}": float(i) for i in range(10)}
    chosen = budget.repeat_candidates(losses)
    assert chosen == [f"m{i}" for i in range(budget.MAX_REPEATED)]


def test_fusions_are_scored_cheapest_first_and_their_time_estimated():
    keys = ["two_level", "mine", "neural", "stacking", "average", "stacking_nonneg"]
    assert budget.fusion_order(keys) == [
        "average",
        "stacking_nonneg",
        "stacking",
        "neural",
        "two_level",
        "mine",
    ]
    one = budget.fusion_seconds(["weighted"], 10_000, 5, 1, 2)
    assert budget.fusion_seconds(["weighted"], 20_000, 5, 1, 2) == pytest.approx(
        2 * one
    )
    # the dearest fusion bounds the wall whatever the CPUs
    big = budget.fusion_seconds(["neural"], 10_000, 5, 1, 64)
    per_row_member, per_cell = budget.FUSION_COST["neural"]
    assert big == pytest.approx((per_row_member + per_cell) * 0.05)
    # the stackings cost per class, the neural fusion barely: ten classes
    # cost a linear stacking about ten times one output, the neural one less
    # than twice
    for key, low, high in (("stacking", 7.0, 10.0), ("neural", 1.0, 2.0)):
        ratio = budget.fusion_seconds([key], 10_000, 5, 10, 1) / budget.fusion_seconds(
            [key], 10_000, 5, 1, 1
        )
        assert low < ratio < high, key


def test_the_fusions_take_the_refit_time_the_best_fusions_members_do_not_need():
    from types import SimpleNamespace as NS

    from ensemble.scoring import _refit_aware_deadline
    from ensemble.specs import FusionOutcome

    runs = {
        "a": [NS(fit_s=2.0, save_s=0.0)] * 5,
        "b": [NS(fit_s=20.0, save_s=0.0)] * 5,
        "c": [NS(fit_s=20.0, save_s=0.0)] * 5,
    }
    kinds = {"a": "lgbm", "b": "xgb", "c": "cat"}
    fitted = NS(
        specs=[NS(name=m, learner=kinds[m]) for m in runs],
        of=lambda m: runs[m],
        slots=2,
    )
    b = Budget(0.0, 300.0, fusion_s=20.0).with_refit(40.0)
    ctx = NS(metric="log_loss", config=NS(n_folds=5), budget=b)

    def outcome(key, loss, unused):
        fusion = NS(unused_members=lambda: unused)
        return FusionOutcome(key, loss, np.zeros(1), np.zeros(1), fusion, 1.0)

    average = outcome("average", 0.5, [])
    weighted = outcome("weighted", 0.3, [1, 2])  # only "a"
    names = list(runs)
    on_time = b.fusions_finish_by(now=200.0)  # 40 s before the refit's end
    assert on_time == pytest.approx(300 - 4.5 - 40)

    def deadline(done, finish_by=on_time):
        return _refit_aware_deadline(ctx, fitted, names, finish_by, done)

    # all three members to refit: 1.2 * max((3.5 + 26 + 26) / 2, 26)
    assert deadline([average]) == pytest.approx(300 - 4.5 - 33.3)
    # the best so far uses only "a": its refit, 1.2 * 3.5 s, is all that is kept
    assert deadline([average, weighted]) == pytest.approx(300 - 4.5 - 4.2)
    # fusions that began late (their floor ends 25.5 s before the refit's
    # end): the 26 s refits, with their slack, would not start, so only a's
    # window is kept and the fusions take the rest
    assert deadline([average], finish_by=270.0) == pytest.approx(300 - 4.5 - 4.2)
    # an MLP keeps its fold models: its refit costs nothing
    fitted.specs[2].learner = "mlp"
    assert deadline([average]) == pytest.approx(300 - 4.5 - 31.2)
    # never more than the window the budget kept
    assert b.fusions_extended_by_refit(1e4) == pytest.approx(300 - 4.5 - 40)
    assert Budget(0.0, None).fusions_extended_by_refit(5.0) is None
