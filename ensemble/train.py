"""Fitting every (member, fold) on a pool of Ray actors, and the OOF Dataset.

The data is put in the object store once; each call passes the refs as
top-level arguments, so workers read them zero-copy. A work queue hands the
longest expected fit to the next free actor, keeping every slot busy. GPU
actors (fractional ``num_gpus``) exist only when the cluster has GPUs, and take
the GPU-capable learners first.
"""

from __future__ import annotations

import logging
import os
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from typing import Any

import numpy as np
import pandas as pd
import ray

from . import schedule, storage
from .exceptions import BaseLearnerFailed, DataError
from .learners import FitContext, get

__all__ = [
    "FitResult",
    "FitTask",
    "SharedData",
    "TrainOutcome",
    "check_object_store",
    "fit_all",
    "oof_dataset",
    "put_data",
]

logger = logging.getLogger(__name__)

# Two actors share one GPU: the MLP and XGBoost folds here are small, and a
# half-GPU each keeps the device busy while one of them is in a CPU phase.
GPU_PER_ACTOR = 0.5
# A fit whose actor dies this many times is given up (a fit that kills its
# process every time, e.g. by running out of memory, must not loop forever).
MAX_ACTOR_DEATHS = 2
# Under a deadline the plan is also re-checked this often (seconds) while no
# fit finishes, so a fold far past its estimate is caught while it runs.
REPLAN_S = 1.0
# A time-boxed fold's fit gets this share of its box; predicting the OOF and
# holdout rows and saving the model take the rest (with many rounds on dense
# numeric data, predicting took ~22% as long as fitting: scale benchmark).
BOX_FIT_SHARE = 0.75


@dataclass(frozen=True)
class FitTask:
    """One (member, fold) fit."""

    member: str
    learner: str
    params: dict[str, Any]
    fold: int
    cost: float
    uses_gpu: bool
    # Lower first. Without a deadline every task has priority 0 and the
    # longest fit goes first (shortest makespan).
    priority: float = 0.0
    # Warm start: the saved model (bytes) whose weights the fit starts from.
    init_state: bytes | None = field(default=None, repr=False)
    # The learner stops at a time box (see ensemble.schedule.time_box); the
    # box itself is set when the fit is dispatched under a finish line.
    time_boxed: bool = False
    time_box: float | None = None


@dataclass
class FitResult:
    """What a worker returns for one (member, fold)."""

    member: str
    learner: str
    fold: int
    oof_pred: np.ndarray
    holdout_pred: np.ndarray
    node_id: str
    worker: str
    gpu: bool
    started_at: datetime
    fit_s: float
    predict_s: float
    n_train: int
    resumed: bool = False  # read back from a checkpoint by a resumed run
    truncated: bool = False  # stopped at its time box with fewer rounds


@dataclass
class SharedData:
    """Object refs of the training data (put once)."""

    X: Any
    y: Any
    fold: Any


@dataclass
class TrainOutcome:
    """Results of :func:`fit_all`.

    Attributes
    ----------
    results : list of FitResult
        Every successful fit of every complete member.
    failed : dict
        Member name → reason, for members dropped after a failed fit.
    skipped : list of str
        Members dropped because the time limit stopped their fits.
    wall_s : float
        Wall seconds from the first dispatch to the last result.
    slots : int
        Number of actors that ran fits.
    """

    results: list[FitResult]
    failed: dict[str, str] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)
    wall_s: float = 0.0
    slots: int = 0


# Peak copies of the feature matrix in the object store: the fit stage's put,
# and the training rows that Tune / the fusion stage put while it is alive.
_STORE_COPIES = 2


def check_object_store(nbytes: int) -> None:
    """Fail fast when the data cannot fit in the cluster's object store.

    Ray would otherwise spill to disk for a long time or stall; a clear error
    before any work is better.

    Raises
    ------
    DataError
        When ``_STORE_COPIES * nbytes`` exceeds the object store's capacity.
    """
    capacity = float(ray.cluster_resources().get("object_store_memory", 0))
    need = _STORE_COPIES * nbytes
    if capacity and need > capacity:
        mib = 1024**2
        raise DataError(
            f"the table needs about {need / mib:,.0f} MiB of Ray's object store but "
            f"the cluster has {capacity / mib:,.0f} MiB; give Ray more "
            "(--object-store-memory, or a bigger cluster) or sample the rows"
        )


