"""Champion/challenger model registry for nightly retraining.

``ensemble nightly CONFIG --registry DIR`` retrains on the latest data snapshot,
scores the new run (the challenger) and the current champion on the same rows
of the new holdout, and promotes the challenger only when it is better by a
margin. The registry directory holds::

    champion.json      the promoted run (path, run id, date, score)
    history.parquet    one row per nightly attempt (promoted, kept, failed)
    runs/<run_id>/     the nightly run directories
    .lock              held while a nightly run works (no overlapping runs)

Rows the champion was trained on are left out of the comparison when the
champion's data file is still readable, so a champion is never scored on rows
it has seen (snapshots often grow by appending).
"""

from __future__ import annotations

import glob
import json
import logging
import os
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from datetime import date as date_cls
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .artifacts import RunDirectory, _RunLock, now_iso
from .config import RunConfig
from .exceptions import ConfigError, DataError, EnsembleError

__all__ = [
    "HISTORY_COLUMNS",
    "NightlyOutcome",
    "Registry",
    "latest_snapshot",
    "nightly",
]

logger = logging.getLogger(__name__)

#: The holdout of a nightly run whose config asks for none: enough rows to
#: tell challenger and champion apart (~10k rows of a 50k table).
NIGHTLY_HOLDOUT = 0.2


#: Outcomes that settle a date: a second run that day does nothing unless forced.
SETTLED = ("promoted", "kept")


@dataclass
class NightlyOutcome:
    """One nightly attempt (a row of ``history.parquet``).

    Attributes
    ----------
    status : str
        ``promoted``, ``kept`` (challenger not better), ``failed`` or
        ``skipped`` (the date was already settled; not written to history).
    promoted : bool
    reason : str
        Why, in words.
    challenger_score, champion_score : float or None
        Both on the same holdout rows (``n_scored`` of them), in ``metric``.
    """

    date: str
    run_id: str | None
    run_dir: str | None
    snapshot: str | None
    status: str
    promoted: bool
    reason: str
    metric: str | None = None
    challenger_score: float | None = None
    champion_run_id: str | None = None
    champion_score: float | None = None
    n_scored: int | None = None
    finished_at: str | None = None


#: ``history.parquet``'s columns: the fields of :class:`NightlyOutcome`.
HISTORY_COLUMNS = tuple(f.name for f in fields(NightlyOutcome))


class Registry:
    """The registry directory (see the module docstring).

    Parameters
    ----------
    root : path-like
        The directory; created when missing.
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).absolute()

    @property
    def runs(self) -> Path:
        """Where nightly runs are written."""
        return self.root / "runs"

    def lock(self) -> _RunLock:
        """Exclusive while one nightly run works; dropped by the OS on any exit."""
        self.root.mkdir(parents=True, exist_ok=True)
        return _RunLock(
            self.root / ".lock", "nightly", label=f"registry {str(self.root)!r}"
        )

    def champion(self) -> dict[str, Any] | None:
        """The champion record, or None before the first promotion."""
        p = self.root / "champion.json"
        if not p.is_file():
            return None
        record: dict[str, Any] = json.loads(p.read_text())
        return record

    def history(self) -> pd.DataFrame:
        """Every nightly attempt so far (empty frame with the columns at first)."""
        p = self.root / "history.parquet"
        if not p.is_file():
            return pd.DataFrame({c: pd.Series(dtype=object) for c in HISTORY_COLUMNS})
        return pd.read_parquet(p)

    def record(self, outcome: NightlyOutcome) -> None:
        """Append one attempt to ``history.parquet`` (rewritten atomically)."""
        row = pd.DataFrame([asdict(outcome)], columns=list(HISTORY_COLUMNS))
        old = self.history()
        frame = row if old.empty else pd.concat([old, row], ignore_index=True)
        for col in ("challenger_score", "champion_score"):
            frame[col] = frame[col].astype("float64")
        frame["n_scored"] = frame["n_scored"].astype("Int64")
        frame["promoted"] = frame["promoted"].astype(bool)
        _atomic_parquet(frame, self.root / "history.parquet")

    def promote(self, outcome: NightlyOutcome) -> None:
        """Make ``outcome``'s run the champion (``champion.json``, atomic)."""
        record = {
            "run_id": outcome.run_id,
            "run_dir": outcome.run_dir,
            "date": outcome.date,
            "metric": outcome.metric,
            "score": outcome.challenger_score,
            "promoted_at": now_iso(),
        }
        target = self.root / "champion.json"
        tmp = target.with_name(f"champion.json.tmp-{uuid.uuid4().hex[:8]}")
        tmp.write_text(json.dumps(record, indent=2))
        os.replace(tmp, target)

    def settled(self, day: str) -> pd.Series | None:
        """The history row that settled ``day``, if any."""
        hist = self.history()
        done = hist[(hist["date"] == day) & hist["status"].isin(SETTLED)]
        return None if done.empty else done.iloc[-1]


