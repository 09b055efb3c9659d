"""End-to-end runs on the one shared local Ray."""

import json
import os
import signal

import numpy as np
import pandas as pd
import pytest

from ensemble.artifacts import REQUIRED_COLUMNS, RunDirectory, fold_dirs
from ensemble.config import DEFAULT_FUSIONS, RunConfig
from ensemble.exceptions import BaseLearnerFailed, DataError
from ensemble.learners import Learner
from ensemble.metrics import metrics_for_task, score
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
        "report": False,  # the report has tests of its own
        "keep_models": "all",  # tests read every member's fold models
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
    assert manifest["dropped_columns"] == {}
    for name, cols in REQUIRED_COLUMNS.items():
        if name in ("trials.parquet", "holdout.parquet"):
            continue  # written by the tuning stage; only with a holdout
        frame = pd.read_parquet(run.path / name)
        assert set(cols) <= set(frame.columns), name
    # Every row is in the folds: no holdout rows, no holdout.parquet.
    assert not (run.path / "holdout.parquet").exists()
    assert (pd.read_parquet(run.path / "folds.parquet").fold >= 0).all()
    oof = pd.read_parquet(run.path / "oof")
    assert {"pred_no", "pred_yes", "y_true"} <= set(oof.columns)
    fused = pd.read_parquet(run.path / "fusion_oof.parquet")
    assert set(fused.model) == set(manifest["fusions"])
    assert len(fused) == 600 * len(manifest["fusions"])
    assert not any(
        p.name.startswith(("oof.tmp", "manifest.json.tmp")) for p in run.path.iterdir()
    )


def test_the_portfolio_is_fitted_beside_the_defaults(binary_run):
    _, result = binary_run
    members = result.manifest["members"]
    assert members == ["linear", "lgbm", "lgbm_xt", "lgbm_large", "rf", "mlp"]
    models = result.run_dir.path / "models"
    xt = Learner.load(models / "lgbm_xt" / "fold0")
    assert xt.params["extra_trees"] is True
    large = Learner.load(models / "lgbm_large" / "fold0")
    assert large.params["num_leaves"] == 128
    # the user's learner_params reach every configuration of the family
    assert xt.params["max_rounds"] == large.params["max_rounds"] == 200


def test_oof_covers_every_row_once_per_member(binary_run):
    _, result = binary_run
    run = result.run_dir
    folds = pd.read_parquet(run.path / "folds.parquet")
    oof = pd.read_parquet(run.path / "oof")
    assert sorted(oof.member.unique()) == sorted(result.manifest["members"])
    for member, part in oof.groupby("member"):
        assert sorted(part.row_id) == sorted(folds.row_id), member
        merged = part.merge(folds, on="row_id", suffixes=("", "_f"))
        assert (merged.fold == merged.fold_f).all()
    np.testing.assert_allclose(oof[["pred_no", "pred_yes"]].sum(axis=1), 1.0, atol=1e-6)


def test_saved_fold_models_reproduce_oof_and_predict_their_average(binary_run):
    config, result = binary_run
    run = result.run_dir
    from ensemble.data import load_table, prepare
    from ensemble.model import load

    frame, _ = load_table(config.data)
    d = prepare(frame, "target", n_folds=3, seed=0)
    oof = pd.read_parquet(run.path / "oof")
    member = "lgbm"
    preds = []
    for k in range(3):
        model = Learner.load(run.model_dir(member, k))
        rows = np.flatnonzero(d.fold == k)
        expect = oof[(oof.member == member) & (oof.fold == k)].sort_values("row_id")
        np.testing.assert_allclose(
            model.predict(d.X[rows])[:, 1], expect.pred_yes, rtol=1e-6
        )
        preds.append(model.predict(d.X))
    # Asked for its fold models, a member predicts new rows with their average.
    got = load(run.path, member, folds=True).predict_proba(frame.drop(columns="target"))
    np.testing.assert_allclose(got, np.mean(preds, axis=0), rtol=1e-12)


