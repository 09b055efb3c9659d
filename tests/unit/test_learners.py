"""Contract test run over every registered learner."""

import pickle
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.model_selection import train_test_split

from ensemble.exceptions import ConfigError, NotFittedError, UnknownLearnerError
from ensemble.learners import FitContext, Learner, available, get
from tests.conftest import shared_dataset

# Small budgets keep the contract fast; the defaults are exercised end to end.
FAST = {
    "rf": {"n_estimators": 20},
    "et": {"n_estimators": 20},
    "mlp": {"max_epochs": 5},
    "hgb": {"max_iter": 50},
    "cat": {"max_rounds": 60},
}


def _data(task, n=240, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 4)).astype(np.float32)
    X[:, 3] = rng.integers(0, 3, n)  # a categorical code column
    X[rng.random(n) < 0.05, 0] = np.nan
    signal = np.nan_to_num(X[:, 0]) + X[:, 1] + (X[:, 3] == 2)
    if task == "binary":
        y = (signal > 0.5).astype(np.int64)
    elif task == "multiclass":
        y = np.digitize(signal, [-0.5, 0.5, 1.5]).astype(np.int64)
    else:
        y = 3 * signal + rng.normal(scale=0.1, size=n)
    k = {"binary": 2, "multiclass": 4, "regression": 0}[task]
    ctx = FitContext(
        task=task,
        n_classes=k,
        cat_mask=(False, False, False, True),
        n_categories=(0, 0, 0, 3),
        seed=0,
    )
    return X, y, ctx


@pytest.fixture(params=available())
def key(request):
    return request.param


def test_registry_has_every_family():
    assert set(available()) >= {
        "linear",
        "knn",
        "rf",
        "et",
        "hgb",
        "lgbm",
        "xgb",
        "cat",
        "mlp",
    }
    with pytest.raises(
        UnknownLearnerError, match="unknown learner 'nope'; valid: linear"
    ):
        get("nope")


@pytest.mark.parametrize("task", ["binary", "multiclass", "regression"])
def test_fit_predict_shapes_and_probabilities(key, task):
    X, y, ctx = _data(task)
    model = get(key)(FAST.get(key, {}), context=ctx).fit(X[:200], y[:200])
    pred = model.predict(X[200:])
    if task == "regression":
        assert pred.shape == (40,)
        assert np.corrcoef(pred, y[200:])[0, 1] > 0.5
    else:
        assert pred.shape == (40, ctx.n_classes)
        np.testing.assert_allclose(pred.sum(axis=1), 1.0, atol=1e-6)
        assert (pred >= 0).all()
        assert np.mean(pred.argmax(1) == y[200:]) > 0.5
    assert np.isfinite(pred).all()


def test_same_seed_same_predictions(key):
    X, y, ctx = _data("binary")
    a = get(key)(FAST.get(key, {}), context=ctx).fit(X[:200], y[:200]).predict(X[200:])
    b = get(key)(FAST.get(key, {}), context=ctx).fit(X[:200], y[:200]).predict(X[200:])
    np.testing.assert_array_equal(a, b)


def test_save_load_roundtrip_and_pickle(key, tmp_path):
    X, y, ctx = _data("multiclass")
    model = get(key)(FAST.get(key, {}), context=ctx).fit(X[:200], y[:200])
    model.save(tmp_path / "m")
    loaded = Learner.load(tmp_path / "m")
    assert type(loaded) is type(model)
    np.testing.assert_allclose(
        loaded.predict(X[200:]), model.predict(X[200:]), rtol=1e-6
    )
    again = pickle.loads(pickle.dumps(model))
    np.testing.assert_allclose(
        again.predict(X[200:]), model.predict(X[200:]), rtol=1e-6
    )