def _atomic_parquet(frame: pd.DataFrame, target: Path) -> None:
    tmp = target.with_name(f"{target.name}.tmp-{uuid.uuid4().hex[:8]}")
    frame.to_parquet(tmp, index=False)
    os.replace(tmp, target)


def latest_snapshot(data: str) -> str:
    """The newest snapshot named by ``data``.

    ``data`` may be a file (used as is), a directory of snapshot files, or a
    glob (``snapshots/*.parquet``). Snapshots are ordered by name, so name them
    by date (``2026-11-24.parquet``).

    Raises
    ------
    DataError
        When nothing matches.
    """
    from . import storage

    if storage.is_uri(data) or data.startswith(("sklearn:", "synthetic:")):
        return data
    path = Path(data)
    if path.is_file():
        return data
    if path.is_dir() and not any(p.suffix == ".parquet" for p in path.glob("*")):
        pattern = str(path / "*")
    elif path.is_dir():
        pattern = str(path / "*.parquet")
    else:
        pattern = data
    matches = sorted(p for p in glob.glob(pattern) if not Path(p).name.startswith("."))
    if not matches:
        raise DataError(
            f"no data snapshot matches {data!r}; check the `data:` path or pattern"
        )
    return matches[-1]


def nightly(
    config: RunConfig,
    registry: str | os.PathLike[str],
    *,
    day: str | None = None,
    margin: float = 0.0,
    force: bool = False,
    fit: Callable[..., Any] | None = None,
    warm_start: bool = True,
) -> NightlyOutcome:
    """Retrain, compare with the champion on the same fresh holdout, maybe promote.

    Parameters
    ----------
    config : RunConfig
        The run config; ``data`` may name a snapshot directory or glob (the
        newest snapshot is used). Runs are written to ``<registry>/runs``.
    registry : path-like
        The registry directory.
    day : str, optional
        The date the attempt counts for (ISO ``YYYY-MM-DD``); today by default.
    margin : float, default=0.0
        The challenger must beat the champion by more than this, in the
        metric's own units (e.g. 0.001 AUC).
    force : bool, default=False
        Run even when ``day`` was already settled (promoted or kept).
    fit : callable, optional
        ``fit(config)`` → a complete run (default :func:`ensemble.runner.fit_run`).
    warm_start : bool, default=True
        Warm-startable members (the MLP) start from the champion's weights
        when the champion has such a member and the feature schema is
        unchanged (else they start cold).

    Returns
    -------
    NightlyOutcome
        Also appended to ``history.parquet`` unless ``status == "skipped"``.

    Raises
    ------
    EnsembleError
        When the challenger's run fails (recorded as ``failed`` first; the
        champion is unchanged).
    """
    from .runner import fit_run

    reg = Registry(registry)
    day = day or date_cls.today().isoformat()
    try:
        date_cls.fromisoformat(day)
    except ValueError:
        raise ConfigError(f"--date {day!r} is not a date; use YYYY-MM-DD") from None
    if margin < 0:
        raise ConfigError(f"--margin {margin} is negative; give 0 or more")
    with reg.lock():
        settled = reg.settled(day)
        if settled is not None and not force:
            return _skipped(day, settled)
        champion = reg.champion()
        snapshot = latest_snapshot(config.data or "")
        run_id = f"nightly-{day}-{uuid.uuid4().hex[:6]}"
        run_config = config.replace(data=snapshot, out=str(reg.runs), run_id=run_id)
        if not run_config.holdout:
            # Challenger and champion are compared on rows the challenger never
            # trained on: a nightly run always holds some out.
            run_config = run_config.replace(holdout=NIGHTLY_HOLDOUT)
        if warm_start and champion and _warm_startable(config):
            run_config = _with_warm_start(run_config, champion)
        outcome = NightlyOutcome(
            date=day,
            run_id=run_id,
            run_dir=str(reg.runs / run_id),
            snapshot=snapshot,
            status="failed",
            promoted=False,
            reason="",
            champion_run_id=champion["run_id"] if champion else None,
        )
        _challenge(reg, outcome, run_config, champion, margin, fit or fit_run)
        return outcome


def _skipped(day: str, settled: dict[str, Any]) -> NightlyOutcome:
    return NightlyOutcome(
        date=day,
        run_id=str(settled["run_id"]),
        run_dir=str(settled["run_dir"]),
        snapshot=str(settled["snapshot"]),
        status="skipped",
        promoted=False,
        reason=(
            f"{day} already ran ({settled['status']}, run "
            f"{settled['run_id']}); pass --force to run it again"
        ),
    )


def _warm_startable(config: RunConfig) -> bool:
    """Whether any of the config's learners can start from earlier weights."""
    from .learners import get

    return any(get(k).warm_start_params for k in config.learners)