def test_the_chosen_model_predicts_with_its_members_refitted_on_every_row(binary_run):
    import joblib

    from ensemble.data import load_table, prepare
    from ensemble.model import load

    config, result = binary_run
    run, manifest = result.run_dir, result.manifest
    best = manifest["best"]
    frame, _ = load_table(config.data)
    d = prepare(frame, "target", n_folds=3, seed=0)
    models = run.path / "models"
    fused = (models / "fusion" / f"{best}.joblib").is_file()
    blob = joblib.load(models / "fusion" / f"{best}.joblib") if fused else None
    used = (
        [
            m
            for i, m in enumerate(blob["members"])
            if i not in blob["fusion"].unused_members()
        ]
        if fused
        else [best]
    )
    refit = manifest["refit"]
    # the MLP is not refitted: its fold models' average predicts for it
    bagged = [m for m in used if m.startswith("mlp")]
    refitted = [m for m in used if m not in bagged]
    assert refit["members"] == refitted and refit["kept_on_folds"] == []
    assert refit["bagged"] == bagged
    assert not any((models / m / "full").exists() for m in bagged)
    # one model per member, trained on every row (the folds' models stay: all)
    assert refit["n_train"] == dict.fromkeys(refitted, 600)
    preds = {m: Learner.load(models / m / "full").predict(d.X) for m in refitted}
    for m in bagged:
        preds[m] = np.mean(
            [Learner.load(f).predict(d.X) for f in fold_dirs(models / m)],
            axis=0,
        )
    model = load(run.path)
    assert model.refitted_ == refitted
    got = model.predict_proba(frame.drop(columns="target"))
    if fused:
        P = np.stack(
            [preds.get(m, model._placeholder(600)) for m in blob["members"]], axis=1
        )
        X = d.X if blob["fusion"].uses_features else None
        want = blob["fusion"].predict(P, X)
    else:
        want = preds[best]
    np.testing.assert_array_equal(got, want)
    # and it is not the fold models' average
    folds = load(run.path, folds=True).predict_proba(frame.drop(columns="target"))
    assert not np.array_equal(got, folds)
    assert np.abs(got - folds).max() < 0.2  # the same models, on half again the rows


def test_leaderboard_is_scored_on_oof_and_the_choice_is_robust(binary_run):
    from ensemble import leaderboard as lb

    _, result = binary_run
    run = result.run_dir.path
    board = pd.read_parquet(run / "leaderboard.parquet")
    members = set(result.manifest["members"])
    assert set(board[board.kind == "member"].model) == members
    assert set(board[board.kind == "fusion"].model) == set(DEFAULT_FUSIONS)
    assert set(metrics_for_task("binary")) <= set(board.columns)
    assert (board.metric == "roc_auc").all() and (board.scored_on == "oof").all()
    assert board.holdout_score.isna().all()
    # with no holdout the metric columns are the OOF ones
    np.testing.assert_allclose(board.roc_auc, board.oof_score, rtol=1e-12)
    assert board.oof_score.min() > 0.8
    # the choice: recomputed from the stored OOF predictions, the same
    oof = pd.read_parquet(run / "oof").rename(columns={"member": "model"})
    rows = pd.concat([oof, pd.read_parquet(run / "fusion_oof.parquet")])
    folds = {}
    for model, part in rows.groupby("model"):
        part = part.sort_values("row_id")
        y = (part.y_true == "yes").to_numpy().astype(int)
        pred = part[["pred_no", "pred_yes"]].to_numpy()
        folds[model] = lb.fold_scores("roc_auc", y, pred, part.fold.to_numpy(), 2)
    assert lb.choose(board, folds) == result.manifest["best"] == result.best
    fusion = pd.read_parquet(run / "fusion.parquet")
    avg = fusion[fusion.fusion == "average"]
    assert len(avg) == len(members) and avg.weight.sum() == pytest.approx(1.0)
    sel = fusion[fusion.fusion == "selection"]
    assert sel.weight.sum() == pytest.approx(1.0)


