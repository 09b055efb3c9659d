"""Ray Tune on the shared local Ray."""

import json

import numpy as np
import pandas as pd
import pytest

from ensemble.config import RunConfig
from ensemble.learners import FitContext
from ensemble.runner import fit_run
from ensemble.specs import REFIT_FOLD
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
        {"linear": None, "lgbm": None},
        X,
        y,
        fold,
        ctx,
        metric="roc_auc",
        storage=tmp_path / "tune",
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
        name = f"{key}_tuned"
        assert mine.loc[mine.member == name, "cv_score"].item() == best
        params = json.loads(mine.loc[mine.member == name, "params"].item())
        spec = next(m for m in out.members if m.name == name)
        assert all(spec.params[k] == v for k, v in params.items())
        assert spec.trial_dir is None  # no save_dir: members are fitted again
    for key in ("linear", "lgbm"):
        n_complete = int(((t.learner == key) & (t.status == "complete")).sum())
        names = [m.name for m in out.members if m.learner == key]
        # ASHA may stop all but one trial early: only finished trials are members
        assert names == [f"{key}_tuned", f"{key}_tuned_2"][: min(2, n_complete)]
    assert all(m.params["max_rounds"] == 50 for m in out.members if m.learner == "lgbm")
    assert (tmp_path / "tune" / "lgbm").is_dir()  # Tune's own state


def test_holdout_rows_never_reach_a_trial(ray_session, tmp_path):
    """Poison the holdout rows' targets: a trial that trained on them would fail.

    The holdout targets become 1e12 in a regression whose targets are ~10: the
    member fits never train on holdout rows (they only predict them), and a
    trial that did would predict far off and score an astronomic RMSE.
    """
    frame = make_table(400, task="regression")
    cfg = RunConfig(
        data=str(tmp_path / "t.parquet"),
        target="target",
        out=str(tmp_path / "runs"),
        learners=("linear",),
        n_folds=3,
        n_trials=3,
        holdout=0.25,
        fusions=("average",),
        run_id="poison",
        report=False,
    )
    frame.to_parquet(cfg.data)
    from ensemble.runner import load_and_prepare

    data = load_and_prepare(cfg)
    y = data.y.copy()
    y[data.fold == -1] = 1e12
    poisoned = type(data)(**{**data.__dict__, "y": y})
    result = fit_run(cfg, data=poisoned)
    trials = pd.read_parquet(result.run_dir.path / "trials.parquet")
    # ASHA may stop some after a fold; none errs, and none saw a holdout row
    assert len(trials) == 3 and (trials.status != "error").all()
    assert (trials.cv_score < 10).all()  # RMSE on targets of spread ~10
    board = result.leaderboard.set_index("model")
    assert board.loc["linear", "oof_score"] < 10  # the members did not see them
    assert board.loc["linear", "holdout_score"] > 1e11  # the holdout is poisoned
    assert "linear_tuned" in result.manifest["members"]


def test_a_tuned_run_reuses_its_trials_folds(ray_session, tmp_path):
    """Without a holdout the trials fit the run's own folds: the chosen trial's
    fold models and OOF predictions become the member, not fitted again."""
    from ensemble.learners import Learner

    frame = make_table(300)
    path = tmp_path / "t.parquet"
    frame.to_parquet(path)
    events = []
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
        report=False,
        keep_models="all",
    )
    result = fit_run(
        cfg,
        on_fit=lambda r, d, t: events.append(
            ("refit" if r.fold == REFIT_FOLD else "fit", r.member)
        ),
        on_trial=lambda learner, n, best: events.append(("trial", learner)),
    )
    assert result.manifest["status"] == "complete"
    assert result.manifest["members"] == ["linear", "hgb", "linear_tuned", "hgb_tuned"]
    # the portfolio is fitted before any search
    first_trial = events.index(next(e for e in events if e[0] == "trial"))
    assert {m for kind, m in events[:first_trial]} == {"linear", "hgb"}
    assert all(
        kind in ("trial", "refit") or m.endswith("_tuned")
        for kind, m in events[first_trial:]
    )
    # the refits of the chosen model's members come last
    refits = [m for kind, m in events if kind == "refit"]
    assert refits == result.manifest["refit"]["members"] and refits
    assert all(kind == "refit" for kind, _ in events[-len(refits) :])
    run = result.run_dir.path
    trials = pd.read_parquet(run / "trials.parquet")
    assert set(trials.member.dropna()) == {"linear_tuned", "hgb_tuned"}
    fits = pd.read_parquet(run / "fits.parquet").set_index(["member", "fold"])
    assert fits.loc["hgb_tuned"].worker.str.startswith("tune:").all()  # not refitted
    # the reused fold models predict the OOF rows recorded for them
    from ensemble.data import prepare

    d = prepare(frame, "target", n_folds=3, seed=0)
    oof = pd.read_parquet(run / "oof")
    for k in range(3):
        model = Learner.load(run / "models" / "hgb_tuned" / f"fold{k}")
        got = model.predict(d.X[d.fold == k])[:, 1]
        want = oof[(oof.member == "hgb_tuned") & (oof.fold == k)].sort_values("row_id")
        np.testing.assert_allclose(got, want.pred_yes, rtol=1e-9)
    assert not list((run / "tune" / "folds").rglob("oof.npy"))  # moved or dropped


def test_a_run_stopped_while_taking_a_trials_folds_resumes(
    ray_session, tmp_path, monkeypatch
):
    """A run stopped after moving some of a chosen trial's folds into models/
    (fold 0 with its checkpoint, fold 1 without) resumes: fold 0 comes from
    its checkpoint, fold 1 (gone from the trial, never recorded) is fitted
    again, fold 2 is still taken from the trial."""
    from ensemble import members
    from ensemble.runner import resume_config

    make_table(300).to_parquet(tmp_path / "t.parquet")
    cfg = RunConfig(
        data=str(tmp_path / "t.parquet"),
        target="target",
        out=str(tmp_path / "runs"),
        run_id="taken",
        learners=("hgb",),
        portfolio=False,
        n_folds=3,
        n_trials=2,
        top_n=1,
        learner_params={"hgb": {"max_iter": 40}},
        fusions=(),
        report=False,
    )
    take = members._take_trial_fold

    def stopped_at_fold_one(ctx, spec, k):
        if k == 1:
            raise KeyboardInterrupt
        return take(ctx, spec, k)

    monkeypatch.setattr(members, "_take_trial_fold", stopped_at_fold_one)
    with pytest.raises(KeyboardInterrupt):
        fit_run(cfg)
    monkeypatch.setattr(members, "_take_trial_fold", take)
    run = tmp_path / "runs" / "taken"
    trials = pd.read_parquet(run / "trials.parquet")
    chosen = trials.loc[trials.member == "hgb_tuned", "trial_id"].item()
    trial = run / "tune" / "folds" / "hgb" / str(chosen)
    (trial / "fold1" / "fit.json").unlink()  # as if moved away before the stop

    result = fit_run(resume_config(run), resume=True)
    assert result.manifest["status"] == "complete"
    fits = pd.read_parquet(run / "fits.parquet")
    fits = fits[fits.member == "hgb_tuned"].set_index("fold").sort_index()
    assert list(fits.index) == [0, 1, 2]
    assert fits.loc[0, "resumed"] and fits.loc[0, "worker"].startswith("tune:")
    assert not fits.loc[1, "resumed"] and not fits.loc[1, "worker"].startswith("tune:")
    assert fits.loc[2, "worker"].startswith("tune:")
