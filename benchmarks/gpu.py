"""The same run with and without the GPU: where the fits ran and what they cost.

``ensemble fit`` on one table twice, at one ``--time-limit``: once with the
machine's GPUs visible (XGBoost and the MLP get half-GPU slots) and once with
``CUDA_VISIBLE_DEVICES=`` (every fit on a CPU slot). Per run and member: fits,
how many ran on a GPU, median fold-fit seconds, the member's OOF score;
per run: wall seconds, the fit stage's wall seconds, its slots and the chosen
model's OOF score (the default run keeps no holdout). Needs a CUDA machine;
the rows go to ``--out``/gpu-<date>.parquet.

Usage::

    python benchmarks/gpu.py [--data ../shared/datasets/letter.tsv.gz]
        [--learners lgbm,xgb,mlp,linear] [--time-limit 120]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import pandas as pd

HERE = Path(__file__).resolve().parent
SHARED = HERE.parents[1] / "shared" / "datasets"


def _fit(data: str, learners: str, limit: float, out: Path, gpu: bool) -> Path:
    env = dict(os.environ)
    if not gpu:
        env["CUDA_VISIBLE_DEVICES"] = ""
    run_id = "gpu" if gpu else "cpu"
    cmd = [sys.executable, "-m", "ensemble.cli", "fit", "--data", data]
    cmd += ["--target", "target", "--learners", learners, "--time-limit", str(limit)]
    cmd += ["--out", str(out), "--run-id", run_id, "--no-report", "-q"]
    t0 = time.perf_counter()
    res = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if res.returncode != 0:
        raise RuntimeError(f"{run_id} run failed: {res.stderr[-2000:]}")
    (out / run_id / "wall_s").write_text(f"{time.perf_counter() - t0:.1f}")
    return out / run_id


def summarise(run: Path) -> pd.DataFrame:
    """One row per member of a finished run directory.

    Parameters
    ----------
    run : Path
        The run directory.

    Returns
    -------
    pandas.DataFrame
        ``member, fits, on_gpu, median_fit_s, oof_score`` plus the run's
        ``wall_s``, ``fit_wall_s``, ``slots``, ``chosen`` and ``chosen_oof``.
    """
    fits = pd.read_parquet(run / "fits.parquet")
    board = pd.read_parquet(run / "leaderboard.parquet").set_index("model")
    manifest = json.loads((run / "manifest.json").read_text())
    rows = fits.groupby("member").agg(
        fits=("fit_s", "size"), on_gpu=("gpu", "sum"), median_fit_s=("fit_s", "median")
    )
    rows["oof_score"] = board.oof_score.reindex(rows.index)
    rows = rows.reset_index()
    rows["wall_s"] = float((run / "wall_s").read_text())
    rows["fit_wall_s"] = manifest["timing"]["fit_wall_s"]
    rows["slots"] = manifest["timing"]["slots"]
    rows["chosen"] = manifest["best"]
    rows["chosen_oof"] = board.oof_score.get(manifest["best"])
    return rows


def main(argv: list[str] | None = None) -> pd.DataFrame:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", default=str(SHARED / "letter.tsv.gz"))
    p.add_argument("--learners", default="lgbm,xgb,mlp,linear")
    p.add_argument("--time-limit", type=float, default=120)
    p.add_argument("--out", default=str(HERE / "results"))
    a = p.parse_args(argv)
    frames = []
    with tempfile.TemporaryDirectory() as tmp:
        for gpu in (True, False):
            run = _fit(a.data, a.learners, a.time_limit, Path(tmp), gpu)
            frames.append(summarise(run).assign(device="gpu" if gpu else "cpu"))
    table = pd.concat(frames, ignore_index=True).assign(
        table=Path(a.data).name.split(".")[0], time_limit=a.time_limit
    )
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    table.to_parquet(out / f"gpu-{date.today():%Y%m%d}.parquet", index=False)
    print(table.to_string(index=False))
    return table


if __name__ == "__main__":
    main()
