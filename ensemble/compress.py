"""Model-structure optimisation of a complete run: distillation and pruning.

``ensemble distill RUN_DIR`` trains one compact student (LightGBM or an MLP) to
mimic the run's chosen model on the training rows plus augmented rows, and adds
it to the run as ``distilled_<student>``: a leaderboard row with its holdout
score, its fidelity to the ensemble and its prediction time per 1,000 rows
against the ensemble's. ``ensemble prune RUN_DIR`` magnitude-prunes the MLP
members to a target sparsity, fine-tunes them on their own folds, and adds them
as ``<member>_pruned`` with the change in score (``prune.parquet``).

Both read the run's own data file (its sha256 must still match), write
atomically, keep the run ``complete``, and make the new models usable by
``ensemble predict --model NAME`` and ``ensemble.load(run, NAME)``.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from .artifacts import REFIT_DIR, RunDirectory, fold_name
from .data import FeatureSchema
from .exceptions import ConfigError, DataError
from .learners import FitContext, Learner
from .metrics import score_all
from .student import STUDENTS, Student

__all__ = ["distill", "prune"]

logger = logging.getLogger(__name__)


@dataclass
class _RunData:
    run: RunDirectory
    manifest: dict[str, Any]
    X: np.ndarray  # every input row, encoded by the run's schema
    y: np.ndarray  # encoded target
    fold: np.ndarray  # -1 = holdout
    context: FitContext

    @property
    def k(self) -> int:
        return len(self.manifest["classes"] or [])


def _open(run_dir: str | os.PathLike[str], command: str) -> _RunData:
    """The complete run and its own training table, encoded as it was.

    Distillation and pruning report their scores on the run's holdout rows
    (rows neither the members nor the new model trained on): a run without a
    holdout is refused with one line.
    """
    from .data import load_table

    run = RunDirectory.for_reading(run_dir)
    manifest = run.require_complete()
    if not float((manifest.get("config") or {}).get("holdout") or 0):
        raise ConfigError(
            f"`ensemble {command}` scores on the run's holdout rows, and run "
            f"{run.run_id!r} has none; fit it again with --holdout 0.2"
        )
    source = str(manifest["config"]["data"])
    frame, sha = load_table(source)
    if sha != manifest["data_sha256"]:
        raise DataError(
            f"the data file {source!r} changed since run {run.run_id!r} was fitted "
            "(sha256 differs); restore it, or fit a new run"
        )
    schema = FeatureSchema.from_dict(manifest["schema"])
    X = schema.transform(frame)
    classes = list(manifest["classes"] or [])
    target = frame[manifest["target"]]
    if classes:
        index = {str(c): i for i, c in enumerate(classes)}
        y = target.astype(str).map(index).to_numpy(dtype=int)
    else:
        y = target.to_numpy(dtype=float)
    folds = run.read_table("folds.parquet").sort_values("row_id")
    fold = folds["fold"].to_numpy()
    context = FitContext(
        task=manifest["task"],
        n_classes=len(classes),
        cat_mask=tuple(bool(b) for b in schema.cat_mask),
        n_categories=tuple(int(n) for n in schema.n_categories),
        seed=int(manifest["seed"] or 0),
    )
    return _RunData(run, manifest, X, y, fold, context)


def _add_to_run(
    rd: _RunData,
    name: str,
    kind: str,
    board_row: dict[str, Any],
    hold_pred: np.ndarray,
    manifest_update: dict[str, Any],
    extra_columns: dict[str, dict[str, float]] | None = None,
) -> pd.DataFrame:
    """Replace/append ``name`` in leaderboard and holdout; update the manifest."""
    from .leaderboard import pred_columns

    board = rd.run.read_table("leaderboard.parquet")
    board = board[board["model"] != name]
    row = {**board_row, "model": name, "kind": kind, "best": False}
    board = pd.concat([board, pd.DataFrame([row])], ignore_index=True)
    for col, values in (extra_columns or {}).items():
        if col not in board.columns:
            board[col] = np.nan
        for model, value in values.items():
            board.loc[board["model"] == model, col] = value
    hold = rd.run.read_table("holdout.parquet")
    hold = hold[hold["model"] != name]
    rows = np.flatnonzero(rd.fold == -1)
    cols = pred_columns(rd.manifest["classes"] or [])
    y_true = hold.drop_duplicates("row_id").set_index("row_id")["y_true"]
    new = pd.DataFrame({"model": name, "row_id": rows})
    new["y_true"] = y_true.loc[rows].to_numpy()
    P = hold_pred.reshape(len(rows), -1)
    for j, c in enumerate(cols):
        new[c] = P[:, j]
    hold = pd.concat([hold, new[hold.columns]], ignore_index=True)
    rd.run.write_table("holdout.parquet", hold)
    rd.run.write_table("leaderboard.parquet", board)
    rd.run.write_manifest(**manifest_update)
    return board


def _score_row(rd: _RunData, pred_hold: np.ndarray, oof: float) -> dict[str, Any]:
    metric = str(rd.manifest["metric"])
    hold = score_all(rd.manifest["task"], rd.y[rd.fold == -1], pred_hold, rd.k)
    return {"metric": metric, "oof_score": oof, "holdout_score": hold[metric], **hold}


# -- distillation ------------------------------------------------------------


def augment_rows(
    X: np.ndarray, cat_mask: tuple[bool, ...], n: int, seed: int
) -> np.ndarray:
    """``n`` synthetic rows near the data (for the teacher to label).

    Each row starts from a random training row; every feature is swapped, with
    probability 0.5, for the same feature of another random row (marginals kept,
    new combinations made), and numeric features get Gaussian noise of 0.1
    standard deviations (MUNGE-like, Buciluǎ et al. 2006).
    """
    rng = np.random.default_rng(seed)
    base = X[rng.integers(0, len(X), n)].copy()
    donor = X[rng.integers(0, len(X), n)]
    swap = rng.random(base.shape) < 0.5
    base[swap] = donor[swap]
    num = ~np.asarray(cat_mask, dtype=bool)
    sd = np.nanstd(X[:, num], axis=0)
    noise = rng.normal(size=(n, int(num.sum()))) * 0.1 * np.nan_to_num(sd)
    base[:, num] = base[:, num] + noise.astype(base.dtype)
    return base


def _fidelity(pred: np.ndarray, teacher: np.ndarray, n_classes: int) -> float:
    """Share of rows where the student's class is the teacher's (R² for values)."""
    if n_classes:
        return float((pred.argmax(1) == teacher.argmax(1)).mean())
    resid = float(((pred - teacher) ** 2).sum())
    return 1.0 - resid / float(((teacher - teacher.mean()) ** 2).sum())


def _save_student(run: RunDirectory, name: str, model: Student) -> None:
    """Write the student to ``models/<name>/`` atomically (replacing one)."""
    import shutil

    target = run.path / "models" / name
    tmp = run.tmp_dir(f"models/{name}")
    model.save(tmp)
    if target.exists():
        shutil.rmtree(target)
    os.replace(tmp, target)
    run.sync(f"models/{name}")


def _time_per_1k(predict: Any, X: np.ndarray, repeats: int = 3) -> float:
    """Median milliseconds to predict 1,000 rows (rows tiled up to 1,000)."""
    rows = np.resize(X, (1000, X.shape[1])) if len(X) < 1000 else X[:1000]
    predict(rows[:10])  # warm-up: lazy imports, caches
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        predict(rows)
        times.append(time.perf_counter() - t0)
    return float(np.median(times) * 1000.0)


def distill(
    run_dir: str | os.PathLike[str],
    *,
    student: str = "lgbm",
    augment: float = 1.0,
    n_threads: int | None = None,
) -> pd.Series:
    """Train a compact student of the run's chosen model and add it to the run.

    Parameters
    ----------
    run_dir : path-like
        A complete run directory (local or URI).
    student : {"lgbm", "mlp"}, default="lgbm"
        The student model.
    augment : float, default=1.0
        Synthetic rows per training row, labelled by the teacher
        (:func:`augment_rows`); 0 for the training rows only.
    n_threads : int, optional
        Threads for the student (default: every CPU).

    Returns
    -------
    Series
        The student's leaderboard row: ``holdout_score`` and every metric,
        ``fidelity`` (holdout rows where the student's class equals the
        teacher's; R² against the teacher's values for regression),
        ``predict_ms_per_1k`` and ``speedup`` (teacher time / student time).
    """
    from dataclasses import replace

    from .model import FittedEnsemble

    if student not in STUDENTS:
        raise ConfigError(f"--student {student!r} is unknown; use one of {STUDENTS}")
    if augment < 0:
        raise ConfigError(f"--augment {augment} is negative; give 0 or more")
    rd = _open(run_dir, "distill")
    name = f"distilled_{student}"
    teacher = FittedEnsemble(rd.run.location)
    train = rd.fold >= 0
    X_train = rd.X[train]
    extra = augment_rows(
        X_train,
        rd.context.cat_mask,
        int(round(augment * len(X_train))),
        rd.context.seed,
    )
    X_fit = np.vstack([X_train, extra]) if len(extra) else X_train
    t0 = time.perf_counter()
    T = teacher.predict_matrix(X_fit)
    label_s = time.perf_counter() - t0
    threads = n_threads or os.cpu_count() or 1
    model = Student(student, replace(rd.context, n_threads=threads))
    t0 = time.perf_counter()
    model.fit(X_fit, T)
    fit_s = time.perf_counter() - t0
    X_hold = rd.X[rd.fold == -1]
    pred = model.predict(X_hold)
    fidelity = _fidelity(pred, teacher.predict_matrix(X_hold), rd.k)
    ms_student = _time_per_1k(model.predict, X_hold)
    ms_teacher = _time_per_1k(teacher.predict_matrix, X_hold)
    with rd.run.lock():
        _save_student(rd.run, name, model)
        row = _score_row(rd, pred, float("nan"))
        row.update(fit_s=fit_s, fidelity=fidelity, predict_ms_per_1k=ms_student)
        row.update(teacher=teacher.model, speedup=ms_teacher / ms_student)
        distilled = dict(rd.manifest.get("distilled") or {})
        distilled[name] = {
            "student": student,
            "teacher": teacher.model,
            "augment": augment,
            "n_rows": len(X_fit),
            "label_s": round(label_s, 3),
            "fit_s": round(fit_s, 3),
            "fidelity": fidelity,
            "predict_ms_per_1k": ms_student,
            "teacher_predict_ms_per_1k": ms_teacher,
        }
        board = _add_to_run(
            rd,
            name,
            "distilled",
            row,
            pred,
            {"distilled": distilled},
            {"predict_ms_per_1k": {teacher.model: ms_teacher, name: ms_student}},
        )
    logger.info("distilled %s into %s in %.1f s", teacher.model, name, fit_s)
    return board.set_index("model").loc[name]


# -- pruning -------------------------------------------------------------------


def prune(
    run_dir: str | os.PathLike[str],
    *,
    sparsity: float = 0.5,
    epochs: int = 5,
    members: list[str] | None = None,
    n_threads: int | None = None,
) -> pd.DataFrame:
    """Magnitude-prune the MLP members, fine-tune, and add them to the run.

    Every ``Linear`` weight matrix of each fold model is pruned together
    (global L1 magnitude, ``torch.nn.utils.prune.global_unstructured``) to
    ``sparsity``; the masked network is then fine-tuned on the fold's own
    training rows (AdamW at a tenth of the member's LR, cosine decay, early
    stopping on the temperature-scaled loss of an inner split) and the mask made
    permanent. The pruned member ``<member>_pruned`` gets OOF and holdout
    predictions exactly like a member (its fold models never saw their OOF rows).

    Parameters
    ----------
    run_dir : path-like
        A complete run directory with MLP members.
    sparsity : float, default=0.5
        Share of the weights set to zero, in (0, 1).
    epochs : int, default=5
        Fine-tuning epochs (upper bound).
    members : list of str, optional
        MLP members to prune (default: all).
    n_threads : int, optional
        Torch threads (default: every CPU).

    Returns
    -------
    DataFrame
        ``prune.parquet``: one row per pruned member with ``sparsity`` (achieved),
        ``oof_before/after``, ``holdout_before/after``, ``holdout_delta``.
    """
    if not 0.0 < sparsity < 1.0:
        raise ConfigError(f"--sparsity {sparsity} is not in (0, 1); e.g. 0.5")
    if epochs < 0:
        raise ConfigError(f"--epochs {epochs} is negative")
    import torch

    torch.set_num_threads(n_threads or os.cpu_count() or 1)
    rd = _open(run_dir, "prune")
    mlps, refitted = _mlp_members(rd)
    chosen = members or mlps
    unknown = [m for m in chosen if m not in mlps]
    if refitted and (not chosen or any(m in refitted for m in unknown)):
        # Pruning fine-tunes each fold model on its fold's rows and scores it on
        # OOF rows; a default run kept only the refit on every row.
        raise ConfigError(
            f"run {rd.run.run_id!r} kept no fold models of its MLP member(s) "
            f"{', '.join(refitted)} (refitted on every row); pruning needs them: "
            "fit with --keep-models all"
        )
    if unknown or not chosen:
        raise ConfigError(
            f"run {rd.run.run_id!r} has no MLP member "
            + (f"named {unknown[0]!r}" if unknown else "to prune")
            + (f"; its MLP members: {', '.join(mlps)}" if mlps else "")
        )
    metric = str(rd.manifest["metric"])
    board = rd.run.read_table("leaderboard.parquet").set_index("model")
    rows = []
    with rd.run.lock():
        for member in chosen:
            rows.append(_prune_member(rd, member, sparsity, epochs, metric, board))
        table = pd.DataFrame(rows)
        rd.run.write_table("prune.parquet", _merge_prune_table(rd, table))
    return table


def _mlp_members(rd: _RunData) -> tuple[list[str], list[str]]:
    """MLP members with fold models, and those kept only as a refit."""
    out: list[str] = []
    refitted: list[str] = []
    for m in rd.manifest["members"]:
        folder = rd.run.path / "models" / m
        for sub, found in ((fold_name(0), out), (REFIT_DIR, refitted)):
            meta = folder / sub / "meta.json"
            if meta.is_file() and json.loads(meta.read_text())["key"] == "mlp":
                found.append(m)
                break
    return out, refitted


def _merge_prune_table(rd: _RunData, table: pd.DataFrame) -> pd.DataFrame:
    path = rd.run.path / "prune.parquet"
    if not path.is_file():
        return table
    old = pd.read_parquet(path)
    old = old[~old["pruned_member"].isin(table["pruned_member"])]
    return pd.concat([old, table], ignore_index=True)


def _prune_member(
    rd: _RunData,
    member: str,
    sparsity: float,
    epochs: int,
    metric: str,
    board: pd.DataFrame,
) -> dict[str, Any]:
    import shutil

    from .metrics import score

    name = f"{member}_pruned"
    dirs = sorted((rd.run.path / "models" / member).glob("fold*"))
    oof = None
    hold_preds = []
    total = zeros = 0
    t0 = time.perf_counter()
    tmp_root = rd.run.tmp_dir(f"models/{name}")
    for d in dirs:
        k = int(d.name[len("fold") :])
        learner = Learner.load(d)
        train = (rd.fold >= 0) & (rd.fold != k)
        n_zero, n_all = _prune_fold(learner, rd.X[train], rd.y[train], sparsity, epochs)
        zeros, total = zeros + n_zero, total + n_all
        valid = rd.fold == k
        pred = learner.predict(rd.X[valid])
        if oof is None:
            oof = np.zeros((len(rd.fold), *pred.shape[1:]))
        oof[valid] = pred
        hold_preds.append(learner.predict(rd.X[rd.fold == -1]))
        learner.save(tmp_root / d.name)
    fit_s = time.perf_counter() - t0
    target = rd.run.path / "models" / name
    if target.exists():
        shutil.rmtree(target)
    os.replace(tmp_root, target)
    rd.run.sync(f"models/{name}")
    assert oof is not None
    train_rows = rd.fold >= 0
    oof_after = score(metric, rd.y[train_rows], oof[train_rows], rd.k)
    hold = np.mean(hold_preds, axis=0)
    row = _score_row(rd, hold, oof_after)
    row["fit_s"] = fit_s
    pruned = sorted(set(rd.manifest.get("pruned") or []) | {name})
    rd.manifest["pruned"] = pruned
    _add_to_run(rd, name, "pruned", row, hold, {"pruned": pruned})
    return {
        "member": member,
        "pruned_member": name,
        "target_sparsity": sparsity,
        "sparsity": zeros / max(total, 1),
        "n_weights": total,
        "n_nonzero": total - zeros,
        "metric": metric,
        "oof_before": float(board.loc[member, "oof_score"]),
        "oof_after": float(oof_after),
        "holdout_before": float(board.loc[member, "holdout_score"]),
        "holdout_after": float(row["holdout_score"]),
        "holdout_delta": float(
            row["holdout_score"] - board.loc[member, "holdout_score"]
        ),
        "finetune_epochs": epochs,
        "finetune_s": fit_s,
    }


def _prune_fold(
    learner: Any, X: np.ndarray, y: np.ndarray, sparsity: float, epochs: int
) -> tuple[int, int]:
    """Prune one fold model in place; returns (zero weights, weights)."""
    import torch
    from torch.nn.utils import prune as tprune

    from .learners._split import inner_split
    from .learners.mlp import auto_batch_size
    from .nn import TorchTrainer

    ctx, p = learner.context, learner.params
    module = learner.model_
    linears = [m for m in module.modules() if isinstance(m, torch.nn.Linear)]
    tprune.global_unstructured(
        [(m, "weight") for m in linears],
        pruning_method=tprune.L1Unstructured,
        amount=sparsity,
    )
    if epochs > 0:
        torch.manual_seed(ctx.seed)
        Z = torch.as_tensor(learner.pre_.transform(X))
        if ctx.is_classification:
            target = torch.as_tensor(y, dtype=torch.long)
        else:
            target = torch.as_tensor((y - learner.y_mean_) / learner.y_std_).float()
        tr, va = inner_split(
            y, classify=ctx.is_classification, fraction=0.1, seed=ctx.seed
        )
        trainer = TorchTrainer(
            module,
            loss="ce" if ctx.is_classification else "mse",
            lr=float(p["lr"]) / 10,
            weight_decay=float(p["weight_decay"]),
            batch_size=auto_batch_size(p["batch_size"], len(tr)),
            max_epochs=epochs,
            patience=epochs,
            seed=ctx.seed,
            calibrate=ctx.is_classification,
        )
        itr, iva = torch.as_tensor(tr), torch.as_tensor(va)
        trainer.fit_loop(Z[itr], target[itr], Z[iva], target[iva])
        if ctx.is_classification:
            learner.temperature_ = float(trainer.temperature_)
    for m in linears:
        tprune.remove(m, "weight")
    module.eval()
    zeros = sum(int((m.weight == 0).sum()) for m in linears)
    total = sum(m.weight.numel() for m in linears)
    return zeros, total
