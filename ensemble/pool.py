"""The fit pool: every (member, fold) fitted in parallel on Ray.

:class:`FitPool` keeps the driver loop, as Ray Tune's ``TuneController`` does:
a work queue handed to free slots, results gathered as they arrive, fits whose
process died run again, and — under a time limit — the plan replayed as folds
finish (``ensemble.schedule``), so a member that can no longer finish is
dropped at once. Each fit is one Ray task running
:func:`ensemble.worker.fit_fold` with the slot's CPUs (and GPU share); the
pool never sends more tasks than it has slots, so its queue, not Ray's,
decides what runs next. Tasks, unlike actors, run in Ray's pool of worker
processes: a process that has imported the learners serves the next fit, the
fusion tasks and the Ray Data step, instead of a new process per actor.

The data is put in the object store once (:func:`put_data`); each task gets
the refs as top-level arguments, so workers read them zero-copy. GPU slots
(fractional ``num_gpus``) exist only when the cluster has GPUs, and take the
GPU-capable learners first.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from typing import Any

import numpy as np
import ray

from . import budget, schedule, storage
from .exceptions import (
    BaseLearnerFailed,
    DataError,
    DiskFullError,
    describe,
    is_disk_full,
)
from .learners import FitContext
from .specs import FitOutcome, FitResult, FitTask
from .worker import fit_fold

__all__ = ["FitPool", "SharedData", "check_object_store", "cluster_slots", "put_data"]

logger = logging.getLogger(__name__)

# Two slots share one GPU: the MLP and XGBoost folds here are small, and a
# half-GPU each keeps the device busy while one of them is in a CPU phase.
GPU_PER_SLOT = 0.5
# A fit whose process dies this many times is given up (a fit that kills its
# process every time, e.g. by running out of memory, must not loop forever).
MAX_DEATHS = 2
# Peak copies of the feature matrix in the object store: the fit stage's put,
# and the training rows that Tune / the fusion stage put while it is alive.
_STORE_COPIES = 2


@dataclass
class SharedData:
    """Object refs of the training data (put once).

    ``folds[r]`` holds the fold ids of repeat ``r`` (repeat 0: the run's folds).
    """

    X: Any
    y: Any
    folds: list[Any]


def put_data(X: np.ndarray, y: np.ndarray, *folds: np.ndarray) -> SharedData:
    """Put the training arrays in the object store once."""
    return SharedData(ray.put(X), ray.put(y), [ray.put(f) for f in folds])


def cluster_slots(cpus_per_fit: int = 1) -> int:
    """Fits the cluster runs at once (its CPUs over the CPUs of one fit)."""
    cpus = int(ray.cluster_resources().get("CPU", 1))
    return max(1, cpus // max(1, cpus_per_fit))


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


@dataclass(frozen=True)
class _Slot:
    """One fit at a time: a CPU slot, or a GPU slot (a GPU share and CPUs)."""

    index: int
    gpu: bool


class FitPool:
    """Fits tasks in parallel on Ray; under a deadline, only those that can end.

    Without ``start_by`` the queue runs longest expected fit first. Under a
    deadline it runs by priority and is re-planned at the start, as each fit
    finishes and every ``budget.REPLAN_S`` while none does
    (:func:`ensemble.schedule.doomed`, with fit times corrected by the fits
    that finished and by how long the running ones have run): a member that
    can no longer start every fold by ``start_by`` or end them by
    ``finish_by`` is dropped at once, its running folds are stopped (their
    processes killed), and its slots go to the members that can still finish.
    A time-boxed learner's fold is sent with its share of the time left to
    ``finish_by`` (:func:`ensemble.budget.time_box`) and stops there with the
    rounds so far (``FitResult.truncated``).

    Parameters
    ----------
    data : SharedData
        Refs from :func:`put_data`.
    context : FitContext
        Task layout; threads and device are set per fit.
    model_dir : callable
        ``model_dir(member, fold)`` → directory where the fit saves the model.
    cpus_per_fit : int, default=1
        CPUs each fit reserves.
    start_by, finish_by : float, optional
        ``time.monotonic()`` after which no fit starts, and by which every fit
        should have ended (only with ``start_by``).
    on_result : callable, optional
        Called with ``(result, n_done, n_total)`` as each fit finishes.
    env_vars : dict, optional
        Environment of the fits (storage credentials of a URI run).
    optional : bool, default=False
        The run has its members already (repeats, refits): what the time
        limit drops is logged at INFO, not WARNING (the deadline is what ends
        them), and no task that cannot finish in time is started, not even
        the one that would end soonest (:func:`ensemble.schedule.doomed`).
    """

    def __init__(
        self,
        data: SharedData,
        context: FitContext,
        model_dir: Callable[[str, int], str],
        *,
        cpus_per_fit: int = 1,
        start_by: float | None = None,
        finish_by: float | None = None,
        on_result: Callable[[FitResult, int, int], None] | None = None,
        env_vars: dict[str, str] | None = None,
        optional: bool = False,
    ) -> None:
        self.data = data
        self.optional = optional
        self._drop_level = logging.INFO if optional else logging.WARNING
        self.context = context
        self.model_dir = model_dir
        self.cpus_per_fit = cpus_per_fit
        self.start_by = start_by
        self.finish_by = finish_by
        self.on_result = on_result
        self.env_vars = env_vars

    # -- the loop -------------------------------------------------------------
    def run(self, tasks: Sequence[FitTask]) -> FitOutcome:
        """Fit every task; return the results of the members that finished."""
        self._start(tasks)
        try:
            self._replan()
            while self.pending or self.running:
                self._stop_starting_when_late()
                self._dispatch()
                if not self.running:
                    break  # nothing runs; what is left is held back by the plan
                self._wait()
        finally:
            _stop([*self.running, *self.cancelled])
        return self._outcome()

    def _start(self, tasks: Sequence[FitTask]) -> None:
        n_cpu, n_gpu = _plan_slots(tasks, self.cpus_per_fit)
        self.slots = [_Slot(i, i < n_gpu) for i in range(n_gpu + n_cpu)]
        self.n_gpu_slots = n_gpu
        self.n_tasks = len(tasks)
        logger.info(
            "fitting %d tasks on %d CPU and %d GPU slots", len(tasks), n_cpu, n_gpu
        )
        self.pending = sorted(tasks, key=_queue_order)
        self.free = list(self.slots)
        self.running: dict[Any, tuple[_Slot, FitTask]] = {}
        self.dispatched: dict[Any, float] = {}  # ref -> time.monotonic() sent
        self.submitted: dict[Any, datetime] = {}  # ref -> wall clock sent
        self.started: set[str] = set()  # members with a fold dispatched
        self.deferred: set[str] = set()  # members held back by the latest plan
        self.estimates = schedule.Estimates()
        self.n_folds = Counter(t.member for t in tasks)
        self.lost: Counter[tuple[str, int]] = Counter()  # process deaths per fit
        self.cancelled: dict[Any, float] = {}  # dropped fit -> time.monotonic()
        self.results: list[FitResult] = []
        self.failed: dict[str, str] = {}
        self.skipped: set[str] = set()
        # Ray's stubs type remote functions by their positional arguments only.
        self._fit: Any = ray.remote(fit_fold)  # type: ignore[arg-type]

    def _stop_starting_when_late(self) -> None:
        if self.start_by is not None and time.monotonic() > self.start_by:
            if self.pending:
                self.skipped.update(t.member for t in self.pending)
                logger.log(
                    self._drop_level,
                    "time limit reached: %d fits not started",
                    len(self.pending),
                )
                self.pending.clear()

    def _dispatch(self) -> None:
        """Give every free slot the next task it may take."""
        idle = []
        while self.free:
            slot = self.free.pop(0)
            now = time.monotonic()  # the box and the replan share this clock
            task = self._pick(slot.gpu, now)
            if task is None:
                idle.append(slot)
                continue
            logger.debug(
                "start %s fold %d at %.1f s to start_by (box %s, expected %.1f s)",
                task.member,
                task.fold,
                (self.start_by or now) - now,
                None if task.time_box is None else round(task.time_box, 1),
                self.estimates.seconds(task),
            )
            sent = datetime.now(timezone.utc)
            ref = self._submit(task, slot)
            self.running[ref] = (slot, task)
            self.dispatched[ref] = now
            self.submitted[ref] = sent
        self.free = idle

    def _submit(self, task: FitTask, slot: _Slot) -> Any:
        # No retries by Ray: a fit whose process dies is requeued by the pool
        # (_died), which counts the deaths and re-plans.
        opts: dict[str, Any] = {"num_cpus": self.cpus_per_fit, "max_retries": 0}
        if self.env_vars:
            opts["runtime_env"] = {"env_vars": dict(self.env_vars)}
        if slot.gpu:
            opts["num_gpus"] = GPU_PER_SLOT
        return self._fit.options(**opts).remote(
            task,
            self.data.X,
            self.data.y,
            self.data.folds[task.repeat],
            self.context,
            self.model_dir(task.member, task.fold),
            slot=slot.index,
            n_threads=self.cpus_per_fit,
            gpu=slot.gpu,
        )

    def _pick(self, gpu_slot: bool, now: float) -> FitTask | None:
        ready = [t for t in self.pending if t.member not in self.deferred]
        for t in ready:
            # With GPU slots present, GPU-capable fits wait for them; GPU slots
            # take CPU-only fits when no GPU-capable fit is left.
            if gpu_slot and not t.uses_gpu and any(p.uses_gpu for p in ready):
                continue
            if not gpu_slot and t.uses_gpu and self.n_gpu_slots:
                continue
            self.pending.remove(t)
            self.started.add(t.member)
            if t.time_boxed and self.finish_by is not None:
                t = replace(t, time_box=self._box(t, gpu_slot, now))
            return t
        return None

    def _box(self, task: FitTask, gpu_slot: bool, now: float) -> float:
        """The task's share of the time left (the replan counted on it)."""
        assert self.finish_by is not None
        left = 1 + sum(p.member == task.member for p in self.pending)
        left += sum(t.member == task.member for _, t in self.running.values())
        pool = sum(1 for s in self.slots if s.gpu == gpu_slot)
        return budget.time_box(now, self.finish_by, left, pool)

    def _wait(self) -> None:
        """Wait for one fit, or re-plan after a while without one."""
        self._kill_ignored_cancels()
        timeout = budget.REPLAN_S if self.start_by is not None else None
        done, _ = ray.wait(list(self.running), num_returns=1, timeout=timeout)
        if not done:  # no fit finished for a while: is a member overrunning?
            self._replan()
            return
        ref = done[0]
        slot, task = self.running.pop(ref)
        self.free.append(slot)
        try:
            result: FitResult = ray.get(ref)
        except ray.exceptions.RayTaskError as exc:  # the fit itself raised
            if is_disk_full(exc):  # not the member's fault: no fit can save
                raise DiskFullError(
                    f"the disk is full: {task.member} fold {task.fold} could not "
                    "save its model; free some space or write the run elsewhere "
                    "(--out)"
                ) from exc
            self._fail(task, describe(exc))
            return
        except ray.exceptions.RayError as exc:  # its process or node died
            self._died(task, exc)
            return
        result.submitted_at = self.submitted.pop(ref, None)
        self.results.append(result)
        self.estimates.observe(task, time.monotonic() - self.dispatched.pop(ref))
        if self.on_result is not None:
            self.on_result(result, len(self.results), self.n_tasks)
        self._replan()

    def _kill_ignored_cancels(self) -> None:
        """Kill the dropped fits still running ``STOP_GRACE_S`` after their cancel.

        A polite cancel can be lost (Ray delivers it as an interrupt that a fit
        may never see); such a fit would hold its CPU, unseen by the plan, until
        it ended by itself, minutes later for a boosting run without early stop.
        """
        if not self.cancelled:
            return
        refs = list(self.cancelled)
        done, _ = ray.wait(refs, num_returns=len(refs), timeout=0, fetch_local=False)
        for ref in done:
            del self.cancelled[ref]
        now = time.monotonic()
        for ref, when in list(self.cancelled.items()):
            if now - when > STOP_GRACE_S:
                ray.cancel(ref, force=True)
                del self.cancelled[ref]

    # -- faults ---------------------------------------------------------------
    def _died(self, task: FitTask, exc: Exception) -> None:
        """Run the fit again (on any node that has room).

        The process or its node died (SIGKILL, OOM, lost node): not the fit's
        fault.
        """
        self.lost[task.member, task.fold] += 1
        n = self.lost[task.member, task.fold]
        logger.warning(
            "the process of %s fold %d died (%s)", task.member, task.fold, describe(exc)
        )
        if n > MAX_DEATHS:
            self._fail(task, f"its process died {n} times: {describe(exc)}")
        else:
            self.pending.append(task)
            self.pending.sort(key=_queue_order)  # stable: ties keep their order

    def _fail(self, task: FitTask, reason: str) -> None:
        logger.warning("%s", BaseLearnerFailed(task.member, task.fold, reason))
        self.failed[task.member] = f"fold {task.fold}: {reason}"
        self.pending[:] = [t for t in self.pending if t.member != task.member]

    # -- the plan -------------------------------------------------------------
    def _replan(self) -> None:
        """Drop the members that can no longer finish.

        A member none of whose folds has started is only held back (the plan
        may change: a member ahead of it may turn out hopeless and go); one
        with folds started or done is dropped for good.
        """
        self.deferred.clear()
        if self.start_by is None or not self.pending:
            return
        now = time.monotonic()
        n_done = Counter(r.member for r in self.results)
        drop = schedule.doomed(
            self.pending,
            [(t, now - self.dispatched[ref]) for ref, (_, t) in self.running.items()],
            self.estimates,
            cpu_slots=len(self.slots) - self.n_gpu_slots,
            gpu_slots=self.n_gpu_slots,
            now=now,
            start_by=self.start_by,
            finish_by=self.finish_by,
            finished=[m for m, n in n_done.items() if n == self.n_folds[m]],
            keep_one=not self.optional,
        )
        self.deferred.update(m for m in drop if m not in self.started)
        drop = [m for m in drop if m in self.started]
        if not drop:
            return
        logger.log(
            self._drop_level,
            "time limit: dropping %s (cannot finish every fold in time)",
            ", ".join(drop),
        )
        self.skipped.update(drop)
        self.pending[:] = [t for t in self.pending if t.member not in drop]
        for ref, (slot, t) in list(self.running.items()):
            if t.member in drop:
                del self.running[ref]
                # Raised inside the fit at its next step (a boosting round, a
                # tree, a batch): it cleans up, and the slot's next task waits
                # in Ray's queue the moment it takes.
                ray.cancel(ref)
                self.cancelled[ref] = time.monotonic()
                self.free.append(slot)

    def _outcome(self) -> FitOutcome:
        if self.pending:
            left = sorted({t.member for t in self.pending})
            logger.log(
                self._drop_level,
                "time limit: not fitting %s (no time for every fold)",
                ", ".join(left),
            )
            self.skipped.update(left)
        drop = set(self.failed) | self.skipped
        kept = [r for r in self.results if r.member not in drop]
        return FitOutcome(
            kept, self.failed, sorted(self.skipped - set(self.failed)), len(self.slots)
        )


#: Seconds a cancelled fit gets to stop by itself (and remove its temporary
#: files) before its process is killed, when the pool ends with fits running.
STOP_GRACE_S = 2.0


def _stop(refs: list[Any]) -> None:
    """Cancel running fits: politely, then by killing what did not stop."""
    if not refs:
        return
    for ref in refs:
        ray.cancel(ref)
    _, left = ray.wait(refs, num_returns=len(refs), timeout=STOP_GRACE_S)
    for ref in left:
        ray.cancel(ref, force=True)
    if left:
        # a killed fit leaves its model's upload folder (URI runs): once its
        # process is gone, the folders of this node go now, others' at their
        # node's next upload
        ray.wait(left, num_returns=len(left), timeout=STOP_GRACE_S)
        storage.sweep_model_staging()


def _queue_order(t: FitTask) -> tuple[float, float]:
    return (t.priority, -t.cost)


def _plan_slots(tasks: Sequence[FitTask], cpus_per_fit: int) -> tuple[int, int]:
    """Number of (CPU-only, GPU) slots for the cluster's resources."""
    slots = cluster_slots(cpus_per_fit)
    gpus = float(ray.cluster_resources().get("GPU", 0))
    n_gpu_tasks = sum(t.uses_gpu for t in tasks)
    n_gpu = 0
    if gpus >= GPU_PER_SLOT and n_gpu_tasks:
        n_gpu = min(int(gpus / GPU_PER_SLOT), n_gpu_tasks, slots)
        if n_gpu == slots and len(tasks) > n_gpu_tasks and slots > 1:
            n_gpu -= 1  # keep a CPU slot for the CPU-only learners
    n_cpu = min(slots - n_gpu, len(tasks))
    return n_cpu, n_gpu
