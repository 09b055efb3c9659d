"""The run directory: atomic writes, Parquet schemas and the manifest.

Contract (v1, see README): ``manifest.json`` is written first with
``"status": "running"`` and last with ``"complete"`` or ``"failed"``; every
other file is written to a temporary name beside its target and renamed into
place, so a reader never sees half a file.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import pickle
import platform
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd

from . import storage
from .exceptions import DiskFullError, RunStateError, is_disk_full
from .specs import REFIT_FOLD

logger = logging.getLogger(__name__)

__all__ = [
    "REFIT_DIR",
    "REQUIRED_COLUMNS",
    "RunDirectory",
    "fold_dirs",
    "fold_name",
    "now_iso",
    "versions",
]

MANIFEST_KEYS = (
    "run_id",
    "status",
    "task",
    "target",
    "classes",
    "n_rows",
    "n_features",
    "data_sha256",
    "config",
    "seed",
    "versions",
    "started_at",
    "finished_at",
    "best",
)

REQUIRED_COLUMNS: dict[str, tuple[str, ...]] = {
    "folds.parquet": ("row_id", "fold"),
    "oof": ("member", "row_id", "fold"),
    "holdout.parquet": ("model", "row_id", "y_true"),
    "fits.parquet": (
        "member",
        "learner",
        "fold",
        "node_id",
        "worker",
        "gpu",
        "started_at",
        "fit_s",
        "predict_s",
        "n_train",
    ),
    "trials.parquet": (
        "learner",
        "trial_id",
        "params",
        "cv_score",
        "metric",
        "time_s",
        "status",
    ),
    "leaderboard.parquet": (
        "model",
        "kind",
        "metric",
        "oof_score",
        "holdout_score",
        "fit_s",
    ),
    "fusion.parquet": ("fusion", "member", "weight"),
}


def now_iso() -> str:
    """UTC timestamp in ISO 8601."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def versions() -> dict[str, str]:
    """Versions of Python and the libraries that decide a run's numbers."""
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for name in (
        "ensemble",
        "ray",
        "numpy",
        "pandas",
        "pyarrow",
        "scikit-learn",
        "lightgbm",
        "xgboost",
        "catboost",
        "torch",
    ):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            pass
    return out


#: The directory of a member's refit on every row (beside its fold models).
REFIT_DIR = "full"


def fold_name(fold: int, repeat: int = 0) -> str:
    """The directory of a fold model: ``fold<k>``, ``r<r>_fold<k>`` for repeats.

    Every name ends in ``fold<k>``, so a reader takes ``*fold*`` as the
    member's models; the refit on every row (``fold`` =
    :data:`ensemble.specs.REFIT_FOLD`) is :data:`REFIT_DIR`.

    Examples
    --------
    >>> fold_name(3), fold_name(3, repeat=2), fold_name(-2)
    ('fold3', 'r2_fold3', 'full')
    """
    if fold == REFIT_FOLD:
        return REFIT_DIR
    return f"fold{fold}" if repeat == 0 else f"r{repeat}_fold{fold}"


def fold_dirs(member_dir: Path) -> list[Path]:
    """A member's saved fold models' directories in (repeat, fold) order.

    Only complete saves count (``meta.json`` is written last): a fit killed
    while saving must not be averaged in, or fail the load.
    """

    def order(p: Path) -> tuple[int, int]:
        rep, _, fold = p.name.rpartition("fold")
        return (int(rep.strip("r_") or 0), int(fold))

    found = member_dir.glob("*fold*")
    return sorted((p for p in found if (p / "meta.json").is_file()), key=order)


def _was_temporary(path: Path) -> bool:
    """Whether ``path`` was a run in an estimator's temporary directory."""
    parent = path.absolute().parent
    return parent.parent == Path(tempfile.gettempdir()) and parent.name.startswith(
        "ensemble-"
    )


