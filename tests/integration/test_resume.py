"""Resume: an interrupted run continues and ends equal to an uninterrupted one."""

from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest

from ensemble.artifacts import RunDirectory
from ensemble.config import RunConfig
from ensemble.exceptions import RunStateError
from ensemble.model import load
from ensemble.runner import fit_run, resume_config
from tests.cluster import ENV, session_pids
from tests.conftest import make_table

pytestmark = pytest.mark.ray

ENSEMBLE = [sys.executable, "-m", "ensemble.cli"]
PARAMS = {"rf": {"n_estimators": 100}, "et": {"n_estimators": 100}}


def _config(tmp_path, **kw):
    data = tmp_path / "data.parquet"
    if not data.exists():
        make_table(1500).to_parquet(data)
    base = {
        "data": str(data),
        "target": "target",
        "out": str(tmp_path / "runs"),
        "n_folds": 3,
        "learners": ("linear", "rf", "et"),
        "learner_params": PARAMS,
        "fusions": ("average", "selection", "stacking", "neural"),
        "seed": 3,
        "report": False,  # the report has tests of its own
    }
    base.update(kw)
    return RunConfig(**base)


def _assert_same_run(a, b):
    assert not (a / "holdout.parquet").exists()  # every row is in the folds
    for name, keys in (("oof", ["member", "row_id"]), ("fusion_oof.parquet", None)):
        x, y = pd.read_parquet(a / name), pd.read_parquet(b / name)
        if keys:
            x, y = x.sort_values(keys), y.sort_values(keys)
        pd.testing.assert_frame_equal(
            x.reset_index(drop=True), y.reset_index(drop=True)
        )
    for name in ("fusion.parquet", "folds.parquet"):
        pd.testing.assert_frame_equal(
            pd.read_parquet(a / name), pd.read_parquet(b / name)
        )
    x = pd.read_parquet(a / "leaderboard.parquet").drop(columns="fit_s")
    y = pd.read_parquet(b / "leaderboard.parquet").drop(columns="fit_s")
    pd.testing.assert_frame_equal(x, y)
    ma, mb = RunDirectory(a).read_manifest(), RunDirectory(b).read_manifest()
    assert ma["best"] == mb["best"] and ma["members"] == mb["members"]


