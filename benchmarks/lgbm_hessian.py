"""LightGBM's hessian floor on the multiclass tables: test log loss by value.

On each table's 80/20 split (``quality.split``), LightGBM is trained as the
``lgbm`` learner trains it (learning rate 0.05, 31 leaves, feature fraction
0.9, early stopping after 50 rounds on a stratified tenth of the 80%), once per
``min_sum_hessian_in_leaf`` value, and scored on the 20%. One split and one
seed: a difference of a few percent is within what another split would move.
Text columns become pandas categoricals (LightGBM's native categoricals).

Usage::

    python benchmarks/lgbm_hessian.py --tables shuttle,fars --values 0.001,0.1
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import lightgbm as lgb
import numpy as np
import pandas as pd
from sklearn.metrics import log_loss
from sklearn.model_selection import train_test_split

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from quality import encode, split  # noqa: E402

MULTICLASS = "letter,pendigits,krkopt,shuttle,sleep,fars"


def _frame(table: str) -> tuple[pd.DataFrame, pd.DataFrame, np.ndarray, np.ndarray]:
    """Features of the train and test rows, and their class codes."""
    train, test, target, _ = split(table)
    features = [c for c in train.columns if c != target]
    X, Xt = train[features].copy(), test[features].copy()
    for c in features:
        if not pd.api.types.is_numeric_dtype(X[c]):
            kind = pd.CategoricalDtype(sorted(X[c].astype(str).unique()))
            X[c] = X[c].astype(str).astype(kind)
            Xt[c] = Xt[c].astype(str).astype(kind)
    classes = sorted(train[target].astype(str).unique())
    return X, Xt, encode(train[target], classes), encode(test[target], classes)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--tables", default=MULTICLASS)
    p.add_argument("--values", default="0.001,0.1,0.3,1.0")
    args = p.parse_args(argv)
    values = [float(v) for v in args.values.split(",")]
    print("table | " + " | ".join(f"hessian {v:g}" for v in values))
    for table in args.tables.split(","):
        X, Xt, y, yt = _frame(table)
        k = int(y.max()) + 1
        tr, va = train_test_split(
            np.arange(len(y)), test_size=0.1, stratify=y, random_state=0
        )
        cells = []
        for value in values:
            t0 = time.perf_counter()
            params = {
                "objective": "multiclass",
                "num_class": k,
                "learning_rate": 0.05,
                "num_leaves": 31,
                "min_child_samples": 20,
                "feature_fraction": 0.9,
                "min_sum_hessian_in_leaf": value,
                "verbosity": -1,
                "num_threads": 2,
                "seed": 0,
                "deterministic": True,
                "force_row_wise": True,
            }
            model = lgb.train(
                params,
                lgb.Dataset(X.iloc[tr], y[tr]),
                10_000,
                valid_sets=[lgb.Dataset(X.iloc[va], y[va])],
                callbacks=[lgb.early_stopping(50, verbose=False)],
            )
            P = model.predict(Xt, num_iteration=model.best_iteration)
            loss = log_loss(yt, P, labels=list(range(k)))
            took = time.perf_counter() - t0
            cells.append(f"{loss:.5f} ({model.best_iteration} rounds, {took:.0f} s)")
        print(f"{table} | " + " | ".join(cells), flush=True)


if __name__ == "__main__":
    main()
