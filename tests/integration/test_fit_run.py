"""End-to-end runs on the one shared local Ray."""

import json
import os
import signal

import numpy as np
import pandas as pd
import pytest

from ensemble.artifacts import REQUIRED_COLUMNS, RunDirectory
from ensemble.config import DEFAULT_FUSIONS, RunConfig
from ensemble.exceptions import BaseLearnerFailed, DataError
from ensemble.learners import Learner
from ensemble.metrics import metrics_for_task
from ensemble.runner import fit_run
from tests.conftest import make_table

pytestmark = pytest.mark.ray

FAST = {
    "rf": {"n_estimators": 30},
    "et": {"n_estimators": 30},
    "hgb": {"max_iter": 60},
    "lgbm": {"max_rounds": 200},
    "xgb": {"max_rounds": 200},
    "mlp": {"max_epochs": 8},
}


def _config(tmp_path, frame, **kw):
    path = tmp_path / "data.parquet"
    frame.to_parquet(path)
    base = {
        "data": str(path),
        "target": "target",
        "out": str(tmp_path / "runs"),
        "n_folds": 3,
        "learners": ("linear", "lgbm", "rf"),
        "learner_params": FAST,
        "seed": 0,
    }
    base.update(kw)
    return RunConfig(**base)


@pytest.fixture(scope="module")
def binary_run(ray_session, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("binary")
    config = _config(tmp, make_table(600), learners=("linear", "lgbm", "rf", "mlp"))
    return config, fit_run(config)


def test_run_directory_contract(binary_run):
    config, result = binary_run
    run = result.run_dir
    manifest = json.loads((run.path / "manifest.json").read_text())
    for key in (
        "run_id",
        "status",
        "task",
        "target",
        "classes",
        "n_rows",
        "n_features",
        "data_sha256",
        "config",
        "seed",
        "versions",
        "started_at",
        "finished_at",
        "best",
    ):
        assert key in manifest, key
    assert manifest["status"] == "complete"
    assert manifest["task"] == "binary" and manifest["classes"] == ["no", "yes"]
    assert manifest["n_rows"] == 600 and manifest["n_features"] == 3
    for name, cols in REQUIRED_COLUMNS.items():
        if name == "trials.parquet":
            continue  # written by the tuning stage
        frame = pd.read_parquet(run.path / name)
        assert set(cols) <= set(frame.columns), name
    oof = pd.read_parquet(run.path / "oof")
    assert {"pred_no", "pred_yes"} <= set(oof.columns)
    assert not any(
        p.name.startswith(("oof.tmp", "manifest.json.tmp")) for p in run.path.iterdir()
    )


def test_oof_covers_every_training_row_once_per_member(binary_run):
    _, result = binary_run
    run = result.run_dir
    folds = pd.read_parquet(run.path / "folds.parquet")
    oof = pd.read_parquet(run.path / "oof")
    train = folds[folds.fold >= 0]
    assert sorted(oof.member.unique()) == sorted(result.manifest["members"])
    for member, part in oof.groupby("member"):
        assert sorted(part.row_id) == sorted(train.row_id), member
        merged = part.merge(folds, on="row_id", suffixes=("", "_f"))
        assert (merged.fold == merged.fold_f).all()
    np.testing.assert_allclose(oof[["pred_no", "pred_yes"]].sum(axis=1), 1.0, atol=1e-6)


def test_saved_fold_models_reproduce_oof_and_holdout(binary_run, tmp_path):
    config, result = binary_run
    run = result.run_dir
    from ensemble.data import load_table, prepare

    frame, _ = load_table(config.data)
    d = prepare(frame, "target", n_folds=3, seed=0)
    oof = pd.read_parquet(run.path / "oof")
    hold = pd.read_parquet(run.path / "holdout.parquet")
    member = "lgbm"
    hold_preds = []
    for k in range(3):
        model = Learner.load(run.model_dir(member, k))
        rows = np.flatnonzero(d.fold == k)
        expect = oof[(oof.member == member) & (oof.fold == k)].sort_values("row_id")
        np.testing.assert_allclose(
            model.predict(d.X[rows])[:, 1], expect.pred_yes, rtol=1e-6
        )
        hold_preds.append(model.predict(d.X[d.fold == -1]))
    mine = hold[hold.model == member].sort_values("row_id")
    np.testing.assert_allclose(np.mean(hold_preds, 0)[:, 1], mine.pred_yes, rtol=1e-6)
    assert (mine.y_true.isin(["no", "yes"])).all()


def test_leaderboard_rows_and_best(binary_run):
    _, result = binary_run
    board = pd.read_parquet(result.run_dir.path / "leaderboard.parquet")
    members = set(result.manifest["members"])
    assert set(board[board.kind == "member"].model) == members
    assert set(board[board.kind == "fusion"].model) == set(DEFAULT_FUSIONS)
    assert set(metrics_for_task("binary")) <= set(board.columns)
    assert (board.metric == "roc_auc").all()
    best = board.loc[board.oof_score.idxmax(), "model"]  # chosen by OOF, not holdout
    assert result.manifest["best"] == best == result.best
    assert board.holdout_score.min() > 0.8
    fusion = pd.read_parquet(result.run_dir.path / "fusion.parquet")
    avg = fusion[fusion.fusion == "average"]
    assert len(avg) == len(members) and avg.weight.sum() == pytest.approx(1.0)
    sel = fusion[fusion.fusion == "selection"]
    assert sel.weight.sum() == pytest.approx(1.0)


def test_fits_run_in_parallel_on_two_actors(binary_run):
    _, result = binary_run
    fits = pd.read_parquet(result.run_dir.path / "fits.parquet")
    assert len(fits) == 4 * 3
    assert fits.worker.nunique() >= 2
    start = pd.to_datetime(fits.started_at)
    end = start + pd.to_timedelta(fits.fit_s + fits.predict_s, unit="s")
    overlaps = 0
    for i in range(len(fits)):
        for j in range(i + 1, len(fits)):
            if (
                fits.worker[i] != fits.worker[j]
                and start[i] < end[j]
                and start[j] < end[i]
            ):
                overlaps += 1
    assert overlaps > 0
    assert (fits.n_train > 0).all() and (fits.gpu == False).all()  # noqa: E712


def test_same_seed_same_oof_and_scores(binary_run, tmp_path):
    config, result = binary_run
    again = fit_run(config.replace(out=str(tmp_path / "again")))
    a = pd.read_parquet(result.run_dir.path / "oof").sort_values(["member", "row_id"])
    b = pd.read_parquet(again.run_dir.path / "oof").sort_values(["member", "row_id"])
    pd.testing.assert_frame_equal(a.reset_index(drop=True), b.reset_index(drop=True))
    cols = ["model", "oof_score", "holdout_score"]
    pd.testing.assert_frame_equal(result.leaderboard[cols], again.leaderboard[cols])


@pytest.mark.parametrize(
    ("task", "metric"), [("multiclass", "log_loss"), ("regression", "rmse")]
)
def test_multiclass_and_regression(ray_session, tmp_path, task, metric):
    config = _config(
        tmp_path, make_table(500, task=task), learners=("linear", "lgbm", "xgb")
    )
    result = fit_run(config)
    board = result.leaderboard
    assert (board.metric == metric).all()
    assert set(metrics_for_task(task)) <= set(board.columns)
    oof = pd.read_parquet(result.run_dir.path / "oof")
    if task == "regression":
        assert "pred" in oof.columns
        assert board.set_index("model").loc["lgbm", "r2"] > 0.7
    else:
        assert {f"pred_{c}" for c in result.manifest["classes"]} <= set(oof.columns)


def test_failing_member_is_dropped_and_reported(ray_session, tmp_path):
    params = {**FAST, "rf": {"max_depth": -5}}  # sklearn rejects it at fit time
    result = fit_run(_config(tmp_path, make_table(300), learner_params=params))
    assert result.manifest["status"] == "complete"
    assert "rf" in result.manifest["failed_members"]
    assert "max_depth" in result.manifest["failed_members"]["rf"]
    assert "rf" not in set(result.leaderboard.model)


def test_all_members_failing_marks_the_run_failed(ray_session, tmp_path):
    params = {"rf": {"max_depth": -5}}
    config = _config(tmp_path, make_table(300), learners=("rf",), learner_params=params)
    with pytest.raises(BaseLearnerFailed, match="rf"):
        fit_run(config)
    (run_dir,) = (tmp_path / "runs").iterdir()
    manifest = RunDirectory(run_dir).read_manifest()
    assert manifest["status"] == "failed" and "max_depth" in manifest["error"]


def test_bad_data_writes_nothing(ray_session, tmp_path):
    config = _config(tmp_path, make_table(100), target="missing_col")
    with pytest.raises(
        DataError, match="target column 'missing_col' is not in the table"
    ):
        fit_run(config)
    assert not (tmp_path / "runs").exists()


def _processes():
    from pathlib import Path

    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmd = (
                    (entry / "cmdline")
                    .read_bytes()
                    .replace(b"\0", b" ")
                    .decode()
                    .strip()
                )
            except OSError:
                continue
            yield int(entry.name), cmd


@pytest.mark.skipif(
    not os.path.isdir("/proc"), reason="needs /proc to find worker pids"
)
def test_killed_worker_fit_is_rerun_and_run_matches(ray_session, tmp_path):
    """Fault drill: SIGKILL a worker mid-fit; its fit runs again on another."""
    frame = make_table(3000)
    params = {**FAST, "rf": {"n_estimators": 150}}
    base = _config(tmp_path, frame, learners=("rf", "et"), learner_params=params)
    undisturbed = fit_run(base.replace(out=str(tmp_path / "a")))
    killed: list[int] = []

    def on_fit(r, done, total):
        # Between results the other slot is usually mid-fit (two equal fits
        # can finish together, so keep trying); Ray titles a busy worker
        # process "ray::fit_fold".
        if not killed and done < total - 1:
            for pid, cmd in _processes():
                if cmd.startswith("ray::fit_fold"):
                    os.kill(pid, signal.SIGKILL)
                    killed.append(pid)
                    return

    result = fit_run(base.replace(out=str(tmp_path / "b")), on_fit=on_fit)
    assert killed, "no worker was killed"
    assert result.manifest["status"] == "complete"
    fits = pd.read_parquet(result.run_dir.path / "fits.parquet")
    assert len(fits) == 6
    a = pd.read_parquet(undisturbed.run_dir.path / "oof").sort_values(
        ["member", "row_id"]
    )
    b = pd.read_parquet(result.run_dir.path / "oof").sort_values(["member", "row_id"])
    pd.testing.assert_frame_equal(a.reset_index(drop=True), b.reset_index(drop=True))
