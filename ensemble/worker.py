"""The body of one fit: a (member, fold) on a Ray worker, for the fit pool."""

from __future__ import annotations

import os
import time
from dataclasses import replace
from datetime import datetime, timezone

import numpy as np

from . import budget, storage
from .learners import FitContext, Learner, get
from .specs import FitResult, FitTask

__all__ = ["fit_fold"]


def fit_fold(
    task: FitTask,
    X: np.ndarray,
    y: np.ndarray,
    fold: np.ndarray,
    context: FitContext,
    model_dir: str,
    *,
    slot: int,
    n_threads: int,
    gpu: bool,
) -> FitResult:
    """Fit ``task`` on its training folds, predict its OOF and holdout rows.

    A refit (``task.fold`` is :data:`ensemble.specs.REFIT_FOLD`) trains on
    every row in the folds and predicts only the holdout rows.

    The model is saved under ``model_dir`` (a path or a URI: the worker
    uploads it itself, so no node needs a shared disk).

    Parameters
    ----------
    task : FitTask
        The (member, fold) to fit.
    X, y, fold : ndarray
        Every row (read-only from the object store) and its fold id.
    context : FitContext
        Task layout; threads, device and time box are set here.
    model_dir : str
        Where the fold model is written.
    slot : int
        The pool slot that runs it (for ``fits.parquet``).
    n_threads : int
        Threads the fit may use: the CPUs its task reserved.
    gpu : bool
        Whether the task holds (a share of) a GPU.

    Returns
    -------
    FitResult
    """
    import ray

    # Ray sets OMP_NUM_THREADS from a task's CPUs when the process starts;
    # a reused process may have started for another task: pin it again for the
    # BLAS and torch pools (the MLP also sets torch's threads itself).
    os.environ["OMP_NUM_THREADS"] = str(n_threads)
    if gpu:  # before any CUDA work in this process (see learners.mlp)
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    started = datetime.now(timezone.utc)
    train = (fold >= 0) & (fold != task.fold)
    use_gpu = gpu and task.uses_gpu
    predict_rows = int(np.count_nonzero((fold == task.fold) | (fold == -1)))
    box = reserve = None
    if task.time_box is not None:  # the reserve: to predict the rows and save
        box, reserve = budget.fit_box(task.time_box, predict_rows)
    ctx = replace(
        context,
        n_threads=n_threads,
        device="cuda" if use_gpu else "cpu",
        time_box_s=box,
        predict_rows=predict_rows,
        predict_reserve_s=reserve or 0.0,
    )
    learner = get(task.learner)(task.params, context=ctx)
    learner.init_state = task.init_state
    t0 = time.perf_counter()
    learner.fit(X[train], y[train])
    fit_s = time.perf_counter() - t0
    t1 = time.perf_counter()
    oof = _predict(learner, X[fold == task.fold])  # none for a refit
    hold = fold == -1
    holdout = _predict(learner, X[hold])
    predict_s = time.perf_counter() - t1
    t2 = time.perf_counter()
    storage.save_tree(model_dir, learner.save)
    save_s = time.perf_counter() - t2
    return FitResult(
        member=task.member,
        learner=task.learner,
        fold=task.fold,
        oof_pred=oof,
        holdout_pred=holdout,
        node_id=ray.get_runtime_context().get_node_id(),
        worker=f"{slot}:{os.getpid()}",
        gpu=use_gpu,
        started_at=started,
        fit_s=fit_s,
        predict_s=predict_s,
        n_train=int(train.sum()),
        truncated=learner.truncated_,
        save_s=save_s,
    )


def _predict(learner: Learner, X: np.ndarray) -> np.ndarray:
    """The learner's predictions of ``X``.

    An empty array of the right width when there are no rows (some libraries
    refuse to predict none).
    """
    if len(X):
        return learner.predict(X)
    k = learner.context.n_classes
    return np.empty((0, k) if learner.context.is_classification else (0,))
