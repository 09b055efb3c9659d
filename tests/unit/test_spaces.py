"""Every learner's search space samples valid configs that fit."""

import numpy as np
import pytest

from ensemble.learners import FitContext, available, get
from ensemble.learners._space import sample, validate

SPEED = {
    "rf": {"n_estimators": 10},
    "et": {"n_estimators": 10},
    "mlp": {"max_epochs": 3},
    "hgb": {"max_iter": 30},
    "lgbm": {"max_rounds": 50},
    "xgb": {"max_rounds": 50},
}


@pytest.mark.parametrize("key", available())
def test_space_is_declared_and_well_formed(key):
    space = get(key).search_space
    assert space, f"{key} declares no search space"
    validate(space)
    assert set(space) <= set(get(key).default_params)


@pytest.mark.parametrize("key", available())
@pytest.mark.parametrize("task", ["binary", "regression"])
def test_sampled_configs_fit_a_tiny_dataset(key, task):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(120, 3)).astype(np.float32)
    y = (X[:, 0] > 0).astype(np.int64) if task == "binary" else X[:, 0] * 2.0
    ctx = FitContext(
        task=task,
        n_classes=2 if task == "binary" else 0,
        cat_mask=(False, False, False),
        n_categories=(0, 0, 0),
    )
    cls = get(key)
    for _ in range(3):
        params = {
            **sample(cls.search_space, rng),
            **cls.tuning_overrides,
            **SPEED.get(key, {}),
        }
        pred = cls(params, context=ctx).fit(X[:100], y[:100]).predict(X[100:])
        assert np.isfinite(pred).all(), (key, params)


def test_sample_respects_bounds():
    space = {
        "a": ("loguniform", 1e-3, 1.0),
        "b": ("int_log", 2, 9),
        "c": ("int", 1, 3),
        "d": ("choice", ["x", "y"]),
        "e": ("uniform", 0, 1),
    }
    rng = np.random.default_rng(1)
    for _ in range(200):
        c = sample(space, rng)
        assert 1e-3 <= c["a"] <= 1 and 2 <= c["b"] <= 9 and 1 <= c["c"] <= 3
        assert c["d"] in ("x", "y") and 0 <= c["e"] <= 1
        assert isinstance(c["b"], int)


@pytest.mark.parametrize(
    "spec", [("uniform", 1, 0), ("loguniform", 0, 1), ("choice", []), ("gauss", 0, 1)]
)
def test_validate_rejects_bad_spaces(spec):
    with pytest.raises(ValueError, match="space 'p'"):
        validate({"p": spec})
