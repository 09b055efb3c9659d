"""Run AutoGluon in its own venv (its pins clash with ours); called by compare.py.

Reads the training and holdout rows compare.py wrote, fits TabularPredictor
(the given preset and time limit) and writes holdout predictions.
Prints one JSON line with its own timings.
"""

from __future__ import annotations

import argparse
import json
import time

import pandas as pd


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--train", required=True)
    p.add_argument("--test", required=True)
    p.add_argument("--label", required=True)
    p.add_argument("--problem-type", required=True)
    p.add_argument("--eval-metric", required=True)
    p.add_argument("--presets", default="medium_quality")
    p.add_argument("--time-limit", type=float, required=True)
    p.add_argument("--path", required=True)
    p.add_argument("--out", required=True)
    args = p.parse_args()

    import autogluon.tabular
    from autogluon.tabular import TabularPredictor

    train = pd.read_parquet(args.train)
    test = pd.read_parquet(args.test)
    t0 = time.perf_counter()
    predictor = TabularPredictor(
        label=args.label,
        problem_type=args.problem_type,
        eval_metric=args.eval_metric,
        path=args.path,
        verbosity=1,
    ).fit(train, presets=args.presets, time_limit=args.time_limit)
    fit_s = time.perf_counter() - t0
    features = test.drop(columns=[args.label])
    if args.problem_type == "regression":
        out = pd.DataFrame({"pred": predictor.predict(features).to_numpy()})
    else:
        proba = predictor.predict_proba(features)
        out = pd.DataFrame({f"pred_{c}": proba[c].to_numpy() for c in proba.columns})
    out.to_parquet(args.out)
    best = predictor.model_best
    version = autogluon.tabular.__version__
    print(json.dumps({"fit_s": fit_s, "best": best, "version": version}))


if __name__ == "__main__":
    main()
