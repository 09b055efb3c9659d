"""Local side of URI runs without Ray or a server: the model upload folders."""

from __future__ import annotations

import os
import subprocess
import sys

from ensemble import storage


def _dead_pid() -> int:
    """The pid of a process that has just exited."""
    out = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    return int(out.stdout)


def test_a_dead_processes_upload_folder_is_swept_and_a_live_ones_kept(
    tmp_path, monkeypatch
):
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    dead = tmp_path / f"{storage.MODEL_STAGING}{_dead_pid()}-abc"
    live = tmp_path / f"{storage.MODEL_STAGING}{os.getpid()}-def"
    other = tmp_path / f"{storage.MODEL_STAGING}noxyz"  # not named for a pid
    for d in (dead, live, other):
        (d / "m").mkdir(parents=True)
        (d / "m" / "model.txt").write_text("x")

    assert storage.sweep_model_staging() == [dead.name]
    assert not dead.exists() and live.exists() and other.exists()


def test_save_tree_leaves_no_folder_and_sweeps_a_killed_fits(tmp_path, monkeypatch):
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    stale = tmp_path / "tmp" / f"{storage.MODEL_STAGING}{_dead_pid()}-x"
    stale.mkdir()

    def write(path):
        os.makedirs(path)
        with open(os.path.join(path, "w.txt"), "w") as f:
            f.write("weights")

    # what reached the upload (the real S3 upload is in the integration tests)
    sent = {}
    monkeypatch.setattr(
        storage,
        "upload",
        lambda local, uri: sent.setdefault(uri, (local / "w.txt").read_text()),
    )
    storage.save_tree("s3://bucket/runs/r/models/lgbm/fold_0", write)
    assert sent == {"s3://bucket/runs/r/models/lgbm/fold_0": "weights"}
    assert list((tmp_path / "tmp").iterdir()) == []