def put_data(X: np.ndarray, y: np.ndarray, fold: np.ndarray) -> SharedData:
    """Put the training arrays in the object store once."""
    return SharedData(ray.put(X), ray.put(y), ray.put(fold))


class _FitWorker:
    """Actor body: fits a learner on one fold and predicts OOF and holdout rows."""

    def __init__(self, index: int, n_threads: int, gpu: bool) -> None:
        self.index = index
        self.n_threads = n_threads
        self.gpu = gpu
        # Ray sets OMP_NUM_THREADS from the actor's CPUs; pin it for the BLAS and
        # torch pools (torch reads it at import; the MLP also sets its threads).
        # torch is not imported here: most actors never need it.
        os.environ["OMP_NUM_THREADS"] = str(n_threads)
        if gpu:  # before any CUDA work in this process (see learners.mlp)
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")

    def ready(self) -> bool:
        """Resolves once the actor is scheduled and constructed."""
        return True

    def fit(
        self,
        task: FitTask,
        X: np.ndarray,
        y: np.ndarray,
        fold: np.ndarray,
        context: FitContext,
        model_dir: str,
    ) -> FitResult:
        started = datetime.now(timezone.utc)
        train = (fold >= 0) & (fold != task.fold)
        valid = fold == task.fold
        hold = fold == -1
        use_gpu = self.gpu and task.uses_gpu
        ctx = replace(
            context,
            n_threads=self.n_threads,
            device="cuda" if use_gpu else "cpu",
            time_box_s=(
                None if task.time_box is None else task.time_box * BOX_FIT_SHARE
            ),
        )
        learner = get(task.learner)(task.params, context=ctx)
        if task.init_state is not None:
            learner.init_state = task.init_state  # type: ignore[attr-defined]
        t0 = time.perf_counter()
        learner.fit(X[train], y[train])
        fit_s = time.perf_counter() - t0
        t1 = time.perf_counter()
        oof = learner.predict(X[valid])
        holdout = learner.predict(X[hold])
        predict_s = time.perf_counter() - t1
        storage.save_tree(model_dir, learner.save)
        rc = ray.get_runtime_context()
        return FitResult(
            member=task.member,
            learner=task.learner,
            fold=task.fold,
            oof_pred=oof,
            holdout_pred=holdout,
            node_id=rc.get_node_id(),
            worker=f"{self.index}:{os.getpid()}",
            gpu=use_gpu,
            started_at=started,
            fit_s=fit_s,
            predict_s=predict_s,
            n_train=int(train.sum()),
            truncated=learner.truncated_,
        )


