"""How wall time and memory grow with rows at a fixed budget.

Synthetic classification tables of 100k, 300k and 1,000,000 rows x 50
features; ``ensemble fit`` with the default learners and ``--time-limit``;
wall time and peak RSS of the whole process tree (driver + Ray) per size.

Usage::

    python benchmarks/scale.py [--rows 100000,300000,1000000] [--time-limit 300]
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import date
from pathlib import Path

import pandas as pd

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _measure import drop_models, run_measured  # noqa: E402

ENSEMBLE = [sys.executable, "-m", "ensemble.cli"]


def main(argv: list[str] | None = None) -> pd.DataFrame:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rows", default="100000,300000,1000000")
    p.add_argument("--features", type=int, default=50)
    p.add_argument("--time-limit", type=float, default=300)
    p.add_argument("--out", default=str(HERE / "results"))
    p.add_argument(
        "--keep-models",
        action="store_true",
        help="keep the fold models of each run (deleted once measured)",
    )
    args = p.parse_args(argv)
    out = Path(args.out)
    rows = []
    for n in [int(r) for r in args.rows.split(",")]:
        run_id = f"scale-{n}"
        cmd = [
            *ENSEMBLE,
            "fit",
            "--data",
            f"synthetic:classification,rows={n},features={args.features},seed=0",
            "--target",
            "target",
            "--out",
            str(out / "runs"),
            "--run-id",
            run_id,
            "--time-limit",
            str(args.time_limit),
            "--holdout",
            "0.2",  # scored on held-out rows of the synthetic table
            "-q",
        ]
        run_dir = out / "runs" / run_id
        if run_dir.exists():
            raise SystemExit(f"{run_dir} exists; remove it first")
        try:
            _, wall, peak = run_measured(cmd, f"{n} rows")
        except RuntimeError as exc:
            raise SystemExit(str(exc)) from None
        manifest = json.loads((run_dir / "manifest.json").read_text())
        board = pd.read_parquet(run_dir / "leaderboard.parquet").set_index("model")
        fits = pd.read_parquet(run_dir / "fits.parquet")
        best = manifest["best"]
        rows.append(
            {
                "rows": n,
                "features": args.features,
                "time_limit": args.time_limit,
                "wall_s": wall,
                "peak_rss_mib": peak,
                "best": best,
                "holdout_auc": float(board.loc[best, "holdout_score"]),
                "members": len(manifest["members"]),
                "skipped_members": len(manifest.get("skipped_members") or []),
                "fits": len(fits),
                "parallel_efficiency": manifest["timing"]["parallel_efficiency"],
                "date": date.today().isoformat(),
            }
        )
        print(json.dumps(rows[-1]), flush=True)
        if not args.keep_models:
            drop_models(run_dir)
        # Written after every size: the largest one may take long.
        table = pd.DataFrame(rows)
        path = out / f"scale-tl{int(args.time_limit)}.parquet"
        table.to_parquet(path)
    print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    print(f"-> {path}")
    return table


if __name__ == "__main__":
    main()
