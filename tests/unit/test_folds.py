import numpy as np
import pandas as pd
import pytest

from ensemble.data import assign_folds
from tests.conftest import shared_dataset


def test_folds_partition_training_rows_and_holdout_fraction():
    y = np.repeat([0, 1], [700, 300])
    fold = assign_folds(y, task="binary", n_folds=5, holdout=0.2, seed=0)
    assert (fold == -1).sum() == 200
    counts = np.bincount(fold[fold >= 0])
    assert len(counts) == 5 and counts.min() >= 159 and counts.max() <= 161


def test_folds_are_stratified():
    y = np.repeat([0, 1, 2], [800, 150, 50])
    fold = assign_folds(y, task="multiclass", n_folds=5, holdout=0.2, seed=3)
    overall = np.bincount(y) / len(y)
    for k in range(-1, 5):
        share = np.bincount(y[fold == k], minlength=3) / (fold == k).sum()
        np.testing.assert_allclose(share, overall, atol=0.02)


def test_folds_are_shuffled_not_contiguous():
    # A time-ordered target: unshuffled folds would be contiguous blocks.
    y = np.r_[np.zeros(500, int), np.ones(500, int)]
    fold = assign_folds(y, task="binary", n_folds=5, holdout=0.2, seed=0)
    first_block = fold[:200]
    assert len(set(first_block[first_block >= 0])) == 5


def test_same_seed_same_folds_other_seed_other_folds():
    y = np.random.default_rng(0).normal(size=500)
    a = assign_folds(y, task="regression", n_folds=4, holdout=0.25, seed=7)
    b = assign_folds(y, task="regression", n_folds=4, holdout=0.25, seed=7)
    c = assign_folds(y, task="regression", n_folds=4, holdout=0.25, seed=8)
    np.testing.assert_array_equal(a, b)
    assert (a != c).any()
    assert set(np.unique(a)) == {-1, 0, 1, 2, 3}


def test_bank_marketing_time_ordered_needs_shuffled_folds():
    """bank_marketing is time-ordered: our folds must give a sane AUC there."""
    from sklearn.compose import make_column_transformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    frame = pd.read_csv(shared_dataset("bank_marketing.csv"))
    y = (frame.pop("y") == "yes").to_numpy(int)
    cats = frame.select_dtypes(exclude="number").columns
    nums = frame.select_dtypes(include="number").columns
    fold = assign_folds(y, task="binary", n_folds=5, holdout=0.2, seed=0)
    # Every fold sees the same positive rate as the whole table, though the
    # first fifth of the file has 3% positives and the last 32%.
    rates = [y[fold == k].mean() for k in range(5)]
    assert max(rates) - min(rates) < 0.005
    oof = np.zeros(len(y))
    for k in range(5):
        model = make_pipeline(
            make_column_transformer(
                (OneHotEncoder(handle_unknown="ignore"), cats), (StandardScaler(), nums)
            ),
            LogisticRegression(max_iter=300),
        )
        tr, va = (fold >= 0) & (fold != k), fold == k
        model.fit(frame[tr], y[tr])
        oof[va] = model.predict_proba(frame[va])[:, 1]
    auc = roc_auc_score(y[fold >= 0], oof[fold >= 0])
    assert auc > 0.88, auc


@pytest.mark.parametrize("task", ["binary", "regression"])
def test_fold_ids_cover_every_training_row(task):
    y = np.random.default_rng(1).integers(0, 2, 101)
    fold = assign_folds(y, task=task, n_folds=3, holdout=0.3, seed=0)
    assert fold.shape == (101,)
    assert (fold >= -1).all() and (fold < 3).all()


def test_without_a_holdout_every_row_is_in_a_fold():
    y = np.array([0, 1] * 50)
    fold = assign_folds(y, task="binary", n_folds=5, holdout=0.0, seed=0)
    assert (fold >= 0).all()
    assert np.bincount(fold).tolist() == [20] * 5
    for k in range(5):  # stratified
        assert y[fold == k].mean() == 0.5


def test_repeats_deal_the_same_rows_into_new_folds_deterministically():
    from ensemble.data import repeat_folds

    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, size=300)
    f0 = assign_folds(y, task="multiclass", n_folds=5, holdout=0.2, seed=4)
    f1 = repeat_folds(y, f0, task="multiclass", repeat=1, seed=4)
    f2 = repeat_folds(y, f0, task="multiclass", repeat=2, seed=4)
    assert repeat_folds(y, f0, task="multiclass", repeat=0, seed=4) is f0
    # the holdout stays the holdout; the same rows are dealt again
    np.testing.assert_array_equal(f1 < 0, f0 < 0)
    assert sorted(np.bincount(f1[f1 >= 0]).tolist()) == sorted(
        np.bincount(f0[f0 >= 0]).tolist()
    )
    assert (f1 != f0).any() and (f2 != f1).any()
    # the same seed gives the same repeats; another seed other ones
    np.testing.assert_array_equal(
        f1, repeat_folds(y, f0, task="multiclass", repeat=1, seed=4)
    )
    assert (f1 != repeat_folds(y, f0, task="multiclass", repeat=1, seed=5)).any()
