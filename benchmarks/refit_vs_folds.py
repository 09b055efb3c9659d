"""Each learner's fold models against its refit on every row, on unseen rows.

On one table's 80/20 split (``quality.split``), every learner is fitted on 5
folds of the 80% (each fold model on 4/5 of it) and once on all of it, with
default parameters on 2 threads, and all are scored on the 20%. The columns
are the fold models' average, the mean score of one fold model alone, and the
refit. It tells which families lose the bagging's variance reduction when a
run refits them (``ensemble/refit.py``). Every column is taken as a number
(adult's integer-coded categoricals too), so a table with text columns
(bank_marketing) is refused: it would need the run's encoding.

Usage::

    python benchmarks/refit_vs_folds.py --table house_8L [--learners lgbm,xgb,cat]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.model_selection import KFold, StratifiedKFold

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from quality import encode, split  # noqa: E402

from ensemble.learners import FitContext, get  # noqa: E402
from ensemble.metrics import default_metric, score  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--table", default="house_8L")
    p.add_argument("--learners", default="lgbm,xgb,cat,hgb,rf,et,knn,linear")
    args = p.parse_args(argv)
    train, test, target, task = split(args.table)
    features = [c for c in train.columns if c != target]
    text = [c for c in features if not pd.api.types.is_numeric_dtype(train[c])]
    if text:
        p.error(
            f"{args.table} has non-numeric columns ({', '.join(text[:3])}); "
            "use a numeric table"
        )
    X = train[features].to_numpy(np.float32)
    Xt = test[features].to_numpy(np.float32)
    if task == "regression":
        classes: list[str] = []
        y, yt = train[target].to_numpy(float), test[target].to_numpy(float)
        folds = KFold(5, shuffle=True, random_state=0).split(X)
    else:
        classes = sorted(train[target].astype(str).unique())
        y, yt = encode(train[target], classes), encode(test[target], classes)
        folds = StratifiedKFold(5, shuffle=True, random_state=0).split(X, y)
    k = len(classes)
    width = len(features)
    ctx = FitContext(
        task=task,
        n_classes=k,
        cat_mask=(False,) * width,
        n_categories=(0,) * width,
        seed=0,
        n_threads=2,
    )
    metric = default_metric(task)
    splits = list(folds)
    print(f"{args.table} ({metric}): folds average | one fold | refit on every row")
    for key in args.learners.split(","):
        t0 = time.perf_counter()
        preds = [
            get(key)({}, context=ctx).fit(X[tr], y[tr]).predict(Xt) for tr, _ in splits
        ]
        full = get(key)({}, context=ctx).fit(X, y).predict(Xt)
        avg = score(metric, yt, np.mean(preds, axis=0), k)
        one = float(np.mean([score(metric, yt, q, k) for q in preds]))
        print(
            f"{key:7s} {avg:12.5g} | {one:12.5g} | {score(metric, yt, full, k):12.5g}"
            f"   ({time.perf_counter() - t0:.0f} s)",
            flush=True,
        )


if __name__ == "__main__":
    main()
