"""Shared fixtures: seeds, tiny datasets, one Ray session, markers."""

from __future__ import annotations

import gc
import os
import random
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--runslow", action="store_true", default=False, help="run slow tests"
    )


def pytest_collection_modifyitems(
    config: pytest.Config, items: list[pytest.Item]
) -> None:
    run_slow = (
        config.getoption("--runslow") or os.environ.get("ENSEMBLE_RUNSLOW") == "1"
    )
    try:
        import torch

        has_cuda = torch.cuda.is_available()
    except ImportError:  # pragma: no cover
        has_cuda = False
    for item in items:
        if "slow" in item.keywords and not run_slow:
            item.add_marker(pytest.mark.skip(reason="slow: run with --runslow"))
        if "gpu" in item.keywords and not has_cuda:
            item.add_marker(pytest.mark.skip(reason="no cuda device"))


def _ours_in_tmp() -> set[str]:
    """Entries of the temp folder that ensemble names (``ensemble-*``)."""
    root = tempfile.gettempdir()
    return {e for e in os.listdir(root) if e.startswith("ensemble-")}


@pytest.fixture(scope="session", autouse=True)
def _leaves_no_temp_files():
    """Fail the session if the tests left ensemble's folders in the temp folder.

    Temporary runs of estimators, staging copies of URI runs and model uploads
    are all named ``ensemble-*``; tests write under ``tmp_path``.
    """
    before = _ours_in_tmp()
    yield
    gc.collect()  # estimators no test holds any more release their runs
    left = sorted(_ours_in_tmp() - before)
    if left:
        pytest.fail(
            f"the tests left {len(left)} entries in {tempfile.gettempdir()}: "
            + ", ".join(left[:10]),
            pytrace=False,
        )


@pytest.fixture(autouse=True)
def _seeds() -> None:
    random.seed(0)
    np.random.seed(0)


def shared_dataset(name: str) -> Path:
    """Path of a table in ../shared/datasets, or skip when it is absent."""
    path = SHARED / name
    if not path.exists():
        pytest.skip(f"{path} not found (the shared datasets live beside the repo)")
    return path


@pytest.fixture(scope="session")
def ray_session():
    """One small local Ray for every integration test."""
    import ray

    from ensemble import runtime

    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    started = runtime.connect(
        num_cpus=2, num_gpus=0, object_store_memory=256 * 1024**2, verbose=1
    )
    yield ray
    runtime.shutdown(started)


def make_table(n: int = 300, task: str = "binary", seed: int = 0) -> pd.DataFrame:
    """A small mixed-type table with missing values and a learnable target."""
    rng = np.random.default_rng(seed)
    x1 = rng.normal(size=n)
    x2 = rng.normal(size=n)
    colour = rng.choice(["red", "green", "blue"], size=n)
    x1_missing = x1.copy()
    x1_missing[rng.random(n) < 0.05] = np.nan
    signal = x1 + 0.5 * x2 + (colour == "red") * 1.0
    frame = pd.DataFrame({"x1": x1_missing, "x2": x2, "colour": colour})
    if task == "binary":
        frame["target"] = np.where(
            signal + rng.normal(scale=0.5, size=n) > 0.3, "yes", "no"
        )
    elif task == "multiclass":
        frame["target"] = np.digitize(
            signal + rng.normal(scale=0.3, size=n), [-0.5, 0.5, 1.5]
        )
    else:
        frame["target"] = 10 * signal + rng.normal(size=n)
    return frame
