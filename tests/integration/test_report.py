"""The HTML report: written at the end of a run, rendered by a real headless
Chromium (installed by `make test` when missing), refused for incomplete runs."""

from __future__ import annotations

import os
import re
import shutil
import subprocess

import pandas as pd
import pytest
from typer.testing import CliRunner

from ensemble.artifacts import RunDirectory
from ensemble.cli import app
from ensemble.config import RunConfig
from ensemble.exceptions import RunStateError
from ensemble.report import parallel_efficiency, write_report
from ensemble.runner import fit_run
from tests.conftest import make_table

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def _run(tmp, task, **kw):
    data = tmp / f"{task}.parquet"
    make_table(600, task=task).to_parquet(data)
    config = RunConfig(
        data=str(data),
        target="target",
        out=str(tmp / "runs"),
        n_folds=3,
        learners=("linear", "lgbm"),
        fusions=("average", "stacking"),
        learner_params={"lgbm": {"max_rounds": 60}},
        n_trials=kw.pop("n_trials", None),
        search="random",
        run_id=task,
        **kw,
    )
    return fit_run(config).run_dir.path


@pytest.fixture(scope="module")
def runs(ray_session, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("report")
    return {
        "binary": _run(tmp, "binary", n_trials=3),
        "multiclass": _run(tmp, "multiclass"),
        "regression": _run(tmp, "regression"),
    }


def _browser_or_skip():
    if CHROMIUM is None:
        if os.environ.get("ENSEMBLE_REQUIRE_BROWSER") == "1":
            pytest.fail("chromium is missing although `make test` installs it")
        pytest.skip("chromium not installed (make test installs it)")
    return CHROMIUM


def _chromium(*args, timeout=120):
    return subprocess.run(
        [_browser_or_skip(), "--headless", "--no-sandbox", "--disable-gpu", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.mark.ray
@pytest.mark.parametrize("task", ["binary", "multiclass", "regression"])
def test_report_is_written_and_renders_in_chromium(runs, task, tmp_path):
    report = runs[task] / "report.html"
    assert report.is_file()  # written at the end of fit
    page = report.read_text()
    assert 'src="http' not in page and "<link" not in page  # self-contained
    # Every row is in the folds: the curves are drawn on OOF predictions.
    for title in (
        "Leaderboard",
        "Members vs fusions",
        "Fusion weights",
        "Calibration (OOF predictions)",
        "Hyperparameter search",
        "Parallelism",
    ):
        assert f"<h2>{title}</h2>" in page
    if task == "regression":
        assert "<h2>Predicted vs true (OOF predictions)</h2>" in page
    else:
        assert "<h2>ROC, precision-recall, confusion (OOF predictions)</h2>" in page
    n_images = page.count("<img ")
    # models, weights, calibration, timeline (+ curves & confusion | residuals)
    # (+ the trial history when tuned)
    expected = 4 + (1 if task == "regression" else 2) + (task == "binary")
    assert n_images == expected

    res = _chromium("--enable-logging=stderr", "--v=0", "--dump-dom", report.as_uri())
    assert res.returncode == 0, res.stderr[-2000:]
    loaded = re.search(r'data-images-loaded="(\d+)/(\d+)"', res.stdout)
    assert loaded, res.stdout[:500]  # the page's script ran after load
    assert loaded.groups() == (str(n_images), str(n_images))
    assert "Uncaught" not in res.stderr and "CONSOLE" not in res.stderr

    shot = tmp_path / "shot.png"
    res = _chromium(
        "--hide-scrollbars",
        "--window-size=1200,2400",
        f"--screenshot={shot}",
        report.as_uri(),
    )
    assert res.returncode == 0 and shot.stat().st_size > 50_000


@pytest.mark.ray
def test_trial_history_and_timeline_use_the_run_tables(runs):
    page = (runs["binary"] / "report.html").read_text()
    assert "No hyperparameter search" not in page  # binary was tuned
    assert (
        "No hyperparameter search" in (runs["multiclass"] / "report.html").read_text()
    )
    manifest = RunDirectory(runs["binary"]).read_manifest()
    fits = pd.read_parquet(runs["binary"] / "fits.parquet")
    eff = parallel_efficiency(fits, manifest["timing"]["slots"])
    assert 0 < eff <= 1.0 + 1e-9
    assert f"parallel efficiency</b> {eff:.2f}" in page


@pytest.mark.ray
def test_report_cli_and_refusal_of_incomplete_runs(runs, tmp_path):
    out = tmp_path / "r.html"
    res = CliRunner().invoke(
        app, ["report", str(runs["regression"]), "--out", str(out)]
    )
    assert res.exit_code == 0, res.output
    assert out.stat().st_size > 10_000
    broken = tmp_path / "broken"
    shutil.copytree(runs["regression"], broken)
    RunDirectory(broken).write_manifest(status="running")
    with pytest.raises(RunStateError, match="is running, not complete"):
        write_report(broken)
    res = CliRunner().invoke(app, ["report", str(broken)])
    assert res.exit_code == 2 and "is running, not complete" in res.output


def _fits(starts, durations):
    t0 = pd.Timestamp("2026-01-01", tz="UTC")
    return pd.DataFrame(
        {
            "started_at": [t0 + pd.Timedelta(seconds=s) for s in starts],
            "fit_s": durations,
            "predict_s": [0.0] * len(starts),
        }
    )


def test_parallel_efficiency_formula():
    # two slots, both busy the whole time
    assert parallel_efficiency(_fits([0, 0, 5, 5], [5, 5, 5, 5]), 2) == pytest.approx(1)
    # two slots, one fit at a time: half the capacity idle
    assert parallel_efficiency(_fits([0, 5], [5, 5]), 2) == pytest.approx(0.5)
    # reused fits of a resumed run do not count
    f = _fits([0, 100], [5, 5]).assign(resumed=[True, False])
    assert parallel_efficiency(f, 1) == pytest.approx(1)
