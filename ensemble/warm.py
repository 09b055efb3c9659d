"""Warm start (transfer learning): members start from an earlier run's weights.

``RunConfig.warm_start`` names a complete earlier run. Its feature schema must
be this data's (same columns, types and categories, same task and classes), so
the inputs line up. Each member of a warm-startable learner (one with
``Learner.warm_start_params``: the MLP) takes the earlier run's member of the
same name, else its first member of that learner, fold by fold (every fold
from its refit on every row when the earlier run kept only that), and keeps
that model's shape (those parameters). The weights travel with the fit task, so a
worker node needs no access to the earlier run.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from .artifacts import REFIT_DIR, RunDirectory
from .exceptions import ConfigError
from .learners import get
from .specs import MemberSpec

__all__ = ["WarmStart", "warm_source"]

logger = logging.getLogger(__name__)


@dataclass
class WarmStart:
    """The earlier run's warm-startable members, by learner key."""

    run: RunDirectory
    members: dict[str, list[str]]

    def _source(self, member: str, learner: str) -> str | None:
        mine = self.members.get(learner, [])
        if not mine:
            return None
        return member if member in mine else mine[0]

    def _fold_dir(self, source: str, fold: int) -> Any:
        """The earlier fold model, else another, else the refit on every row."""
        base = self.run.path / "models" / source
        path = base / f"fold{fold}"
        return path if path.is_dir() else _models(base)[0]

    def adapt(self, spec: MemberSpec) -> MemberSpec:
        """``spec`` with the earlier model's shape (weights fit only that shape)."""
        source = self._source(spec.name, spec.learner)
        if source is None:
            return spec
        meta = json.loads((self._fold_dir(source, 0) / "meta.json").read_text())
        cls = get(spec.learner)
        # an earlier version's MLP had no int_levels: its default held
        shape = {
            k: meta["params"].get(k, cls.default_params[k])
            for k in cls.warm_start_params
        }
        if any(spec.params.get(k) != v for k, v in shape.items()):
            logger.info("warm start: %s keeps the earlier shape %s", spec.name, shape)
        return replace(spec, params={**spec.params, **shape})

    def state(self, member: str, learner: str, fold: int) -> bytes | None:
        """The saved model a fit starts from (None when nothing fits it)."""
        source = self._source(member, learner)
        if source is None:
            return None
        return get(learner).saved_state(self._fold_dir(source, fold))


def warm_source(location: str, manifest_now: dict[str, Any]) -> WarmStart:
    """Open and check the run to warm-start from.

    Parameters
    ----------
    location : str
        The earlier run (path or URI).
    manifest_now : dict
        ``task``, ``classes`` and ``schema`` of the new run.

    Raises
    ------
    ConfigError
        When the run is not complete, has no warm-startable member, or its
        feature schema differs from the new data's.
    """
    from .exceptions import RunStateError

    try:
        run = RunDirectory.for_reading(location)
        manifest = run.require_complete()
    except RunStateError as exc:
        raise ConfigError(f"--warm-start: {exc}") from None
    for key in ("task", "classes"):
        if manifest.get(key) != manifest_now[key]:
            raise ConfigError(
                f"--warm-start: run {run.run_id!r} has {key} {manifest.get(key)!r}, "
                f"this data {manifest_now[key]!r}; start cold (drop --warm-start)"
            )
    diff = _schema_difference(manifest.get("schema") or {}, manifest_now["schema"])
    if diff:
        raise ConfigError(
            f"--warm-start: the feature schema of run {run.run_id!r} differs from "
            f"this data's ({diff}); start cold (drop --warm-start)"
        )
    members: dict[str, list[str]] = {}
    for member in manifest.get("members") or []:
        found = _models(run.path / "models" / member)
        if not found:
            continue
        meta = found[0] / "meta.json"
        key = json.loads(meta.read_text())["key"]
        if get(key).warm_start_params:
            members.setdefault(key, []).append(member)
    if not members:
        raise ConfigError(
            f"--warm-start: run {run.run_id!r} has no member to start from (only "
            "MLP members can be warm-started)"
        )
    return WarmStart(run, members)


def _models(base: Path) -> list[Path]:
    """A member's fold models, else its refit on every row.

    A default run keeps only the refit of the members its chosen model uses.
    """
    folds = sorted(p for p in base.glob("fold*") if (p / "meta.json").is_file())
    full = base / REFIT_DIR
    return folds or ([full] if (full / "meta.json").is_file() else [])


def _schema_difference(then: dict[str, Any], now: dict[str, Any]) -> str | None:
    cols_then, cols_now = list(then.get("columns", [])), list(now.get("columns", []))
    if cols_then != cols_now:
        gone = [c for c in cols_then if c not in cols_now]
        new = [c for c in cols_now if c not in cols_then]
        if gone or new:
            return f"columns only there: {gone or '-'}; only here: {new or '-'}"
        return "the columns are in another order"
    kinds_then, kinds_now = list(then.get("kinds", [])), list(now.get("kinds", []))
    for col, a, b in zip(cols_now, kinds_then, kinds_now, strict=False):
        if a != b:
            return f"column {col!r} was {a}, is {b}"
    cats_then, cats_now = then.get("categories", {}), now.get("categories", {})
    for col in cols_now:
        if cats_then.get(col) != cats_now.get(col):
            return f"the categories of column {col!r} changed"
    return None
