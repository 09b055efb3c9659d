"""Run AutoGluon in its own venv (its pins clash with ours); called by compare.py.

Reads the training and holdout rows compare.py wrote, fits TabularPredictor
(the given preset and time limit) and writes holdout predictions.
Prints one JSON line with its own timings; with ``--deployment`` also the
predictor's size on disk, its load time and its prediction of one row, of
10,000 rows and of ``--big-rows`` rows, in-process, as ``quality.py``
measures ours.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
from _measure import latency


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
    p.add_argument("--deployment", action="store_true")
    p.add_argument("--big-rows", type=int, default=0)
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
    info = {"fit_s": fit_s, "best": best, "version": version}
    if args.deployment:
        info.update(deployment(args.path, features, args.big_rows))
    print(json.dumps(info))


def deployment(path: str, features: pd.DataFrame, big_rows: int) -> dict[str, float]:
    """Size, load, one row, 10,000 rows (and ``big_rows``) of the predictor.

    As its users get it from the preset: loaded from disk, predicting
    probabilities (values for regression). AutoGluon loads its models lazily,
    on the first prediction, so ``load_s`` runs until a first row is
    predicted (ours loads every model in ``ensemble.load``).
    """
    from autogluon.tabular import TabularPredictor

    size = sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())
    t0 = time.perf_counter()
    predictor = TabularPredictor.load(path)
    regression = predictor.problem_type == "regression"

    def predict(rows: pd.DataFrame) -> None:
        if regression:
            predictor.predict(rows)
        else:
            predictor.predict_proba(rows)

    predict(features.iloc[:1])
    load_s = time.perf_counter() - t0

    out = {"dir_mib": size / 2**20, "load_s": load_s, **latency(predict, features)}
    if big_rows:
        big = features.iloc[np.arange(big_rows) % len(features)]
        t0 = time.perf_counter()
        predict(big)
        out["rows_big_s"] = time.perf_counter() - t0
    return out


if __name__ == "__main__":
    main()
