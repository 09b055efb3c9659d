"""Warm start (transfer learning): MLP members start from an earlier run's weights.

``RunConfig.warm_start`` names a complete earlier run. Its feature schema must
be this data's (same columns, types and categories, same task and classes), so
the one-hot inputs line up; each MLP member of the new run takes the earlier
run's MLP of the same name (or its first MLP member), fold by fold, and keeps
that network's size (width, depth). The weights travel with the fit task, so a
worker node needs no access to the earlier run.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, replace
from typing import Any

from .artifacts import RunDirectory
from .exceptions import ConfigError

__all__ = ["WarmStart", "warm_source"]

logger = logging.getLogger(__name__)


@dataclass
class WarmStart:
    """The earlier run's MLP fold models, by member."""

    run: RunDirectory
    mlp_members: list[str]

    def _source(self, member: str) -> str:
        return member if member in self.mlp_members else self.mlp_members[0]

    def _fold_dir(self, member: str, fold: int) -> Any:
        base = self.run.path / "models" / self._source(member)
        path = base / f"fold{fold}"
        return path if path.is_dir() else sorted(base.glob("fold*"))[0]

    def adapt(self, spec: Any) -> Any:
        """``spec`` with the earlier network's size (an MLP's shape must match)."""
        if spec.learner != "mlp":
            return spec
        meta = json.loads((self._fold_dir(spec.name, 0) / "meta.json").read_text())
        size = {k: meta["params"][k] for k in ("width", "depth")}
        if any(spec.params.get(k) != v for k, v in size.items()):
            logger.info("warm start: %s keeps the earlier size %s", spec.name, size)
        return replace(spec, params={**spec.params, **size})

    def state(self, member: str, learner: str, fold: int) -> bytes | None:
        """The saved model an MLP fit starts from (None for other learners)."""
        if learner != "mlp":
            return None
        from .learners.mlp import model_state

        return model_state(self._fold_dir(member, fold))


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
        When the run is not complete, has no MLP member, or its feature schema
        differs from the new data's.
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
    mlps = []
    for member in manifest.get("members") or []:
        meta = run.path / "models" / member / "fold0" / "meta.json"
        if meta.is_file() and json.loads(meta.read_text())["key"] == "mlp":
            mlps.append(member)
    if not mlps:
        raise ConfigError(
            f"--warm-start: run {run.run_id!r} has no MLP member to start from"
        )
    return WarmStart(run, mlps)


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
