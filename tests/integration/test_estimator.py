"""scikit-learn estimators: sklearn's own checks, and behaviour on real tables."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone
from sklearn.utils.estimator_checks import parametrize_with_checks

import ensemble
from ensemble import EnsembleClassifier, EnsembleRegressor
from tests.conftest import make_table

pytestmark = pytest.mark.ray

# A fast configuration: one cheap learner, two folds, no fusion (the member is
# the model; fusions are covered by the behaviour tests below), no report, no
# refit on every row (the behaviour tests below refit; sklearn's checks fit
# hundreds of times, and a refit is one more pool of Ray tasks each time).
FAST = {
    "learners": ["linear"],
    "fusions": [],
    "n_folds": 2,
    "report": False,
    "refit": False,
}


@parametrize_with_checks([EnsembleClassifier(**FAST), EnsembleRegressor(**FAST)])
def test_sklearn_estimator_checks(ray_session, estimator, check):
    # A clone: some checks fit the estimator they are given, and this one is
    # referenced by the test's parameters for the whole session (its
    # temporary run would outlive the test).
    check(clone(estimator))


def _frame(task, n=500, seed=0):
    f = make_table(n, task=task, seed=seed)
    return f.drop(columns="target"), f["target"].to_numpy()


def test_classifier_on_a_mixed_type_frame_and_load(ray_session, tmp_path):
    X, y = _frame("binary")
    clf = EnsembleClassifier(
        learners=["linear", "lgbm"],
        portfolio=False,
        keep_models="all",
        fusions=["average", "stacking"],
        n_folds=3,
        learner_params={"lgbm": {"max_rounds": 80}},
        out=str(tmp_path),
    )
    assert clf.fit(X, y) is clf
    assert list(clf.classes_) == ["no", "yes"]
    assert list(clf.feature_names_in_) == ["x1", "x2", "colour"]
    Xt, yt = _frame("binary", 300, seed=1)
    proba = clf.predict_proba(Xt)
    assert proba.shape == (300, 2)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-9)
    assert set(clf.predict(Xt)) <= {"no", "yes"}
    assert clf.score(Xt, yt) > 0.8
    assert set(clf.leaderboard_.model) == {"linear", "lgbm", "average", "stacking"}
    assert (tmp_path / clf.run_dir_.split("/")[-1] / "report.html").exists()

    loaded = ensemble.load(clf.run_dir_)
    assert isinstance(loaded, EnsembleClassifier)
    np.testing.assert_allclose(loaded.predict_proba(Xt), proba, rtol=1e-12)
    assert loaded.get_params()["n_folds"] == 3
    member = ensemble.load(clf.run_dir_, model="lgbm")
    assert member.best_ == "lgbm"
    assert not np.allclose(member.predict_proba(Xt), proba)

    fresh = clone(clf)
    assert fresh.get_params() == clf.get_params()
    assert not hasattr(fresh, "classes_")
    fresh.set_params(n_folds=4)
    assert fresh.n_folds == 4 and clf.n_folds == 3
    with pytest.raises(ValueError, match="seen at fit time, yet now missing"):
        clf.predict(Xt.drop(columns="x2"))


def test_regressor_and_load(ray_session, tmp_path):
    X, y = _frame("regression")
    reg = EnsembleRegressor(
        learners=["linear", "hgb"], fusions=["weighted"], n_folds=3, out=str(tmp_path)
    ).fit(X, y)
    Xt, yt = _frame("regression", 300, seed=1)
    assert reg.score(Xt, yt) > 0.7  # R^2
    pred = reg.predict(Xt)
    assert pred.shape == (300,)
    loaded = ensemble.load(reg.run_dir_)
    assert isinstance(loaded, EnsembleRegressor)
    np.testing.assert_allclose(loaded.predict(Xt), pred, rtol=1e-12)
    assert pd.read_parquet(f"{reg.run_dir_}/leaderboard.parquet").shape[0] == 3


def _ours_in_tmp():
    import os
    import tempfile

    root = tempfile.gettempdir()
    return {e for e in os.listdir(root) if e.startswith("ensemble-")}


def test_a_loop_of_fits_leaves_the_temp_folder_as_it_was(ray_session):
    import gc

    from sklearn.model_selection import KFold, cross_val_score

    X, y = _frame("binary", n=400)
    before = _ours_in_tmp()
    est = EnsembleClassifier(**FAST)
    scores = cross_val_score(est, X, y, cv=KFold(20, shuffle=True, random_state=0))
    assert len(scores) == 20 and (scores > 0.6).all()
    gc.collect()
    assert _ours_in_tmp() == before


def test_the_first_fit_of_a_process_lets_go_of_its_temporary_run(ray_session):
    # In a fresh interpreter: the first fit is the one during which libraries
    # are imported, and one that keeps an exception from its own import keeps
    # the stack it was imported from (the fit's frames, the estimator) alive.
    import subprocess
    import sys

    code = """
import gc, os, sys
from tests.conftest import make_table
from ensemble import EnsembleClassifier
frame = make_table(200)
est = EnsembleClassifier(learners=["linear"], fusions=[], n_folds=2,
                         report=False, refit=False, address=sys.argv[1])
run = est.fit(frame.drop(columns="target"), frame["target"]).run_dir_
del est
gc.collect()
print("left" if os.path.exists(run) else "gone")
"""
    address = ray_session.get_runtime_context().gcs_address
    out = subprocess.run(
        [sys.executable, "-c", code, address],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    assert out.stdout.strip().splitlines()[-1] == "gone"


def test_a_pickled_estimator_predicts_after_its_temporary_run_is_gone(ray_session):
    import gc
    import pickle
    from pathlib import Path

    from ensemble.exceptions import RunStateError

    X, y = _frame("binary", n=300)
    est = EnsembleClassifier(
        **{
            **FAST,
            "fusions": ["average"],
            "learners": ["linear", "lgbm"],
            "portfolio": False,
        }
    ).fit(X, y)
    run_dir = Path(est.run_dir_)
    assert run_dir.is_dir()
    expect = est.predict_proba(X)
    blob = pickle.dumps(est)
    del est
    gc.collect()
    assert not run_dir.parent.exists()  # the estimator owned it, and it is gone
    again = pickle.loads(blob)
    np.testing.assert_array_equal(again.predict_proba(X), expect)
    with pytest.raises(
        RunStateError,
        match="temporary run of an estimator fitted "
        "without out=, removed with the estimator",
    ):
        ensemble.load(run_dir)


def test_with_out_the_run_stays(ray_session, tmp_path):
    import gc
    from pathlib import Path

    X, y = _frame("binary", n=300)
    est = EnsembleClassifier(**FAST, out=str(tmp_path)).fit(X, y)
    run_dir = Path(est.run_dir_)
    del est
    gc.collect()
    assert (run_dir / "manifest.json").is_file()
    assert ensemble.load(run_dir).predict_proba(X[:5]).shape == (5, 2)
