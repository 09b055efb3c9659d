"""Deadline planning of the fit stage (ensemble.schedule), without Ray."""

from __future__ import annotations

from dataclasses import dataclass, replace

import pytest

from ensemble.budget import (
    MIN_BOX_FRACTION,
    MIN_REFIT_BOX_FRACTION,
    MIN_REPEAT_BOX_FRACTION,
    time_box,
)
from ensemble.schedule import Estimates, doomed


@dataclass(frozen=True)
class T:
    member: str
    learner: str
    cost: float
    uses_gpu: bool = False
    fold: int = 0
    time_boxed: bool = False
    time_box: float | None = None
    min_box: float = MIN_BOX_FRACTION


def folds(
    member: str,
    cost: float,
    n: int = 5,
    learner: str | None = None,
    gpu=False,
    boxed=False,
):
    return [T(member, learner or member, cost, gpu, k, boxed) for k in range(n)]


def test_estimates_learn_from_the_member_then_the_learner():
    est = Estimates()
    a, a2, b = T("lgbm", "lgbm", 2.0), T("lgbm_2", "lgbm", 3.0), T("rf", "rf", 5.0)
    assert [est.seconds(t) for t in (a, a2, b)] == [2.0, 3.0, 5.0]
    est.observe(a, 6.0)
    est.observe(a, 8.0)
    assert est.seconds(a) == 7.0  # the member's own mean
    assert est.seconds(a2) == pytest.approx(3.0 * 3.5)  # the learner's ratio
    assert est.seconds(b) == 5.0  # another learner is not corrected
    # a running fit past its estimate needs a quarter of its time again
    assert est.remaining(b, 1.0) == 4.0
    assert est.remaining(b, 20.0) == 5.0


def test_nothing_is_dropped_when_everything_fits():
    pending = folds("linear", 1.0) + folds("lgbm", 4.0)
    got = doomed(pending, [], Estimates(), cpu_slots=2, now=0.0, start_by=100.0)
    assert got == []


def test_the_member_at_the_back_of_the_queue_goes_first():
    # 2 slots, 40 s: linear (5 x 1 s) and lgbm (5 x 10 s) fit, rf (5 x 20 s) not
    pending = folds("linear", 1.0) + folds("lgbm", 10.0) + folds("rf", 20.0)
    got = doomed(pending, [], Estimates(), cpu_slots=2, now=0.0, start_by=40.0)
    assert got == ["rf"]
    # with 4 slots all of them start in time
    assert doomed(pending, [], Estimates(), cpu_slots=4, now=0.0, start_by=40.0) == []


def test_a_slow_member_ahead_in_the_queue_is_dropped_for_the_ones_behind():
    # lgbm turned out 3x slower than its estimate: its last folds would end at
    # 90 s, after finish_by, so it goes and et (behind it) gets the slots.
    est = Estimates()
    lgbm = folds("lgbm", 10.0)
    est.observe(lgbm[0], 30.0)
    pending = lgbm[1:] + folds("et", 2.0)
    kw = {"cpu_slots": 2, "now": 30.0, "start_by": 70.0}
    assert doomed(pending, [], est, **kw, finish_by=80.0) == ["lgbm"]
    # without a finish line lgbm can still start every fold; et cannot
    assert doomed(pending, [], est, **kw) == ["et"]
    # had lgbm been on its estimate, both would have stayed
    ok = Estimates()
    ok.observe(lgbm[0], 10.0)
    assert doomed(pending, [], ok, **kw, finish_by=80.0) == []


def test_running_folds_count_and_can_doom_their_member():
    est = Estimates()
    mlp = folds("mlp", 10.0)
    # folds 0 and 1 run for 8 s of their 10: the last three start at 10, 10, 20
    running = [(mlp[0], 8.0), (mlp[1], 8.0)]
    kw = {"cpu_slots": 2, "now": 8.0, "finished": ["linear"]}
    assert doomed(mlp[2:], running, est, start_by=20.0, **kw) == []
    assert doomed(mlp[2:], running, est, start_by=19.5, **kw) == ["mlp"]
    # alone, the member is kept: a late model is better than none
    assert doomed(mlp[2:], running, est, cpu_slots=2, now=8.0, start_by=19.5) == []
    # a running fold expected to end after finish_by dooms its member too
    got = doomed(
        [],
        [(mlp[0], 1.0)] + [(T("linear", "linear", 1.0), 0.5)],
        est,
        cpu_slots=2,
        now=1.0,
        start_by=100.0,
        finish_by=5.0,
    )
    assert got == ["mlp"]


