"""``ensemble submit``: one fit as a Ray Job, through Ray's ``JobSubmissionClient``.

The config is resolved and checked on the client (a typo fails here, before the
cluster sees anything) and travels whole in the entrypoint, so the job runs
exactly the run the user asked for. The job's driver is ``python -m ensemble
fit`` on the head node; by default this package is shipped with the job
(``runtime_env.py_modules``) so the cluster runs the client's version of it.
"""

from __future__ import annotations

import json
import logging
import os
import shlex
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from . import storage
from .config import RunConfig
from .exceptions import ConfigError, EnsembleError

__all__ = ["JobFailed", "SubmitResult", "prepare_config", "submit_fit"]

TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")
#: How long a just-started head may take to bring up its job agent.
AGENT_WAIT_S = 90.0


class JobFailed(EnsembleError):
    """The Ray Job ended FAILED or STOPPED (exit code 1)."""

    exit_code = 1


@dataclass
class SubmitResult:
    """What :func:`submit_fit` returns.

    Attributes
    ----------
    job_id : str
        The submission id (``ray job logs ID`` / ``ray job stop ID``).
    status : str
        The last status seen (``PENDING``/``RUNNING`` with ``wait=False``).
    run_dir : str
        Where the run directory is (or will be) written.
    """

    job_id: str
    status: str
    run_dir: str


def prepare_config(config: RunConfig, cwd: Path | None = None) -> RunConfig:
    """The config as the job must see it: a run id, absolute local paths.

    A job's driver runs in a temporary directory on the head node, so a
    relative ``out`` or ``data`` would point somewhere else there; both are made
    absolute against ``cwd`` (a URI or ``sklearn:``/``synthetic:`` is kept).
    """
    cwd = cwd or Path.cwd()
    changes: dict[str, Any] = {}
    if not config.run_id:
        changes["run_id"] = (
            datetime.now().strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]
        )
    if not storage.is_uri(config.out) and not Path(config.out).is_absolute():
        changes["out"] = str(cwd / config.out)
    data = config.data
    if (
        data
        and not storage.is_uri(data)
        and ":" not in data.split("/")[0]
        and not Path(data).is_absolute()
    ):
        changes["data"] = str(cwd / data)
    return config.replace(**changes) if changes else config


def run_location(config: RunConfig) -> str:
    """The run directory a config writes: ``<out>/<run_id>``."""
    assert config.run_id
    if storage.is_uri(config.out):
        return storage.join(config.out, config.run_id)
    return str(Path(config.out) / config.run_id)


def entrypoint(config: RunConfig) -> str:
    """The shell command the job runs: ``python -m ensemble fit --config-json …``."""
    text = json.dumps({**config.to_dict(), "address": None, "verbose": 1})
    return f"python -m ensemble fit --config-json {shlex.quote(text)}"


def _client(address: str) -> Any:
    from ray.job_submission import JobSubmissionClient

    # Ray's packaging INFO lines ("Creating a file package…") are noise here.
    for name in (
        "ray.dashboard.modules.dashboard_sdk",
        "ray.dashboard.modules.job.sdk",
        "ray._private.runtime_env.packaging",
    ):
        logging.getLogger(name).setLevel(logging.WARNING)

    try:
        return JobSubmissionClient(address)
    except Exception as exc:  # noqa: BLE001 - requests/ConnectionError/RuntimeError
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        if any(t in str(exc) for t in ("401", "403", "Authentication")):
            raise ConfigError(
                f"the Ray cluster at {address} uses token authentication and "
                "refused this client; export RAY_AUTH_MODE=token and "
                "RAY_AUTH_TOKEN=<the cluster's token> (or put it in "
                "~/.ray/auth_token), then retry"
            ) from None
        raise ConfigError(
            f"cannot reach the Ray dashboard at {address} ({first[:160]}); check "
            "--address (http://HEAD:8265) and that the cluster is up"
        ) from None


