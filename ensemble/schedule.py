"""Deadline planning for the fit stage: which members can still finish.

Pure functions over the work queue (no Ray): :class:`Estimates` turns each
task's calibrated cost into a duration, corrected by the fits that finished
(the member's own folds first, then other members of the same learner), and
:func:`doomed` replays the queue on the actors to find the members that can no
longer start every fold before the fit deadline or end before the finish line.
A member that cannot finish is worthless (its OOF column would have holes), so
the fit stage stops starting its folds, kills the ones running, and gives the
slots to members that can.

Under a finish line, the folds of a *time-boxed* learner (the boosters and
the MLP: they stop adding rounds or epochs when told) get a share of the time
left instead (:func:`ensemble.budget.time_box`), so a member whose estimate
was too low still ends every fold in time, with fewer rounds, rather than
being dropped after its first folds ran. Its folds are late only when a box
would leave less than the task's ``min_box`` of its expected time
(``budget.MIN_BOX_FRACTION`` for a fold).
"""

from __future__ import annotations

import heapq
import statistics
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from .budget import time_box

__all__ = ["Estimates", "Task", "doomed"]


class Task(Protocol):
    """What the planner reads from a (member, fold) task."""

    @property
    def member(self) -> str: ...  # noqa: D102

    @property
    def learner(self) -> str: ...  # noqa: D102

    @property
    def cost(self) -> float: ...  # noqa: D102

    @property
    def uses_gpu(self) -> bool: ...  # noqa: D102

    @property
    def time_boxed(self) -> bool: ...  # noqa: D102

    @property
    def time_box(self) -> float | None: ...  # noqa: D102

    @property
    def min_box(self) -> float: ...  # noqa: D102


@dataclass
class Estimates:
    """Seconds each task will take, learned from the fits that finished.

    A task's ``cost`` is the learner's calibrated estimate (or the tuning
    trial's measured fold time). Once a fold of the same member finished, its
    mean wall time replaces the estimate; until then a fold of another member
    of the same learner corrects the estimate by its measured/estimated ratio
    (the calibration can be several times off on an unfamiliar table, e.g.
    forests on regression, boosters on dense numeric columns).

    Examples
    --------
    >>> from types import SimpleNamespace as T
    >>> est = Estimates()
    >>> lgbm = T(member="lgbm", learner="lgbm", cost=2.0, uses_gpu=False)
    >>> lgbm_2 = T(member="lgbm_2", learner="lgbm", cost=4.0, uses_gpu=False)
    >>> est.seconds(lgbm_2)
    4.0
    >>> est.observe(lgbm, 6.0)  # three times the estimate
    >>> est.seconds(lgbm), est.seconds(lgbm_2)
    (6.0, 12.0)
    """

    _member: dict[str, list[float]] = field(default_factory=dict)
    _ratio: dict[str, list[float]] = field(default_factory=dict)

    def observe(self, task: Task, seconds: float) -> None:
        """Record that ``task`` took ``seconds`` of wall time."""
        self._member.setdefault(task.member, []).append(float(seconds))
        if task.cost > 0:
            self._ratio.setdefault(task.learner, []).append(seconds / task.cost)

    def seconds(self, task: Task) -> float:
        """Expected wall seconds of ``task``."""
        seen = self._member.get(task.member)
        if seen:
            return statistics.fmean(seen)
        ratios = self._ratio.get(task.learner)
        if ratios:
            return task.cost * statistics.median(ratios)
        return task.cost

    def remaining(self, task: Task, elapsed: float) -> float:
        """Expected seconds left of ``task``, running for ``elapsed`` seconds.

        A fit already past its estimate is assumed to need another quarter of
        the time it has run (the estimate was wrong; by how much is unknown).
        """
        return max(self.seconds(task) - elapsed, 0.25 * elapsed)


