"""The fit stage re-plans under a deadline as folds finish (real Ray actors)."""

from __future__ import annotations

import time

import numpy as np

from ensemble.learners import FitContext
from ensemble.specs import FitTask


def _data(n: int = 4000, n_folds: int = 10):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(n, 10)).astype(np.float32)
    y = (X[:, 0] + rng.normal(size=n) > 0).astype(np.int64)
    fold = np.arange(n) % (n_folds + 1) - 1  # fold -1 = holdout
    return X, y, fold


def _ctx() -> FitContext:
    return FitContext(
        task="binary",
        n_classes=2,
        cat_mask=(False,) * 10,
        n_categories=(0,) * 10,
        seed=0,
    )


def test_a_member_far_over_its_estimate_is_dropped_early(ray_session, tmp_path):
    """rf claims 0.05 s a fold but takes ~10 s. While its first two folds run
    far past that, the plan (re-checked every second) sees that its ten folds
    cannot start by the deadline, drops it, stops the two running folds and
    gives the slots to linear, which finishes. Without re-planning rf would
    hold both slots until the deadline and linear, queued behind it, would
    never start."""
    from ensemble.pool import FitPool, put_data

    X, y, fold = _data()
    ctx = _ctx()
    tasks = [
        FitTask("slow_rf", "rf", {"n_estimators": 1500}, k, 0.05, False, 0.0)
        for k in range(10)
    ] + [FitTask("linear", "linear", {}, k, 0.01, False, 1.0) for k in range(10)]
    finished = {"slow_rf": 0, "linear": 0}

    def on_result(result, n_done, n_total):
        finished[result.member] += 1

    t0 = time.monotonic()
    outcome = FitPool(
        put_data(X, y, fold),
        ctx,
        lambda member, k: str(tmp_path / member / f"fold{k}"),
        start_by=t0 + 20.0,
        on_result=on_result,
    ).run(tasks)
    assert outcome.skipped == ["slow_rf"]
    assert sorted(r.fold for r in outcome.results) == list(range(10))
    assert {r.member for r in outcome.results} == {"linear"}
    assert finished["slow_rf"] == 0  # its first two folds were stopped mid-fit
    assert finished["linear"] == 10


def _boxed_run(tmp_path, time_boxed: bool):
    """lgbm at lr 0.001 with no early stop claims 0.05 s a fold but would run
    100,000 rounds; linear is cheap. 12 s to the finish line on 2 actors."""
    from ensemble.pool import FitPool, put_data

    X, y, fold = _data(n=20_000, n_folds=5)
    ctx = _ctx()
    slow = {"learning_rate": 0.001, "max_rounds": 100_000}
    slow["early_stopping_rounds"] = 100_000
    tasks = [FitTask("linear", "linear", {}, k, 0.01, False, 0.0) for k in range(5)] + [
        FitTask("lgbm", "lgbm", slow, k, 0.05, False, 1.0, time_boxed=time_boxed)
        for k in range(5)
    ]
    t0 = time.monotonic()
    return FitPool(
        put_data(X, y, fold),
        ctx,
        lambda member, k: str(tmp_path / member / f"fold{k}"),
        start_by=t0 + 10.0,
        finish_by=t0 + 12.0,
    ).run(tasks)


def test_time_boxed_folds_keep_a_member_that_would_overrun(ray_session, tmp_path):
    """Boxed, each lgbm fold gets its share of the time to the finish line and
    stops there with the rounds so far: every fold ends, truncated, and the
    member is kept. Unboxed, the same member is dropped once its folds run
    past the point where they could end in time."""
    boxed = _boxed_run(tmp_path / "boxed", time_boxed=True)
    assert boxed.skipped == [] and boxed.failed == {}
    lgbm = sorted(
        (r for r in boxed.results if r.member == "lgbm"), key=lambda r: r.fold
    )
    assert [r.fold for r in lgbm] == list(range(5))
    assert all(r.truncated for r in lgbm)
    assert not any(r.truncated for r in boxed.results if r.member == "linear")
    plain = _boxed_run(tmp_path / "plain", time_boxed=False)
    assert plain.skipped == ["lgbm"]
    assert {r.member for r in plain.results} == {"linear"}


def test_a_dropped_fit_that_ignores_its_cancel_is_killed(
    ray_session, tmp_path, monkeypatch
):
    """The unboxed lgbm's folds are dropped mid-fit; here the polite cancel
    is lost (as Ray's interrupt can be). The pool kills them: once it returns,
    both CPUs are free again, not held for minutes by 100,000 rounds."""
    import ray

    from ensemble import pool

    polite, real_cancel = [], ray.cancel

    def lossy_cancel(ref, *, force=False, **kw):
        if not force:
            polite.append(ref)  # delivered nowhere
            return None
        return real_cancel(ref, force=True, **kw)

    monkeypatch.setattr(pool.ray, "cancel", lossy_cancel)
    plain = _boxed_run(tmp_path / "plain", time_boxed=False)
    assert plain.skipped == ["lgbm"] and polite  # its running folds were dropped
    monkeypatch.undo()
    end = time.monotonic() + 10
    while ray.available_resources().get("CPU", 0) < 2:
        assert time.monotonic() < end, "a dropped fit still holds a CPU"
        time.sleep(0.2)
