import math
import warnings

import numpy as np
import pytest
from sklearn import metrics as skm

from ensemble.metrics import (
    METRICS,
    default_metric,
    metrics_for_task,
    score,
    score_all,
    to_loss,
)


def _proba(labels, k, conf=0.8):
    p = np.full((len(labels), k), (1 - conf) / (k - 1))
    p[np.arange(len(labels)), labels] = conf
    return p


def test_binary_metrics_match_sklearn():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200)
    p1 = np.clip(y * 0.6 + rng.random(200) * 0.5, 0, 1)
    P = np.column_stack([1 - p1, p1])
    lab = P.argmax(1)
    assert score("roc_auc", y, P, 2) == pytest.approx(skm.roc_auc_score(y, p1))
    assert score("log_loss", y, P, 2) == pytest.approx(
        skm.log_loss(y, np.clip(P, 1e-15, 1))
    )
    assert score("accuracy", y, P, 2) == pytest.approx(skm.accuracy_score(y, lab))
    assert score("f1", y, P, 2) == pytest.approx(skm.f1_score(y, lab))
    assert score("precision", y, P, 2) == pytest.approx(skm.precision_score(y, lab))
    assert score("recall", y, P, 2) == pytest.approx(skm.recall_score(y, lab))


def test_multiclass_macro_metrics_match_sklearn():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 4, 300)
    P = rng.dirichlet(np.ones(4), 300) + np.eye(4)[y] * 0.5
    P /= P.sum(1, keepdims=True)
    assert score("roc_auc", y, P, 4) == pytest.approx(
        skm.roc_auc_score(y, P, multi_class="ovr", average="macro")
    )
    assert score("f1", y, P, 4) == pytest.approx(
        skm.f1_score(y, P.argmax(1), average="macro")
    )


def test_class_missing_from_fold_neither_crashes_nor_warns():
    y = np.array([0, 0, 1, 1, 0])  # class 2 absent
    P = _proba(np.array([0, 1, 1, 1, 0]), 3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        scores = score_all("multiclass", y, P, 3)
    assert not math.isnan(scores["roc_auc"])
    assert scores["accuracy"] == pytest.approx(0.8)
    assert 0 <= scores["precision"] <= 1


def test_undefined_scores_are_nan_not_errors():
    y = np.zeros(5, int)
    P = _proba(np.zeros(5, int), 2)
    assert math.isnan(score("roc_auc", y, P, 2))
    assert score("precision", y, P, 2) == 0.0  # zero division -> 0, no warning
    assert math.isnan(score("r2", np.ones(3), np.ones(3)))


def test_log_loss_finite_for_confident_miss():
    y = np.array([1])
    P = np.array([[1.0, 0.0]])
    assert score("log_loss", y, P, 2) == pytest.approx(-math.log(1e-15), rel=1e-6)


def test_regression_metrics():
    y = np.array([1.0, 2.0, 3.0, 4.0])
    p = np.array([1.5, 2.0, 2.5, 4.0])
    s = score_all("regression", y, p)
    assert s["mse"] == pytest.approx(0.125)
    assert s["rmse"] == pytest.approx(math.sqrt(0.125))
    assert s["mae"] == pytest.approx(0.25)
    assert s["r2"] == pytest.approx(skm.r2_score(y, p))


def test_registry_and_directions():
    assert set(metrics_for_task("binary")) == {
        "accuracy",
        "precision",
        "recall",
        "f1",
        "roc_auc",
        "log_loss",
    }
    assert set(metrics_for_task("regression")) == {"mse", "rmse", "mae", "r2"}
    assert default_metric("binary") == "roc_auc"
    assert default_metric("multiclass") == "log_loss"
    assert default_metric("regression") == "rmse"
    assert to_loss("roc_auc", 0.9) == -0.9 and to_loss("rmse", 2.0) == 2.0
    assert all(m.name == k for k, m in METRICS.items())
