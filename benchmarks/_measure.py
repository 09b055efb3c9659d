"""Peak memory of a process tree, sampled from /proc (no psutil needed).

Also: dropping a measured run's fold models (they are what fills the disk),
and the latency of a loaded model (shared with ``_autogluon.py``, which runs
in AutoGluon's venv: this module needs only the standard library).
"""

from __future__ import annotations

import os
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

_PAGE = os.sysconf("SC_PAGE_SIZE")


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        tree.setdefault(int(fields[1]), []).append(int(entry.name))
    return tree


def tree_rss(root: int) -> int:
    """Resident bytes of ``root`` and all its descendants (Ray workers included)."""
    tree = _children()
    total, stack = 0, [root]
    while stack:
        pid = stack.pop()
        try:
            total += int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * _PAGE
        except (OSError, IndexError, ValueError):
            pass
        stack.extend(tree.get(pid, []))
    return total


class PeakRSS:
    """Context manager sampling the RSS of a process tree every ``interval`` s.

    Parameters
    ----------
    root : int, optional
        Root pid (default: this process); ``set_root`` changes it later (for a
        subprocess started inside the block).
    """

    def __init__(self, root: int | None = None, interval: float = 0.25) -> None:
        self.root = root if root is not None else os.getpid()
        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def set_root(self, pid: int) -> None:
        self.root = pid

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, tree_rss(self.root))
            time.sleep(self.interval)

    def __enter__(self) -> PeakRSS:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def peak_mib(self) -> float:
        return self.peak / 2**20


def run_measured(
    cmd: list[str], what: str, log: Path | None = None
) -> tuple[str, float, float]:
    """Run ``cmd``; its stdout, wall seconds and peak RSS (MiB) of its tree.

    A non-zero exit raises with the end of its stderr (``what`` names it).
    With ``log``, its stderr (the run's warnings) is written there too.
    """
    import subprocess

    with PeakRSS() as mem:
        t0 = time.perf_counter()
        proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        mem.set_root(proc.pid)
        out, err = proc.communicate()
        wall = time.perf_counter() - t0
    if log is not None:
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_text(err)
    if proc.returncode != 0:
        raise RuntimeError(f"{what} failed: {err[-2000:]}")
    return out, wall, mem.peak_mib


def drop_models(run_dir: Path) -> None:
    """Delete ``run_dir/models`` once a run is measured, and say how much went.

    A benchmark reads only the run's Parquet files and manifest; its fold
    models are large (a letter run keeps ~2.9 GB of forests) and repeated
    ``make bench`` runs filled a 64 GB disk. ``--keep-models`` keeps them.
    """
    models = Path(run_dir) / "models"
    if not models.is_dir():
        return
    size = sum(f.stat().st_size for f in models.rglob("*") if f.is_file())
    shutil.rmtree(models)
    print(f"removed {models} ({size / 1024**2:,.0f} MiB; --keep-models keeps it)")


def latency(predict: Callable[[Any], Any], features: Any) -> dict[str, float]:
    """One row (median of 5 rows, one at a time) and 10,000 rows, in seconds.

    ``features`` is a DataFrame of rows to predict; the 10,000 rows repeat it
    when it has fewer. The first one-row call also absorbs lazy loading.
    """
    one = []
    for i in range(5):
        t0 = time.perf_counter()
        predict(features.iloc[i : i + 1])
        one.append(time.perf_counter() - t0)
    rows = features.iloc[[i % len(features) for i in range(10_000)]]
    t0 = time.perf_counter()
    predict(rows)
    return {
        "one_row_ms": sorted(one)[2] * 1000,
        "rows_10k_s": time.perf_counter() - t0,
    }
