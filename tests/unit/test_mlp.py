"""The MLP learner and its torch training core: strategies, warm start (no Ray)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ensemble.exceptions import ConfigError
from ensemble.learners import FitContext, get
from ensemble.learners.mlp import MLPLearner, load_warm_state
from ensemble.nn import TorchTrainer, auto_batch_size, build_mlp, fit_temperature

MLP = get("mlp")


def table(n: int, seed: int, classes: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Rows from one fixed distribution: a new seed is a new sample of it."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 6)).astype(np.float32)
    w = np.random.default_rng(123).normal(size=(6, classes))
    logits = np.tanh(X) @ w * 2.0 + rng.gumbel(size=(n, classes))
    return X, logits.argmax(axis=1)


def ctx(classes: int = 3, seed: int = 0) -> FitContext:
    return FitContext(
        task="multiclass" if classes > 2 else "binary",
        n_classes=classes,
        cat_mask=(False,) * 6,
        n_categories=(0,) * 6,
        seed=seed,
    )


def fit(params: dict, X, y, seed: int = 0, init: bytes | None = None):
    m = MLP(MLP.check_params(params), context=ctx(seed=seed))
    m.init_state = init
    return m.fit(X, y)


SMALL = {"width": 64, "max_epochs": 30, "patience": 30}


def test_same_seed_same_model_on_cpu():
    X, y = table(600, 0)
    a = fit(SMALL, X, y).predict(X)
    b = fit(SMALL, X, y).predict(X)
    np.testing.assert_array_equal(a, b)
    c = fit(SMALL, X, y, seed=1).predict(X)
    assert not np.allclose(a, c)


@pytest.mark.parametrize("schedule", ["cosine", "onecycle", "plateau", "constant"])
def test_each_schedule_learns_and_moves_the_lr_as_documented(schedule):
    X, y = table(800, 1)
    m = fit({**SMALL, "schedule": schedule, "max_epochs": 12}, X, y)
    lrs = [h["lr"] for h in m.history_]
    acc = (m.predict(X).argmax(1) == y).mean()
    assert acc > 0.7
    if schedule == "cosine":
        assert lrs[0] < 2e-3 and lrs == sorted(lrs, reverse=True)
    elif schedule == "onecycle":
        peak = int(np.argmax(lrs))
        assert 0 < peak < len(lrs) - 1  # warm-up, then annealing
    elif schedule == "constant":
        assert set(lrs) == {2e-3}
    else:
        assert lrs[0] == 2e-3 and lrs[-1] <= 2e-3


def test_bad_params_are_clear():
    with pytest.raises(ConfigError, match="schedule 'linear' is not one of"):
        MLP.check_params({"schedule": "linear"})
    with pytest.raises(ConfigError, match="batch_size 1 is not valid"):
        MLP.check_params({"batch_size": 1})


def test_auto_batch_size():
    assert auto_batch_size("auto", 11_520) == 128  # letter's inner training rows
    assert auto_batch_size("auto", 35_000) == 256  # adult
    assert auto_batch_size("auto", 900) == 128
    assert auto_batch_size("auto", 5_000_000) == 1024
    assert auto_batch_size(64, 10) == 64


def test_noise_and_mixup_change_training_batches_only():
    torch.manual_seed(0)
    module = build_mlp(6, 3, 16, 1, 0.0)
    gen = torch.Generator().manual_seed(0)
    xb = torch.zeros((8, 6))
    yb = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    loop = {"lr": 1e-3, "weight_decay": 0, "batch_size": 8, "max_epochs": 1}
    loop.update(patience=1, seed=0)
    t = TorchTrainer(module, loss="ce", noise_std=0.5, mixup=0.4, **loop)
    t._n_out = 3
    xa, ya = t.augment(xb, yb, gen)
    assert 0.2 < float(xa.std()) < 1.0  # noise of about 0.5 sd (mixed)
    assert ya.shape == (8, 3) and torch.allclose(ya.sum(1), torch.ones(8))
    lam = float(ya.max(1).values.min())
    assert lam >= 0.5  # the row's own label keeps the larger share
    plain = TorchTrainer(module, loss="ce", **loop)
    xp, yp = plain.augment(xb, yb, gen)
    assert xp is xb and yp is yb
    # augmentation never touches validation: its loss is the plain loss
    assert t.validation_loss(xb, yb) == plain.validation_loss(xb, yb)


def test_augmented_training_still_learns():
    X, y = table(800, 2)
    m = fit({**SMALL, "noise_std": 0.1, "mixup": 0.2}, X, y)
    assert (m.predict(X).argmax(1) == y).mean() > 0.7


def test_temperature_minimises_the_loss():
    torch.manual_seed(0)
    y = torch.randint(0, 4, (500,))
    logits = torch.nn.functional.one_hot(y, 4).float() * 6 + torch.randn(500, 4) * 3
    t, loss = fit_temperature(logits, y)
    ce = torch.nn.functional.cross_entropy
    assert loss <= float(ce(logits, y)) + 1e-9
    for other in (t * 0.8, t * 1.25):
        assert loss <= float(ce(logits / other, y)) + 1e-9
    assert t > 1  # over-confident logits are softened


def test_predictions_use_the_fitted_temperature(tmp_path):
    X, y = table(600, 3)
    m = fit(SMALL, X, y)
    assert m.temperature_ > 0 and "temperature" in m.history_[0]
    with torch.no_grad():
        raw = m.model_(torch.as_tensor(m.pre_.transform(X)))
    expect = torch.softmax(raw / m.temperature_, dim=1).numpy()
    np.testing.assert_allclose(m.predict(X), expect, rtol=1e-5)
    m.save(tmp_path / "m")
    again = MLP.load(tmp_path / "m")
    np.testing.assert_allclose(again.predict(X), m.predict(X), rtol=1e-6)


def epochs_to_reach(history: list[dict], target: float) -> int:
    for h in history:
        if h["valid_loss"] <= target:
            return int(h["epoch"]) + 1
    return len(history) + 1


def test_warm_start_reaches_the_cold_loss_in_fewer_epochs(tmp_path):
    # The network is pinned (not the defaults): this tests the warm start,
    # on a table where a cold start needs most of its epochs.
    params = {"width": 64, "depth": 2, "max_epochs": 40, "patience": 8, "lr": 1e-3}
    X_old, y_old = table(3000, 10)  # yesterday's table
    X_new, y_new = table(3000, 11)  # today's: new rows, same distribution
    old = fit(params, X_old, y_old)
    old.save(tmp_path / "old")
    blob = MLPLearner.saved_state(tmp_path / "old")
    cold = fit(params, X_new, y_new)
    warm = fit(params, X_new, y_new, init=blob)
    assert warm.warm_started_
    target = cold.best_valid_loss_
    cold_epochs = epochs_to_reach(cold.history_, target)
    warm_epochs = epochs_to_reach(warm.history_, target)
    assert warm_epochs < cold_epochs, (warm_epochs, cold_epochs)
    # the first epoch of the warm start is already far better than the cold one
    assert warm.history_[0]["valid_loss"] < cold.history_[0]["valid_loss"] * 0.8


def test_warm_start_with_another_shape_is_a_clear_error(tmp_path):
    X, y = table(400, 12)
    fit({**SMALL, "width": 32}, X, y).save(tmp_path / "old")
    blob = MLPLearner.saved_state(tmp_path / "old")
    with pytest.raises(ConfigError, match=r"width 32 there vs 64 here"):
        fit(SMALL, X, y, init=blob)
    module = build_mlp(7, 3, 32, 2, 0.0)
    with pytest.raises(ConfigError, match="n_in 6 there vs 7 here"):
        load_warm_state(module, blob, {"n_in": 7, "n_out": 3, "width": 32, "depth": 2})


class _StepClock:
    """A clock that moves one second per training step (nothing else moves it)."""

    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def _boxed_trainer(clock: _StepClock, box: float | None, schedule: str = "cosine"):
    torch.manual_seed(0)
    module = build_mlp(6, 3, width=16, depth=1, dropout=0.0)

    class Trainer(TorchTrainer):
        def train_step(self, xb, yb, optimizer):
            clock.t += 1.0
            return super().train_step(xb, yb, optimizer)

    return Trainer(
        module,
        loss="ce",
        lr=1e-2,
        weight_decay=0.0,
        batch_size=100,
        max_epochs=20,
        patience=100,
        seed=0,
        schedule=schedule,
        time_box_s=box,
    )


def _fit_loop(trainer: TorchTrainer, n: int = 400):
    X, y = table(n + 200, 3)
    Xt, yt = torch.as_tensor(X), torch.as_tensor(y)
    return trainer.fit_loop(Xt[:n], yt[:n], Xt[n:], yt[n:])


def test_a_time_box_plans_the_epochs_and_decays_the_cosine_over_them(monkeypatch):
    import ensemble.nn as nn_mod

    clock = _StepClock()
    monkeypatch.setattr(nn_mod, "_now", clock)
    # 4 steps an epoch = 4 s: a 21 s box affords 5 of the 20 epochs
    trained = _fit_loop(_boxed_trainer(clock, 21.0))
    lrs = [h["lr"] for h in trained.history_]
    assert len(lrs) == 5 and trained.truncated_
    assert lrs[-1] == pytest.approx(0.0, abs=1e-12)  # decayed to its end
    assert lrs == sorted(lrs, reverse=True)
    assert clock.t == 20.0  # 5 epochs of 4 steps: within the box


def test_a_box_stops_the_other_schedules_before_an_epoch_would_overrun(monkeypatch):
    import ensemble.nn as nn_mod

    clock = _StepClock()
    monkeypatch.setattr(nn_mod, "_now", clock)
    trained = _fit_loop(_boxed_trainer(clock, 21.0, schedule="constant"))
    assert len(trained.history_) == 5 and trained.truncated_
    assert {h["lr"] for h in trained.history_} == {1e-2}


def test_a_roomy_box_changes_nothing(monkeypatch):
    import ensemble.nn as nn_mod

    clock = _StepClock()
    monkeypatch.setattr(nn_mod, "_now", clock)
    free = _fit_loop(_boxed_trainer(clock, None))
    roomy = _fit_loop(_boxed_trainer(clock, 1e6))
    assert not free.truncated_ and not roomy.truncated_
    assert len(free.history_) == len(roomy.history_) == 20
    assert free.history_ == roomy.history_


def test_a_spent_box_leaves_one_epoch_and_a_valid_mlp():
    from dataclasses import replace

    X, y = table(600, 0)
    m = MLP(MLP.check_params(SMALL), context=replace(ctx(), time_box_s=0.0))
    m.fit(X, y)
    assert m.truncated_ and len(m.history_) == 1
    np.testing.assert_allclose(m.predict(X).sum(axis=1), 1.0, atol=1e-9)
    assert not fit(SMALL, X, y).truncated_
