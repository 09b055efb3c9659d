"""Deadline planning for the fit stage: which members can still finish.

Pure functions over the work queue (no Ray): :class:`Estimates` turns each
task's calibrated cost into a duration, corrected by the fits that finished
(the member's own folds first, then other members of the same learner), and
:func:`doomed` replays the queue on the actors to find the members that can no
longer start every fold before the fit deadline or end before the finish line.
A member that cannot finish is worthless (its OOF column would have holes), so
the fit stage stops starting its folds, kills the ones running, and gives the
slots to members that can.
"""

from __future__ import annotations

import heapq
import statistics
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Protocol

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
    end soonest on its own is kept (a late model is better than none).

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

    Returns
    -------
    list of str
    """
    running = list(running)
    finished = set(finished)
    slots = (cpu_slots, gpu_slots)
    dropped: list[str] = []

    def replay(wanted: Callable[[str], bool]) -> Iterator[tuple[Task, float, float]]:
        return _replay(
            [t for t in pending if wanted(t.member)],
            [(t, s) for t, s in running if wanted(t.member)],
            estimates,
            slots,
            now,
        )

    while True:
        replayed = replay(lambda m: m not in dropped)
        late = _first_late(replayed, now, start_by, finish_by)
        if late is None:
            return dropped
        alive = {t.member for t in pending} | {t.member for t, _ in running}
        if alive - {*dropped, late} or finished:
            dropped.append(late)
            continue
        # No member can finish in time: keep the one that ends soonest alone
        # (a late model is better than none), drop the rest.
        order = list(dict.fromkeys(t.member for t, _ in running))
        order += [m for m in dict.fromkeys(t.member for t in pending) if m not in order]

        def alone(member: str) -> float:
            ends = (end for _, _, end in replay(lambda who: who == member))
            return max(ends, default=now)

        keep = min(order, key=alone)
        return [m for m in order if m != keep]


def _replay(
    pending: list[Task],
    running: list[tuple[Task, float]],
    estimates: Estimates,
    slots: tuple[int, int],
    now: float,
) -> Iterator[tuple[Task, float, float]]:
    """(task, start, end) of every task, running ones first, by list scheduling."""
    cpu_slots, gpu_slots = slots
    # A fold running past its estimate is the best evidence on the member's
    # folds still waiting: none is expected to be shorter than it has run.
    floor: dict[str, float] = {}
    for task, elapsed in running:
        floor[task.member] = max(floor.get(task.member, 0.0), elapsed)
    pools: dict[bool, list[float]] = {False: [], True: []}
    for task, elapsed in running:
        end = now + estimates.remaining(task, elapsed)
        pools[bool(gpu_slots) and task.uses_gpu].append(end)
        yield task, now - elapsed, end
    for gpu, n in ((False, max(cpu_slots, 1)), (True, gpu_slots)):
        free = pools[gpu]
        free.extend([now] * max(0, n - len(free)))
        heapq.heapify(free)
    for task in pending:
        free = pools[bool(gpu_slots) and task.uses_gpu]
        start = heapq.heappop(free)
        end = start + max(estimates.seconds(task), floor.get(task.member, 0.0))
        heapq.heappush(free, end)
        yield task, start, end


def _first_late(
    replay: Iterable[tuple[Task, float, float]],
    now: float,
    start_by: float,
    finish_by: float | None,
) -> str | None:
    """The first member (queue order) with a fold that would miss a deadline."""
    for task, start, end in replay:
        late_start = start > start_by and start > now  # running ones have started
        if late_start or (finish_by is not None and end > finish_by):
            return task.member
    return None
