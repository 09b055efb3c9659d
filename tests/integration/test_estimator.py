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
# the model; fusions are covered by the behaviour tests below), no report.
FAST = {
    "learners": ["linear"],
    "fusions": [],
    "n_folds": 2,
    "report": False,
}

# Checks that cannot apply to k-fold stacking, and why.
EXPECTED_FAILED: dict[str, str] = {
    "check_fit2d_1feature": (
        "fits 10 rows of which a class has one row; an OOF prediction needs a "
        "class on both sides of a fold, so fit raises a ValueError naming the "
        "rare class (the check accepts only a '1 feature' message)"
    ),
}


def _expected(est):
    return EXPECTED_FAILED if isinstance(est, EnsembleClassifier) else {}


@parametrize_with_checks(
    [EnsembleClassifier(**FAST), EnsembleRegressor(**FAST)],
    expected_failed_checks=_expected,
)
def test_sklearn_estimator_checks(ray_session, estimator, check):
    check(estimator)


def _frame(task, n=500, seed=0):
    f = make_table(n, task=task, seed=seed)
    return f.drop(columns="target"), f["target"].to_numpy()


def test_classifier_on_a_mixed_type_frame_and_load(ray_session, tmp_path):
    X, y = _frame("binary")
    clf = EnsembleClassifier(
        learners=["linear", "lgbm"],
        portfolio=False,
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
