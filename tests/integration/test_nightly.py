"""Nightly retraining: promotion, no promotion, failures, idempotence, history."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from ensemble.cli import app
from ensemble.config import RunConfig
from ensemble.exceptions import DataError, RunStateError
from ensemble.registry import HISTORY_COLUMNS, Registry, latest_snapshot, nightly
from tests.conftest import make_table

pytestmark = pytest.mark.ray


def noisy(frame: pd.DataFrame, share: float, seed: int) -> pd.DataFrame:
    """Flip the label of ``share`` of the rows."""
    rng = np.random.default_rng(seed)
    out = frame.copy()
    flip = rng.random(len(out)) < share
    out.loc[flip, "target"] = np.where(out.loc[flip, "target"] == "yes", "no", "yes")
    return out


@pytest.fixture
def snaps(tmp_path):
    d = tmp_path / "snapshots"
    d.mkdir()
    return d


def config(snaps, **kw) -> RunConfig:
    base = {
        "data": str(snaps),
        "target": "target",
        "learners": ("linear",),
        "fusions": (),
        "n_folds": 2,
        "report": False,
    }
    return RunConfig(**{**base, **kw})


def test_first_night_promotes_then_the_date_is_settled(ray_session, snaps, tmp_path):
    make_table(300, seed=1).to_parquet(snaps / "2026-11-01.parquet")
    reg = tmp_path / "reg"
    first = nightly(config(snaps), reg, day="2026-11-01")
    assert first.status == "promoted" and first.promoted
    assert first.reason == "first champion"
    champion = Registry(reg).champion()
    assert champion["run_id"] == first.run_id
    assert champion["score"] == pytest.approx(first.challenger_score)
    # same date again: nothing runs, nothing is written
    runs_before = sorted(p.name for p in (reg / "runs").iterdir())
    again = nightly(config(snaps), reg, day="2026-11-01")
    assert again.status == "skipped" and not again.promoted
    assert "already ran (promoted" in again.reason and "--force" in again.reason
    assert sorted(p.name for p in (reg / "runs").iterdir()) == runs_before
    hist = Registry(reg).history()
    assert list(hist.columns) == list(HISTORY_COLUMNS)
    assert len(hist) == 1
    # forced: runs again on the same data, ties the champion -> kept
    forced = nightly(config(snaps), reg, day="2026-11-01", force=True)
    assert forced.status == "kept" and not forced.promoted
    assert forced.champion_score == pytest.approx(forced.challenger_score)
    assert "not better by more than the margin (+0" in forced.reason
    assert Registry(reg).champion()["run_id"] == first.run_id
    hist = pd.read_parquet(reg / "history.parquet")
    assert list(hist.status) == ["promoted", "kept"]
    assert list(hist.promoted) == [True, False]
    assert hist.n_scored.tolist() == [first.n_scored, forced.n_scored]


def test_better_challenger_is_promoted_worse_is_not(ray_session, snaps, tmp_path):
    reg = tmp_path / "reg"
    # day 1: a broken feed scrambled x1 (the strongest feature) and some labels
    day1_rows = noisy(make_table(200, seed=2), 0.2, 0)
    day1_rows["x1"] = np.random.default_rng(1).permutation(day1_rows["x1"].to_numpy())
    day1_rows.to_parquet(snaps / "2026-11-01.parquet")
    day1 = nightly(config(snaps), reg, day="2026-11-01")
    assert day1.promoted
    # day 2: more rows, clean labels; the latest snapshot is picked
    make_table(800, seed=3).to_parquet(snaps / "2026-11-02.parquet")
    day2 = nightly(config(snaps), reg, day="2026-11-02", margin=0.01)
    assert day2.snapshot.endswith("2026-11-02.parquet")
    assert day2.status == "promoted", day2.reason
    assert day2.challenger_score > day2.champion_score + 0.01
    assert day2.reason.startswith("better by ")
    assert Registry(reg).champion()["run_id"] == day2.run_id
    # day 3: a config without the strongest feature -> worse on the same rows
    make_table(800, seed=4).to_parquet(snaps / "2026-11-03.parquet")
    weak = config(snaps, drop_columns=("x1",))
    day3 = nightly(weak, reg, day="2026-11-03")
    assert day3.status == "kept" and not day3.promoted
    assert day3.challenger_score < day3.champion_score
    assert day3.champion_run_id == day2.run_id
    assert Registry(reg).champion()["run_id"] == day2.run_id
    hist = Registry(reg).history()
    assert list(hist.date) == ["2026-11-01", "2026-11-02", "2026-11-03"]
    assert list(hist.promoted) == [True, True, False]
    assert hist.champion_score.isna().tolist() == [True, False, False]


def test_failed_run_is_never_promoted_and_the_date_can_be_retried(
    ray_session, snaps, tmp_path
):
    reg = tmp_path / "reg"
    make_table(300, seed=5).to_parquet(snaps / "2026-11-01.parquet")
    day1 = nightly(config(snaps), reg, day="2026-11-01")
    broken = make_table(300, seed=6).rename(columns={"target": "label"})
    broken.to_parquet(snaps / "2026-11-02.parquet")
    with pytest.raises(DataError, match="target column 'target' is not in the table"):
        nightly(config(snaps), reg, day="2026-11-02")
    assert Registry(reg).champion()["run_id"] == day1.run_id
    hist = Registry(reg).history()
    last = hist.iloc[-1]
    assert last.status == "failed" and not last.promoted
    assert last.reason.startswith("run failed: target column 'target'")
    # a failure does not settle the date: fixed data, same date, runs
    make_table(300, seed=6).to_parquet(snaps / "2026-11-02.parquet")
    retry = nightly(config(snaps), reg, day="2026-11-02")
    assert retry.status in ("promoted", "kept")
    assert list(Registry(reg).history().status)[-2:] == ["failed", retry.status]


def test_a_run_that_fails_mid_way_is_not_promoted(ray_session, snaps, tmp_path):
    reg = tmp_path / "reg"
    make_table(300, seed=7).to_parquet(snaps / "a.parquet")
    first = nightly(config(snaps), reg, day="2026-11-01")

    def crash(cfg):  # the run directory exists, its manifest ends 'failed'
        from ensemble.runner import fit_run

        def boom(*_):
            raise RuntimeError("worker lost")

        return fit_run(cfg, on_fit=boom)

    with pytest.raises(RuntimeError, match="worker lost"):
        nightly(config(snaps), reg, day="2026-11-02", fit=crash)
    last = Registry(reg).history().iloc[-1]
    assert last.status == "failed" and last.reason == "run failed: worker lost"
    manifest = json.loads((reg / "runs" / last.run_id / "manifest.json").read_text())
    assert manifest["status"] == "failed"
    assert Registry(reg).champion()["run_id"] == first.run_id


def test_rows_the_champion_trained_on_are_not_scored(ray_session, snaps, tmp_path):
    reg = tmp_path / "reg"
    old = make_table(300, seed=8)
    old.to_parquet(snaps / "2026-11-01.parquet")
    day1 = nightly(config(snaps), reg, day="2026-11-01")
    grown = pd.concat([old, make_table(300, seed=9)], ignore_index=True)
    grown.to_parquet(snaps / "2026-11-02.parquet")
    day2 = nightly(config(snaps), reg, day="2026-11-02")
    f1 = pd.read_parquet(reg / "runs" / day1.run_id / "folds.parquet")
    f2 = pd.read_parquet(reg / "runs" / day2.run_id / "folds.parquet")
    champion_train = set(f1.row_id[f1.fold >= 0])  # rows 0..299 of both tables
    holdout = set(f2.row_id[f2.fold == -1])
    assert day2.n_scored == len(holdout - champion_train)
    assert day2.n_scored < len(holdout)


def test_overlapping_nightly_runs_are_refused(ray_session, snaps, tmp_path):
    make_table(200, seed=1).to_parquet(snaps / "x.parquet")
    reg = Registry(tmp_path / "reg")
    with reg.lock():
        with pytest.raises(RunStateError, match="is in use by another process"):
            nightly(config(snaps), reg.root, day="2026-11-01")


def test_latest_snapshot(tmp_path):
    for name in ("2026-11-01.parquet", "2026-11-03.parquet", "2026-11-02.parquet"):
        (tmp_path / name).write_bytes(b"")
    assert latest_snapshot(str(tmp_path)).endswith("2026-11-03.parquet")
    assert latest_snapshot(str(tmp_path / "*-02.parquet")).endswith("11-02.parquet")
    with pytest.raises(DataError, match="no data snapshot matches"):
        latest_snapshot(str(tmp_path / "*.csv"))


def test_nightly_cli(ray_session, snaps, tmp_path):
    make_table(300, seed=1).to_parquet(snaps / "2026-11-01.parquet")
    cfg = tmp_path / "nightly.yaml"
    cfg.write_text(
        f"data: {snaps}\ntarget: target\nlearners: [linear]\nfusions: []\n"
        "n_folds: 2\nreport: false\n"
    )
    reg = tmp_path / "reg"
    runner = CliRunner()
    args = ["nightly", str(cfg), "--registry", str(reg), "--date", "2026-11-01"]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    assert res.output.startswith("2026-11-01: promoted run nightly-2026-11-01-")
    assert "first champion" in res.output
    res = runner.invoke(app, args)
    assert res.exit_code == 0
    assert "2026-11-01: skipped" in res.output
    res = runner.invoke(app, [*args[:-1], "2026-13-01"])
    assert res.exit_code == 2
    assert "is not a date; use YYYY-MM-DD" in res.output


def test_mlp_members_warm_start_from_the_champion(ray_session, snaps, tmp_path):
    reg = tmp_path / "reg"
    cfg = config(
        snaps,
        learners=("mlp",),
        learner_params={"mlp": {"width": 32, "max_epochs": 8}},
    )
    make_table(300, seed=1).to_parquet(snaps / "2026-11-01.parquet")
    day1 = nightly(cfg, reg, day="2026-11-01")
    make_table(300, seed=2).to_parquet(snaps / "2026-11-02.parquet")
    day2 = nightly(cfg, reg, day="2026-11-02")
    manifest = json.loads((reg / "runs" / day2.run_id / "manifest.json").read_text())
    assert manifest["config"]["warm_start"] == day1.run_dir
    # a new column: the schema changed, so the night starts cold (and still runs)
    changed = make_table(300, seed=3)
    changed["x3"] = np.arange(300) % 7 * 1.5
    changed.to_parquet(snaps / "2026-11-03.parquet")
    day3 = nightly(cfg, reg, day="2026-11-03")
    manifest = json.loads((reg / "runs" / day3.run_id / "manifest.json").read_text())
    assert manifest["config"]["warm_start"] is None
    assert day3.status in ("promoted", "kept")
    assert day3.champion_score is not None  # the extra column is ignored


def test_warm_start_errors_before_anything_is_written(ray_session, snaps, tmp_path):
    from ensemble.exceptions import ConfigError
    from ensemble.runner import fit_run

    make_table(300, seed=1).to_parquet(snaps / "a.parquet")
    base = config(snaps, learners=("mlp",), out=str(tmp_path / "runs"))
    first = fit_run(
        base.replace(run_id="first", learner_params={"mlp": {"max_epochs": 3}})
    )
    other = make_table(300, seed=1).drop(columns=["x2"])
    other.to_parquet(tmp_path / "other.parquet")
    bad = base.replace(
        data=str(tmp_path / "other.parquet"),
        run_id="second",
        warm_start=first.run_dir.location,
    )
    with pytest.raises(ConfigError, match=r"columns only there: \['x2'\]"):
        fit_run(bad)
    assert not (tmp_path / "runs" / "second").exists()
    no_mlp = fit_run(base.replace(run_id="lin", learners=("linear",)))
    with pytest.raises(ConfigError, match="has no member to start from"):
        fit_run(base.replace(run_id="third", warm_start=no_mlp.run_dir.location))
