"""The ``EnsembleError`` tree.

Every error a user can cause derives from :class:`EnsembleError` and also from the
builtin a caller would expect, so ``except ValueError`` keeps working. The CLI
catches ``EnsembleError`` at the edge and prints one line.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

__all__ = [
    "BaseLearnerFailed",
    "ConfigError",
    "DataError",
    "DiskFullError",
    "EnsembleError",
    "FusionError",
    "NotFittedError",
    "RunStateError",
    "UnknownFusionError",
    "UnknownLearnerError",
    "describe",
    "is_disk_full",
]


class EnsembleError(Exception):
    """Base class of every error raised by ``ensemble``.

    Attributes
    ----------
    exit_code : int
        Process exit code the CLI uses: 2 for bad usage, configuration or data,
        1 for a run that failed.
    """

    exit_code: int = 1


class ConfigError(EnsembleError, ValueError):
    """A configuration value or key is invalid."""

    exit_code = 2


class DataError(EnsembleError, ValueError):
    """The input table cannot be used as given."""

    exit_code = 2


class UnknownLearnerError(EnsembleError, LookupError):
    """A learner key is not in the registry."""

    exit_code = 2


class UnknownFusionError(EnsembleError, LookupError):
    """A fusion key is not in the registry."""

    exit_code = 2


class FusionError(EnsembleError, ValueError):
    """Fusion inputs are inconsistent (shapes, NaNs, too few members)."""

    exit_code = 2


class RunStateError(EnsembleError, RuntimeError):
    """A run directory is missing, incomplete or failed."""

    exit_code = 2


class DiskFullError(EnsembleError, OSError):
    """The disk holding a run has no room for what the run must write."""

    exit_code = 1


def is_disk_full(exc: BaseException) -> bool:
    """Whether ``exc`` (or an error it wraps) is a full disk (ENOSPC).

    Ray wraps a worker's error as ``cause``; pyarrow and Ray Data raise their
    own types with the OS message.
    """
    import errno

    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, DiskFullError):
            return True
        if isinstance(e, OSError) and e.errno == errno.ENOSPC:
            return True
        if "No space left on device" in str(e):
            return True
        todo += [e.__cause__, e.__context__, getattr(e, "cause", None)]
    return False


if TYPE_CHECKING:
    from sklearn.exceptions import NotFittedError as _SkNotFittedError

    class NotFittedError(EnsembleError, _SkNotFittedError):
        """An estimator or fusion was used before ``fit``."""


_MAKING = threading.Lock()  # one class, even when two threads ask at once


def __getattr__(name: str) -> Any:
    # NotFittedError derives from scikit-learn's (sklearn's own checks catch
    # that one), and importing sklearn takes ~1.5 s: the CLI's usage errors,
    # `--help` and a Ray job's driver would wait for it. It is made on first use.
    if name != "NotFittedError":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    with _MAKING:
        if name not in globals():
            from sklearn.exceptions import NotFittedError as sk_not_fitted

            globals()[name] = type(
                "NotFittedError",
                (EnsembleError, sk_not_fitted),
                {
                    "__doc__": "An estimator or fusion was used before ``fit``.",
                    "__module__": __name__,
                },
            )
    return globals()[name]


class BaseLearnerFailed(EnsembleError, RuntimeError):
    """A base learner failed while fitting one fold.

    Parameters
    ----------
    member : str
        Name of the ensemble member.
    fold : int
        Fold index that failed.
    reason : str
        Short description of the underlying error.
    """

    def __init__(self, member: str, fold: int, reason: str) -> None:
        self.member = member
        self.fold = fold
        self.reason = reason
        super().__init__(f"member {member!r} failed on fold {fold}: {reason}")


def describe(exc: BaseException) -> str:
    """``Type: last line`` of an error, or of the error it wraps.

    Ray wraps a worker's exception as ``cause``; one short line is what logs
    and manifests need.
    """
    cause = getattr(exc, "cause", None) or exc
    text = str(cause).strip().splitlines()
    last = text[-1] if text else type(cause).__name__
    return f"{type(cause).__name__}: {last}"[:300]