def submit_fit(
    config: RunConfig,
    address: str,
    *,
    working_dir: str | None = None,
    ship_package: bool = True,
    submission_id: str | None = None,
    wait: bool = True,
    on_log: Callable[[str], None] | None = None,
    poll_s: float = 1.0,
) -> SubmitResult:
    """Submit one fit as a Ray Job and (by default) follow it to its end.

    Parameters
    ----------
    config : RunConfig
        The resolved run config (see :func:`prepare_config`).
    address : str
        The cluster's dashboard, e.g. ``http://HEAD:8265``.
    working_dir : str, optional
        A local directory shipped with the job (``runtime_env.working_dir``).
    ship_package : bool, default=True
        Ship this installed ``ensemble`` package with the job (``py_modules``).
    submission_id : str, optional
        Default ``ensemble-<run_id>``; Ray refuses a second job with the same id.
    wait : bool, default=True
        Follow the job until it ends; otherwise return once it is submitted.
    on_log : callable, optional
        Receives each new chunk of the job's logs while waiting.
    poll_s : float, default=1.0
        Seconds between status polls.

    Returns
    -------
    SubmitResult

    Raises
    ------
    ConfigError
        When the cluster cannot be reached or refuses the job.
    JobFailed
        When the job ends FAILED or STOPPED; the message is the job's error.
    """
    config = prepare_config(config)
    job_id = submission_id or f"ensemble-{config.run_id}"
    client = _client(address)
    _submit(
        client,
        job_id,
        entrypoint=entrypoint(config),
        runtime_env=_runtime_env(working_dir, ship_package),
        metadata={"ensemble_run": run_location(config)},
    )
    result = SubmitResult(job_id, "PENDING", run_location(config))
    if not wait:
        return result
    status, logs = _follow(client, job_id, on_log, poll_s)
    result.status = status
    if status != "SUCCEEDED":
        info = client.get_job_info(job_id)
        raise JobFailed(f"job {job_id} {status}: {_job_error(logs, info.message)}")
    return result


def _runtime_env(working_dir: str | None, ship_package: bool) -> dict[str, Any]:
    """The job's runtime environment: raw output, the folder and the package."""
    runtime_env: dict[str, Any] = {
        # Ray sets OMP_NUM_THREADS per worker; keep the job driver's output raw.
        "env_vars": {"PYTHONUNBUFFERED": "1", "RAY_AIR_NEW_OUTPUT": "0"},
    }
    if working_dir is not None:
        if not Path(working_dir).is_dir():
            raise ConfigError(
                f"--working-dir {working_dir!r} is not a directory; give the folder "
                "to ship with the job"
            )
        runtime_env["working_dir"] = str(working_dir)
    if ship_package:
        runtime_env["py_modules"] = [str(Path(__file__).resolve().parent)]
    return runtime_env


def _submit(client: Any, job_id: str, **job: Any) -> None:
    """Submit, retrying while a head that has just started has no job agent.

    Such a head answers "No available agent to submit job" until its agent is
    up; any other refusal is one line.
    """
    end = time.monotonic() + AGENT_WAIT_S
    while True:
        try:
            client.submit_job(submission_id=job_id, **job)
            return
        except Exception as exc:  # noqa: BLE001 - the SDK raises RuntimeError
            text = str(exc).strip()
            if "No available agent" in text and time.monotonic() < end:
                time.sleep(2)
                continue
            first = text.splitlines()[0] if text else ""
            raise ConfigError(
                f"the cluster refused job {job_id!r}: {first[:300]}"
            ) from None


def _follow(
    client: Any,
    job_id: str,
    on_log: Callable[[str], None] | None,
    poll_s: float,
) -> tuple[str, str]:
    """Poll the job until it ends, passing on new logs; its status and logs."""
    shown = 0
    while True:
        status = str(client.get_job_status(job_id).value)
        logs = client.get_job_logs(job_id)
        if len(logs) > shown and on_log is not None:
            on_log(logs[shown:])
        shown = max(shown, len(logs))
        if status in TERMINAL:
            return status, logs
        time.sleep(poll_s)


def _job_error(logs: str, message: str | None) -> str:
    """The job's own one-line error (``error: …``) or Ray's message."""
    for line in reversed(logs.splitlines()):
        text = line.strip()
        if text.startswith("error:"):
            return text[len("error:") :].strip()
    for line in reversed(logs.splitlines()):
        if line.strip() and not line.startswith(" "):
            last = line.strip()
            break
    else:
        last = ""
    head = (message or "").strip().splitlines()[0] if message else ""
    return "; ".join(p for p in (head[:300], last[:300]) if p) or "no error message"


def print_log(chunk: str) -> None:
    """Write a chunk of job logs to stdout as it arrives."""
    sys.stdout.write(chunk)
    sys.stdout.flush()


def default_address() -> str | None:
    """``RAY_API_SERVER_ADDRESS`` or an ``http(s)://`` ``RAY_ADDRESS``."""
    for name in ("RAY_API_SERVER_ADDRESS", "RAY_ADDRESS"):
        value = os.environ.get(name, "")
        if value.startswith(("http://", "https://")):
            return value
    return None