def _challenge(
    reg: Registry,
    outcome: NightlyOutcome,
    run_config: RunConfig,
    champion: dict[str, Any] | None,
    margin: float,
    fit: Callable[..., Any],
) -> None:
    """Fit the challenger, compare, promote if it wins; record the night.

    A failure is recorded as ``failed`` (the champion unchanged) and re-raised.
    """
    run_dir = reg.runs / str(run_config.run_id)
    try:
        fit(run_config)
        RunDirectory(run_dir).require_complete()
        _compare(outcome, champion, margin)
    except Exception as exc:
        outcome.status = "failed"
        outcome.promoted = False
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        outcome.reason = f"run failed: {first}"[:500]
        outcome.finished_at = now_iso()
        if not run_dir.exists():
            outcome.run_dir = None
        reg.record(outcome)
        raise
    outcome.finished_at = now_iso()
    if outcome.promoted:
        reg.promote(outcome)
    reg.record(outcome)


def _with_warm_start(config: RunConfig, champion: dict[str, Any]) -> RunConfig:
    """``config`` warm-starting from the champion, when its schema still fits."""
    from .runner import load_and_prepare
    from .warm import warm_source

    try:
        data = load_and_prepare(config)
        warm_source(
            champion["run_dir"],
            {
                "task": data.task,
                "classes": data.classes,
                "schema": data.schema.to_dict(),
            },
        )
    except EnsembleError as exc:
        logger.warning("nightly: MLP members start cold (%s)", exc)
        return config
    return config.replace(warm_start=str(champion["run_dir"]))


def _compare(
    outcome: NightlyOutcome, champion: dict[str, Any] | None, margin: float
) -> None:
    """Score challenger and champion on the same new holdout rows; decide."""
    from .data import load_table
    from .metrics import METRICS, score
    from .model import FittedEnsemble

    assert outcome.run_dir is not None
    challenger = FittedEnsemble(outcome.run_dir)
    manifest = challenger.run.require_complete()
    metric = str(manifest["metric"])
    outcome.metric = metric
    frame, _ = load_table(str(outcome.snapshot))
    folds = challenger.run.read_table("folds.parquet")
    hold = frame.iloc[folds.loc[folds.fold == -1, "row_id"].to_numpy()]
    seen = _champion_rows(champion) if champion else None
    if seen is not None and set(seen[0]) <= set(map(str, hold.columns)):
        fresh = ~_row_hashes(hold, seen[0]).isin(seen[1]).to_numpy()
        if fresh.sum() >= max(10, len(hold) // 10):
            hold = hold[fresh]
        else:  # too few unseen rows to compare on: compare on all, say so
            logger.warning("champion saw most of the holdout; comparing on all rows")
    outcome.n_scored = len(hold)
    y = _encode(hold[challenger.target], challenger.classes)
    k = len(challenger.classes)
    chal = score(metric, y, challenger.predict_proba(hold), k)
    outcome.challenger_score = float(chal)
    if champion is None:
        outcome.status, outcome.promoted = "promoted", True
        outcome.reason = "first champion"
        return
    try:
        champ_model = FittedEnsemble(champion["run_dir"])
        pred = champ_model.predict_proba(hold)
        if k:
            order = [champ_model.classes.index(c) for c in challenger.classes]
            pred = pred[:, order]
        champ = float(score(metric, y, pred, k))
    except (EnsembleError, ValueError) as exc:
        first = str(exc).splitlines()[0]
        outcome.status, outcome.promoted = "promoted", True
        outcome.reason = f"the champion cannot score today's data ({first})"[:500]
        return
    outcome.champion_score = champ
    gain = chal - champ if METRICS[metric].greater_is_better else champ - chal
    if gain > margin:
        outcome.status, outcome.promoted = "promoted", True
        outcome.reason = f"better by {gain:.6g} {metric} (margin {margin:g})"
    else:
        outcome.status, outcome.promoted = "kept", False
        outcome.reason = (
            f"not better by more than the margin ({gain:+.6g} {metric}, "
            f"margin {margin:g})"
        )


def _encode(values: pd.Series, classes: list[Any]) -> np.ndarray:
    if not classes:
        return values.to_numpy(dtype=float)
    index = {str(c): i for i, c in enumerate(classes)}
    codes = values.astype(str).map(index)
    if codes.isna().any():
        raise DataError(
            f"the holdout has a class the run does not know: "
            f"{values[codes.isna()].iloc[0]!r}"
        )
    return codes.to_numpy(dtype=int)


def _champion_rows(champion: dict[str, Any]) -> tuple[list[str], pd.Series] | None:
    """Columns and row hashes the champion trained on (None when its data is gone)."""
    from .data import load_table

    try:
        run = RunDirectory.for_reading(champion["run_dir"])
        manifest = run.read_manifest()
        frame, sha = load_table(str(manifest["config"]["data"]))
    except (EnsembleError, OSError, KeyError):
        return None
    if sha != manifest.get("data_sha256"):
        return None
    folds = run.read_table("folds.parquet")
    train = frame.iloc[folds.loc[folds.fold >= 0, "row_id"].to_numpy()]
    cols = sorted(map(str, train.columns))
    return cols, _row_hashes(train, cols)


def _row_hashes(frame: pd.DataFrame, columns: list[str]) -> pd.Series:
    """One hash per row over ``columns`` (values as text: dtype-proof)."""
    return pd.util.hash_pandas_object(frame[columns].astype(str), index=False)