def test_finish_by_drops_a_member_whose_folds_end_too_late():
    pending = folds("linear", 1.0) + folds("mlp", 30.0, n=2)
    assert doomed(pending, [], Estimates(), cpu_slots=2, now=0.0, start_by=10.0) == []
    got = doomed(
        pending, [], Estimates(), cpu_slots=2, now=0.0, start_by=10.0, finish_by=20.0
    )
    assert got == ["mlp"]


def test_the_last_member_is_kept_unless_another_finished():
    pending = folds("rf", 100.0)
    assert doomed(pending, [], Estimates(), cpu_slots=2, now=0.0, start_by=10.0) == []
    got = doomed(
        pending,
        [],
        Estimates(),
        cpu_slots=2,
        now=0.0,
        start_by=10.0,
        finished=["linear"],
    )
    assert got == ["rf"]
    # two hopeless members: the one behind goes, the first is kept
    pending = folds("rf", 100.0) + folds("et", 100.0)
    assert doomed(pending, [], Estimates(), cpu_slots=2, now=0.0, start_by=10.0) == [
        "et"
    ]
    # ... unless the run has its members already (repeats, refits): then a
    # late fit is only a waste of its slot
    kw = {"cpu_slots": 2, "now": 0.0, "start_by": 10.0, "keep_one": False}
    assert doomed(pending, [], Estimates(), **kw) == ["rf", "et"]
    assert doomed(folds("rf", 100.0), [], Estimates(), **kw) == ["rf"]


def test_gpu_tasks_are_planned_on_the_gpu_actors():
    # 1 GPU actor for the MLP's folds, 1 CPU actor for lgbm's
    pending = folds("mlp", 10.0, gpu=True) + folds("lgbm", 10.0)
    est = Estimates()
    got = doomed(pending, [], est, cpu_slots=1, gpu_slots=1, now=0.0, start_by=40.0)
    assert got == []  # each starts its 5th fold at 40 s on its own actor
    got = doomed(pending, [], est, cpu_slots=2, gpu_slots=0, now=0.0, start_by=30.0)
    assert got == ["lgbm"]  # shared by both: 10 folds on 2 slots, the last at 40


def test_a_fold_running_past_its_estimate_stretches_the_waiting_ones():
    # lgbm was estimated at 10 s a fold; two folds have run 30 s and go on.
    # The three waiting folds are expected to take >= 30 s too: the last one
    # cannot start by 60 s, so lgbm goes before it wastes more time.
    est = Estimates()
    lgbm = folds("lgbm", 10.0)
    running = [(lgbm[0], 30.0), (lgbm[1], 30.0)]
    kw = {"cpu_slots": 2, "now": 35.0, "finished": ["linear"]}
    assert doomed(lgbm[2:], running, est, start_by=60.0, **kw) == ["lgbm"]
    # at the estimate (running 5 s of 10) the same plan fits easily
    early = [(lgbm[0], 5.0), (lgbm[1], 5.0)]
    assert doomed(lgbm[2:], early, est, start_by=60.0, **kw) == []


def test_time_box_shares_the_time_left_between_the_waves():
    assert time_box(0.0, 90.0, folds_left=5, slots=2) == 30.0  # 3 waves
    assert time_box(30.0, 90.0, folds_left=3, slots=2) == 30.0  # 2 waves
    assert time_box(60.0, 90.0, folds_left=1, slots=2) == 30.0
    assert time_box(0.0, 90.0, folds_left=4, slots=4) == 90.0
    assert time_box(100.0, 90.0, folds_left=1, slots=2) == 0.0  # past the line