def test_fits_run_in_parallel_on_two_slots(binary_run):
    _, result = binary_run
    fits = pd.read_parquet(result.run_dir.path / "fits.parquet")
    assert len(fits) == 6 * 3 and (fits.repeat == 0).all()
    assert fits.worker.nunique() >= 2
    # In flight: from the pool's submission to the fit's end. When a fit
    # starts is up to Ray (a fresh worker process may take seconds to start,
    # while the other slot runs every other fit), but the pool keeps both
    # slots busy: two fits are in flight at once, never three.
    sent = pd.to_datetime(fits.submitted_at, utc=True)
    start = pd.to_datetime(fits.started_at, utc=True)
    end = start + pd.to_timedelta(fits.fit_s + fits.predict_s + fits.save_s, unit="s")
    assert (sent <= start).all()
    in_flight = [((sent <= t) & (t < end)).sum() for t in sent]
    assert max(in_flight) == 2
    assert (fits.n_train > 0).all() and (fits.gpu == False).all()  # noqa: E712
    # every fit wrote its model, and says how long that took
    assert (fits.save_s > 0).all()


def test_the_manifest_says_when_each_stage_ended(binary_run):
    _, result = binary_run
    manifest = result.manifest
    stages = manifest["timing"]["stages_s"]
    assert list(stages) == ["portfolio", "search", "repeats", "fusions", "refit"]
    ends = list(stages.values())
    assert ends == sorted(ends) and ends[0] > 0
    # the fits were over when the repeats' stage ended (the stages count from
    # the budget's start, before the data was read; ``started_at`` is written
    # after it, to the second)
    fits = pd.read_parquet(result.run_dir.path / "fits.parquet")
    began = pd.Timestamp(manifest["started_at"])
    last_fit = (
        pd.to_datetime(fits.started_at, utc=True)
        + pd.to_timedelta(fits.fit_s + fits.predict_s + fits.save_s, unit="s")
    ).max()
    assert (last_fit - began).total_seconds() <= stages["repeats"] + 1.5


def test_same_seed_same_oof_and_scores(binary_run, tmp_path):
    config, result = binary_run
    again = fit_run(config.replace(out=str(tmp_path / "again")))
    a = pd.read_parquet(result.run_dir.path / "oof").sort_values(["member", "row_id"])
    b = pd.read_parquet(again.run_dir.path / "oof").sort_values(["member", "row_id"])
    pd.testing.assert_frame_equal(a.reset_index(drop=True), b.reset_index(drop=True))
    cols = ["model", "oof_score", "roc_auc", "log_loss"]
    pd.testing.assert_frame_equal(result.leaderboard[cols], again.leaderboard[cols])
    for name in ("fusion.parquet", "fusion_oof.parquet"):
        pd.testing.assert_frame_equal(
            pd.read_parquet(result.run_dir.path / name),
            pd.read_parquet(again.run_dir.path / name),
        )


def test_a_holdout_when_asked_for(ray_session, tmp_path):
    frame = make_table(500)
    config = _config(
        tmp_path, frame, learners=("linear", "lgbm"), portfolio=False, holdout=0.2
    )
    result = fit_run(config)
    run = result.run_dir.path
    folds = pd.read_parquet(run / "folds.parquet")
    assert (folds.fold == -1).sum() == 100
    hold = pd.read_parquet(run / "holdout.parquet")
    models = set(result.leaderboard.model)
    assert set(hold.model) == models and len(hold) == 100 * len(models)
    board = result.leaderboard.set_index("model")
    assert (board.scored_on == "holdout").all() and board.holdout_score.notna().all()
    np.testing.assert_allclose(board.roc_auc, board.holdout_score, rtol=1e-12)
    oof = pd.read_parquet(run / "oof")
    assert set(oof.row_id) == set(folds.row_id[folds.fold >= 0])


