"""Run directories on S3: a real S3-compatible server (moto) on 127.0.0.1."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from ensemble import storage
from ensemble.cli import app
from ensemble.config import RunConfig
from ensemble.exceptions import RunStateError
from ensemble.model import load
from ensemble.report import write_report
from ensemble.runner import fit_run
from tests.cluster import free_port
from tests.conftest import make_table

pytestmark = pytest.mark.ray

BUCKET = "ens-test"


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    """moto's S3 server on 127.0.0.1, credentials in the environment; stopped by pid."""
    port = free_port()
    log = open(tmp_path_factory.mktemp("moto") / "moto.log", "wb")
    server = Path(sys.executable).with_name("moto_server")
    proc = subprocess.Popen(
        [str(server), "-H", "127.0.0.1", "-p", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    endpoint = f"http://127.0.0.1:{port}"
    for _ in range(100):
        try:
            urllib.request.urlopen(endpoint, timeout=1)
            break
        except OSError:
            time.sleep(0.1)
    env = {
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": endpoint,
        # The AWS SDK in pyarrow otherwise asks the EC2 metadata address for a
        # region and credentials first (ARROW-12810).
        "AWS_EC2_METADATA_DISABLED": "true",
        "ENSEMBLE_CACHE": str(tmp_path_factory.mktemp("cache")),
    }
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    import boto3

    client = boto3.client("s3")
    client.create_bucket(Bucket=BUCKET)
    yield client
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    log.close()


def keys(client, prefix: str) -> set[str]:
    out = set()
    for page in client.get_paginator("list_objects_v2").paginate(
        Bucket=BUCKET, Prefix=prefix
    ):
        out |= {o["Key"][len(prefix) :] for o in page.get("Contents", [])}
    return out


@pytest.fixture(scope="module")
def s3_run(ray_session, s3, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("s3run")
    frame = make_table(400)
    frame.to_parquet(tmp / "train.parquet")
    s3.upload_file(str(tmp / "train.parquet"), BUCKET, "data/train.parquet")
    cfg = RunConfig(
        data=f"s3://{BUCKET}/data/train.parquet",
        target="target",
        out=f"s3://{BUCKET}/runs",
        n_folds=3,
        learners=("linear", "lgbm"),
        portfolio=False,
        holdout=0.2,
        keep_models="all",  # every fold model's upload is checked
        fusions=("average", "stacking"),
        learner_params={"lgbm": {"max_rounds": 60}},
        run_id="r1",
    )
    return fit_run(cfg), frame


def test_run_is_written_to_s3_and_read_back(s3, s3_run, tmp_path):
    result, frame = s3_run
    uri = f"s3://{BUCKET}/runs/r1"
    assert result.run_dir.location == uri
    names = keys(s3, "runs/r1/")
    for required in (
        "manifest.json",
        "folds.parquet",
        "holdout.parquet",
        "fits.parquet",
        "trials.parquet",
        "leaderboard.parquet",
        "fusion.parquet",
        "report.html",
    ):
        assert required in names
    assert any(n.startswith("oof/") and n.endswith(".parquet") for n in names)
    # fold models were uploaded by the fit actors, fusions by the driver
    for member in ("linear", "lgbm"):
        for k in range(3):
            assert f"models/{member}/fold{k}/meta.json" in names
    assert "models/fusion/stacking.joblib" in names
    assert not any(n.startswith("checkpoints/") for n in names)
    assert not any(".tmp-" in n for n in names)

    # the refits on every row were uploaded by their fits too
    for member in result.manifest["refit"]["members"]:
        assert f"models/{member}/full/meta.json" in names
    assert load(uri).refitted_ == result.manifest["refit"]["members"]
    # read back: the manifest, the tables, and the fold models predict the
    # holdout exactly as the run recorded it
    fitted = load(uri, folds=True)
    manifest = fitted.run.require_complete()
    assert manifest["status"] == "complete"
    assert manifest["config"]["out"] == f"s3://{BUCKET}/runs"
    board = fitted.run.read_table("leaderboard.parquet")
    assert set(board.model) == {"linear", "lgbm", "average", "stacking"}
    pd.testing.assert_frame_equal(board, result.leaderboard)
    hold = fitted.run.read_table("holdout.parquet")
    hold = hold[hold.model == fitted.model].sort_values("row_id")
    rows = frame.iloc[hold.row_id.to_numpy()].drop(columns=["target"])
    pred = fitted.predict_frame(rows)
    np.testing.assert_allclose(pred["pred_yes"], hold["pred_yes"], rtol=1e-9)
    # the staging copy of the driver is gone; the cache holds a complete copy
    assert not result.run_dir.path.exists()
    assert fitted.run.path.is_relative_to(os.environ["ENSEMBLE_CACHE"])


def test_cli_predict_and_report_read_an_s3_run(s3, s3_run, tmp_path):
    _, frame = s3_run
    uri = f"s3://{BUCKET}/runs/r1"
    src = tmp_path / "new.parquet"
    frame.drop(columns=["target"]).head(50).to_parquet(src)
    out = tmp_path / "pred.parquet"
    res = CliRunner().invoke(
        app, ["predict", uri, "--data", str(src), "--out", str(out), "-q"]
    )
    assert res.exit_code == 0, res.output
    pred = pd.read_parquet(out)
    expect = load(uri).predict_frame(frame.drop(columns=["target"]).head(50))
    np.testing.assert_allclose(pred["pred_yes"], expect["pred_yes"], rtol=1e-9)
    page = write_report(uri, tmp_path / "r.html").read_text()
    assert "stacking" in page


def test_existing_s3_run_is_not_overwritten_and_missing_run_is_clear(s3, s3_run):
    cfg = RunConfig(
        data=f"s3://{BUCKET}/data/train.parquet",
        target="target",
        out=f"s3://{BUCKET}/runs",
        learners=("linear",),
        run_id="r1",
    )
    with pytest.raises(RunStateError, match="already exists"):
        fit_run(cfg)
    with pytest.raises(RunStateError, match="not a run directory"):
        load(f"s3://{BUCKET}/runs/nope")


def test_resume_an_interrupted_s3_run(s3, s3_run):
    """Ctrl-C after 3 fits; --resume on the URI reuses them from S3 checkpoints."""
    result, _ = s3_run
    cfg = RunConfig.from_dict(
        {**load(f"s3://{BUCKET}/runs/r1").run.read_manifest()["config"], "run_id": "r2"}
    )
    seen = []

    def stop(r, done, total):
        seen.append(r)
        if done == 3:
            raise KeyboardInterrupt

    staging = _staging_dirs()
    with pytest.raises(KeyboardInterrupt):
        fit_run(cfg, on_fit=stop)
    assert _staging_dirs() == staging  # the failed run's staging copy is gone
    names = keys(s3, "runs/r2/")
    assert sum(n.startswith("checkpoints/fits/") for n in names) >= 3
    res = CliRunner().invoke(app, ["fit", "--resume", f"s3://{BUCKET}/runs/r2", "-q"])
    assert res.exit_code == 0, res.output
    resumed = load(f"s3://{BUCKET}/runs/r2")
    fits = resumed.run.read_table("fits.parquet")
    assert fits.resumed.sum() >= 3
    assert not any(n.startswith("checkpoints/") for n in keys(s3, "runs/r2/"))
    board = resumed.run.read_table("leaderboard.parquet")
    pd.testing.assert_frame_equal(
        board[["model", "oof_score", "holdout_score"]],
        result.leaderboard[["model", "oof_score", "holdout_score"]],
    )


def _staging_dirs():
    import os
    import tempfile

    root = tempfile.gettempdir()
    return {e for e in os.listdir(root) if e.startswith("ensemble-stage-")}


def test_uri_helpers():
    assert storage.is_uri("s3://b/x") and storage.is_uri("gs://b/x")
    assert not storage.is_uri("/tmp/x") and not storage.is_uri("file:///tmp/x")
    assert not storage.is_uri(Path("s3:/b"))
    assert storage.join("s3://b/runs?scheme=http", "r1", "a.parquet") == (
        "s3://b/runs/r1/a.parquet?scheme=http"
    )
    assert storage.parent_and_name("s3://b/runs/r1/") == ("s3://b/runs", "r1")
