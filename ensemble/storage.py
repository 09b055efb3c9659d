"""Run directories on shared storage: local paths or URIs (``s3://``, ``gs://``).

On a multi-node cluster the driver and the fit actors must see the same run
directory. A local path works when it is on a shared filesystem (NFS, a mounted
volume); otherwise give ``--out`` a URI. Every URI goes through
``pyarrow.fs.FileSystem.from_uri``, so credentials and endpoints come from the
usual places (``AWS_ACCESS_KEY_ID``, ``AWS_ENDPOINT_URL``, instance roles,
``GOOGLE_APPLICATION_CREDENTIALS``) or from the URI's query string
(``s3://bucket/runs?endpoint_override=host:9000&scheme=http``).

A run on a URI is worked on in a local staging copy and every file is uploaded
as soon as it is written (each object is written whole, so a reader never sees
half a file); ``manifest.json`` goes first as ``running`` and last as
``complete``, exactly as on a local disk. Readers (``predict``, ``load``,
``report``, ``--resume``) download the run into a local cache first.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from .exceptions import ConfigError, RunStateError

__all__ = [
    "download",
    "exists",
    "is_uri",
    "join",
    "local_copy",
    "remove",
    "sweep_model_staging",
    "upload",
]


#: Environment variables that reach storage clients; forwarded to the Ray
#: workers of a URI run (a worker's environment is its node's, not the driver's).
CREDENTIAL_PREFIXES = ("AWS_", "GOOGLE_", "GCS_", "AZURE_", "ENSEMBLE_CACHE")


def credentials_env() -> dict[str, str]:
    """The driver's storage settings (``AWS_*``, ``GOOGLE_*``, …) to forward."""
    return {k: v for k, v in os.environ.items() if k.startswith(CREDENTIAL_PREFIXES)}


def is_uri(path: str | os.PathLike[str] | None) -> bool:
    """True for ``scheme://…`` locations other than ``file://``."""
    if path is None or isinstance(path, Path):
        return False
    text = str(path)
    return "://" in text and not text.startswith("file://")


def join(uri: str, *parts: str) -> str:
    """``uri`` with ``parts`` appended to its path (its query string kept)."""
    s = urlsplit(uri)
    path = "/".join([s.path.rstrip("/"), *(p.strip("/") for p in parts)])
    return urlunsplit((s.scheme, s.netloc, path, s.query, s.fragment))


def parent_and_name(uri: str) -> tuple[str, str]:
    """``(parent URI, last path element)``."""
    s = urlsplit(uri)
    head, _, name = s.path.rstrip("/").rpartition("/")
    return urlunsplit((s.scheme, s.netloc, head, s.query, s.fragment)), name


def _fs(uri: str) -> tuple[Any, str]:
    import pyarrow.fs as pafs

    try:
        fs, path = pafs.FileSystem.from_uri(uri)
    except (ValueError, OSError) as exc:
        raise ConfigError(
            f"cannot open {uri!r} ({str(exc).splitlines()[0]}); check the URI, the "
            "credentials and the endpoint (e.g. AWS_ENDPOINT_URL)"
        ) from None
    return fs, path.rstrip("/")


def exists(uri: str) -> bool:
    """Whether a file or directory exists at ``uri``."""
    import pyarrow.fs as pafs

    fs, path = _fs(uri)
    try:
        info = fs.get_file_info(path)
    except OSError as exc:
        raise ConfigError(
            f"cannot reach {uri!r} ({str(exc).splitlines()[0]}); check the "
            "credentials and the endpoint"
        ) from None
    return bool(info.type != pafs.FileType.NotFound)


def upload(local: str | os.PathLike[str], uri: str) -> None:
    """Copy a local file or directory tree to ``uri`` (objects written whole)."""
    import pyarrow.fs as pafs

    fs, path = _fs(uri)
    src = Path(local)
    if src.is_dir():
        pafs.copy_files(str(src), path, destination_filesystem=fs, use_threads=True)
    else:
        parent = path.rpartition("/")[0]
        if parent:
            fs.create_dir(parent, recursive=True)
        pafs.copy_files(str(src), path, destination_filesystem=fs)


def download(
    uri: str, local: str | os.PathLike[str], skip: tuple[str, ...] = ()
) -> None:
    """Copy the tree at ``uri`` into the local directory ``local``.

    Files whose relative path starts with one of ``skip`` are left out.
    """
    import pyarrow.fs as pafs

    fs, path = _fs(uri)
    infos = fs.get_file_info(pafs.FileSelector(path, recursive=True))
    root = Path(local)
    for info in infos:
        if info.type != pafs.FileType.File:
            continue
        rel = info.path[len(path) :].lstrip("/")
        if rel.startswith(skip):
            continue
        dest = root / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(dest.name + ".part")
        with fs.open_input_stream(info.path) as src, open(tmp, "wb") as out:
            shutil.copyfileobj(src, out, 1 << 20)
        os.replace(tmp, dest)


