"""Lean run directories, exported bundles and a full disk."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from ensemble.cli import app
from ensemble.config import RunConfig
from ensemble.exceptions import ConfigError, DiskFullError, RunStateError
from ensemble.model import load
from ensemble.runner import fit_run
from tests.conftest import make_table

pytestmark = pytest.mark.ray


def _bent_table(n: int, seed: int) -> pd.DataFrame:
    """A target with a linear part and a bend only trees and kNN see, so that
    Caruana selection beats every member and leaves one out (on seed 2)."""
    rng = np.random.default_rng(seed)
    x1, x2, x3 = rng.normal(size=(3, n))
    colour = rng.choice(["red", "green", "blue"], size=n)
    signal = x1 + 0.5 * x2 + (colour == "red") + 1.5 * np.sin(3 * x3) * (x2 > 0)
    frame = pd.DataFrame({"x1": x1, "x2": x2, "x3": x3, "colour": colour})
    noisy = signal + rng.normal(scale=0.5, size=n)
    frame["target"] = np.where(noisy > 0.3, "yes", "no")
    return frame


def _config(tmp, **kw):
    path = tmp / "data.parquet"
    if not path.exists():
        _bent_table(600, seed=2).to_parquet(path)
    base = {
        "data": str(path),
        "target": "target",
        "out": str(tmp / "runs"),
        "n_folds": 3,
        "learners": ("linear", "knn", "lgbm", "hgb", "et"),
        "portfolio": False,
        "fusions": ("selection",),
        "learner_params": {"lgbm": {"max_rounds": 80}},
        "report": False,
    }
    base.update(kw)
    return RunConfig(**base)


@pytest.fixture(scope="module")
def runs(ray_session, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("lean")
    lean = fit_run(_config(tmp, run_id="lean"))
    full = fit_run(_config(tmp, run_id="full", keep_models="all"))
    return tmp, lean, full


def test_a_default_run_keeps_what_its_chosen_model_needs(runs):
    tmp, lean, full = runs
    assert lean.best == full.best == "selection"
    fusion = pd.read_parquet(lean.run_dir.path / "fusion.parquet")
    unused = set(fusion[fusion.weight == 0].member)
    assert unused, "the selection gave every member a weight"
    kept = {p.name for p in (lean.run_dir.path / "models").iterdir()}
    assert kept == {"fusion", *(set(lean.manifest["members"]) - unused)}
    assert lean.manifest["kept_models"] == sorted(kept - {"fusion"} | {"selection"})
    assert {p.name for p in (full.run_dir.path / "models").iterdir()} == {
        "fusion",
        *full.manifest["members"],
    }
    # the used members are refitted on every row: the lean run keeps only that;
    # k-NN is not refitted (its fold models' average predicts better) and keeps them
    used = [m for m in lean.manifest["members"] if m not in unused]
    assert "knn" in used
    refitted = [m for m in used if m != "knn"]
    assert lean.manifest["refit"]["members"] == refitted
    assert lean.manifest["refit"]["bagged"] == ["knn"]
    folds = {"fold0", "fold1", "fold2"}
    for m in refitted:
        assert {p.name for p in (lean.run_dir.path / "models" / m).iterdir()} == {
            "full"
        }
        kept_all = {p.name for p in (full.run_dir.path / "models" / m).iterdir()}
        assert kept_all == {"full", *folds}
    for run in (lean, full):
        assert {p.name for p in (run.run_dir.path / "models/knn").iterdir()} == folds
    # every member's OOF and score stay
    oof = pd.read_parquet(lean.run_dir.path / "oof")
    assert set(oof.member) == set(lean.manifest["members"])
    assert set(lean.leaderboard.model) == set(full.leaderboard.model)


def test_the_lean_run_predicts_what_the_full_one_does_to_the_bit(runs):
    tmp, lean, full = runs
    new = _bent_table(300, seed=9).drop(columns="target")
    a = load(lean.run_dir.path).predict_proba(new)
    b = load(full.run_dir.path).predict_proba(new)
    np.testing.assert_array_equal(a, b)
    gone = sorted(set(lean.manifest["members"]) - set(lean.manifest["kept_models"]))[0]
    with pytest.raises(RunStateError, match="kept the models of its chosen model"):
        load(lean.run_dir.path, gone)
    with pytest.raises(RunStateError, match="kept only the refit of .* on every row"):
        load(lean.run_dir.path, folds=True)


def test_an_exported_bundle_predicts_like_its_run_without_ray(runs, tmp_path):
    _, lean, _ = runs
    res = CliRunner().invoke(
        app, ["export", str(lean.run_dir.path), "--out", str(tmp_path / "b")]
    )
    assert res.exit_code == 0, res.output
    said = " ".join(res.output.split())  # the console wraps long paths
    assert said.startswith(f"exported selection to {tmp_path / 'b'}")
    info = json.loads((tmp_path / "b" / "bundle.json").read_text())
    assert info["model"] == "selection" and info["task"] == "binary"
    assert info["scores"]["oof_score"] == pytest.approx(
        lean.leaderboard.set_index("model").loc["selection", "oof_score"]
    )
    assert info["source"]["run_id"] == "lean" and "ensemble" in info["versions"]
    # one model per member used, its refit or (k-NN) its fold models
    bundled = {
        p.relative_to(tmp_path / "b").parts[:2]
        for p in (tmp_path / "b" / "models").glob("*/*")
    }
    refit = lean.manifest["refit"]
    assert bundled == {("models", "fusion")} | {
        ("models", m) for m in refit["members"] + refit["bagged"]
    }
    # one model per refitted member; k-NN's fold models
    assert {p.name for p in (tmp_path / "b" / "models").glob("*/*") if p.is_dir()} == {
        "full",
        "fold0",
        "fold1",
        "fold2",
    }
    assert not (tmp_path / "b" / "models" / "knn" / "full").exists()
    new = _bent_table(200, seed=4).drop(columns="target")
    new.to_parquet(tmp_path / "new.parquet")
    # in a fresh interpreter: no Ray imported, the run directory out of reach
    code = (
        "import sys, numpy as np, pandas as pd\n"
        "from ensemble.model import load\n"
        f"m = load({str(tmp_path / 'b')!r})\n"
        f"p = m.predict_proba(pd.read_parquet({str(tmp_path / 'new.parquet')!r}))\n"
        f"np.save({str(tmp_path / 'p.npy')!r}, p)\n"
        "assert 'ray' not in sys.modules, 'ray was imported'\n"
    )
    env = {**os.environ, "HOME": str(tmp_path)}  # no ~/.cache of runs either
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True)
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    np.testing.assert_array_equal(
        np.load(tmp_path / "p.npy"), load(lean.run_dir.path).predict_proba(new)
    )
    import ensemble

    est = ensemble.load(tmp_path / "b")
    np.testing.assert_array_equal(est.predict_proba(new), np.load(tmp_path / "p.npy"))
    with pytest.raises(ConfigError, match="exists and is not an empty folder"):
        from ensemble.bundle import export

        export(lean.run_dir.path, tmp_path / "b")


def _tmpfs(path: Path, size: str) -> bool:
    path.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
        capture_output=True,
    )
    return done.returncode == 0


@pytest.fixture
def small_disk(tmp_path):
    disk = tmp_path / "disk"
    if not _tmpfs(disk, "6m"):
        pytest.skip("cannot mount a tmpfs here (needs root): no disk to fill")
    yield disk
    # lazily: a killed fit's worker may still hold a file open there
    subprocess.run(["umount", "-l", str(disk)], check=True)


def test_a_full_disk_ends_the_run_in_one_line_and_spares_earlier_runs(
    ray_session, small_disk, tmp_path
):
    make_table(2000, seed=3).to_parquet(tmp_path / "data.parquet")
    base = _config(tmp_path, out=str(small_disk), learners=("linear",), fusions=())
    earlier = fit_run(base.replace(run_id="earlier"))
    # forests of this size save ~3 MB a fold (compressed): two folds are more
    # than the disk has, though the first fold is expected to fit
    big = base.replace(
        run_id="big",
        learners=("rf",),
        learner_params={"rf": {"n_estimators": 600}},
    )
    with pytest.raises(DiskFullError, match="disk") as info:
        fit_run(big)
    assert len(str(info.value).splitlines()) == 1
    manifest = small_disk / "big" / "manifest.json"
    if manifest.exists():  # written when even that still fitted
        assert json.loads(manifest.read_text())["status"] == "failed"
    assert not list(small_disk.rglob("*.tmp-*"))  # no half-written file
    # the earlier run is untouched and still predicts
    assert load(earlier.run_dir.path).predict_proba(make_table(5)).shape == (5, 2)
    # the CLI says it in one line and exits 1
    res = CliRunner().invoke(
        app,
        ["fit", "--data", str(tmp_path / "data.parquet"), "--target", "target"]
        + ["--out", str(small_disk), "--learners", "rf", "--folds", "8", "-q"],
    )
    assert res.exit_code == 1
    lines = [x for x in res.output.splitlines() if x.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "disk" in lines[0]
    # no run is left half-made: each has a manifest saying how it ended
    # (a run refused before its first write leaves no folder at all)
    for run in small_disk.iterdir():
        status = json.loads((run / "manifest.json").read_text())["status"]
        assert status == ("complete" if run.name == "earlier" else "failed"), run