def _plan_actors(tasks: Sequence[FitTask], cpus_per_fit: int) -> tuple[int, int]:
    """Number of (CPU-only, GPU) actors for the cluster's resources."""
    res = ray.cluster_resources()
    slots = max(1, int(res.get("CPU", 1)) // cpus_per_fit)
    gpus = float(res.get("GPU", 0))
    n_gpu_tasks = sum(t.uses_gpu for t in tasks)
    n_gpu = 0
    if gpus >= GPU_PER_ACTOR and n_gpu_tasks:
        n_gpu = min(int(gpus / GPU_PER_ACTOR), n_gpu_tasks, slots)
        if n_gpu == slots and len(tasks) > n_gpu_tasks and slots > 1:
            n_gpu -= 1  # keep a CPU slot for the CPU-only learners
    n_cpu = min(slots - n_gpu, len(tasks))
    return n_cpu, n_gpu


def fit_all(
    tasks: Sequence[FitTask],
    data: SharedData,
    context: FitContext,
    model_dir: Callable[[str, int], str],
    *,
    cpus_per_fit: int = 1,
    deadline: float | None = None,
    finish_by: float | None = None,
    on_result: Callable[[FitResult, int, int], None] | None = None,
    env_vars: dict[str, str] | None = None,
) -> TrainOutcome:
    """Fit every task on a pool of actors, longest expected fit first.

    Under a deadline the queue is re-planned at the start, as each fit
    finishes and every ``REPLAN_S`` while none does
    (:func:`ensemble.schedule.doomed`, with fit times corrected by the fits
    that finished and by how long the running ones have run): a member that
    can no longer start every fold before ``deadline`` or end them before
    ``finish_by`` is dropped at once, its running folds are stopped (their
    actors replaced), and its slots go to the members that can still finish.
    A time-boxed learner's fold (the boosters) is sent with its share of the
    time left to ``finish_by`` (:func:`ensemble.schedule.time_box`) and stops
    there with the rounds so far (``FitResult.truncated``), so a booster far
    slower than its estimate ends every fold in time instead of being dropped.

    Parameters
    ----------
    tasks : sequence of FitTask
        One per (member, fold).
    data : SharedData
        Refs from :func:`put_data`.
    context : FitContext
        Task layout; threads and device are set per actor.
    model_dir : callable
        ``model_dir(member, fold)`` → directory where the worker saves the model.
    cpus_per_fit : int, default=1
        CPUs each actor reserves.
    deadline : float, optional
        ``time.monotonic()`` after which no new fit starts; members left with
        unfitted folds are dropped.
    finish_by : float, optional
        ``time.monotonic()`` by which every fit should have ended (only with
        ``deadline``); members expected to end later are dropped.
    on_result : callable, optional
        Called with ``(result, n_done, n_total)`` as each fit finishes.
    env_vars : dict, optional
        Environment of the actors (storage credentials of a URI run).

    Returns
    -------
    TrainOutcome
    """
    n_cpu, n_gpu = _plan_actors(tasks, cpus_per_fit)
    remote = ray.remote(_FitWorker)
    counter = iter(range(1_000_000))

    def new_actor(gpu: bool) -> tuple[Any, bool]:
        # No automatic restarts: a dead actor is replaced (below) only once its
        # replacement has been scheduled, so a lost node cannot leave a fit
        # waiting forever for resources that no longer exist.
        opts: dict[str, Any] = {"num_cpus": cpus_per_fit, "max_restarts": 0}
        if env_vars:
            opts["runtime_env"] = {"env_vars": dict(env_vars)}
        if gpu:
            opts["num_gpus"] = GPU_PER_ACTOR
        return (remote.options(**opts).remote(next(counter), cpus_per_fit, gpu), gpu)

    actors = [new_actor(True) for _ in range(n_gpu)]
    actors += [new_actor(False) for _ in range(n_cpu)]
    logger.info(
        "fitting %d tasks on %d CPU and %d GPU actors", len(tasks), n_cpu, n_gpu
    )

    def queue_order(t: FitTask) -> tuple[float, float]:
        return (t.priority, -t.cost)

    pending = sorted(tasks, key=queue_order)
    free = list(actors)
    running: dict[Any, tuple[tuple[Any, bool], FitTask]] = {}
    dispatched: dict[Any, float] = {}  # ref -> time.monotonic() it was sent
    started: set[str] = set()  # members with a fold dispatched
    deferred: set[str] = set()  # members held back by the latest plan
    estimates = schedule.Estimates()
    n_folds = Counter(t.member for t in tasks)  # tasks per member
    starting: dict[Any, tuple[Any, bool]] = {}  # ready() ref -> replacement actor
    lost: Counter[tuple[str, int]] = Counter()  # times an actor died under a fit
    results: list[FitResult] = []
    failed: dict[str, str] = {}
    skipped: set[str] = set()
    t_start = time.monotonic()

    def pick(gpu_actor: bool, now: float) -> FitTask | None:
        ready = [t for t in pending if t.member not in deferred]
        for t in ready:
            # With GPU actors present, GPU-capable fits wait for them; GPU actors
            # take CPU-only fits when no GPU-capable fit is left.
            if gpu_actor and not t.uses_gpu and any(p.uses_gpu for p in ready):
                continue
            if not gpu_actor and t.uses_gpu and n_gpu:
                continue
            pending.remove(t)
            started.add(t.member)
            if t.time_boxed and finish_by is not None:
                # Its share of the time left (the replan counted on it): this
                # fold, the member's folds waiting and the ones running.
                left = 1 + sum(p.member == t.member for p in pending)
                left += sum(r.member == t.member for _, r in running.values())
                pool = sum(1 for a in actors if a[1] == gpu_actor)
                box = schedule.time_box(now, finish_by, left, pool)
                t = replace(t, time_box=box)
            return t
        return None

    def fail(task: FitTask, reason: str) -> None:
        logger.warning("%s", BaseLearnerFailed(task.member, task.fold, reason))
        failed[task.member] = f"fold {task.fold}: {reason}"
        pending[:] = [t for t in pending if t.member != task.member]

    def replace_actor(actor: tuple[Any, bool]) -> None:
        ray.kill(actor[0], no_restart=True)
        actors.remove(actor)
        if pending:  # a replacement only when there is work left for it
            replacement = new_actor(actor[1])
            actors.append(replacement)
            starting[replacement[0].ready.remote()] = replacement

    def replan() -> None:
        """Drop the members that can no longer finish (see fit_all).

        A member none of whose folds has started is only held back (the plan
        may change: a member ahead of it may turn out hopeless and go); one
        with folds started or done is dropped for good.
        """
        deferred.clear()
        if deadline is None or not pending:
            return
        now = time.monotonic()
        n_done = Counter(r.member for r in results)
        drop = schedule.doomed(
            pending,
            [(t, now - dispatched[ref]) for ref, (_, t) in running.items()],
            estimates,
            cpu_slots=sum(1 for a in actors if not a[1]),
            gpu_slots=sum(1 for a in actors if a[1]),
            now=now,
            start_by=deadline,
            finish_by=finish_by,
            finished=[m for m, n in n_done.items() if n == n_folds[m]],
        )
        deferred.update(m for m in drop if m not in started)
        drop = [m for m in drop if m in started]
        if not drop:
            return
        logger.warning(
            "time limit: dropping %s (cannot finish every fold in time)",
            ", ".join(drop),
        )
        skipped.update(drop)
        pending[:] = [t for t in pending if t.member not in drop]
        for ref, (actor, t) in list(running.items()):
            if t.member in drop:
                del running[ref]
                replace_actor(actor)

    try:
        replan()
        while pending or running:
            if deadline is not None and time.monotonic() > deadline and pending:
                skipped.update(t.member for t in pending)
                logger.warning("time limit reached: %d fits not started", len(pending))
                pending.clear()
            idle = []
            while free:
                actor = free.pop(0)
                now = time.monotonic()  # the box and the replan share this clock
                task = pick(actor[1], now)
                if task is None:
                    idle.append(actor)
                    continue
                ref = actor[0].fit.remote(
                    task,
                    data.X,
                    data.y,
                    data.fold,
                    context,
                    model_dir(task.member, task.fold),
                )
                running[ref] = (actor, task)
                dispatched[ref] = now
            free = idle
            if not running:
                if pending and starting:  # only replacements left: wait for one
                    done, _ = ray.wait(list(starting), num_returns=1)
                    free.append(starting.pop(done[0]))
                    continue
                break  # nothing runs; what is left is held back by the plan
            done, _ = ray.wait(
                [*running, *starting],
                num_returns=1,
                timeout=REPLAN_S if deadline is not None else None,
            )
            if not done:  # no fit finished for a while: is a member overrunning?
                replan()
                continue
            if done[0] in starting:
                free.append(starting.pop(done[0]))
                continue
            actor, task = running.pop(done[0])
            try:
                result: FitResult = ray.get(done[0])
            except ray.exceptions.RayActorError as exc:
                # The process or its node died (SIGKILL, OOM, lost node): the fit
                # is not at fault. Run it again on a surviving or new actor.
                lost[task.member, task.fold] += 1
                n = lost[task.member, task.fold]
                logger.warning(
                    "actor died during %s fold %d (%s)",
                    task.member,
                    task.fold,
                    _short(exc),
                )
                if n > MAX_ACTOR_DEATHS:
                    fail(task, f"its actor died {n} times: {_short(exc)}")
                else:
                    pending.append(task)
                    pending.sort(key=queue_order)  # stable: ties keep their order
                replace_actor(actor)
                continue
            except ray.exceptions.RayTaskError as exc:
                free.append(actor)
                fail(task, _short(exc))
                continue
            free.append(actor)
            results.append(result)
            estimates.observe(task, time.monotonic() - dispatched.pop(done[0]))
            if on_result is not None:
                on_result(result, len(results), len(tasks))
            replan()
    finally:
        for ref in running:
            ray.cancel(ref)
        _release([a for a, _ in actors])
    if pending:
        left = sorted({t.member for t in pending})
        logger.warning(
            "time limit: not fitting %s (no time for every fold)", ", ".join(left)
        )
        skipped.update(left)
    wall = time.monotonic() - t_start
    drop = set(failed) | skipped
    kept = [r for r in results if r.member not in drop]
    return TrainOutcome(
        kept, failed, sorted(skipped - set(failed)), wall, n_cpu + n_gpu
    )


def _short(exc: BaseException) -> str:
    cause = getattr(exc, "cause", None) or exc
    text = str(cause).strip().splitlines()
    last = text[-1] if text else type(cause).__name__
    return f"{type(cause).__name__}: {last}"[:300]


def _release(actors: list[Any], timeout: float = 30.0) -> None:
    """Kill the actors and wait until their CPUs are back.

    Idle actors keep their CPUs, and a Ray Data step started while they hold
    them can wait forever (RAY_NOTES.md).
    """
    for a in actors:
        ray.kill(a, no_restart=True)
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        # Total read each time: a node lost mid-run leaves the cluster's total.
        total = ray.cluster_resources().get("CPU", 0)
        if ray.available_resources().get("CPU", 0) >= total:
            return
        time.sleep(0.05)
    logger.warning("actors still hold CPUs %.0f s after release", timeout)


def oof_dataset(frames: list[pd.DataFrame]) -> ray.data.Dataset:
    """The OOF rows of every (member, fold) as one Ray Dataset."""
    import ray.data

    return ray.data.from_pandas(frames)


def write_dataset(ds: ray.data.Dataset, path: str) -> None:
    """Write a Dataset as Parquet into an empty directory ``path``."""
    import ray.data

    ds.write_parquet(path, mode=ray.data.SaveMode.OVERWRITE)


def dataset_to_pandas(ds: ray.data.Dataset) -> pd.DataFrame:
    """Materialise a (small) Dataset on the driver."""
    return ds.to_pandas()


@dataclass
class FusionOutcome:
    """A fusion scored by nested CV, refitted on all OOF rows, applied to holdout."""

    key: str
    oof_score: float
    holdout_pred: np.ndarray
    fusion: Any
    fit_s: float


def _fuse_one(
    key: str,
    params: dict[str, Any],
    P: np.ndarray,
    y: np.ndarray,
    folds: np.ndarray,
    X: np.ndarray,
    H: np.ndarray,
    X_hold: np.ndarray,
    metric: str,
) -> FusionOutcome:
    from .fusion import make, nested_cv

    t0 = time.perf_counter()
    est = make(key, **params)
    feats = est.uses_features
    nested = nested_cv(est, P, y, folds, metric=metric, X=X if feats else None)
    est.fit(P, y, X if feats else None)
    pred = est.predict(H, X_hold if feats else None)
    return FusionOutcome(key, nested.score, pred, est, time.perf_counter() - t0)


def fuse_all(
    specs: Sequence[tuple[str, dict[str, Any]]],
    P: np.ndarray,
    y: np.ndarray,
    folds: np.ndarray,
    X: np.ndarray,
    H: np.ndarray,
    X_hold: np.ndarray,
    *,
    metric: str,
    deadline: float | None = None,
) -> list[FusionOutcome]:
    """Score, refit and apply every fusion, one Ray task per fusion.

    The fusion code itself is Ray-free (``ensemble.fusion``); this only spreads
    the independent fusions over the cluster's CPUs. Inputs are put once.
    """
    P_ref, y_ref, f_ref, X_ref = ray.put(P), ray.put(y), ray.put(folds), ray.put(X)
    H_ref, Xh_ref = ray.put(H), ray.put(X_hold)
    task = ray.remote(num_cpus=1, max_retries=2)(_fuse_one)
    pending = {
        task.remote(key, params, P_ref, y_ref, f_ref, X_ref, H_ref, Xh_ref, metric): key
        for key, params in specs
    }
    out: dict[str, FusionOutcome] = {}
    while pending:
        timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
        done, _ = ray.wait(list(pending), num_returns=1, timeout=timeout)
        if not done:  # out of time: keep the fusions that finished
            logger.warning(
                "time limit: fusions %s not finished", sorted(pending.values())
            )
            for ref in pending:
                ray.cancel(ref, force=True)
            break
        key = pending.pop(done[0])
        try:
            out[key] = ray.get(done[0])
        except ray.exceptions.RayTaskError as exc:
            logger.warning("fusion %s failed: %s", key, _short(exc))
    return [out[k] for k, _ in specs if k in out]
