"""Ray Tune on the shared local Ray."""

import json

import numpy as np
import pandas as pd
import pytest

from ensemble.config import RunConfig
from ensemble.exceptions import BaseLearnerFailed
from ensemble.learners import FitContext
from ensemble.runner import fit_run
from ensemble.tune import tune_learners
from tests.conftest import make_table

pytestmark = pytest.mark.ray


def _data(n=300, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 3)).astype(np.float32)
    y = (X[:, 0] + 0.5 * X[:, 1] > 0).astype(np.int64)
    fold = np.arange(n) % 3
    ctx = FitContext(
        task="binary", n_classes=2, cat_mask=(False,) * 3, n_categories=(0,) * 3
    )
    return X, y, fold, ctx


def test_tiny_tune_run_writes_trials_and_picks_the_best(ray_session, tmp_path):
    X, y, fold, ctx = _data()
    out = tune_learners(
        ["linear", "lgbm"],
        X,
        y,
        fold,
        ctx,
        metric="roc_auc",
        storage=tmp_path / "tune",
        time_budget_s=None,
        n_trials=4,
        top_n=2,
        seed=0,
        fixed_params={"lgbm": {"max_rounds": 50}},
    )
    t = out.trials
    assert set(t.learner) == {"linear", "lgbm"}
    assert (t.groupby("learner").size() == 4).all()
    assert set(t.status) <= {"complete", "stopped", "error"}
    for key in ("linear", "lgbm"):
        mine = t[(t.learner == key) & (t.status == "complete")]
        best = mine.cv_score.max()
        assert mine.loc[mine.member == key, "cv_score"].item() == best
        params = json.loads(mine.loc[mine.member == key, "params"].item())
        spec = next(m for m in out.members if m.name == key)
        assert all(spec.params[k] == v for k, v in params.items())
    for key in ("linear", "lgbm"):
        n_complete = int(((t.learner == key) & (t.status == "complete")).sum())
        names = [m.name for m in out.members if m.learner == key]
        # ASHA may stop all but one trial early: only finished trials are members
        assert names == [key, f"{key}_2"][: min(2, n_complete)]
    assert all(m.params["max_rounds"] == 50 for m in out.members if m.learner == "lgbm")
    assert (tmp_path / "tune" / "lgbm").is_dir()  # Tune's state, restorable


def test_holdout_rows_never_reach_a_trial(ray_session, tmp_path):
    """Poison the holdout rows: a trial that saw them would fail to fit."""
    frame = make_table(400)
    cfg = RunConfig(
        data=str(tmp_path / "t.parquet"),
        target="target",
        out=str(tmp_path / "runs"),
        learners=("linear",),
        n_folds=3,
        n_trials=3,
        fusions=("average",),
        run_id="poison",
    )
    frame.to_parquet(cfg.data)
    from ensemble.runner import load_and_prepare

    data = load_and_prepare(cfg)
    X = data.X.copy()
    X[data.fold == -1] = np.inf  # linear models reject infinite inputs
    poisoned = type(data)(**{**data.__dict__, "X": X})
    # The member fits do see the holdout rows (to predict them), so they fail:
    # proof the poison is real. The trials before them did not.
    with pytest.raises(BaseLearnerFailed, match="linear"):
        fit_run(cfg, data=poisoned)
    trials = pd.read_parquet(tmp_path / "runs" / "poison" / "trials.parquet")
    assert len(trials) == 3
    assert (trials.status == "complete").any()
    assert np.isfinite(trials.cv_score).all()


def test_tuned_run_is_complete_with_members_from_trials(ray_session, tmp_path):
    frame = make_table(300)
    path = tmp_path / "t.parquet"
    frame.to_parquet(path)
    cfg = RunConfig(
        data=str(path),
        target="target",
        out=str(tmp_path / "runs"),
        learners=("linear", "hgb"),
        n_folds=3,
        n_trials=3,
        top_n=1,
        learner_params={"hgb": {"max_iter": 40}},
        fusions=("average",),
    )
    result = fit_run(cfg)
    assert result.manifest["status"] == "complete"
    assert result.manifest["members"] == ["linear", "hgb"]
    trials = pd.read_parquet(result.run_dir.path / "trials.parquet")
    assert set(trials.member.dropna()) == {"linear", "hgb"}