@pytest.fixture(scope="module")
def reference(ray_session, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("reference")
    return fit_run(_config(tmp, run_id="ref")).run_dir.path


def test_interrupted_run_resumes_to_the_same_result(reference, tmp_path):
    config = _config(tmp_path, run_id="r")

    def stop_after_three(result, done, total):
        if done == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fit_run(config, on_fit=stop_after_three)
    run = tmp_path / "runs" / "r"
    assert RunDirectory(run).read_manifest()["status"] == "failed"
    with pytest.raises(RunStateError, match="is failed, not complete"):
        load(run)
    assert len(list((run / "checkpoints" / "fits").glob("*/*.pkl"))) == 3

    seen = []
    result = fit_run(
        resume_config(run), resume=True, on_fit=lambda r, d, t: seen.append((d, t))
    )
    assert result.manifest["status"] == "complete"
    assert len(result.manifest["resumed_at"]) == 1
    fits = pd.read_parquet(run / "fits.parquet")
    assert fits.resumed.sum() == 3 and len(fits) == 9
    # only the 6 missing fits ran, then the chosen model's refits on every row
    refits = len(result.manifest["refit"]["members"])
    assert seen[0] == (4, 9) and len(seen) == 6 + refits and refits >= 1
    assert not (run / "checkpoints").exists()
    _assert_same_run(reference, run)


def _kill_session(proc):
    """SIGKILL a driver started in its own session, then what it left behind."""
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    time.sleep(1)
    for pid in session_pids(proc.pid):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _start_driver(args, log):
    return subprocess.Popen(
        [*ENSEMBLE, "fit", *args],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=ENV,
        start_new_session=True,
    )


def _wait_for(cond, proc, log, timeout=180):
    end = time.monotonic() + timeout
    while not cond():
        assert proc.poll() is None, log.read_text()
        assert time.monotonic() < end, log.read_text()
        time.sleep(0.1)


def test_driver_sigkill_then_resume(reference, tmp_path):
    """Fault drill (c): the driver is SIGKILLed mid-run, then ``--resume``."""
    config = _config(tmp_path, run_id="killed")
    cfg = tmp_path / "run.yaml"
    cfg.write_text(json.dumps(config.to_dict()))  # JSON is YAML
    run = tmp_path / "runs" / "killed"
    log_path = tmp_path / "driver.log"
    with open(log_path, "wb") as log:
        proc = _start_driver([str(cfg), "--num-cpus", "2"], log)
        try:
            _wait_for(
                lambda: len(list((run / "checkpoints" / "fits").glob("*/*.pkl"))) >= 2,
                proc,
                log_path,
            )
        finally:
            _kill_session(proc)
    assert RunDirectory(run).read_manifest()["status"] == "running"
    res = subprocess.run(
        [*ENSEMBLE, "predict", str(run), "--data", config.data, "--out", "p.parquet"],
        capture_output=True,
        text=True,
        env=ENV,
        cwd=tmp_path,
    )
    assert res.returncode == 2
    assert "is running, not complete" in res.stderr
    assert not (tmp_path / "p.parquet").exists()

    result = fit_run(resume_config(run), resume=True)
    assert result.manifest["status"] == "complete"
    fits = pd.read_parquet(run / "fits.parquet")
    assert fits.resumed.sum() >= 2
    _assert_same_run(reference, run)


def _finished_trials(experiment, n_folds):
    """{trial_id: cv_score} of the trials Tune recorded as run on every fold."""
    out = {}
    for result in experiment.glob("*/result.json"):
        for line in result.read_text().splitlines():
            row = json.loads(line)
            if row.get("folds") == n_folds:
                out[str(row["trial_id"])] = row["cv_score"]
    return out


def test_resumed_tuning_keeps_finished_trials(ray_session, tmp_path):
    config = _config(
        tmp_path,
        run_id="tuned",
        learners=("linear", "lgbm"),
        portfolio=False,
        learner_params={"lgbm": {"max_rounds": 100}},
        n_trials=6,
        search="random",
        fusions=("average",),
    )
    cfg = tmp_path / "run.yaml"
    cfg.write_text(json.dumps(config.to_dict()))
    run = tmp_path / "runs" / "tuned"
    log_path = tmp_path / "driver.log"
    with open(log_path, "wb") as log:
        proc = _start_driver([str(cfg), "--num-cpus", "2"], log)
        try:
            _wait_for(
                lambda: (
                    (run / "tune" / "linear.family.pkl").exists()
                    and len(_finished_trials(run / "tune" / "lgbm", 3)) >= 2
                ),
                proc,
                log_path,
            )
        finally:
            _kill_session(proc)
    linear_members, linear_trials = pickle.loads(
        (run / "tune" / "linear.family.pkl").read_bytes()
    )
    lgbm_done = _finished_trials(run / "tune" / "lgbm", 3)

    result = fit_run(resume_config(run), resume=True)
    trials = pd.read_parquet(run / "trials.parquet")
    # The finished family is read back, not searched again.
    cols = ["trial_id", "params", "cv_score", "status", "time_s"]
    pd.testing.assert_frame_equal(
        trials.loc[trials.learner == "linear", cols].reset_index(drop=True),
        linear_trials[cols].reset_index(drop=True),
        check_dtype=False,  # Parquet round trip: object -> str
    )
    assert [m.name for m in linear_members] == ["linear_tuned", "linear_tuned_2"]
    # The interrupted family kept its finished trials and ran only the rest.
    lgbm = trials[trials.learner == "lgbm"].set_index("trial_id")
    assert len(lgbm) == 6
    for trial_id, cv in lgbm_done.items():
        assert lgbm.loc[trial_id, "cv_score"] == pytest.approx(cv)
    assert result.manifest["status"] == "complete"


def test_resume_refuses_a_run_in_use(reference, tmp_path):
    config = _config(tmp_path, run_id="busy")
    run = RunDirectory.create(config.out, "busy")
    run.write_manifest(status="running", config=config.to_dict())
    with run.lock(), pytest.raises(RunStateError, match="in use by another process"):
        fit_run(config, resume=True)


def test_resume_of_a_complete_run_is_refused(reference):
    config = resume_config(reference)
    with pytest.raises(RunStateError, match="already complete; nothing to resume"):
        fit_run(config, resume=True)
