"""Export one model of a run as a self-contained, deployable bundle.

``ensemble export RUN_DIR --out model/`` writes the chosen model (or
``--model NAME``): its members' fold models, its fusion, the feature schema
and ``bundle.json`` (the model, the task, the versions it was fitted with and
the scores it was chosen on). ``ensemble.load("model/")`` and ``ensemble
predict model/`` read it like a run: loading needs neither Ray nor the run
directory, and it predicts exactly what the run predicts.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from .artifacts import RunDirectory, now_iso, versions
from .exceptions import ConfigError
from .model import BUNDLE_FILE, BUNDLE_FORMAT, FittedEnsemble

__all__ = ["export"]


def export(
    run_dir: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    model: str | None = None,
) -> Path:
    """Write a bundle of one model of a complete run into the new folder ``out``.

    Parameters
    ----------
    run_dir : path-like
        A complete run directory (local or URI).
    out : path-like
        A folder that does not exist yet (or is empty); written atomically.
    model : str, optional
        A member, fusion, pruned or distilled model; the run's chosen one
        when None.

    Returns
    -------
    Path
        The bundle's folder.

    Raises
    ------
    ConfigError
        When ``out`` exists and is not empty.
    RunStateError
        When the run is incomplete, or does not hold the model's files.
    """
    target = Path(out).absolute()
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise ConfigError(
            f"--out {str(out)!r} exists and is not an empty folder; give a new one"
        )
    fitted = FittedEnsemble(run_dir, model)  # every file it needs must load
    run = fitted.run
    manifest = run.require_complete()
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        _copy_models(run, fitted, tmp / "models")
        (tmp / BUNDLE_FILE).write_text(
            json.dumps(_description(run, manifest, fitted), indent=2, default=str)
        )
        if target.exists():
            target.rmdir()
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def _copy_models(run: RunDirectory, fitted: FittedEnsemble, dest: Path) -> None:
    """Copy what the loaded model predicts with, and its fusion.

    A member's refit on every row, else its fold models.
    """
    src = run.path / "models"
    if fitted.student_ is not None:
        shutil.copytree(src / fitted.model, dest / fitted.model)
    for name, dirs in fitted.model_dirs_.items():
        for d in dirs:
            shutil.copytree(d, dest / name / d.name)
    if fitted.fusion_ is not None:
        (dest / "fusion").mkdir(parents=True)
        name = f"{fitted.model}.joblib"
        shutil.copy2(src / "fusion" / name, dest / "fusion" / name)


def _description(
    run: RunDirectory, manifest: dict[str, Any], fitted: FittedEnsemble
) -> dict[str, Any]:
    board = run.read_table("leaderboard.parquet").set_index("model")
    scores: dict[str, Any] = {}
    if fitted.model in board.index:
        row = board.loc[fitted.model]
        scores = {
            k: (None if v != v else v)  # NaN (no holdout) as null
            for k, v in row.items()
            if k not in ("model", "kind", "best") and isinstance(v, (int, float, str))
        }
    distilled = manifest.get("distilled") or {}
    return {
        "format": BUNDLE_FORMAT,
        "model": fitted.model,
        "members": list(fitted.member_names_),
        "task": fitted.task,
        "target": fitted.target,
        "classes": fitted.classes,
        "schema": fitted.schema.to_dict(),
        "drop_columns": list(fitted.drop_columns),
        "scores": scores,
        "distilled": (
            {fitted.model: distilled[fitted.model]} if fitted.model in distilled else {}
        ),
        "versions": versions(),
        "fitted_with": manifest.get("versions"),
        "source": {
            "run_id": manifest.get("run_id"),
            "location": run.location,
            "data_sha256": manifest.get("data_sha256"),
        },
        "created_at": now_iso(),
    }
