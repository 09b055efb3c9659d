"""Distillation and pruning on a real table: student vs ensemble, pruned vs dense.

    python benchmarks/compress.py --data ../shared/datasets/adult.tsv.gz --target target

Fits a default run (or reuses --run), then `ensemble distill` (LightGBM student)
and `ensemble prune --sparsity 0.5`; prints and writes one Parquet row per
model: holdout score, fidelity, ms per 1,000 rows, sparsity.
Targets (issue 5): student AUC within 0.005 of the ensemble's and >= 10x faster;
50% pruning moves the MLP's holdout AUC by < 0.005.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

HERE = Path(__file__).resolve().parent
ENSEMBLE = str(Path(sys.executable).with_name("ensemble"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data")
    ap.add_argument("--target", default="target")
    ap.add_argument("--run", help="an existing complete run to compress")
    ap.add_argument("--out", default=str(HERE / "results" / "runs"))
    ap.add_argument("--student", default="lgbm")
    ap.add_argument("--sparsity", type=float, default=0.5)
    args = ap.parse_args()
    if args.run:
        run = Path(args.run)
    else:
        name = Path(args.data).name.split(".")[0]
        run_id = f"compress-{name}"
        t0 = time.time()
        subprocess.run(
            [ENSEMBLE, "fit", "--data", args.data, "--target", args.target]
            + ["--out", args.out, "--run-id", run_id, "-q"]
            # distillation and pruning score on a holdout; pruning needs the
            # MLP members' fold models
            + ["--holdout", "0.2", "--keep-models", "all"],
            check=True,
        )
        print(f"fit: {time.time() - t0:.0f} s")
        run = Path(args.out) / run_id
    from ensemble.compress import distill, prune

    t0 = time.time()
    row = distill(run, student=args.student)
    distill_s = time.time() - t0
    t0 = time.time()
    pruned = prune(run, sparsity=args.sparsity)
    prune_s = time.time() - t0
    board = pd.read_parquet(run / "leaderboard.parquet").set_index("model")
    teacher = row["teacher"]
    p = pruned.iloc[0]
    table = pd.DataFrame(
        [
            {
                "run": run.name,
                "metric": row["metric"],
                "teacher": teacher,
                "teacher_holdout": board.loc[teacher, "holdout_score"],
                "teacher_ms_per_1k": board.loc[teacher, "predict_ms_per_1k"],
                "student": row.name,
                "student_holdout": row["holdout_score"],
                "student_ms_per_1k": row["predict_ms_per_1k"],
                "speedup": row["speedup"],
                "fidelity": row["fidelity"],
                "distill_s": distill_s,
                "pruned_member": p.pruned_member,
                "sparsity": p.sparsity,
                "mlp_holdout_before": p.holdout_before,
                "mlp_holdout_after": p.holdout_after,
                "mlp_holdout_delta": p.holdout_delta,
                "prune_s": prune_s,
            }
        ]
    )
    out = HERE / "results" / f"compress-{run.name}.parquet"
    table.to_parquet(out, index=False)
    with pd.option_context("display.width", 200, "display.max_columns", 30):
        print(table.T.to_string(header=False))
    print(f"-> {out}")


if __name__ == "__main__":
    main()
