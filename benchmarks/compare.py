"""Side by side on one holdout split and one set of folds.

Systems: this project's ensemble (the chosen model), each of its members alone,
scikit-learn's StackingClassifier / StackingRegressor over the same learners
(our learner implementations behind a scikit-learn adapter, the same folds via
PredefinedSplit, n_jobs=-1) and AutoGluon's TabularPredictor (preset
medium_quality, the same time limit, in its own venv: ``make bench-autogluon``).

Usage::

    python benchmarks/compare.py --data ../shared/datasets/adult.tsv.gz \\
        --target target [--time-limit 120]

One Parquet row per system (scores, wall seconds, peak RSS of the process tree)
in ``benchmarks/results/``, and a printed table.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from _measure import PeakRSS, drop_models, run_measured  # noqa: E402

from ensemble import runtime  # noqa: E402
from ensemble.config import DEFAULT_LEARNERS, RunConfig  # noqa: E402
from ensemble.data import load_table, prepare  # noqa: E402
from ensemble.learners import FitContext, get  # noqa: E402
from ensemble.metrics import default_metric, score_all  # noqa: E402
from ensemble.report import parallel_efficiency  # noqa: E402
from ensemble.runner import fit_run  # noqa: E402

AG_METRIC = {
    "roc_auc": "roc_auc",
    "log_loss": "log_loss",
    "rmse": "root_mean_squared_error",
}
AG_PYTHON = HERE.parent / ".venv-autogluon" / "bin" / "python"


class LearnerAdapter(BaseEstimator):
    """One of our learners (defaults) as a scikit-learn estimator."""

    def __init__(
        self,
        key: str = "lgbm",
        task: str = "binary",
        n_classes: int = 2,
        cat_mask: tuple[bool, ...] = (),
        n_categories: tuple[int, ...] = (),
        seed: int = 0,
    ) -> None:
        self.key = key
        self.task = task
        self.n_classes = n_classes
        self.cat_mask = cat_mask
        self.n_categories = n_categories
        self.seed = seed

    def fit(self, X: np.ndarray, y: np.ndarray) -> LearnerAdapter:
        ctx = FitContext(
            task=self.task,
            n_classes=self.n_classes,
            cat_mask=self.cat_mask,
            n_categories=self.n_categories,
            seed=self.seed,
            n_threads=1,
        )
        cls = get(self.key)
        self.model_ = cls(cls.check_params({}), context=ctx).fit(X, y)
        if self.task != "regression":
            self.classes_ = np.arange(self.n_classes)
        return self

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        return np.asarray(self.model_.predict(X))

    def predict(self, X: np.ndarray) -> np.ndarray:
        out = np.asarray(self.model_.predict(X))
        return out.argmax(axis=1) if self.task != "regression" else out.reshape(-1)


class ClassifierAdapter(ClassifierMixin, LearnerAdapter):
    pass


class RegressorAdapter(RegressorMixin, LearnerAdapter):
    pass


def _row(
    system: str,
    kind: str,
    task: str,
    metric: str,
    y: Any,
    pred: Any,
    k: int,
    **extra: Any,
) -> dict:
    scores = score_all(task, y, pred, k)
    return {
        "system": system,
        "kind": kind,
        "metric": metric,
        "holdout_score": scores[metric],
        **scores,
        **extra,
    }


def run_ours(cfg: RunConfig, data: Any, num_cpus: int | None) -> tuple[list[dict], Any]:
    runtime.connect(None, num_cpus=num_cpus, verbose=0)
    with PeakRSS() as mem:
        t0 = time.perf_counter()
        result = fit_run(cfg, data=data)
        wall = time.perf_counter() - t0
    runtime.shutdown(True)
    board = result.leaderboard.set_index("model")
    metric = board["metric"].iloc[0]
    fits = pd.read_parquet(result.run_dir.path / "fits.parquet")
    slots = int(result.manifest["timing"]["slots"])
    eff = parallel_efficiency(fits, slots)
    hold = pd.read_parquet(result.run_dir.path / "holdout.parquet")
    rows = []
    cols = [c for c in hold.columns if c.startswith("pred")]
    y = data.y[data.fold == -1]
    for model, part in hold.groupby("model", sort=False):
        pred = part.sort_values("row_id")[cols].to_numpy()
        kind = board.loc[model, "kind"]
        if kind == "fusion" and model != result.best:
            continue
        name = f"ensemble ({model})" if model == result.best else f"member {model}"
        extra = (
            {"wall_s": wall, "peak_rss_mib": mem.peak_mib}
            if model == result.best
            else {}
        )
        rows.append(
            _row(
                name,
                "ensemble" if model == result.best else "member",
                data.task,
                metric,
                y,
                pred[:, 0] if cols == ["pred"] else pred,
                data.n_classes,
                fit_s=float(board.loc[model, "fit_s"]),
                parallel_efficiency=eff if model == result.best else math.nan,
                **extra,
            )
        )
    print(
        f"parallel efficiency (fits.parquet): {eff:.3f} = sum fit time / "
        f"(fit-stage wall x {slots} slots)"
    )
    return rows, result


def run_sklearn(data: Any, learners: list[str], metric: str, seed: int) -> dict:
    from sklearn.ensemble import StackingClassifier, StackingRegressor
    from sklearn.linear_model import LogisticRegression, RidgeCV
    from sklearn.model_selection import PredefinedSplit

    train = data.fold >= 0
    X, y = data.X[train], data.y[train]
    common = {
        "task": data.task,
        "n_classes": data.n_classes,
        "cat_mask": tuple(bool(b) for b in data.schema.cat_mask),
        "n_categories": tuple(data.schema.n_categories),
        "seed": seed,
    }
    cv = PredefinedSplit(data.fold[train])  # the very folds our run used
    if data.task == "regression":
        est: Any = StackingRegressor(
            [(k, RegressorAdapter(k, **common)) for k in learners],
            final_estimator=RidgeCV(),
            cv=cv,
            n_jobs=-1,
        )
    else:
        est = StackingClassifier(
            [(k, ClassifierAdapter(k, **common)) for k in learners],
            final_estimator=LogisticRegression(max_iter=1000),
            cv=cv,
            stack_method="predict_proba",
            n_jobs=-1,
        )
    with PeakRSS() as mem:
        t0 = time.perf_counter()
        est.fit(X, y)
        wall = time.perf_counter() - t0
    Xh, yh = data.X[data.fold == -1], data.y[data.fold == -1]
    pred = est.predict(Xh) if data.task == "regression" else est.predict_proba(Xh)
    name = "sklearn Stacking" + (
        "Regressor" if data.task == "regression" else "Classifier"
    )
    return _row(
        name,
        "sklearn",
        data.task,
        metric,
        yh,
        pred,
        data.n_classes,
        wall_s=wall,
        peak_rss_mib=mem.peak_mib,
        fit_s=wall,
    )


def run_autogluon(
    frame: pd.DataFrame,
    data: Any,
    target: str,
    metric: str,
    time_limit: float,
    python: Path,
) -> dict:
    hold = data.fold == -1
    with tempfile.TemporaryDirectory(prefix="ag-") as tmp:
        tmp_path = Path(tmp)
        frame.iloc[np.flatnonzero(~hold)].to_parquet(tmp_path / "train.parquet")
        frame.iloc[np.flatnonzero(hold)].to_parquet(tmp_path / "test.parquet")
        problem = {"binary": "binary", "multiclass": "multiclass"}.get(
            data.task, "regression"
        )
        cmd = [
            str(python),
            str(HERE / "_autogluon.py"),
            "--train",
            str(tmp_path / "train.parquet"),
            "--test",
            str(tmp_path / "test.parquet"),
            "--label",
            target,
            "--problem-type",
            problem,
            "--eval-metric",
            AG_METRIC[metric],
            "--time-limit",
            str(time_limit),
            "--path",
            str(tmp_path / "ag"),
            "--out",
            str(tmp_path / "pred.parquet"),
        ]
        out, wall, peak = run_measured(cmd, "AutoGluon")
        info = json.loads(out.strip().splitlines()[-1])
        pred = pd.read_parquet(tmp_path / "pred.parquet")
    if data.task == "regression":
        P = pred["pred"].to_numpy()
    else:
        P = pred[[f"pred_{c}" for c in data.classes]].to_numpy()
    return _row(
        f"AutoGluon medium_quality ({info['best']})",
        "autogluon",
        data.task,
        metric,
        data.y[hold],
        P,
        data.n_classes,
        wall_s=wall,
        peak_rss_mib=peak,
        fit_s=info["fit_s"],
    )


def main(argv: list[str] | None = None) -> pd.DataFrame:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", required=True)
    p.add_argument("--target", required=True)
    p.add_argument(
        "--time-limit",
        type=float,
        default=None,
        help="budget of our run (tuning on) and of AutoGluon; default: "
        "our untuned run, AutoGluon gets the wall time our run took",
    )
    p.add_argument("--learners", default=",".join(DEFAULT_LEARNERS))
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--num-cpus", type=int, default=None)
    p.add_argument("--out", default=str(HERE / "results"))
    p.add_argument("--autogluon-python", default=str(AG_PYTHON))
    p.add_argument("--no-sklearn", action="store_true")
    p.add_argument("--no-autogluon", action="store_true")
    p.add_argument(
        "--no-half",
        action="store_true",
        help="skip our second run with --time-limit = half of sklearn's wall",
    )
    p.add_argument(
        "--keep-models",
        action="store_true",
        help="keep the fold models of our runs (deleted once measured)",
    )
    args = p.parse_args(argv)

    learners = [k.strip() for k in args.learners.split(",") if k.strip()]
    frame, sha = load_table(args.data)
    # This comparison scores every system on one holdout of the table.
    data = prepare(
        frame,
        args.target,
        n_folds=args.folds,
        holdout=0.2,
        seed=args.seed,
        data_sha256=sha,
    )
    metric = default_metric(data.task)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    name = Path(args.data).name.split(".")[0].replace(":", "_")
    cfg = RunConfig(
        data=args.data,
        target=args.target,
        out=str(out / "runs"),
        learners=tuple(learners),
        n_folds=args.folds,
        holdout=0.2,
        seed=args.seed,
        time_limit=args.time_limit,
        verbose=0,
    )
    rows, result = run_ours(cfg, data, args.num_cpus)
    if not args.keep_models:
        drop_models(result.run_dir.path)
    if not args.no_sklearn:
        sk = run_sklearn(data, learners, metric, args.seed)
        rows.append(sk)
        if not args.no_half:
            # The wall-time target: our run under half of sklearn's wall, the
            # same learners offered (the budget decides which get fitted).
            half = round(0.5 * sk["wall_s"], 1)
            half_rows, half_result = run_ours(
                cfg.replace(time_limit=half), data, args.num_cpus
            )
            row = next(r for r in half_rows if r["kind"] == "ensemble")
            row["system"] = f"ensemble @ 0.5x sklearn wall, {row['system']}"
            row["kind"] = "ensemble_half"
            row["members"] = ",".join(half_result.manifest["members"])
            if not args.keep_models:
                drop_models(half_result.run_dir.path)
            rows.append(row)
    ag_python = Path(args.autogluon_python)
    if not args.no_autogluon:
        if ag_python.exists():
            ours = next(r for r in rows if r["kind"] == "ensemble")
            limit = args.time_limit or math.ceil(ours["wall_s"])
            rows.append(
                run_autogluon(frame, data, args.target, metric, limit, ag_python)
            )
        else:
            print(f"AutoGluon skipped: {ag_python} missing (make bench-autogluon)")
    table = pd.DataFrame(rows)
    table.insert(0, "dataset", name)
    table["time_limit"] = args.time_limit
    table["n_train"] = int((data.fold >= 0).sum())
    table["n_holdout"] = int((data.fold == -1).sum())
    table["run_id"] = result.run_dir.run_id
    table["date"] = date.today().isoformat()
    tag = f"tl{int(args.time_limit)}" if args.time_limit else "default"
    path = out / f"compare-{name}-{tag}.parquet"
    table.to_parquet(path)
    show = ["system", "holdout_score", "wall_s", "peak_rss_mib", "fit_s"]
    with pd.option_context("display.width", 160, "display.max_columns", 20):
        print(f"{name}: {metric} on {int((data.fold == -1).sum())} holdout rows")
        print(table[show].to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    print(f"-> {path}")
    return table


if __name__ == "__main__":
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    main()
