"""Same run, different cluster shapes; and a worker node lost mid-run.

A real 2-node Ray cluster (``ray start --head`` + ``ray start --address``, see
tests/cluster.py) runs the CLI as a separate driver process; the reference is
the 1-node, 2-CPU run on the shared test Ray.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time

import pandas as pd
import pytest
import yaml

from ensemble.config import resolve
from ensemble.runner import fit_run
from tests.cluster import ENV, LocalCluster
from tests.conftest import make_table

pytestmark = pytest.mark.ray

ENSEMBLE = [sys.executable, "-m", "ensemble.cli"]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    c = LocalCluster(tmp_path_factory.mktemp("cluster"))
    try:
        c.start_head(cpus=1)
        c.add_worker(cpus=1)
        yield c
    finally:
        c.stop()


def _yaml(tmp_path, frame, **extra):
    data = tmp_path / "data.parquet"
    frame.to_parquet(data)
    cfg = {
        "data": str(data),
        "target": "target",
        "out": str(tmp_path / "runs"),
        "n_folds": 3,
        "seed": 7,
        "report": False,  # the report has tests of its own
        **extra,
    }
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _cli(*args, timeout=600):
    return subprocess.run(
        [*ENSEMBLE, *args], capture_output=True, text=True, env=ENV, timeout=timeout
    )


def _same_results(a, b):
    """oof/ (sorted by member, row_id), leaderboard scores and fusion weights."""
    for name, keys in (("oof", ["member", "row_id"]), ("fusion.parquet", None)):
        x, y = pd.read_parquet(a / name), pd.read_parquet(b / name)
        if keys:
            x, y = x.sort_values(keys), y.sort_values(keys)
        pd.testing.assert_frame_equal(
            x.reset_index(drop=True), y.reset_index(drop=True)
        )
    x = pd.read_parquet(a / "leaderboard.parquet").drop(columns="fit_s")
    y = pd.read_parquet(b / "leaderboard.parquet").drop(columns="fit_s")
    pd.testing.assert_frame_equal(x, y)


def test_same_results_on_2_cpus_and_2_nodes(ray_session, cluster, tmp_path):
    cfg = _yaml(
        tmp_path,
        make_table(500),
        learners=["linear", "lgbm", "rf", "mlp"],
        portfolio=False,
        refit=False,  # the fits' placement is the subject; refits add one more pool
        learner_params={
            "lgbm": {"max_rounds": 80},
            "rf": {"n_estimators": 20},
            "mlp": {"max_epochs": 4},
        },
    )
    one_node = fit_run(resolve(cfg, {"run_id": "two_cpus"})).run_dir.path
    res = _cli("fit", str(cfg), "--run-id", "nodes", "--address", cluster.address, "-q")
    assert res.returncode == 0, res.stderr
    runs = tmp_path / "runs"

    fits = pd.read_parquet(runs / "nodes" / "fits.parquet")
    assert fits.node_id.nunique() == 2  # both nodes ran fits
    _same_results(one_node, runs / "nodes")


def _checkpointed_nodes(run):
    import pickle

    nodes = set()
    for p in (run / "checkpoints" / "fits").glob("*/*.pkl"):
        try:
            nodes.add(pickle.loads(p.read_bytes())["result"].node_id)
        except (OSError, EOFError, pickle.UnpicklingError):
            pass
    return nodes


def test_worker_node_killed_mid_run(ray_session, cluster, tmp_path):
    """Fault drill (b): the worker node's raylet is SIGKILLed while fits run."""
    cfg = _yaml(
        tmp_path,
        make_table(2000),
        learners=["rf", "et"],
        fusions=["average", "stacking"],
        # Three folds: after the kill the head node alone runs what is left.
        n_folds=3,
        refit=False,  # refits of 1000-tree forests would only lengthen the drill
        # Fits of 1-2 s: the worker node's first fit may finish many seconds
        # after the head's (its worker process starts late on a busy machine);
        # the fits left then must outlast that lag, and one must still run
        # half a second after the node's first checkpoint.
        learner_params={"rf": {"n_estimators": 1000}, "et": {"n_estimators": 1000}},
    )
    undisturbed = fit_run(resolve(cfg, {"run_id": "ref"})).run_dir.path
    run = tmp_path / "runs" / "drill"
    proc = subprocess.Popen(
        [*ENSEMBLE, "fit", str(cfg), "--run-id", "drill", "--address", cluster.address],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=ENV,
    )
    try:
        # Once both nodes have finished a fit, each is busy with its next one.
        end = time.monotonic() + 180
        while len(_checkpointed_nodes(run)) < 2:
            assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
            assert time.monotonic() < end, "fits did not reach both nodes"
            time.sleep(0.1)
        # A checkpoint is written just before its slot gets the next fit:
        # half a second later that fit (1-2 s) has surely started, and runs.
        time.sleep(0.5)
        cluster.kill_worker_raylet()
        out, _ = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, out
    assert re.search(r"the process of \w+ fold \d died", out)  # the fit ran again
    fits = pd.read_parquet(run / "fits.parquet")
    assert len(fits) == 6 and fits.node_id.nunique() == 2
    _same_results(undisturbed, run)
