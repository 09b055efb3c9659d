"""Distillation and pruning of a complete run (`ensemble distill` / `prune`)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from ensemble.cli import app
from ensemble.compress import augment_rows, distill, prune
from ensemble.config import RunConfig
from ensemble.exceptions import ConfigError, DataError
from ensemble.learners import Learner
from ensemble.model import load
from ensemble.runner import fit_run
from tests.conftest import make_table

pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def base_run(ray_session, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("compress")
    make_table(1500, seed=4).to_parquet(tmp / "train.parquet")
    cfg = RunConfig(
        data=str(tmp / "train.parquet"),
        target="target",
        out=str(tmp / "runs"),
        run_id="base",
        learners=("linear", "lgbm", "mlp"),
        fusions=("average", "stacking"),
        learner_params={"mlp": {"width": 64, "max_epochs": 15}},
        n_folds=3,
        holdout=0.2,  # distillation and pruning score on the holdout
        portfolio=False,
        keep_models="all",  # pruning needs the MLP's fold models
        report=False,
    )
    fit_run(cfg)
    return tmp / "runs" / "base"


@pytest.fixture
def run(base_run, tmp_path):
    """A private copy of the fitted run (each test adds models to it)."""
    dest = tmp_path / "runs" / "base"
    shutil.copytree(base_run, dest)
    return dest


def holdout_frame(run, model):
    manifest = json.loads((run / "manifest.json").read_text())
    frame = pd.read_parquet(manifest["config"]["data"])
    hold = pd.read_parquet(run / "holdout.parquet")
    hold = hold[hold.model == model].sort_values("row_id")
    return frame.iloc[hold.row_id.to_numpy()].drop(columns=["target"]), hold


@pytest.mark.parametrize("student", ["lgbm", "mlp"])
def test_distilled_student_is_added_to_the_run(run, student):
    row = distill(run, student=student, augment=1.0)
    name = f"distilled_{student}"
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["status"] == "complete"
    info = manifest["distilled"][name]
    assert info["teacher"] == manifest["best"] and info["n_rows"] == 2 * 1200
    board = pd.read_parquet(run / "leaderboard.parquet").set_index("model")
    assert board.loc[name, "kind"] == "distilled"
    assert 0.9 <= board.loc[name, "fidelity"] <= 1.0
    assert board.loc[name, "holdout_score"] == pytest.approx(row["holdout_score"])
    teacher = manifest["best"]
    assert board.loc[teacher, "predict_ms_per_1k"] > 0
    assert row["speedup"] == pytest.approx(
        board.loc[teacher, "predict_ms_per_1k"] / board.loc[name, "predict_ms_per_1k"]
    )
    # close to the teacher on the holdout
    assert abs(row["holdout_score"] - board.loc[teacher, "holdout_score"]) < 0.02
    # the student predicts through load()/predict like any model of the run,
    # and its holdout rows are the ones recorded
    rows, hold = holdout_frame(run, name)
    pred = load(run, name).predict_frame(rows)
    np.testing.assert_allclose(pred["pred_yes"], hold["pred_yes"], rtol=1e-6)
    # distilling again replaces the row (no duplicates)
    distill(run, student=student, augment=0.0)
    board = pd.read_parquet(run / "leaderboard.parquet")
    assert (board.model == name).sum() == 1
    hold_all = pd.read_parquet(run / "holdout.parquet")
    assert (hold_all.model == name).sum() == len(hold)


def test_pruned_member_has_the_sparsity_and_honest_scores(run):
    table = prune(run, sparsity=0.5, epochs=3)
    assert list(table.pruned_member) == ["mlp_pruned"]
    r = table.iloc[0]
    assert r.sparsity == pytest.approx(0.5, abs=0.01)
    assert r.holdout_delta == pytest.approx(r.holdout_after - r.holdout_before)
    assert abs(r.holdout_delta) < 0.02
    on_disk = pd.read_parquet(run / "prune.parquet")
    pd.testing.assert_frame_equal(on_disk, table)
    # every fold model's Linear weights are half zeros
    for d in sorted((run / "models" / "mlp_pruned").glob("fold*")):
        model = Learner.load(d).model_
        w = [m.weight for m in model.modules() if isinstance(m, torch.nn.Linear)]
        zeros = sum(int((x == 0).sum()) for x in w)
        assert zeros / sum(x.numel() for x in w) == pytest.approx(0.5, abs=0.01)
    board = pd.read_parquet(run / "leaderboard.parquet").set_index("model")
    assert board.loc["mlp_pruned", "kind"] == "pruned"
    assert board.loc["mlp_pruned", "oof_score"] == pytest.approx(r.oof_after)
    rows, hold = holdout_frame(run, "mlp_pruned")
    pred = load(run, "mlp_pruned").predict_frame(rows)
    np.testing.assert_allclose(pred["pred_yes"], hold["pred_yes"], rtol=1e-6)
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["pruned"] == ["mlp_pruned"] and manifest["status"] == "complete"


def test_bad_requests_are_clear(run, tmp_path):
    with pytest.raises(ConfigError, match=r"--sparsity 1.5 is not in \(0, 1\)"):
        prune(run, sparsity=1.5)
    with pytest.raises(ConfigError, match="has no MLP member named 'lgbm'"):
        prune(run, members=["lgbm"])
    with pytest.raises(ConfigError, match="--student 'svm' is unknown"):
        distill(run, student="svm")
    manifest = json.loads((run / "manifest.json").read_text())
    data = manifest["config"]["data"]
    changed = tmp_path / "changed.parquet"
    make_table(1500, seed=5).to_parquet(changed)
    manifest["config"]["data"] = str(changed)
    (run / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(DataError, match="changed since run 'base' was fitted"):
        distill(run)
    manifest["config"]["data"] = data
    (run / "manifest.json").write_text(json.dumps(manifest))
    res = CliRunner().invoke(app, ["prune", str(run), "--sparsity", "0"])
    assert res.exit_code == 2
    assert res.output.strip().splitlines() == [
        "error: --sparsity 0.0 is not in (0, 1); e.g. 0.5"
    ]
    # A default run keeps only the MLP's refit on every row: pruning says so.
    mlp = run / "models" / "mlp"
    (mlp / "full").mkdir()
    shutil.copy(mlp / "fold0" / "meta.json", mlp / "full" / "meta.json")
    for fold in mlp.glob("fold*"):
        shutil.rmtree(fold)
    res = CliRunner().invoke(app, ["prune", str(run)])
    assert res.exit_code == 2
    assert res.output.strip().splitlines() == [
        "error: run 'base' kept no fold models of its MLP member(s) mlp (refitted "
        "on every row); pruning needs them: fit with --keep-models all"
    ]


def test_cli_distill_and_predict_with_the_student(run, tmp_path):
    res = CliRunner().invoke(app, ["distill", str(run), "--augment", "0.5"])
    assert res.exit_code == 0, res.output
    assert res.output.startswith("distilled_lgbm: holdout roc_auc ")
    assert "x faster than the teacher" in res.output
    rows, hold = holdout_frame(run, "distilled_lgbm")
    src = tmp_path / "rows.parquet"
    rows.to_parquet(src)
    out = tmp_path / "p.parquet"
    res = CliRunner().invoke(
        app,
        ["predict", str(run), "--data", str(src), "--out", str(out)]
        + ["--model", "distilled_lgbm", "-q"],
    )
    assert res.exit_code == 0, res.output
    np.testing.assert_allclose(
        pd.read_parquet(out)["pred_yes"], hold["pred_yes"], rtol=1e-6
    )


def test_augment_rows_keep_marginals_and_valid_codes():
    rng = np.random.default_rng(0)
    X = np.column_stack(
        [rng.normal(5, 2, 4000), rng.integers(0, 4, 4000).astype(float)]
    ).astype(np.float32)
    out = augment_rows(X, (False, True), 4000, seed=1)
    assert out.shape == (4000, 2)
    assert set(np.unique(out[:, 1])) <= {0.0, 1.0, 2.0, 3.0}  # codes stay codes
    assert abs(out[:, 0].mean() - 5) < 0.1 and abs(out[:, 0].std() - 2) < 0.1
    # new combinations: rows are not copies of training rows
    assert not np.isin(out[:, 0], X[:, 0]).all()