def test_repeats_are_averaged_kept_unless_they_hurt_and_deterministic(
    ray_session, tmp_path
):
    from ensemble.data import load_table, prepare
    from ensemble.model import load

    frame = make_table(400, seed=5)
    config = _config(
        tmp_path,
        frame,
        learners=("linear", "lgbm"),
        portfolio=False,
        repeats=3,
        fusions=("average",),
    )
    a = fit_run(config.replace(run_id="a"))
    b = fit_run(config.replace(run_id="b"))
    run = a.run_dir.path
    for name in ("oof", "fits.parquet", "folds.parquet"):
        x, y = pd.read_parquet(run / name), pd.read_parquet(b.run_dir.path / name)
        keep = [
            c
            for c in x.columns
            if c
            not in (
                "submitted_at",
                "started_at",
                "fit_s",
                "predict_s",
                "save_s",
                "worker",
                "node_id",
            )
        ]
        sort = [c for c in ("member", "repeat", "fold", "row_id") if c in x.columns]
        pd.testing.assert_frame_equal(
            x[keep].sort_values(sort).reset_index(drop=True),
            y[keep].sort_values(sort).reset_index(drop=True),
        )
    fits = pd.read_parquet(run / "fits.parquet")
    repeats = a.manifest["repeats"]
    for member, n in repeats.items():
        mine = fits[fits.member == member]
        assert sorted(set(mine.repeat)) == list(range(n)) and len(mine) == 3 * n
    folds = pd.read_parquet(run / "folds.parquet")
    d = prepare(load_table(config.data)[0], "target", n_folds=3, seed=0)
    for member, n in repeats.items():
        dirs = sorted(p.name for p in (run / "models" / member).iterdir())
        assert len([d for d in dirs if d != "full"]) == 3 * n
        # the OOF is the mean over the repeats of each repeat's fold models
        per_repeat = []
        for rep in range(n):
            fold = folds["fold" if rep == 0 else f"fold_r{rep}"].to_numpy()
            pred = np.zeros(len(fold))
            for k in range(3):
                name = f"fold{k}" if rep == 0 else f"r{rep}_fold{k}"
                model = Learner.load(run / "models" / member / name)
                pred[fold == k] = model.predict(d.X[fold == k])[:, 1]
            per_repeat.append(pred)
        oof = pd.read_parquet(run / "oof")
        mine = oof[oof.member == member].sort_values("row_id").pred_yes
        np.testing.assert_allclose(mine, np.mean(per_repeat, axis=0), rtol=1e-9)
        got = load(run, member).predict_proba(frame.drop(columns="target"))[:, 1]
        assert got.shape == (400,)
    assert max(repeats.values()) > 1, "no repeat was kept for either member"


def test_a_constant_column_is_dropped_and_listed(ray_session, tmp_path):
    frame = make_table(300)
    frame["const"] = 7
    frame["nothing"] = np.nan
    config = _config(tmp_path, frame, learners=("linear",), fusions=())
    result = fit_run(config)
    assert result.manifest["dropped_columns"] == {
        "const": "constant",
        "nothing": "empty",
    }
    assert result.manifest["schema"]["columns"] == ["x1", "x2", "colour"]
    from ensemble.model import load

    pred = load(result.run_dir.path).predict_proba(frame.drop(columns="target"))
    assert pred.shape == (300, 2)


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
        assert board.set_index("model").loc["lgbm", "r2"] > 0.7  # on OOF rows
    else:
        cols = [f"pred_{c}" for c in result.manifest["classes"]]
        assert set(cols) <= set(oof.columns)
        # a fusion's score is that of its stored cross-fitted predictions,
        # temperature scaled or not
        fused = pd.read_parquet(result.run_dir.path / "fusion_oof.parquet")
        calibrated = result.manifest["calibrated"]
        assert set(calibrated) <= set(result.manifest["fusions"])
        assert all(0.2 <= a <= 5.0 for a in calibrated.values())
        codes = {c: i for i, c in enumerate(result.manifest["classes"])}
        for model, part in fused.groupby("model"):
            y = part.y_true.map(codes).to_numpy()
            got = score("log_loss", y, part[cols].to_numpy(), len(cols))
            want = board.set_index("model").loc[model, "oof_score"]
            assert got == pytest.approx(want, rel=1e-9), model


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
