"""A fitted ensemble loaded from a complete run directory or a bundle (no Ray).

``load(path)`` returns a :class:`FittedEnsemble` that predicts new rows with
the run's chosen model (or any member / fusion whose models the run kept):
each member predicts with its refit on every row (``models/<member>/full``,
``ensemble.refit``) or, without one, with the average of its fold models; then
the fusion combines the members.
``path`` may also be a bundle written by :func:`ensemble.bundle.export`: the
chosen model alone, with its schema, needing neither Ray nor the run.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .artifacts import REFIT_DIR, RunDirectory, fold_dirs
from .data import FeatureSchema
from .exceptions import DataError, RunStateError
from .learners import Learner

__all__ = ["BUNDLE_FILE", "BUNDLE_FORMAT", "FittedEnsemble", "is_bundle", "load"]

#: The description of an exported bundle (``ensemble export``), and its format.
BUNDLE_FILE = "bundle.json"
BUNDLE_FORMAT = "ensemble-bundle/1"


class FittedEnsemble:
    """Predicts with one model of a complete run (or of an exported bundle).

    Parameters
    ----------
    run_dir : path-like
        A complete run directory, or a bundle directory.
    model : str, optional
        A member or fusion name; the manifest's ``best`` when None.
    load_models : bool, default=True
        False reads only the description (enough for :meth:`check_frame`).
    folds : bool, default=False
        Predict with every member's fold models (their average, as its OOF
        predictions were made) even where it has a refit on every row; the
        run must have kept them (``--keep-models all`` or ``--no-refit``).
    threads : int, optional
        Threads each model predicts on (boosters, kNN, the forests' row
        split); the machine's CPU count when None.

    Attributes
    ----------
    model : str
    task : str
    classes : list
    schema : FeatureSchema
    """

    def __init__(
        self,
        run_dir: str | os.PathLike[str],
        model: str | None = None,
        *,
        load_models: bool = True,
        folds: bool = False,
        threads: int | None = None,
    ) -> None:
        self.folds = folds
        #: Threads each model may predict on: this machine's cores by default
        #: (a fit's learner predicts on the CPUs its task reserved).
        self.threads = max(1, threads or os.cpu_count() or 1)
        self.run = RunDirectory.for_reading(run_dir)
        bundle = self.run.path / BUNDLE_FILE
        if bundle.is_file():
            info = json.loads(bundle.read_text())
            if info.get("format") != BUNDLE_FORMAT:
                raise RunStateError(
                    f"{str(run_dir)!r} is a bundle of format {info.get('format')!r}; "
                    f"this ensemble reads {BUNDLE_FORMAT!r}: export it again"
                )
            known = [info["model"]]
            self.members: list[str] = list(info["members"])
            best = info["model"]
            where = f"bundle {self.run.run_id!r}"
        else:
            info = self.run.require_complete()
            config = info.get("config") or {}
            info = {**info, "drop_columns": config.get("drop_columns") or ()}
            self.members = list(info["members"])
            # pruned and distilled models are added by `ensemble prune / distill`
            students = list((info.get("distilled") or {}).keys())
            known = (
                self.members
                + list(info.get("fusions") or [])
                + list(info.get("pruned") or [])
                + students
            )
            best = info["best"]
            where = f"run {self.run.run_id!r}"
        self._keep_models = (info.get("config") or {}).get("keep_models")
        self.task: str = info["task"]
        self.classes: list[Any] = list(info["classes"] or [])
        self.target: str = info["target"]
        self.schema = FeatureSchema.from_dict(info["schema"])
        self.drop_columns: tuple[str, ...] = tuple(info.get("drop_columns") or ())
        self.model: str = model or best
        if self.model not in known:
            raise RunStateError(
                f"model {self.model!r} is not in {where}; choose "
                f"one of {', '.join(known)}"
            )
        self.fusion_: Any = None
        self.student_: Any = None
        self.fold_models_: dict[str, list[Learner]] = {}
        self.model_dirs_: dict[str, list[Path]] = {}
        self.unused_: set[str] = set()
        if load_models:
            self._load_models(info)

    def _load_models(self, info: dict[str, Any]) -> None:
        models = self.run.path / "models"
        if self.model in (info.get("distilled") or {}):
            from .student import Student

            self.student_ = Student.load(models / self.model)
            self.member_names_: list[str] = []
            return
        needed = [self.model]
        fusion_file = models / "fusion" / f"{self.model}.joblib"
        if fusion_file.is_file():  # else a member (or a pruned member)
            import joblib

            blob = joblib.load(fusion_file)
            self.fusion_ = blob["fusion"]
            needed = list(blob["members"])
            self.unused_ = {needed[i] for i in self.fusion_.unused_members()}
        self.member_names_ = needed
        for m in needed:
            if m in self.unused_:
                continue
            dirs = self._model_dirs(models / m)
            if not dirs:
                raise RunStateError(self._gone(m))
            self.model_dirs_[m] = dirs
            self.fold_models_[m] = [Learner.load(d) for d in dirs]
            for learner in self.fold_models_[m]:
                learner.predict_threads = self.threads

    def _model_dirs(self, folder: Path) -> list[Path]:
        """The member's refit on every row, else its fold models."""
        full = folder / REFIT_DIR
        if not self.folds and (full / "meta.json").is_file():
            return [full]
        return fold_dirs(folder)

    @property
    def refitted_(self) -> list[str]:
        """Members that predict with their refit on every row."""
        return [m for m, d in self.model_dirs_.items() if d[0].name == REFIT_DIR]

    def _gone(self, name: str) -> str:
        if self.folds and (self.run.path / "models" / name / REFIT_DIR).is_dir():
            return (
                f"{self.run.run_id!r} kept only the refit of {name!r} on every row, "
                "not its fold models (fit with --keep-models all or --no-refit to "
                "keep them)"
            )
        kept = (
            (
                self.run.read_manifest()
                if (self.run.path / "manifest.json").is_file()
                else {}
            )
            .get("config", {})
            .get("keep_models")
        )
        hint = (
            " (this run kept the models of its chosen model only: fit with "
            "--keep-models all to keep every member's)"
            if kept == "chosen"
            else ""
        )
        return f"{self.run.run_id!r} has no fold models of {name!r}{hint}"

    def check_frame(
        self, frame: pd.DataFrame, *, allow: tuple[str, ...] = (), strict: bool = True
    ) -> None:
        """Raise a one-line DataError when ``frame`` does not match training.

        Parameters
        ----------
        frame : DataFrame
            Rows to predict.
        allow : tuple of str, default=()
            Columns that may be present besides the features (an id column).
        strict : bool, default=True
            Refuse columns the model has never seen (a renamed or misplaced
            column is usually a mistake); the target and the training run's
            ``drop_columns`` are always allowed.
        """
        missing = [c for c in self.schema.columns if c not in frame.columns]
        if missing:
            raise DataError(
                f"columns missing for prediction: {missing[:10]}; the model was "
                "trained on them: add them (values may be empty)"
            )
        if strict:
            known = {*self.schema.columns, self.target, *self.drop_columns, *allow}
            # pandas writes a non-default index as `__index_level_N__`: not data
            extra = [
                str(c)
                for c in frame.columns
                if c not in known and not str(c).startswith("__index_level_")
            ]
            if extra:
                raise DataError(
                    f"columns not seen in training: {extra[:10]}; drop them, name "
                    "an id with --id-column, or pass --ignore-extra-columns"
                )
        for col, kind in zip(self.schema.columns, self.schema.kinds, strict=True):
            s = frame[col]
            if kind == "numeric" and not (
                pd.api.types.is_numeric_dtype(s) or pd.api.types.is_bool_dtype(s)
            ):
                # via object: a NaN in an Arrow-backed column is not "NA"
                num = pd.to_numeric(s.astype(object), errors="coerce")
                bad = num.isna() & s.notna()
                if bad.any():
                    raise DataError(
                        f"column {col!r} was numeric in training but holds text here "
                        f"(e.g. {s[bad].iloc[0]!r}); fix its type"
                    )

    def predict_proba(self, frame: pd.DataFrame) -> np.ndarray:
        """Probabilities ``(n, n_classes)`` (classification) or values ``(n,)``."""
        if not self.fold_models_ and self.student_ is None:
            raise RunStateError("models were not loaded (load_models=False)")
        self.check_frame(frame, strict=False)
        return self.predict_matrix(self.schema.transform(frame))

    def predict_matrix(self, X: np.ndarray) -> np.ndarray:
        """:meth:`predict_proba` on rows already encoded by ``schema.transform``."""
        if self.student_ is not None:
            return np.asarray(self.student_.predict(X))
        preds = [
            self._placeholder(len(X))
            if m in self.unused_
            else np.mean([fm.predict(X) for fm in self.fold_models_[m]], axis=0)
            for m in self.member_names_
        ]
        if self.fusion_ is None:
            return np.asarray(preds[0])
        P = np.stack(preds, axis=1)
        return np.asarray(
            self.fusion_.predict(P, X if self.fusion_.uses_features else None)
        )

    def _placeholder(self, n: int) -> np.ndarray:
        """What stands in for a member the fusion weighs by exactly zero."""
        if self.classes:
            return np.full((n, len(self.classes)), 1.0 / len(self.classes))
        return np.zeros(n)

    def predict_frame(self, frame: pd.DataFrame) -> pd.DataFrame:
        """``pred_<class>`` columns plus ``label`` (classification), or ``pred``."""
        out = self.predict_proba(frame)
        if not self.classes:
            return pd.DataFrame({"pred": out})
        result = pd.DataFrame(out, columns=[f"pred_{c}" for c in self.classes])
        result["label"] = np.asarray(self.classes, dtype=object)[out.argmax(axis=1)]
        return result


def load(
    run_dir: str | os.PathLike[str],
    model: str | None = None,
    *,
    load_models: bool = True,
    folds: bool = False,
    threads: int | None = None,
) -> FittedEnsemble:
    """Load a complete run or bundle for prediction (:class:`FittedEnsemble`)."""
    return FittedEnsemble(
        run_dir, model, load_models=load_models, folds=folds, threads=threads
    )


def is_bundle(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is an exported bundle (not a run directory)."""
    return (Path(path) / BUNDLE_FILE).is_file()
