"""``ensemble submit``: Ray Jobs on a real local head (dashboard on 127.0.0.1)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from tests.cluster import ENV, LocalCluster
from tests.conftest import make_table

ENSEMBLE = str(Path(sys.executable).with_name("ensemble"))


@pytest.fixture(scope="module")
def head(tmp_path_factory):
    cluster = LocalCluster(tmp_path_factory.mktemp("jobs"), dashboard=True)
    try:
        cluster.start_head(cpus=2, object_store_mb=300)
        from ray.job_submission import JobSubmissionClient

        end = time.monotonic() + 90
        while True:  # the dashboard's job API comes up after the node
            try:
                JobSubmissionClient(cluster.dashboard_url).list_jobs()
                break
            except Exception:
                if time.monotonic() > end:
                    raise
                time.sleep(1)
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    path = tmp_path_factory.mktemp("jobdata") / "train.parquet"
    make_table(300).to_parquet(path)
    return path


def ensemble(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [ENSEMBLE, *args], capture_output=True, text=True, env=ENV, timeout=timeout
    )


def submit(head, table, out, run_id: str, *extra: str):
    return ensemble(
        "submit",
        "--address",
        head.dashboard_url,
        "--data",
        str(table),
        "--target",
        "target",
        "--out",
        str(out),
        "--run-id",
        run_id,
        *extra,
    )


def test_submit_runs_a_fit_as_a_ray_job_and_streams_its_logs(head, table, tmp_path):
    res = submit(
        head,
        table,
        tmp_path / "runs",
        "job1",
        *("--learners", "linear,lgbm", "--no-portfolio"),
        *("--fusions", "average", "--folds", "3", "--no-report"),
    )
    assert res.returncode == 0, res.stdout + res.stderr
    assert "job: ensemble-job1 (SUCCEEDED)" in res.stdout
    assert f"run directory: {tmp_path / 'runs' / 'job1'}" in res.stdout
    assert "leaderboard" in res.stdout  # the job's own output, streamed
    run = tmp_path / "runs" / "job1"
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["status"] == "complete"
    assert manifest["config"]["learners"] == ["linear", "lgbm"]
    board = pd.read_parquet(run / "leaderboard.parquet")
    assert set(board.model) == {"linear", "lgbm", "average"}
    fits = pd.read_parquet(run / "fits.parquet")
    assert len(fits) == 6
    # Ray kept the job: its metadata names the run directory
    from ray.job_submission import JobSubmissionClient

    info = JobSubmissionClient(head.dashboard_url).get_job_info("ensemble-job1")
    assert info.metadata["ensemble_run"] == str(run)
    assert info.entrypoint.startswith("python -m ensemble fit --config-json")


def test_failing_job_exits_1_with_the_jobs_error(head, table, tmp_path):
    res = submit(head, table, tmp_path / "runs", "bad1", "--target", "label", "-q")
    assert res.returncode == 1, res.stdout + res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("error: job ensemble-bad1 FAILED: target column 'label'")
    assert not (tmp_path / "runs" / "bad1").exists()


def test_no_wait_returns_the_job_id_at_once(head, table, tmp_path):
    extra = ("--learners", "linear", "--fusions", "average", "--no-report")
    res = submit(head, table, tmp_path / "runs", "nw1", "--no-wait", *extra)
    assert res.returncode == 0, res.stderr
    assert "job: ensemble-nw1 (PENDING)" in res.stdout
    assert "ray job logs --follow ensemble-nw1" in res.stdout
    from ray.job_submission import JobSubmissionClient

    client = JobSubmissionClient(head.dashboard_url)
    # The same submission id again while the job is queued or running: Ray
    # refuses, we say so in one line. (That a job runs to the end is the test
    # above; this one is stopped.)
    again = submit(head, table, tmp_path / "runs", "nw1", "-q")
    assert again.returncode == 2
    assert "refused job 'ensemble-nw1'" in again.stderr
    client.stop_job("ensemble-nw1")
    end = time.monotonic() + 120
    while str(client.get_job_status("ensemble-nw1").value) not in (
        "STOPPED",
        "SUCCEEDED",
        "FAILED",
    ):
        assert time.monotonic() < end
        time.sleep(0.5)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--bogus", "1"], "No such option: --bogus"),
        (["--resume", "x"], "--resume is not available with submit"),
        ([], "no cluster given; pass --address"),
    ],
)
def test_submit_usage_errors_are_one_line(args, message, monkeypatch):
    # In the process, without a subprocess per case; that the one line goes to
    # a real process's stderr is the next test.
    from typer.testing import CliRunner

    from ensemble.cli import app

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    env_args = ["--address", "http://127.0.0.1:9"] if args else []
    argv = ["submit", *env_args, *args, "--data", "x.csv", "--target", "y"]
    res = CliRunner().invoke(app, argv)
    assert res.exit_code == 2
    lines = res.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {message}")


def test_unreachable_dashboard_is_one_line(tmp_path):
    res = ensemble(
        "submit", "--address", "http://127.0.0.1:9", "--data", "x.csv", "--target", "y"
    )
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "cannot reach the Ray dashboard at http://127.0.0.1:9" in lines[0]


def test_token_auth_cluster(table, tmp_path_factory):
    """A head with RAY_AUTH_MODE=token: refused without the token, runs with it."""
    token = "0123456789abcdef" * 4
    tmp_path = tmp_path_factory.mktemp("tok")  # short: Ray's socket paths < 108 B
    cluster = LocalCluster(
        tmp_path / "c",
        dashboard=True,
        env={"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token},
    )
    try:
        cluster.start_head(cpus=1, object_store_mb=200)
        args = [
            "submit",
            "--address",
            cluster.dashboard_url,
            "--data",
            str(table),
            "--target",
            "target",
            "--out",
            str(tmp_path / "runs"),
            "--learners",
            "linear",
            "--fusions",
            "average",
            "--no-report",
            "-q",
        ]
        refused = ensemble(*args, "--run-id", "t0")
        assert refused.returncode == 2
        lines = refused.stderr.strip().splitlines()
        assert len(lines) == 1 and "uses token authentication" in lines[0]
        end = time.monotonic() + 60
        while True:  # the dashboard may still be starting: retry until it answers
            ok = subprocess.run(
                [ENSEMBLE, *args, "--run-id", "t1"],
                capture_output=True,
                text=True,
                timeout=300,
                env={**ENV, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token},
            )
            if ok.returncode == 0 or time.monotonic() > end:
                break
            if "cannot reach" not in ok.stderr:
                break
            time.sleep(2)
        assert ok.returncode == 0, ok.stderr
        manifest = json.loads((tmp_path / "runs" / "t1" / "manifest.json").read_text())
        assert manifest["status"] == "complete"
    finally:
        cluster.stop()