@contextlib.contextmanager
def _atomic(target: Path) -> Iterator[Path]:
    """A temporary name to write, renamed to ``target`` once written.

    On failure (a full disk, say) the half-written file is removed, so the
    folder holds the complete ``target`` from before, or none.
    """
    tmp = _tmp_name(target)
    try:
        yield tmp
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _tmp_name(target: Path) -> Path:
    return target.with_name(f"{target.name}.tmp-{uuid.uuid4().hex[:8]}")


class RunDirectory:
    """One run's directory ``<out>/<run_id>/``.

    Parameters
    ----------
    path : path-like
        The run directory.
    """

    def __init__(self, path: str | os.PathLike[str], remote: str | None = None) -> None:
        self.path = Path(path).absolute()
        #: The run's URI when it lives on shared storage (``path`` is then a
        #: local working copy whose every write is uploaded; see ``storage``).
        self.remote = remote

    @property
    def location(self) -> str:
        """Where the run lives: its URI, or its local path."""
        return self.remote if self.remote is not None else str(self.path)

    @property
    def out(self) -> str:
        """The ``--out`` the run was written under: the parent URI or directory."""
        if self.remote is not None:
            return storage.parent_and_name(self.remote)[0]
        return str(self.path.parent)

    def remove(self, name: str) -> None:
        """Delete ``name`` (a file or a directory of the run), here and remotely."""
        path = self.path / name
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)
        if self.remote is not None:
            storage.remove(storage.join(self.remote, name))

    def sync(self, name: str) -> None:
        """Upload ``name`` (a file or a directory of the run) to :attr:`remote`."""
        if self.remote is not None:
            storage.upload(self.path / name, storage.join(self.remote, name))

    @property
    def run_id(self) -> str:
        """The directory's name."""
        return self.path.name

    @classmethod
    def create(
        cls, out: str | os.PathLike[str], run_id: str | None = None
    ) -> RunDirectory:
        """Make a fresh run directory (an existing one is never overwritten)."""
        if run_id is None:
            run_id = datetime.now().strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]
        if storage.is_uri(out):
            uri = storage.join(str(out), run_id)
            if storage.exists(uri):
                raise RunStateError(
                    f"run directory {uri!r} already exists; choose another --run-id "
                    "or use --resume"
                )
            path = storage.staging_dir(uri)
            (path / "models").mkdir(parents=True)
            return cls(path, remote=uri)
        path = Path(out).absolute() / run_id
        if path.exists():
            raise RunStateError(
                f"run directory {str(path)!r} already exists; choose another --run-id "
                "or use --resume"
            )
        (path / "models").mkdir(parents=True)
        return cls(path)

    @classmethod
    def for_reading(cls, location: str | os.PathLike[str]) -> RunDirectory:
        """A run to read: a local path as is, a URI through a cached local copy."""
        if storage.is_uri(location):
            uri = str(location)
            return cls(storage.local_copy(uri), remote=uri)
        path = Path(location)
        if not path.exists():
            hint = ""
            if _was_temporary(path):
                hint = (
                    ": it was the temporary run of an estimator fitted without "
                    "out=, removed with the estimator; fit with out=DIR to keep it"
                )
            raise RunStateError(f"run directory {str(location)!r} does not exist{hint}")
        return cls(path)

    # -- writing -------------------------------------------------------------
    def write_json(self, name: str, obj: Any) -> Path:
        """Write JSON atomically."""
        target = self.path / name
        with _atomic(target) as tmp:
            tmp.write_text(json.dumps(obj, indent=2, default=str))
        self.sync(name)
        return target

    def write_table(self, name: str, frame: pd.DataFrame) -> Path:
        """Write a Parquet file atomically, checking the contract's columns."""
        required = REQUIRED_COLUMNS.get(name, ())
        missing = [c for c in required if c not in frame.columns]
        if missing:  # a programming error, not user input
            raise RuntimeError(f"{name} lacks required columns {missing}")
        target = self.path / name
        with _atomic(target) as tmp:
            frame.to_parquet(tmp, index=False)
        self.sync(name)
        return target

    def tmp_dir(self, name: str) -> Path:
        """A fresh temporary directory beside ``name``, for :meth:`commit_dir`."""
        return Path(tempfile.mkdtemp(prefix=f"{name}.tmp-", dir=self.path))

    def commit_dir(self, tmp: Path, name: str) -> Path:
        """Rename a finished temporary directory into place (replacing ``name``)."""
        target = self.path / name
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
        if self.remote is not None:
            storage.remove(storage.join(self.remote, name))
            self.sync(name)
        return target

    def write_manifest(self, **fields: Any) -> dict[str, Any]:
        """Merge ``fields`` into the manifest and write it atomically."""
        current = self.read_manifest() if (self.path / "manifest.json").exists() else {}
        current.update(fields)
        for key in MANIFEST_KEYS:
            current.setdefault(key, None)
        self.write_json("manifest.json", current)
        return current

    def record_failure(self, error: str) -> None:
        """Mark the run failed in its manifest, even on a full disk.

        The atomic write needs room for a second copy; when the disk has
        none, the manifest is rewritten in place, in the pages it already
        holds, when they can take it (a failed manifest is a few hundred
        bytes longer than the running one, usually inside its last block).
        Otherwise the failure is only logged.
        """
        fields = {"status": "failed", "finished_at": now_iso(), "error": error}
        try:
            self.write_manifest(**fields)
            return
        except OSError as exc:
            if not is_disk_full(exc):
                raise
        path = self.path / "manifest.json"
        try:
            current = self.read_manifest() if path.is_file() else {}
            current.update(fields)
            text = json.dumps(current, indent=2, default=str).encode()
            if len(text) > os.stat(path).st_blocks * 512:  # would need a block
                raise OSError(28, "no room to rewrite the manifest in place")
            with open(path, "r+b") as fh:
                fh.write(text)
                fh.truncate()
            self.sync("manifest.json")
        except OSError as again:
            logger.warning("the failed manifest could not be written: %s", again)

    # -- reading -------------------------------------------------------------
    def read_manifest(self) -> dict[str, Any]:
        """The manifest as a dict."""
        p = self.path / "manifest.json"
        if not p.is_file():
            raise RunStateError(
                f"{str(self.path)!r} is not a run directory (no manifest.json)"
            )
        result: dict[str, Any] = json.loads(p.read_text())
        return result

    def require_complete(self) -> dict[str, Any]:
        """The manifest, or a clear error when the run is not complete."""
        manifest = self.read_manifest()
        status = manifest.get("status")
        if status != "complete":
            raise RunStateError(
                f"run {self.run_id!r} is {status}, not complete; re-run it (or resume "
                "it) before using it"
            )
        return manifest

    def read_table(self, name: str) -> pd.DataFrame:
        """Read a Parquet file or dataset of the run."""
        return pd.read_parquet(self.path / name)

    def model_dir(self, member: str, fold: int, repeat: int = 0) -> Path:
        """Where the fold model of ``member`` lives (in the local copy)."""
        return self.path / "models" / member / fold_name(fold, repeat)

    def model_target(self, member: str, fold: int, repeat: int = 0) -> str:
        """Where a fit writes the fold model: the URI or the local path."""
        if self.remote is not None:
            name = fold_name(fold, repeat)
            return storage.join(self.remote, "models", member, name)
        return str(self.model_dir(member, fold, repeat))

    # -- resume ----------------------------------------------------------------
    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> RunDirectory:
        """An existing run directory to continue (for ``--resume``).

        A URI run is downloaded, checkpoints included, into a fresh staging copy.
        """
        if storage.is_uri(path):
            uri = str(path)
            if not storage.exists(storage.join(uri, "manifest.json")):
                raise RunStateError(
                    f"{uri!r} is not a run directory (no manifest.json)"
                )
            local = storage.staging_dir(uri)
            storage.download(uri, local, skip=(".lock",))
            (local / "models").mkdir(parents=True, exist_ok=True)
            return cls(local, remote=uri)
        run = cls(path)
        run.read_manifest()  # a clear error when it is not a run directory
        return run

    @staticmethod
    def peek(location: str | os.PathLike[str]) -> tuple[dict[str, Any], str, str]:
        """``(manifest, out, run_id)`` of the run at ``location``, read in place.

        Unlike :meth:`open`, a URI run is not copied: nothing is left behind by
        a look at its manifest.
        """
        if storage.is_uri(location):
            uri = str(location)
            target = storage.join(uri, "manifest.json")
            if not storage.exists(target):
                raise RunStateError(
                    f"{uri!r} is not a run directory (no manifest.json)"
                )
            out, run_id = storage.parent_and_name(uri)
            return json.loads(storage.read_bytes(target)), out, run_id
        run = RunDirectory(location)
        return run.read_manifest(), run.out, run.run_id

    def lock(self) -> _RunLock:
        """An exclusive lock held by the process working on the run.

        The OS drops it when the process dies (even on SIGKILL), so a stale
        lock never blocks ``--resume``.
        """
        return _RunLock(self.path / ".lock", self.run_id)

    @property
    def checkpoint_dir(self) -> Path:
        """Finished work of an unfinished run (removed once it is complete)."""
        return self.path / "checkpoints"

    def save_checkpoint(self, name: str, obj: Any) -> None:
        """Pickle ``obj`` atomically under ``checkpoints/``."""
        target = self.checkpoint_dir / name
        target.parent.mkdir(parents=True, exist_ok=True)
        with _atomic(target) as tmp, open(tmp, "wb") as fh:
            pickle.dump(obj, fh, protocol=pickle.HIGHEST_PROTOCOL)
            fh.flush()
            os.fsync(fh.fileno())
        self.sync(f"checkpoints/{name}")

    def check_room(self, need: int, what: str) -> None:
        """Fail early, in one line, when the run's disk cannot take ``need`` bytes.

        Raises
        ------
        DiskFullError
            When the free space of the disk holding the run is below ``need``.
        """
        free = shutil.disk_usage(self.path).free
        if free < need:
            mib = 2**20
            raise DiskFullError(
                f"the disk of {self.location} has {free / mib:,.0f} MiB free and "
                f"{what} needs about {need / mib:,.0f} MiB; free some space or "
                "write the run elsewhere (--out)"
            )

    def load_checkpoints(self, prefix: str) -> list[Any]:
        """Every checkpoint whose name starts with ``prefix``, by name."""
        root = self.checkpoint_dir
        if not root.is_dir():
            return []
        out = []
        for p in sorted(root.rglob("*")):
            rel = p.relative_to(root).as_posix()
            if p.is_file() and rel.startswith(prefix) and ".tmp-" not in p.name:
                with open(p, "rb") as fh:
                    out.append(pickle.load(fh))
        return out

    def clear_checkpoints(self) -> None:
        """Drop the checkpoints of a run that has completed."""
        shutil.rmtree(self.checkpoint_dir, ignore_errors=True)
        if self.remote is not None:
            storage.remove(storage.join(self.remote, "checkpoints"))


class _RunLock:
    """``fcntl.flock`` on ``<run>/.lock``; the file holds the owner's pid."""

    def __init__(self, path: Path, run_id: str, label: str | None = None) -> None:
        self.path = path
        self.run_id = run_id
        self.label = label or f"run {run_id!r}"
        self._fh: Any = None

    def __enter__(self) -> _RunLock:
        fh = open(self.path, "a+")
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            owner = fh.read().strip() or "?"
            fh.close()
            raise RunStateError(
                f"{self.label} is in use by another process (pid {owner}); "
                "wait for it to finish or stop it first"
            ) from None
        fh.seek(0)
        fh.truncate()
        fh.write(str(os.getpid()))
        fh.flush()
        self._fh = fh
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._fh is not None:
            fcntl.flock(self._fh.fileno(), fcntl.LOCK_UN)
            self._fh.close()
            self._fh = None
