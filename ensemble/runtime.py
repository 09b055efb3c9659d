"""Connecting to Ray: a quiet local instance or an existing cluster.

Only entry points (the CLI, ``jobs/``, tests) call :func:`connect`; library code
never calls ``ray.init``.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from .exceptions import EnsembleError

__all__ = ["connect", "quiet_ray", "shutdown"]


class RayConnectionError(EnsembleError, ConnectionError):
    """Ray cannot be started or reached."""

    exit_code = 2


def quiet_ray(verbose: int = 1) -> None:
    """Silence Ray Data progress bars and Ray's loggers unless ``verbose >= 2``."""
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    if verbose >= 2:
        return
    import ray.data

    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
    for name in ("ray", "ray.data", "ray.tune", "ray.train"):
        logging.getLogger(name).setLevel(logging.ERROR)


def connect(
    address: str | None = None,
    *,
    num_cpus: int | None = None,
    num_gpus: int | None = None,
    object_store_memory: int | None = None,
    verbose: int = 1,
) -> bool:
    """Connect to Ray unless already connected.

    Parameters
    ----------
    address : str, optional
        ``host:port``, ``auto`` or ``ray://…``; ``RAY_ADDRESS`` when None; a new
        local instance when neither is set.
    num_cpus, num_gpus, object_store_memory : optional
        Resources of a new local instance.
    verbose : int, default=1
        Ray's own logs reach the terminal only at ``verbose >= 2``.

    Returns
    -------
    bool
        Whether this call started the connection (and should shut it down).
    """
    import ray

    if ray.is_initialized():
        quiet_ray(verbose)
        return False
    address = address or os.environ.get("RAY_ADDRESS") or None
    kwargs: dict[str, Any] = {
        "log_to_driver": verbose >= 2,
        "logging_level": logging.INFO if verbose >= 2 else logging.ERROR,
        "configure_logging": True,
    }
    if address:
        _check_listening(address)
    try:
        if address:
            ray.init(address=address, **kwargs)
        else:
            ray.init(
                num_cpus=num_cpus,
                num_gpus=num_gpus,
                object_store_memory=object_store_memory,
                include_dashboard=False,
                **kwargs,
            )
    except (ConnectionError, RuntimeError, ValueError) as exc:
        where = address or "a new local instance"
        first = (
            str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        )
        raise RayConnectionError(
            f"cannot connect to Ray at {where} ({first[:160]}); check --address / "
            "RAY_ADDRESS and that the cluster is running"
        ) from exc
    quiet_ray(verbose)
    return True


def _check_listening(address: str, timeout: float = 5.0) -> None:
    """Fail in seconds, not minutes, when nothing listens at ``host:port``.

    ``ray.init`` retries an unreachable GCS for minutes, printing warnings.
    """
    import socket

    target = address.split("://", 1)[-1]
    if target == "auto" or ":" not in target:
        return
    host, _, port = target.rpartition(":")
    try:
        port_no = int(port)
    except ValueError:
        raise RayConnectionError(
            f"Ray address {address!r} is not host:port; check --address / RAY_ADDRESS"
        ) from None
    try:
        with socket.create_connection((host, port_no), timeout=timeout):
            pass
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise RayConnectionError(
            f"nothing answers at Ray address {address!r} ({reason}); start the "
            "cluster (`ray start --head`) or fix --address / RAY_ADDRESS"
        ) from None


def shutdown(started: bool) -> None:
    """Disconnect if :func:`connect` started the connection."""
    import ray

    if started and ray.is_initialized():
        ray.shutdown()
