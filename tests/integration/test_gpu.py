"""GPU paths (skipped without CUDA): MLP and XGBoost fold fits on cuda:0.

Run on a GPU machine with ``pytest -m gpu -s`` (the timings are printed).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ensemble.data import load_table, prepare
from ensemble.learners import FitContext, get
from ensemble.metrics import score
from tests.conftest import make_table, shared_dataset

pytestmark = pytest.mark.gpu


def _letter():
    frame, sha = load_table(str(shared_dataset("letter.tsv.gz")))
    return prepare(frame, "target", n_folds=5, seed=0, data_sha256=sha)


@pytest.mark.parametrize("key", ["mlp", "xgb"])
def test_gpu_fold_matches_cpu_quality(key):
    d = _letter()
    ctx = FitContext(
        task=d.task,
        n_classes=d.n_classes,
        cat_mask=tuple(bool(b) for b in d.schema.cat_mask),
        n_categories=tuple(d.schema.n_categories),
        seed=0,
        n_threads=1,
    )
    # fold 0 is scored; the default run keeps no holdout (fold -1 is empty)
    train = (d.fold >= 0) & (d.fold != 0)
    hold = d.fold == 0
    assert hold.sum() > 3000
    cls = get(key)
    out = {}
    for device in ("cpu", "cuda"):
        t0 = time.perf_counter()
        m = cls(cls.check_params({}), context=replace(ctx, device=device))
        m.fit(d.X[train], d.y[train])
        seconds = time.perf_counter() - t0
        pred = m.predict(d.X[hold])
        out[device] = (score("accuracy", d.y[hold], pred, d.n_classes), seconds)
    print(
        f"\n{key} letter fold 0: cpu acc {out['cpu'][0]:.4f} in {out['cpu'][1]:.1f} s,"
        f" cuda acc {out['cuda'][0]:.4f} in {out['cuda'][1]:.1f} s"
    )
    assert abs(out["cuda"][0] - out["cpu"][0]) < 0.01


def test_a_local_run_puts_mlp_and_xgb_on_gpu_actors(tmp_path):
    make_table(3000).to_parquet(tmp_path / "t.parquet")
    res = subprocess.run(
        [
            str(Path(sys.executable).with_name("ensemble")),
            "fit",
            "--data",
            str(tmp_path / "t.parquet"),
            "--target",
            "target",
            "--learners",
            "linear,xgb,mlp",
            "--holdout",
            "0.2",
            "--fusions",
            "average",
            "--out",
            str(tmp_path / "runs"),
            "--run-id",
            "g",
            "-q",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert res.returncode == 0, res.stderr
    fits = pd.read_parquet(tmp_path / "runs" / "g" / "fits.parquet")
    on_gpu = fits.groupby("member").gpu.all().to_dict()
    assert on_gpu == {"linear": False, "mlp": True, "xgb": True}
    manifest = json.loads((tmp_path / "runs" / "g" / "manifest.json").read_text())
    assert manifest["status"] == "complete"
    assert np.isfinite(
        pd.read_parquet(tmp_path / "runs" / "g" / "leaderboard.parquet").holdout_score
    ).all()