def test_a_save_cut_short_is_no_fold_model(tmp_path, monkeypatch):
    from ensemble.artifacts import fold_dirs

    X, y, ctx = _data("binary")
    model = get("linear")({}, context=ctx).fit(X[:200], y[:200])
    member = tmp_path / "linear"
    model.save(member / "fold0")
    model.save(member / "r1_fold0")
    assert fold_dirs(member) == [member / "fold0", member / "r1_fold0"]

    def killed(path):  # the fit's process dies while writing its model
        path.write_bytes(b"\x78\x9c partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(model, "_save", killed)
    with pytest.raises(KeyboardInterrupt):
        model.save(member / "r1_fold1")
    with pytest.raises(KeyboardInterrupt):
        model.save(member / "r1_fold0")  # over a complete save: no longer one
    assert not (member / "r1_fold1" / "meta.json").exists()
    assert fold_dirs(member) == [member / "fold0"]

    monkeypatch.undo()
    write_text = Path.write_text

    def killed_writing_meta(self, data, *args, **kwargs):  # the marker itself
        write_text(self, "", *args, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(Path, "write_text", killed_writing_meta)
    with pytest.raises(KeyboardInterrupt):
        model.save(member / "fold1")
    monkeypatch.undo()
    assert sorted(p.name for p in (member / "fold1").iterdir()) == [model._model_file]
    assert fold_dirs(member) == [member / "fold0"]


def test_a_loaded_model_predicts_the_same_on_any_number_of_threads(key, tmp_path):
    # A loaded model predicts on the machine's (or the predicting actor's)
    # threads, its fit on its task's: the rows must not see the difference.
    X, y, ctx = _data("multiclass", n=600)
    model = get(key)(FAST.get(key, {}), context=ctx).fit(X[:300], y[:300])
    model.save(tmp_path / "m")
    rows = np.concatenate([X[300:]] * 8)  # 2,400 rows: the forests split them
    loaded = Learner.load(tmp_path / "m")
    loaded.predict_threads = 1
    want = loaded.predict(rows)
    for threads in (2, 3, 1):
        loaded.predict_threads = threads
        np.testing.assert_array_equal(loaded.predict(rows), want)


def test_read_only_input_is_not_mutated(key):
    X, y, ctx = _data("binary")
    X.setflags(write=False)  # what a zero-copy object-store array looks like
    before = X.copy()
    get(key)(FAST.get(key, {}), context=ctx).fit(X, y).predict(X)
    np.testing.assert_array_equal(np.isnan(X), np.isnan(before))


def test_class_missing_from_training_fold_still_gives_full_width(key):
    X, y, ctx = _data("multiclass")
    keep = y != 3
    model = get(key)(FAST.get(key, {}), context=ctx).fit(X[keep], y[keep])
    pred = model.predict(X)
    assert pred.shape == (len(X), 4)
    np.testing.assert_allclose(pred.sum(axis=1), 1.0, atol=1e-6)


def test_unknown_param_is_a_config_error(key):
    _, _, ctx = _data("binary")
    with pytest.raises(
        ConfigError, match=f"unknown parameter\\(s\\) \\['bogus'\\] for learner '{key}'"
    ):
        get(key)({"bogus": 1}, context=ctx)


def test_predict_before_fit(key):
    _, _, ctx = _data("binary")
    with pytest.raises(NotFittedError, match="is not fitted"):
        get(key)({}, context=ctx).predict(np.zeros((2, 4), np.float32))


def test_capabilities_are_declared(key):
    cls = get(key)
    assert isinstance(cls.uses_gpu, bool)
    assert {k for k, c in ((k, get(k)) for k in available()) if c.uses_gpu} == {
        "cat",
        "mlp",
        "xgb",
    }
    warm = {k for k in available() if get(k).warm_start_params}
    assert warm == {"mlp"}
    assert set(get("mlp").warm_start_params) <= set(get("mlp").default_params)


@pytest.mark.parametrize("key", ["lgbm", "xgb", "cat"])
def test_time_box_stops_boosting_and_a_roomy_box_changes_nothing(key):
    from dataclasses import replace

    X, y, ctx = _data("binary")
    assert get(key).time_boxed
    free = get(key)({}, context=ctx).fit(X[:200], y[:200])
    roomy = get(key)({}, context=replace(ctx, time_box_s=1e6)).fit(X[:200], y[:200])
    np.testing.assert_array_equal(free.predict(X[200:]), roomy.predict(X[200:]))
    assert not free.truncated_ and not roomy.truncated_
    # A spent box: one round, no refit, flagged; still a valid model.
    spent = get(key)({}, context=replace(ctx, time_box_s=0.0)).fit(X[:200], y[:200])
    assert spent.truncated_
    rounds = {
        "lgbm": lambda m: m.best_iteration,
        "xgb": lambda m: m.num_boosted_rounds(),
        "cat": lambda m: m.tree_count_,
    }[key](spent.model_)
    assert rounds == 1
    pred = spent.predict(X[200:])
    np.testing.assert_allclose(pred.sum(axis=1), 1.0, atol=1e-6)


@pytest.mark.parametrize("key", ["lgbm", "xgb"])
def test_a_prediction_that_would_outlast_its_reserve_ends_the_rounds(key):
    """A hundred rounds fit well inside a minute, but predicting 10^12 rows
    with them would not: the booster stops at its first timed prediction."""
    from dataclasses import replace

    from ensemble.learners._split import PredictCost

    X, y, ctx = _data("binary")
    params = {"max_rounds": 300, "early_stopping_rounds": 300, "refit": False}
    roomy = replace(ctx, time_box_s=60.0)

    def fit(**kw):
        return get(key)(params, context=replace(roomy, **kw)).fit(X[:200], y[:200])

    assert not fit(predict_rows=0).truncated_
    assert not fit(predict_rows=10**12, predict_reserve_s=1e15).truncated_
    late = fit(predict_rows=10**12, predict_reserve_s=0.0)
    assert late.truncated_
    if key == "lgbm":
        assert late.model_.current_iteration() == PredictCost.FIRST
    np.testing.assert_allclose(late.predict(X[200:]).sum(axis=1), 1.0, atol=1e-6)


def test_time_box_refit_only_when_it_fits():
    from ensemble.learners._split import TimeBox

    box = TimeBox(10.0)
    # 100 rounds took 3 s on 90% of the rows: 110 rounds on all need ~3.7 s
    box.start -= 3.0
    assert box.affords_refit(100, 110)
    box.start -= 6.0  # 100 rounds in 9 s: ~11 s needed, 1 s left
    assert not box.affords_refit(100, 110)
    assert TimeBox(None).affords_refit(1, 10_000)


def test_only_the_boosters_and_the_mlp_are_time_boxed():
    boxed = sorted(k for k in available() if get(k).time_boxed)
    assert boxed == ["cat", "lgbm", "mlp", "xgb"]


def test_portfolio_configurations_are_valid_and_differ_from_the_defaults(key):
    cls = get(key)
    for name, params in cls.portfolio.items():
        merged = cls.check_params(params)  # unknown names would raise
        assert merged != cls.default_params, name
        assert name.isidentifier() and name != "tuned"


@pytest.mark.parametrize("family", ["rf", "et"])
@pytest.mark.parametrize("task", ["binary", "multiclass", "regression"])
def test_a_forest_predicts_few_rows_as_sklearn_does_to_the_bit(family, task):
    from ensemble.learners.forest import FEW_ROWS, MIN_SAMPLES_LEAF, _sum_trees

    X, y, ctx = _data(task)
    if task == "multiclass":
        y = np.where(y == 3, 2, y)  # a class the forest never saw
    learner = get(family)({"n_estimators": 15}, context=ctx).fit(X, y)
    model = learner.model_
    assert model.min_samples_leaf == MIN_SAMPLES_LEAF[task]
    assert model.max_leaf_nodes == 15_000
    few = X[:7]
    assert len(few) <= FEW_ROWS
    if task == "regression":
        want = model.predict(few)
    else:
        want = np.zeros((7, ctx.n_classes))
        want[:, model.classes_] = model.predict_proba(few)
    np.testing.assert_array_equal(_sum_trees(model, few, ctx), want)
    # rows predict the same in a small batch as in a large one (sklearn's
    # path), and split over threads as in one call
    big = np.concatenate([X] * 10)
    assert len(big) > 2 * FEW_ROWS
    whole = learner.predict(big)
    np.testing.assert_array_equal(whole[:7], learner.predict(few))
    learner.predict_threads = 2
    np.testing.assert_array_equal(learner.predict(big), whole)


def test_lightgbm_multiclass_keeps_rare_classes_from_certain_mistakes():
    """shuttle's classes of 10-50 rows: LightGBM's default hessian floor (1e-3)
    gives some test rows probability ~1e-15 for their class."""
    frame = pd.read_csv(shared_dataset("shuttle.tsv.gz"), sep="\t")
    rows = np.random.default_rng(0).permutation(len(frame))[:20_000]
    frame = frame.iloc[rows]
    y = pd.factorize(frame["target"], sort=True)[0]
    X = frame.drop(columns="target").to_numpy(np.float32)
    single = np.bincount(y)[y] < 2
    tr, te = train_test_split(
        np.arange(len(y)),
        test_size=0.3,
        random_state=0,
        stratify=np.where(single, -1, y),
    )
    k = int(y.max()) + 1
    ctx = FitContext(
        task="multiclass", n_classes=k, cat_mask=(False,) * 9, n_categories=(0,) * 9
    )

    def row_losses(params: dict) -> np.ndarray:
        model = get("lgbm")({"max_rounds": 400, **params}, context=ctx)
        P = model.fit(X[tr], y[tr]).predict(X[te])
        return -np.log(np.clip(P[np.arange(len(te)), y[te]], 1e-15, 1.0))

    floor_default = row_losses({"min_sum_hessian_in_leaf": 1e-3})
    ours = row_losses({})
    assert floor_default.max() > 30  # a row at ~1e-15 for its class
    assert ours.max() < 14  # every row above 1e-6
    assert ours.mean() < floor_default.mean() / 10


def test_lightgbm_hessian_floor_is_its_default_outside_multiclass():
    X = np.random.default_rng(0).normal(size=(300, 3)).astype(np.float32)
    y = (X[:, 0] > 0).astype(int)
    ctx = FitContext(task="binary", n_classes=2, cat_mask=(False,) * 3)
    model = get("lgbm")({"max_rounds": 20}, context=ctx).fit(X, y)
    assert model.model_.params["min_sum_hessian_in_leaf"] == 1e-3


def test_knn_measures_integer_columns_as_one_distance_each():
    # letter-like: integer columns of few levels. One-hot level columns would
    # dominate every distance; kNN must see only the standardised values.
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.preprocessing import StandardScaler

    from ensemble.learners._preprocess import OneHotScaler

    rng = np.random.default_rng(0)
    X = rng.integers(0, 16, size=(400, 3)).astype(np.float32)
    y = (X[:, 0] + X[:, 1] > 15).astype(np.int64) + (X[:, 2] > 12)
    ctx = FitContext(task="multiclass", n_classes=3, cat_mask=(False,) * 3, seed=0)
    assert OneHotScaler((False,) * 3, (0,) * 3).fit(X).transform(X).shape[1] == 51
    learner = get("knn")({}, context=ctx).fit(X[:300], y[:300])
    X64 = X.astype(np.float64)
    scaler = StandardScaler().fit(X64[:300])
    ref = KNeighborsClassifier(15, weights="distance")
    ref.fit(scaler.transform(X64[:300]), y[:300])
    expected = ref.predict_proba(scaler.transform(X64[300:]))
    np.testing.assert_allclose(learner.predict(X[300:]), expected, atol=1e-9)


def _portfolio(X, learner_params=None):
    """The default portfolio's members on the rows of ``X`` (all numeric)."""
    from types import SimpleNamespace

    from ensemble.config import DEFAULT_LEARNERS
    from ensemble.members import portfolio

    config = SimpleNamespace(
        learners=DEFAULT_LEARNERS, learner_params=learner_params or {}, portfolio=True
    )
    cats = (False,) * X.shape[1]
    ctx = SimpleNamespace(
        config=config,
        data=SimpleNamespace(X=X, has_holdout=False),
        train_rows=np.arange(len(X)),
        fit_context=FitContext(
            task="binary", n_classes=2, cat_mask=cats, n_categories=(0,) * len(cats)
        ),
        warm=None,
    )
    return {s.name: s for s in portfolio(ctx)}


def test_the_default_portfolio_has_two_knn_members_only_on_small_tables():
    from ensemble.budget import MAX_ROWS

    def specs(n_rows):
        return _portfolio(np.zeros((n_rows, 2), dtype=np.float32))

    small = specs(1_000)
    assert small["knn"].params["n_neighbors"] == 15
    assert small["knn_local"].learner == "knn"
    assert small["knn_local"].params == {"n_neighbors": 5, "weights": "distance"}
    large = specs(MAX_ROWS["knn"] + 1)
    assert not {"knn", "knn_local"} & set(large)
    assert {"lgbm", "lgbm_xt"} <= set(large)


def test_the_plain_mlp_joins_the_portfolio_only_beside_integer_level_columns():
    rng = np.random.default_rng(0)
    measured = rng.normal(size=(400, 3)).astype(np.float32)
    assert "mlp_plain" not in _portfolio(measured)
    coded = measured.copy()
    coded[:, 1] = rng.integers(0, 5, size=400)  # five integer levels
    members = _portfolio(coded)
    assert members["mlp_plain"].learner == "mlp"
    assert members["mlp_plain"].params["int_levels"] is False
    assert members["mlp"].params["int_levels"] is True
    # a user's int_levels applies to both: one MLP, not the same one twice
    mine = _portfolio(coded, {"mlp": {"int_levels": False}})
    assert "mlp_plain" not in mine
    assert mine["mlp"].params["int_levels"] is False
    # a categorical column is one-hot in both encodings: no level columns
    cat = FitContext(
        task="binary",
        n_classes=2,
        cat_mask=(False, True, False),
        n_categories=(0, 5, 0),
    )
    assert not get("mlp").portfolio_applies({"int_levels": False}, coded, cat)


def test_the_plain_mlp_sees_each_integer_column_as_one_input():
    rng = np.random.default_rng(0)
    X = np.column_stack(
        [
            rng.normal(size=300),
            rng.integers(0, 8, size=300),
            rng.integers(1, 4, size=300),
        ]
    ).astype(np.float32)
    y = (X[:, 0] + X[:, 1] / 4 > 1).astype(int)
    ctx = FitContext(task="binary", n_classes=2, cat_mask=(False,) * 3, seed=0)
    widths = {}
    for levels in (True, False):
        params = {"int_levels": levels, "width": 16, "max_epochs": 2}
        widths[levels] = get("mlp")(params, context=ctx).fit(X, y).arch_["n_in"]
    assert widths == {True: 3 + 8 + 3, False: 3}
