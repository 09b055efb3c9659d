"""Every bad input: one line naming the problem and the fix, exit code 2, and
nothing written (beyond the failed manifest a run already had).

One table drives the cases; each builds its input in a fresh directory and
returns the CLI arguments. Most run in-process (CliRunner); the ones that need
a Ray of their own (an address, a small object store) run the real CLI.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from ensemble.artifacts import RunDirectory
from ensemble.config import RunConfig
from ensemble.runner import fit_run
from tests.cluster import ENV, free_port
from tests.conftest import make_table

pytestmark = pytest.mark.ray

runner = CliRunner()


@dataclass
class Case:
    name: str
    build: Callable[[Path, dict], list[str]]
    message: str
    subprocess: bool = False


def _fit(path, out, *extra, target="target"):
    return ["fit", "--data", str(path), "--target", target, "--out", str(out), *extra]


def _table(tmp, frame, name="t.csv"):
    path = tmp / name
    if name.endswith(".csv"):
        frame.to_csv(path, index=False)
    else:
        frame.to_parquet(path)
    return path


def _with(**cols):
    f = make_table(120)
    for k, v in cols.items():
        f[k] = v
    return f


def _predict(run, data, tmp, *extra):
    return [
        "predict",
        str(run),
        "--data",
        str(data),
        "--out",
        str(tmp / "p.parquet"),
        *extra,
    ]


def _garbage(path):
    path.write_bytes(b"not a parquet file\n" * 10)
    return path


def _features(**changes):
    f = make_table(50, seed=9).drop(columns="target")
    for k, v in changes.items():
        f[k] = v
    return f


CASES = [
    Case(
        "missing file",
        lambda t, r: _fit(t / "nope.csv", t / "o"),
        "does not exist; check the --data path",
    ),
    Case(
        "corrupt parquet",
        lambda t, r: (
            t.joinpath("x.parquet").write_bytes(b"PAR1 not really"),
            _fit(t / "x.parquet", t / "o"),
        )[1],
        "cannot be read",
    ),
    Case(
        "unsupported format",
        lambda t, r: (
            t.joinpath("x.xlsx").write_bytes(b"zz"),
            _fit(t / "x.xlsx", t / "o"),
        )[1],
        "has an unsupported format; use .parquet, .csv",
    ),
    Case(
        "target column missing",
        lambda t, r: _fit(_table(t, make_table(60)), t / "o", target="label"),
        "target column 'label' is not in the table",
    ),
    Case(
        "NaNs in the target",
        lambda t, r: _fit(
            _table(t, _with(target=[None, None] + ["a", "b"] * 59)), t / "o"
        ),
        "target column 'target' has 2 missing values; drop those rows",
    ),
    Case(
        "a single class",
        lambda t, r: _fit(_table(t, _with(target="yes")), t / "o"),
        "has a single class ('yes'); a classifier needs at least two",
    ),
    Case(
        "fewer rows than folds",
        lambda t, r: _fit(_table(t, make_table(6)), t / "o"),
        "rows are too few for 5 folds",
    ),
    Case(
        "a class of one row",
        lambda t, r: _fit(_table(t, _with(target=["a"] * 119 + ["b"])), t / "o"),
        "class 'b' has 1 rows, too few for OOF predictions (needs >= 2)",
    ),
    Case(
        "a class with fewer rows than folds plus a holdout",
        lambda t, r: _fit(
            _table(t, _with(target=["a"] * 117 + ["b"] * 3)),
            t / "o",
            "--holdout",
            "0.2",
        ),
        "class 'b' has 3 rows, too few for 5 stratified folds plus a holdout",
    ),
    Case(
        "empty table",
        lambda t, r: (
            t.joinpath("e.csv").write_text("x1,x2,target\n"),
            _fit(t / "e.csv", t / "o"),
        )[1],
        "the table has no rows",
    ),
    Case(
        "every feature column constant or empty",
        lambda t, r: _fit(_table(t, _with(x1=1, x2=np.nan, colour="z")), t / "o"),
        "every feature column is constant or empty (e.g. 'x1')",
    ),
    Case(
        "duplicate column names",
        lambda t, r: (
            t.joinpath("d.csv").write_text("a,a,target\n1,2,x\n3,4,y\n"),
            _fit(t / "d.csv", t / "o"),
        )[1],
        "duplicate column names ['a']",
    ),
    Case(
        "non-numeric target for regression",
        lambda t, r: _fit(_table(t, make_table(60)), t / "o", "--task", "regression"),
        "is not numeric but task is regression",
    ),
    Case(
        "unknown learner key",
        lambda t, r: _fit(_table(t, make_table(60)), t / "o", "--learners", "lgbm,svm"),
        "unknown learner 'svm'",
    ),
    Case(
        "unknown config key",
        lambda t, r: (
            t.joinpath("c.yaml").write_text(f"data: {t}/x.csv\ntarget: y\nseeed: 3\n"),
            ["fit", str(t / "c.yaml")],
        )[1],
        "unknown config key 'seeed' (did you mean 'seed'?)",
    ),
    Case(
        "folds < 2",
        lambda t, r: _fit(_table(t, make_table(60)), t / "o", "--folds", "1"),
        "`n_folds` must be an integer >= 2; got 1",
    ),
    Case(
        "time limit <= 0",
        lambda t, r: _fit(_table(t, make_table(60)), t / "o", "--time-limit", "0"),
        "`time_limit` must be > 0 seconds; got 0",
    ),
    Case(
        "bad metric for the task",
        lambda t, r: _fit(_table(t, make_table(60)), t / "o", "--metric", "rmse"),
        "metric 'rmse' does not apply to a binary task",
    ),
    Case(
        "address where nothing listens",
        lambda t, r: _fit(
            _table(t, make_table(60)), t / "o", "--address", f"127.0.0.1:{free_port()}"
        ),
        "nothing answers at Ray address",
        subprocess=True,
    ),
    Case(
        "data too large for the object store",
        lambda t, r: _fit(
            "synthetic:classification,rows=160000,features=100",
            t / "o",
            "--object-store-memory",
            "100MB",
            "--num-cpus",
            "1",
        ),
        "of Ray's object store but the cluster has",
        subprocess=True,
    ),
    Case(
        "resume: other data",
        lambda t, r: (
            r["data_file"].write_bytes(r["other_bytes"]),
            ["fit", "--resume", str(r["run_a"])],
        )[1],
        "the data differs from the data run 'a' was started with",
    ),
    Case(
        "resume: other config",
        lambda t, r: ["fit", "--resume", str(r["run_b"]), "--folds", "4"],
        "`n_folds` is 4 here and 3 in the run",
    ),
    Case(
        "resume: not a run directory",
        lambda t, r: ["fit", "--resume", str(t)],
        "is not a run directory (no manifest.json)",
    ),
    Case(
        "predict: missing columns",
        lambda t, r: _predict(
            r["complete"], _table(t, _features().drop(columns="x2"), "p.csv"), t
        ),
        "columns missing for prediction: ['x2']",
    ),
    Case(
        "predict: extra columns",
        lambda t, r: _predict(
            r["complete"], _table(t, _features(surprise=1.0), "p.csv"), t
        ),
        "columns not seen in training: ['surprise']; drop them",
    ),
    Case(
        "predict: retyped column",
        lambda t, r: _predict(
            r["complete"], _table(t, _features(x2="high"), "p.csv"), t
        ),
        "column 'x2' was numeric in training but holds text here",
    ),
    Case(
        "predict: unreadable file",
        lambda t, r: _predict(r["complete"], _garbage(t / "in.parquet"), t),
        "cannot read data file",
    ),
    Case(
        "predict: incomplete run",
        lambda t, r: _predict(r["run_b"], _table(t, _features(), "p.csv"), t),
        "run 'b' is failed, not complete",
    ),
    Case(
        "predict: unknown model",
        lambda t, r: _predict(
            r["complete"], _table(t, _features(), "p.csv"), t, "--model", "svm"
        ),
        "model 'svm' is not in run 'done'",
    ),
]


def _interrupted(config):
    def stop(result, done, total):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fit_run(config, on_fit=stop)
    return Path(config.out) / config.run_id


@pytest.fixture(scope="module")
def runs(ray_session, tmp_path_factory):
    """A complete run and two interrupted (failed) ones to resume."""
    tmp = tmp_path_factory.mktemp("runs")
    data = _table(tmp, make_table(300), "train.parquet")
    base = RunConfig(
        data=str(data),
        target="target",
        out=str(tmp / "runs"),
        n_folds=3,
        learners=("linear", "hgb"),
        fusions=("average",),
        learner_params={"hgb": {"max_iter": 30}},
        report=False,
    )
    complete = fit_run(base.replace(run_id="done")).run_dir.path
    data_a = _table(tmp, make_table(300), "a.parquet")
    run_a = _interrupted(base.replace(data=str(data_a), run_id="a"))
    run_b = _interrupted(base.replace(run_id="b"))
    return {
        "complete": complete,
        "run_a": run_a,
        "run_b": run_b,
        "data_file": data_a,
        "other_bytes": _table(
            tmp, make_table(300, seed=5), "other.parquet"
        ).read_bytes(),
    }


def _snapshot(paths):
    return {
        p: sorted(str(f.relative_to(p)) for f in Path(p).rglob("*"))
        + [RunDirectory(p).read_manifest()["status"]]
        for p in paths
    }


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input(case, runs, tmp_path):
    before = _snapshot([runs["complete"], runs["run_a"], runs["run_b"]])
    args = case.build(tmp_path, runs)
    if case.subprocess:
        res = subprocess.run(
            [sys.executable, "-m", "ensemble.cli", *args],
            capture_output=True,
            text=True,
            env=ENV,
            timeout=300,
        )
        code, output = res.returncode, res.stdout + res.stderr
    else:
        res = runner.invoke(runner_app(), args)
        code, output = res.exit_code, res.output
    lines = [ln for ln in output.splitlines() if ln.strip()]
    assert code == 2, output
    assert len(lines) == 1, output
    assert lines[0].startswith("error: ") and case.message in lines[0], output
    # Nothing written: no run directory, no prediction file, runs untouched.
    assert not (tmp_path / "o").exists()
    assert not (tmp_path / "p.parquet").exists()
    assert _snapshot([runs["complete"], runs["run_a"], runs["run_b"]]) == before


def runner_app():
    from ensemble.cli import app

    return app


def test_unseen_categories_at_predict_are_handled(runs, tmp_path):
    frame = _features(colour=["purple", "red"] * 25)
    data = _table(tmp_path, frame, "p.csv")
    res = runner.invoke(runner_app(), _predict(runs["complete"], data, tmp_path, "-q"))
    assert res.exit_code == 0, res.output
    pred = pd.read_parquet(tmp_path / "p.parquet")
    assert len(pred) == 50 and np.isfinite(pred[["pred_no", "pred_yes"]]).all().all()
    np.testing.assert_allclose(pred.pred_no + pred.pred_yes, 1.0, rtol=1e-6)