def doomed(
    pending: Sequence[Task],
    running: Iterable[tuple[Task, float]],
    estimates: Estimates,
    *,
    cpu_slots: int,
    gpu_slots: int = 0,
    now: float,
    start_by: float,
    finish_by: float | None = None,
    finished: Iterable[str] = (),
    keep_one: bool = True,
) -> list[str]:
    """Members that cannot finish before the deadlines, in the order dropped.

    The queue is replayed on the actors (list scheduling: each task in queue
    order goes to the slot that frees first, at the estimated durations; a
    waiting fold is expected to take at least as long as its member's running
    folds have run so far). The first member with a fold that would start
    after ``start_by`` or end after ``finish_by`` is dropped, its slots are
    freed, and the replay starts over, until every remaining member can
    finish. Members later in the queue are therefore dropped before the ones
    ahead of them, except a member that is itself too slow. When no member has
    ``finished`` every fold and none can finish in time, the one that would
    end soonest on its own is kept (a late model is better than none), unless
    ``keep_one`` is false: the run has its members already (repeats, refits).

    Parameters
    ----------
    pending : sequence of Task
        Tasks not started, in queue order.
    running : iterable of (Task, float)
        Tasks running and the seconds each has run.
    estimates : Estimates
        Durations.
    cpu_slots, gpu_slots : int
        Actors. With GPU actors, GPU-capable tasks run on them and the rest on
        the CPU actors; without, every task shares the CPU actors.
    now, start_by, finish_by : float
        The current time, the last moment a fit may start, and the moment
        every fit should have ended (None: no such limit), on one clock.
    finished : iterable of str
        Members whose every fold is done (they keep the run alive).
    keep_one : bool, default=True
        Whether a member is kept, however late, when no other can finish.

    Returns
    -------
    list of str
    """
    running = list(running)
    finished = set(finished)
    slots = (cpu_slots, gpu_slots)
    dropped: list[str] = []

    def replay(wanted: Callable[[str], bool]) -> Iterator[_Slot]:
        return _replay(
            [t for t in pending if wanted(t.member)],
            [(t, s) for t, s in running if wanted(t.member)],
            estimates,
            slots,
            now,
            finish_by,
        )

    while True:
        replayed = replay(lambda m: m not in dropped)
        late = _first_late(replayed, now, start_by, finish_by)
        if late is None:
            return dropped
        alive = {t.member for t in pending} | {t.member for t, _ in running}
        if alive - {*dropped, late} or finished or not keep_one:
            dropped.append(late)
            continue
        # No member can finish in time: keep the one that ends soonest alone
        # (a late model is better than none), drop the rest.
        order = list(dict.fromkeys(t.member for t, _ in running))
        order += [m for m in dict.fromkeys(t.member for t in pending) if m not in order]

        def alone(member: str) -> float:
            ends = (slot.end for slot in replay(lambda who: who == member))
            return max(ends, default=now)

        keep = min(order, key=alone)
        return [m for m in order if m != keep]


@dataclass(frozen=True)
class _Slot:
    """A task's place in a replay (``short``: its time box is too short)."""

    task: Task
    start: float
    end: float
    short: bool = False


def _replay(
    pending: list[Task],
    running: list[tuple[Task, float]],
    estimates: Estimates,
    slots: tuple[int, int],
    now: float,
    finish_by: float | None = None,
) -> Iterator[_Slot]:
    """Every task's slot, running ones first, by list scheduling."""
    cpu_slots, gpu_slots = slots
    # A fold running past its estimate is the best evidence on the member's
    # folds still waiting: none is expected to be shorter than it has run.
    floor: dict[str, float] = {}
    for task, elapsed in running:
        floor[task.member] = max(floor.get(task.member, 0.0), elapsed)
    pools: dict[bool, list[float]] = {False: [], True: []}
    started: list[_Slot] = []
    for task, elapsed in running:
        end = now + estimates.remaining(task, elapsed)
        if task.time_box is not None:
            # It stops at its box (predicting and saving may take a moment).
            end = max(min(end, now - elapsed + task.time_box), now)
        pools[bool(gpu_slots) and task.uses_gpu].append(end)
        started.append(_Slot(task, now - elapsed, end))
    yield from started
    size = {False: max(cpu_slots, 1), True: gpu_slots}
    for gpu, n in size.items():
        free = pools[gpu]
        free.extend([now] * max(0, n - len(free)))
        heapq.heapify(free)
    left = Counter(t.member for t in pending)  # folds not started, per member
    ends: dict[str, list[float]] = {}  # ends of each member's started folds
    for slot in started:
        ends.setdefault(slot.task.member, []).append(slot.end)
    for task in pending:
        gpu = bool(gpu_slots) and task.uses_gpu
        free = pools[gpu]
        start = heapq.heappop(free)
        need = max(estimates.seconds(task), floor.get(task.member, 0.0))
        short = False
        if task.time_boxed and finish_by is not None:
            busy = sum(end > start for end in ends.get(task.member, ()))
            box = time_box(start, finish_by, left[task.member] + busy, size[gpu])
            short = box < task.min_box * need
            need = min(need, box)
        left[task.member] -= 1
        ends.setdefault(task.member, []).append(start + need)
        heapq.heappush(free, start + need)
        yield _Slot(task, start, start + need, short)


def _first_late(
    replay: Iterable[_Slot],
    now: float,
    start_by: float,
    finish_by: float | None,
) -> str | None:
    """The first member (queue order) with a fold that would miss a deadline."""
    for slot in replay:
        late_start = slot.start > start_by and slot.start > now  # running: started
        late_end = finish_by is not None and slot.end > finish_by + 1e-6
        if late_start or late_end or slot.short:
            return slot.task.member
    return None