def remove(uri: str) -> None:
    """Delete the file or tree at ``uri`` when it exists."""
    import pyarrow.fs as pafs

    fs, path = _fs(uri)
    kind = fs.get_file_info(path).type
    if kind == pafs.FileType.File:
        fs.delete_file(path)
    elif kind == pafs.FileType.Directory:
        fs.delete_dir(path)


def read_bytes(uri: str) -> bytes:
    """The content of the file at ``uri``."""
    fs, path = _fs(uri)
    with fs.open_input_stream(path) as src:
        data: bytes = src.read()
    return data


def staging_dir(uri: str) -> Path:
    """A fresh local working copy for the run at ``uri`` (named like the run)."""
    _, name = parent_and_name(uri)
    return Path(tempfile.mkdtemp(prefix="ensemble-stage-")) / name


def local_copy(uri: str) -> Path:
    """A local copy of the complete run directory at ``uri`` (cached).

    The cache lives under ``$ENSEMBLE_CACHE/runs`` (default
    ``~/.cache/ensemble/runs``) and is refreshed when the remote manifest
    changed. Checkpoints are not downloaded.

    Raises
    ------
    RunStateError
        When ``uri`` holds no run directory.
    """
    import json

    _, name = parent_and_name(uri)
    try:
        manifest = read_bytes(join(uri, "manifest.json"))
    except (FileNotFoundError, OSError):
        raise RunStateError(
            f"{uri!r} is not a run directory (no manifest.json)"
        ) from None
    cache = _cache_root() / "runs"
    key = hashlib.sha256(uri.encode()).hexdigest()[:16]
    target = cache / key / name
    current = target / "manifest.json"
    status = json.loads(manifest).get("status")
    if current.is_file() and current.read_bytes() == manifest and status == "complete":
        return target
    tmp = Path(tempfile.mkdtemp(prefix=f"{name}.tmp-", dir=_mkdir(cache / key)))
    try:
        download(uri, tmp, skip=("checkpoints/", ".lock"))
        (tmp / "manifest.json").write_bytes(manifest)  # the one the status came from
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def fetch(uri: str) -> Path:
    """A local copy of the file (or directory) at ``uri``, for reading data.

    Cached under ``$ENSEMBLE_CACHE/data`` by URI, size and modification time,
    so a nightly job re-reads a snapshot only when it changed.
    """
    import pyarrow.fs as pafs

    fs, path = _fs(uri)
    info = fs.get_file_info(path)
    stamp = f"{uri}|{info.size}|{info.mtime_ns}"
    key = hashlib.sha256(stamp.encode()).hexdigest()[:16]
    _, name = parent_and_name(uri)
    target = _cache_root() / "data" / key / name
    if target.exists():
        return target
    tmp = Path(tempfile.mkdtemp(prefix="fetch-", dir=_mkdir(target.parent)))
    try:
        if info.type == pafs.FileType.Directory:
            download(uri, tmp / name)
        else:
            with fs.open_input_stream(path) as src, open(tmp / name, "wb") as out:
                shutil.copyfileobj(src, out, 1 << 20)
        os.replace(tmp / name, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _cache_root() -> Path:
    default = Path.home() / ".cache" / "ensemble"
    return Path(os.environ.get("ENSEMBLE_CACHE", default))


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


#: Prefix of a fold model's local folder before its upload, followed by the
#: pid of the process writing it: a fit killed mid-upload (Ctrl-C on the run,
#: a fit past its deadline) cannot remove its own, and the pid says it is gone.
MODEL_STAGING = "ensemble-model-"


def save_tree(target: str, write: Any) -> None:
    """Call ``write(local_dir)`` and put the result at ``target`` (path or URI).

    Fit actors use it for fold models: on a URI run the model is written to a
    local temporary directory and uploaded, so a worker node needs no shared disk.
    """
    if not is_uri(target):
        write(target)
        return
    sweep_model_staging()
    tmp = Path(tempfile.mkdtemp(prefix=f"{MODEL_STAGING}{os.getpid()}-"))
    try:
        write(str(tmp / "m"))
        upload(tmp / "m", target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def sweep_model_staging() -> list[str]:
    """Remove the model upload folders of processes that no longer exist.

    Called before each upload and by the fit pool once it has stopped its
    fits, so a killed fit's folder goes on the next save on that node.

    Returns
    -------
    list of str
        Names of the folders removed from the temporary folder.
    """
    removed = []
    for entry in Path(tempfile.gettempdir()).glob(MODEL_STAGING + "*"):
        pid = entry.name[len(MODEL_STAGING) :].split("-", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(entry.name)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True