def test_a_time_boxed_member_on_a_low_estimate_is_kept_with_shorter_folds():
    # lgbm turned out 3x slower than estimated (30 s a fold, not 10): the plan
    # would drop it (test above), but boxed folds share the 50 s left between
    # 2 waves of 25 s, within the finish line, so it stays.
    est = Estimates()
    plain, boxed = folds("lgbm", 10.0), folds("lgbm", 10.0, boxed=True)
    est.observe(plain[0], 30.0)
    kw = {"cpu_slots": 2, "now": 30.0, "start_by": 70.0, "finish_by": 80.0}
    kw["finished"] = ["linear"]
    assert doomed(plain[1:], [], est, **kw) == ["lgbm"]
    assert doomed(boxed[1:], [], est, **kw) == []
    # a box under a quarter of the fold's expected time is not worth a slot:
    # 4 folds on 2 slots with 14 s left give 7 s boxes for 30 s folds
    late = {**kw, "now": 66.0, "start_by": 80.0}
    assert doomed(boxed[1:], [], est, **late) == ["lgbm"]
    # ... and 8 s boxes (16 s left) are enough
    assert doomed(boxed[1:], [], est, **{**late, "now": 64.0}) == []


def test_a_repeat_or_a_refit_needs_a_fuller_box_than_a_fold():
    # 4 lgbm folds of 30 s on 2 slots with 30 s left: 15 s boxes, half the
    # expected time. A fold cut to half is still worth its slot; a repeat's
    # fold cut so short would not be kept, so it is not started.
    est = Estimates()
    kw = {"cpu_slots": 2, "now": 0.0, "start_by": 30.0, "finish_by": 30.0}
    kw["finished"] = ["linear"]
    fold = folds("lgbm", 30.0, n=4, boxed=True)
    assert doomed(fold, [], est, **kw) == []
    repeat = [replace(t, min_box=MIN_REPEAT_BOX_FRACTION) for t in fold]
    assert doomed(repeat, [], est, **kw) == ["lgbm"]
    # with 60 s left the boxes are the whole 30 s: the repeat goes ahead
    assert doomed(repeat, [], est, **{**kw, "start_by": 60.0, "finish_by": 60.0}) == []
    # a refit (one task) starts only when its box holds all its expected time
    # and the share kept to save: 32 s for a 30 s refit is not enough, 34 s is
    refit = [T("lgbm", "lgbm", 30.0, time_boxed=True, min_box=MIN_REFIT_BOX_FRACTION)]
    short = {**kw, "start_by": 32.0, "finish_by": 32.0}
    assert doomed(refit, [], est, **short) == ["lgbm"]
    assert doomed(refit, [], est, **{**short, "finish_by": 34.0}) == []


def test_a_running_time_boxed_fold_ends_at_its_box():
    # lgbm folds have run 40 s of a 45 s box but were expected at 10 s: an
    # unboxed fold would be expected to need 10 s more (a quarter of 40 s) and
    # end at 50 s, after the line at 48 s; the boxed one stops at 45 s.
    est = Estimates()
    run = [T("lgbm", "lgbm", 10.0, False, k, True, 45.0) for k in range(2)]
    plain = [T("lgbm", "lgbm", 10.0, False, k) for k in range(2)]
    kw = {"cpu_slots": 2, "now": 40.0, "start_by": 48.0, "finish_by": 48.0}
    kw["finished"] = ["linear"]
    assert doomed([], [(t, 40.0) for t in run], est, **kw) == []
    assert doomed([], [(t, 40.0) for t in plain], est, **kw) == ["lgbm"]


def test_the_folds_of_one_wave_get_the_same_box():
    from ensemble.schedule import _replay

    # fold 0 runs with a 30 s box (5 folds, 2 slots, 90 s: 3 waves); fold 1,
    # starting beside it, counts it and gets 30 s too, not 90 / 2 = 45 s
    boxed = folds("lgbm", 100.0, boxed=True)
    running = [(T("lgbm", "lgbm", 100.0, False, 0, True, 30.0), 0.0)]
    slots = list(_replay(boxed[1:], running, Estimates(), (2, 0), 0.0, 90.0))
    assert [(s.start, s.end) for s in slots] == [
        (0.0, 30.0),
        (0.0, 30.0),
        (30.0, 60.0),
        (30.0, 60.0),
        (60.0, 90.0),
    ]
    assert not any(s.short for s in slots)
