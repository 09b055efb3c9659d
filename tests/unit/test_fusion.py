"""Fusion math, without Ray, in milliseconds."""

import numpy as np
import pytest
from sklearn.base import clone

from ensemble.exceptions import FusionError, NotFittedError
from ensemble.fusion import (
    AverageFusion,
    SelectionFusion,
    StackingFusion,
    WeightedFusion,
    available,
    make,
    nested_cv,
)
from ensemble.metrics import score


def _members(task="binary", n=400, m=4, seed=0):
    """Members of graded quality: member 0 best, noisier ones after."""
    rng = np.random.default_rng(seed)
    if task == "regression":
        y = rng.normal(size=n)
        P = np.stack([y + rng.normal(scale=0.3 * (i + 1), size=n) for i in range(m)], 1)
        return P, y
    k = 2 if task == "binary" else 4
    y = rng.integers(0, k, n)
    P = np.empty((n, m, k))
    for i in range(m):
        logits = np.eye(k)[y] * (3.0 / (i + 1)) + rng.normal(size=(n, k))
        e = np.exp(logits - logits.max(1, keepdims=True))
        P[:, i] = e / e.sum(1, keepdims=True)
    return P, y


ALL = [AverageFusion(), WeightedFusion(), WeightedFusion(method="score"),
       SelectionFusion(), StackingFusion()]


@pytest.mark.parametrize("task", ["binary", "multiclass", "regression"])
@pytest.mark.parametrize("fusion", ALL, ids=lambda f: repr(f))
def test_every_fusion_every_task(fusion, task):
    P, y = _members(task)
    est = clone(fusion).fit(P, y)
    out = est.predict(P)
    if task == "regression":
        assert out.shape == (len(y),)
    else:
        assert out.shape == (len(y), P.shape[2])
        np.testing.assert_allclose(out.sum(1), 1.0, atol=1e-9)


@pytest.mark.parametrize("fusion", [WeightedFusion(), WeightedFusion(method="score"),
                                    SelectionFusion(), AverageFusion()], ids=repr)
@pytest.mark.parametrize("task", ["binary", "multiclass", "regression"])
def test_weights_lie_on_the_simplex(fusion, task):
    P, y = _members(task)
    w = clone(fusion).fit(P, y).weights_
    assert (w >= 0).all()
    assert w.sum() == pytest.approx(1.0)


def test_selection_with_one_perfect_member_returns_it():
    P, y = _members("binary")
    P[:, 2] = np.eye(2)[y] * 0.98 + 0.01
    est = SelectionFusion().fit(P, y)
    np.testing.assert_array_equal(est.weights_, [0, 0, 1, 0])
    np.testing.assert_allclose(est.predict(P), P[:, 2])


def test_weighted_finds_the_perfect_member():
    P, y = _members("regression")
    P[:, 1] = y
    w = WeightedFusion().fit(P, y).weights_
    assert w[1] > 0.99


@pytest.mark.parametrize("fusion", ALL, ids=repr)
@pytest.mark.parametrize("task", ["binary", "multiclass", "regression"])
def test_fusing_identical_members_equals_the_member(fusion, task):
    P, y = _members(task, m=1)
    P3 = np.repeat(P, 3, axis=1)
    out = clone(fusion).fit(P3, y).predict(P3)
    if isinstance(fusion, StackingFusion):
        # A meta-learner recalibrates; its ranking must still equal the member's.
        if task == "regression":
            assert np.corrcoef(out, P[:, 0])[0, 1] > 0.9999
        else:
            lab = out.argmax(1)
            assert np.mean(lab == P[:, 0].argmax(1)) > 0.97
        return
    np.testing.assert_allclose(out, P[:, 0], atol=1e-9)


@pytest.mark.parametrize("task", ["binary", "multiclass"])
def test_average_never_worse_than_worst_member_on_log_loss(task):
    for seed in range(5):
        P, y = _members(task, seed=seed)
        k = P.shape[2]
        avg = AverageFusion().fit(P, y).predict(P)
        worst = max(score("log_loss", y, P[:, i], k) for i in range(P.shape[1]))
        assert score("log_loss", y, avg, k) <= worst


@pytest.mark.parametrize("fusion", ALL, ids=repr)
def test_same_seed_same_result(fusion):
    P, y = _members("multiclass")
    a = clone(fusion).fit(P, y).predict(P)
    b = clone(fusion).fit(P, y).predict(P)
    np.testing.assert_array_equal(a, b)


def test_stacking_beats_average_when_one_member_is_noise():
    P, y = _members("binary", m=3)
    rng = np.random.default_rng(5)
    P[:, 2] = rng.dirichlet([1, 1], len(y))
    folds = np.arange(len(y)) % 5
    st = nested_cv(StackingFusion(), P, y, folds, metric="log_loss").score
    av = nested_cv(AverageFusion(), P, y, folds, metric="log_loss").score
    assert st < av


def test_nested_cv_does_not_fit_on_the_scored_fold():
    # A fusion that memorises its training rows: honest scoring must not see them.
    P, y = _members("regression", n=200)
    folds = np.arange(200) % 4
    honest = nested_cv(WeightedFusion(), P, y, folds, metric="rmse")
    in_sample = score("rmse", y, WeightedFusion().fit(P, y).predict(P))
    assert honest.score >= in_sample
    assert honest.preds.shape == (200,)


@pytest.mark.parametrize(
    ("P", "y", "match"),
    [
        (np.zeros((4,)), np.zeros(4), "must have shape"),
        (np.zeros((4, 2, 2)), np.zeros(3), "one entry per row"),
        (np.full((4, 2), np.nan), np.zeros(4), "NaN or infinite"),
        (np.zeros((4, 1, 2)), np.zeros(4), "at least 2 members; got 1"),
    ],
)
def test_bad_inputs_raise_clear_errors(P, y, match):
    with pytest.raises(FusionError, match=match):
        WeightedFusion().fit(P, y)


def test_predict_shape_mismatch_and_not_fitted():
    P, y = _members("binary", m=3)
    est = StackingFusion().fit(P, y)
    with pytest.raises(FusionError, match=r"shape \(n, 3, 2\)"):
        est.predict(P[:, :2])
    with pytest.raises(NotFittedError, match="not fitted"):
        AverageFusion().predict(P)


def test_registry():
    assert set(available()) >= {"average", "weighted", "selection", "stacking"}
    assert isinstance(make("stacking"), StackingFusion)
    with pytest.raises(LookupError, match="unknown fusion 'x'"):
        make("x")


def test_stacking_reports_member_coefficients():
    P, y = _members("multiclass", m=2)
    rows = StackingFusion().fit(P, y).member_weights()
    assert len(rows) == 2 * 4
    assert {r[2] for r in rows} == {"0", "1", "2", "3"}
