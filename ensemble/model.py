"""A fitted ensemble loaded from a complete run directory (no Ray).

``load(run_dir)`` returns a :class:`FittedEnsemble` that predicts new rows with
the run's chosen model (or any member / fusion by name): fold models of each
member are averaged, then the fusion combines the members.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import pandas as pd

from .artifacts import RunDirectory, fold_dirs
from .data import FeatureSchema
from .exceptions import DataError, RunStateError
from .learners import Learner

__all__ = ["FittedEnsemble", "load"]


class FittedEnsemble:
    """Predicts with one model of a complete run.

    Parameters
    ----------
    run_dir : path-like
        A complete run directory.
    model : str, optional
        A member or fusion name; the manifest's ``best`` when None.
    load_models : bool, default=True
        False reads only the manifest (enough for :meth:`check_frame`).

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
    ) -> None:
        self.run = RunDirectory.for_reading(run_dir)
        manifest = self.run.require_complete()
        self.task: str = manifest["task"]
        self.classes: list[Any] = list(manifest["classes"] or [])
        self.target: str = manifest["target"]
        self.schema = FeatureSchema.from_dict(manifest["schema"])
        config = manifest.get("config") or {}
        self.drop_columns: tuple[str, ...] = tuple(config.get("drop_columns") or ())
        self.members: list[str] = list(manifest["members"])
        fusions: list[str] = list(manifest.get("fusions") or [])
        # Added later by `ensemble prune` / `ensemble distill`.
        pruned: list[str] = list(manifest.get("pruned") or [])
        students: list[str] = list((manifest.get("distilled") or {}).keys())
        self.model: str = model or manifest["best"]
        known = self.members + fusions + pruned + students
        if self.model not in known:
            raise RunStateError(
                f"model {self.model!r} is not in run {self.run.run_id!r}; choose "
                f"one of {', '.join(known)}"
            )
        self.fusion_: Any = None
        self.student_: Any = None
        self.fold_models_: dict[str, list[Learner]] = {}
        if not load_models:
            return
        if self.model in students:
            from .student import Student

            self.student_ = Student.load(self.run.path / "models" / self.model)
            self.member_names_ = []
            return
        needed = [self.model]
        if self.model in fusions:
            import joblib

            blob = joblib.load(
                self.run.path / "models" / "fusion" / f"{self.model}.joblib"
            )
            self.fusion_ = blob["fusion"]
            needed = list(blob["members"])
        self.member_names_ = needed
        for m in needed:
            dirs = fold_dirs(self.run.path / "models" / m)
            if not dirs:
                raise RunStateError(
                    f"run {self.run.run_id!r} has no fold models of {m!r}"
                )
            self.fold_models_[m] = [Learner.load(d) for d in dirs]

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
            np.mean([fm.predict(X) for fm in self.fold_models_[m]], axis=0)
            for m in self.member_names_
        ]
        if self.fusion_ is None:
            return np.asarray(preds[0])
        P = np.stack(preds, axis=1)
        return np.asarray(
            self.fusion_.predict(P, X if self.fusion_.uses_features else None)
        )

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
) -> FittedEnsemble:
    """Load the fitted ensemble of a complete run (see :class:`FittedEnsemble`)."""
    return FittedEnsemble(run_dir, model, load_models=load_models)
