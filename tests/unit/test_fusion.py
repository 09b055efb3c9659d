"""Fusion math, without Ray, in milliseconds."""

import numpy as np
import pytest
from sklearn.base import clone

from ensemble.exceptions import FusionError, NotFittedError
from ensemble.fusion import (
    AverageFusion,
    NeuralFusion,
    SelectionFusion,
    StackingFusion,
    TwoLevelFusion,
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


ALL = [
    AverageFusion(),
    WeightedFusion(),
    WeightedFusion(method="score"),
    SelectionFusion(),
    SelectionFusion(metric="roc_auc"),
    StackingFusion(),
    StackingFusion(positive=True),
    StackingFusion(meta="lgbm"),
    NeuralFusion(max_epochs=15),
    TwoLevelFusion(passthrough=False, n_splits=3),
]
FEATURE_FUSIONS = [
    StackingFusion(passthrough=True),
    StackingFusion(meta="lgbm", passthrough=True),
    NeuralFusion(use_features=True, max_epochs=15),
    TwoLevelFusion(n_splits=3),
]


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


@pytest.mark.parametrize(
    "fusion",
    [
        WeightedFusion(),
        WeightedFusion(method="score"),
        SelectionFusion(),
        AverageFusion(),
    ],
    ids=repr,
)
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
    if isinstance(fusion, (StackingFusion, TwoLevelFusion)):
        # A meta-learner recalibrates; its ranking must still follow the member's.
        if task == "regression":
            # trees are piecewise constant: a looser bound for the LightGBM meta
            bound = 0.95 if getattr(fusion, "meta", "") == "lgbm" else 0.99
            assert np.corrcoef(out, P[:, 0])[0, 1] > bound
        else:
            lab = out.argmax(1)
            assert np.mean(lab == P[:, 0].argmax(1)) > 0.95
        return
    # Mixtures of one prediction are that prediction, whatever the weights.
    np.testing.assert_allclose(out, P[:, 0], atol=1e-6)


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
    assert set(available()) == {
        "average",
        "weighted",
        "selection",
        "stacking",
        "stacking_nonneg",
        "stacking_lgbm",
        "neural",
        "two_level",
    }
    assert make("stacking_lgbm").uses_features
    assert make("stacking_nonneg").positive
    assert isinstance(make("stacking"), StackingFusion)
    with pytest.raises(LookupError, match="unknown fusion 'x'"):
        make("x")


def test_stacking_reports_member_coefficients():
    P, y = _members("multiclass", m=2)
    rows = StackingFusion().fit(P, y).member_weights()
    assert len(rows) == 2 * 4
    assert {r[2] for r in rows} == {"0", "1", "2", "3"}


@pytest.mark.parametrize("fusion", FEATURE_FUSIONS, ids=repr)
@pytest.mark.parametrize("task", ["binary", "multiclass", "regression"])
def test_fusions_with_raw_features(fusion, task):
    P, y = _members(task, n=300)
    X = np.random.default_rng(0).normal(size=(300, 5)).astype(np.float32)
    X[::7, 2] = np.nan
    est = clone(fusion).fit(P, y, X)
    assert est.uses_features
    out = est.predict(P, X)
    assert out.shape[0] == 300 and np.isfinite(out).all()
    with pytest.raises(FusionError, match="raw features; pass the same X columns"):
        est.predict(P, X[:, :3])
    with pytest.raises(FusionError, match="raw features"):
        est.predict(P)


def test_features_let_stacking_use_a_region_where_a_member_is_better():
    # Member 0 is right where x > 0 and noise elsewhere; member 1 the reverse.
    rng = np.random.default_rng(3)
    n = 2000
    x = rng.normal(size=n)
    y = rng.integers(0, 2, n)
    good = np.eye(2)[y] * 0.8 + 0.1
    noise = rng.dirichlet([1, 1], n)
    P = np.stack(
        [
            np.where((x > 0)[:, None], good, noise),
            np.where((x > 0)[:, None], noise, good),
        ],
        axis=1,
    )
    X = x[:, None].astype(np.float32)
    folds = np.arange(n) % 5
    plain = nested_cv(WeightedFusion(), P, y, folds, metric="log_loss").score
    gated = nested_cv(
        NeuralFusion(use_features=True), P, y, folds, metric="log_loss", X=X
    ).score
    lgbm = nested_cv(
        StackingFusion(meta="lgbm", passthrough=True),
        P,
        y,
        folds,
        metric="log_loss",
        X=X,
    ).score
    assert gated < plain - 0.1
    assert lgbm < plain - 0.1


def test_nonnegative_stacking_has_nonnegative_weights():
    P, y = _members("multiclass", m=4)
    P[:, 3] = 1.0 - P[:, 3]  # an anti-correlated member
    P[:, 3] /= P[:, 3].sum(axis=1, keepdims=True)
    est = StackingFusion(positive=True).fit(P, y)
    w = [r[1] for r in est.member_weights()]
    assert len(w) == 4 and min(w) >= 0.0 and w[3] < 0.05
    P2, y2 = _members("regression")
    est2 = StackingFusion(positive=True).fit(P2, y2)
    assert (est2.final_estimator_.coef_ >= 0).all()


def test_neural_fusion_starts_from_the_average():
    P, y = _members("binary")
    est = NeuralFusion(max_epochs=0).fit(P, y)  # no training step at all
    np.testing.assert_allclose(
        est.predict(P), AverageFusion().fit(P, y).predict(P), atol=1e-6
    )
    np.testing.assert_allclose(est.weights_, 0.25, atol=1e-6)


def test_neural_fusion_pickles():
    import pickle

    P, y = _members("multiclass")
    est = NeuralFusion(max_epochs=5).fit(P, y)
    again = pickle.loads(pickle.dumps(est))
    np.testing.assert_allclose(again.predict(P), est.predict(P))


def test_two_level_reports_level2_weights():
    P, y = _members("binary")
    est = TwoLevelFusion(passthrough=False, n_splits=3).fit(P, y)
    rows = est.member_weights()
    assert [r[0] for r in rows] == [
        "level2:stacking_nonneg",
        "level2:stacking",
        "level2:neural",
    ]
    assert sum(r[1] for r in rows) == pytest.approx(1.0)


def test_selection_optimises_the_given_metric():
    P, y = _members("binary")
    auc = SelectionFusion(metric="roc_auc").fit(P, y)
    assert auc.trajectory_[0] == pytest.approx(
        -max(score("roc_auc", y, P[:, i], 2) for i in range(P.shape[1]))
    )


def test_sharpen_is_temperature_scaling_and_keeps_each_rows_order():
    from ensemble.fusion._base import sharpen

    P = np.random.default_rng(1).dirichlet(np.ones(4), size=50)
    np.testing.assert_allclose(sharpen(P, 1.0), P, atol=1e-12)
    for power in (0.3, 3.0):
        S = sharpen(P, power)
        np.testing.assert_allclose(S.sum(axis=1), 1.0)
        np.testing.assert_array_equal(np.argsort(S, axis=1), np.argsort(P, axis=1))
        # softmax(log P / T) with T = 1 / power
        L = np.log(P) * power
        want = np.exp(L) / np.exp(L).sum(axis=1, keepdims=True)
        np.testing.assert_allclose(S, want, rtol=1e-10)


def test_a_temperature_is_recovered_and_kept_only_where_it_helps():
    from ensemble.fuse import _fuse_one
    from ensemble.fusion import calibrate_nested
    from ensemble.fusion._base import fit_temperature, sharpen

    rng = np.random.default_rng(3)
    n, k = 4000, 5
    truth = rng.dirichlet(np.full(k, 0.3), size=n)  # calibrated probabilities
    y = np.array([rng.choice(k, p=p) for p in truth])
    soft = sharpen(truth, 0.5)  # under-confident, as an average of members is
    assert fit_temperature(soft, y) == pytest.approx(2.0, abs=0.15)
    assert fit_temperature(truth, y) == pytest.approx(1.0, abs=0.1)

    folds = np.arange(n) % 5
    # two members that both lean soft: their average needs sharpening
    P = np.stack([soft, sharpen(truth, 0.6)], axis=1)
    X = np.zeros((n, 1), np.float32)
    empty = np.empty((0, 2, k))
    plain = nested_cv(AverageFusion(), P, y, folds, metric="log_loss")
    out = _fuse_one("average", {}, P, y, folds, X, empty, X[:0], "log_loss")
    assert out.oof_score < plain.score - 0.02
    power = out.fusion.sharpen_
    assert 1.5 < power < 2.5
    np.testing.assert_allclose(
        out.fusion.predict(P[:7]), sharpen(P[:7].mean(axis=1), power), rtol=1e-10
    )
    # AUC is a ranking metric: its fusions are never temperature scaled
    by_auc = _fuse_one("average", {}, P, y, folds, X, empty, X[:0], "roc_auc")
    assert not hasattr(by_auc.fusion, "sharpen_")
    # predictions that are already calibrated are left as they are
    honest = nested_cv(
        AverageFusion(), np.stack([truth, truth], 1), y, folds, metric="log_loss"
    )
    assert calibrate_nested(honest, y, folds, metric="log_loss") is None
