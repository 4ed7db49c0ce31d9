"""Which task runs next: a pure, single-threaded model of the task graph.

Owned by the pipeline core (:mod:`pipeline.core`).  Every operation is O(log n) per task touched,
so a whole run costs O(tasks + edges) plus heap work, never a rescan.

- ready: pending, every blocker completed, not waiting out a retry delay;
  dispatched P0 first, then by id.
- an ``inner_loop`` role runs one task at a time: its ready tasks wait in a
  heap of their own, skipped while the role is busy, and the worker that
  finishes one of its tasks takes the next (:meth:`pop_for_role`).
- a failed task's dependants stay pending: they are *blocked*, and the run
  ends when nothing else can move.
- two tasks that declare the same file (``files_affected``) never run at once:
  the second waits, out of the queue, until the first stops running.
- a ``manual`` role's tasks are never dispatched: a person claims them
  (``executor task claim``).  Until they are done the run waits for them, as
  it waits for an answer; only those tasks are scanned for that, never all.
"""

from __future__ import annotations

import heapq
import posixpath
from collections.abc import Iterable
from dataclasses import dataclass, field

from protocol.records import TaskRow
from session.graph import priority_rank

__all__ = ["Scheduler"]


@dataclass
class _Task:
    id: str
    owner: str
    rank: int
    blocked_by: list[str]
    status: str
    waiting_on: int = 0  # blockers not yet completed
    dependants: list[str] = field(default_factory=list)
    held: bool = False  # waiting for the user's answer to a question about it
    files: frozenset[str] = frozenset()  # what it declares it will change


def _files_of(row: TaskRow) -> frozenset[str]:
    return frozenset(posixpath.normpath(name.strip()) for name in row.details.files_affected if name.strip())


class Scheduler:
    def __init__(
        self, rows: Iterable[TaskRow], inner_loop_roles: Iterable[str] = (), manual_roles: Iterable[str] = ()
    ) -> None:
        self._tasks: dict[str, _Task] = {}
        self._inner_loop = set(inner_loop_roles)
        self._manual_roles = set(manual_roles)
        self._manual: set[str] = set()  # ids of the manual roles' tasks
        self._busy_files: dict[str, str] = {}  # file -> the running task that declared it
        self._waiting_for_files: set[str] = set()  # ready tasks held back by a busy file
        self._file_waits: list[tuple[str, str, str]] = []  # (task, running task, file), to report
        self._ready: list[tuple[int, str]] = []  # tasks of roles without an inner loop
        self._role_ready: dict[str, list[tuple[int, str]]] = {role: [] for role in self._inner_loop}
        self._delayed: list[tuple[float, str]] = []
        self._queued: set[str] = set()  # in a ready heap or in _delayed
        self.running: set[str] = set()
        self._held: set[str] = set()
        self._busy_roles: dict[str, int] = {}
        for row in rows:
            self._tasks[row.id] = _Task(
                id=row.id,
                owner=row.owner,
                rank=priority_rank(row.priority),
                blocked_by=list(row.blocked_by),
                status="in_progress" if row.status == "in_progress" else row.status,
                files=_files_of(row),
            )
            if row.owner in self._manual_roles:
                self._manual.add(row.id)
            if row.status == "in_progress":  # a person's claim that outlived the last run
                self._take_files(self._tasks[row.id])
        self._link()

    def _link(self) -> None:
        for task in self._tasks.values():
            task.waiting_on = 0
        for task in self._tasks.values():
            for dep in task.blocked_by:
                blocker = self._tasks.get(dep)
                if blocker is None:
                    continue  # validation reports unknown tasks; they never block
                blocker.dependants.append(task.id)
                if blocker.status != "completed":
                    task.waiting_on += 1
        for task in self._tasks.values():
            if task.status == "pending" and task.waiting_on == 0:
                self._push_ready(task)

    def _push_ready(self, task: _Task) -> None:
        if task.id in self._manual:
            return  # a person takes it; it is never dispatched
        if task.id not in self._queued:
            self._queued.add(task.id)
            heap = self._role_ready[task.owner] if task.owner in self._inner_loop else self._ready
            heapq.heappush(heap, (task.rank, task.id))

    # --- queries ---------------------------------------------------------------------

    def status(self, task_id: str) -> str:
        return self._tasks[task_id].status

    def is_inner_loop(self, role: str) -> bool:
        return role in self._inner_loop

    def owner(self, task_id: str) -> str:
        return self._tasks[task_id].owner

    def __contains__(self, task_id: object) -> bool:
        return task_id in self._tasks

    def counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for task in self._tasks.values():
            counts[task.status] = counts.get(task.status, 0) + 1
        return counts

    def total(self) -> int:
        return len(self._tasks)

    def failed(self) -> list[str]:
        return sorted(t.id for t in self._tasks.values() if t.status == "failed")

    def blocked(self) -> list[str]:
        """Pending tasks that can never run because something upstream failed."""
        doomed: set[str] = set()
        stack = [t.id for t in self._tasks.values() if t.status == "failed"]
        while stack:
            for dependant in self._tasks[stack.pop()].dependants:
                if dependant not in doomed and self._tasks[dependant].status == "pending":
                    doomed.add(dependant)
                    stack.append(dependant)
        return sorted(doomed)

    def has_waiting_work(self) -> bool:
        """Something is ready, parked, waiting out a retry delay, for an answer, or for a person."""
        return bool(
            self._ready
            or self._delayed
            or any(self._role_ready.values())
            or self.held()
            or any(self._manual_is_open(task_id) for task_id in self._manual)
            or any(self._tasks[task_id].status == "pending" for task_id in self._waiting_for_files)
        )

    def _manual_is_open(self, task_id: str) -> bool:
        task = self._tasks[task_id]
        return task.status in ("in_progress", "review") or (task.status == "pending" and task.waiting_on == 0)

    def manual_open(self) -> list[str]:
        """Manual tasks a person can act on now: ready to claim, claimed, or in review."""
        return sorted(task_id for task_id in self._manual if self._manual_is_open(task_id))

    def is_manual(self, task_id: str) -> bool:
        return task_id in self._manual

    def set_status(self, task_id: str, status: str) -> None:
        """A person moved a manual task (claimed it, handed it in for review, reopened it)."""
        task = self._tasks[task_id]
        task.status = status
        if status == "in_progress":
            self._take_files(task)  # a person working on a file holds it too
        else:
            self._free_files(task)
        if status == "pending" and task.waiting_on == 0:
            self._push_ready(task)

    def finished(self) -> bool:
        return not self.running and not self.has_waiting_work()

    def next_retry_at(self) -> float | None:
        return self._delayed[0][0] if self._delayed else None

    def dependants(self, task_id: str) -> list[str]:
        return list(self._tasks[task_id].dependants)

    # --- choosing work -----------------------------------------------------------------

    def release_due(self, now: float) -> None:
        while self._delayed and self._delayed[0][0] <= now:
            _, task_id = heapq.heappop(self._delayed)
            self._queued.discard(task_id)
            task = self._tasks[task_id]
            if task.status == "pending" and task.waiting_on == 0:
                self._push_ready(task)

    def _busy_file_of(self, task: _Task) -> str | None:
        return next((name for name in sorted(task.files) if name in self._busy_files), None)

    def _runnable(self, task: _Task) -> bool:
        """Valid in a ready heap; a task that shares a file with a running one is moved aside."""
        if task.status != "pending" or task.waiting_on or task.held:
            return False
        busy = self._busy_file_of(task) if task.files else None
        if busy is not None:
            self._waiting_for_files.add(task.id)
            self._file_waits.append((task.id, self._busy_files[busy], busy))
            return False
        return True

    def _pop_valid(self, heap: list[tuple[int, str]]) -> str | None:
        while heap:
            _, task_id = heapq.heappop(heap)
            self._queued.discard(task_id)
            if self._runnable(self._tasks[task_id]):
                return task_id
        return None

    def _peek_valid(self, heap: list[tuple[int, str]]) -> tuple[int, str] | None:
        while heap:
            rank, task_id = heap[0]
            if self._runnable(self._tasks[task_id]):
                return rank, task_id
            heapq.heappop(heap)
            self._queued.discard(task_id)
        return None

    def drain_file_waits(self) -> list[tuple[str, str, str]]:
        """(task, running task, file) for each task held back by a shared file since the last call."""
        waits, self._file_waits = self._file_waits, []
        return waits

    def pop_ready(self) -> str | None:
        """The next task for a free worker (P0 first, then id), or None.

        Inner-loop roles that are busy are skipped: their chain continues in the
        worker already running it.
        """
        best: tuple[int, str] | None = self._peek_valid(self._ready)
        source = self._ready
        for role, heap in self._role_ready.items():
            if self._busy_roles.get(role):
                continue
            top = self._peek_valid(heap)
            if top is not None and (best is None or top < best):
                best, source = top, heap
        return None if best is None else self._pop_valid(source)

    def pop_for_role(self, role: str) -> str | None:
        """The next ready task of inner-loop ``role``, for the worker that runs its chain."""
        heap = self._role_ready.get(role)
        return None if heap is None else self._pop_valid(heap)

    # --- transitions ----------------------------------------------------------------------

    def start(self, task_id: str) -> None:
        task = self._tasks[task_id]
        task.status = "in_progress"
        self.running.add(task_id)
        self._busy_roles[task.owner] = self._busy_roles.get(task.owner, 0) + 1
        self._take_files(task)

    def _take_files(self, task: _Task) -> None:
        for name in task.files:
            self._busy_files.setdefault(name, task.id)

    def _free_files(self, task: _Task) -> None:
        """Give back ``task``'s files; tasks that waited for them go back in the queue."""
        freed = {name for name in task.files if self._busy_files.get(name) == task.id}
        for name in freed:
            del self._busy_files[name]
        if not freed:
            return
        for waiting_id in sorted(self._waiting_for_files):
            waiting = self._tasks[waiting_id]
            if waiting.files & freed:
                self._waiting_for_files.discard(waiting_id)
                if waiting.status == "pending" and not waiting.waiting_on:
                    self._push_ready(waiting)

    def _stop_running(self, task: _Task) -> None:
        if task.id in self.running:
            self.running.discard(task.id)
            self._busy_roles[task.owner] -= 1
        self._free_files(task)

    def complete(self, task_id: str) -> list[str]:
        """Mark done; return the tasks this made ready."""
        task = self._tasks[task_id]
        self._stop_running(task)
        if task.status == "completed":
            return []
        task.status = "completed"
        unblocked = []
        for dependant_id in task.dependants:
            dependant = self._tasks[dependant_id]
            dependant.waiting_on -= 1
            if dependant.waiting_on == 0 and dependant.status == "pending":
                self._push_ready(dependant)
                unblocked.append(dependant_id)
        return unblocked

    def retry_at(self, task_id: str, when: float) -> None:
        task = self._tasks[task_id]
        self._stop_running(task)
        task.status = "pending"
        self._queued.add(task_id)
        heapq.heappush(self._delayed, (when, task_id))

    def reset(self, task_id: str) -> None:
        """Back to pending (an interrupted attempt); ready at once if unblocked."""
        task = self._tasks[task_id]
        self._stop_running(task)
        task.status = "pending"
        if task.waiting_on == 0:
            self._push_ready(task)

    def send_back(self, task_id: str, review_id: str) -> None:
        """A review asked for changes: ``task_id`` (completed) is pending again and the running
        review ``review_id`` waits for it once more, as do its other dependants not yet started."""
        task, review = self._tasks[task_id], self._tasks[review_id]
        self._stop_running(review)
        review.status = "pending"
        if task.status == "completed":
            task.status = "pending"
            for dependant_id in task.dependants:
                if self._tasks[dependant_id].status == "pending":
                    self._tasks[dependant_id].waiting_on += 1
        if task.status == "pending" and task.waiting_on == 0:
            self._push_ready(task)

    def hold(self, task_id: str) -> None:
        """Keep a task from being dispatched until :meth:`release` (a question about it is open).

        Its dependants wait with it, as they would for any unfinished blocker.
        """
        task = self._tasks[task_id]
        if not task.held:
            task.held = True
            self._held.add(task_id)

    def release(self, task_id: str) -> None:
        task = self._tasks[task_id]
        task.held = False
        self._held.discard(task_id)
        if task.status == "pending" and task.waiting_on == 0:
            self._push_ready(task)

    def held(self) -> list[str]:
        """Pending tasks waiting for the user's answer (the run waits for them too)."""
        return sorted(task_id for task_id in self._held if self._tasks[task_id].status == "pending")

    def is_held(self, task_id: str) -> bool:
        return self._tasks[task_id].held

    def fail(self, task_id: str) -> None:
        task = self._tasks[task_id]
        self._stop_running(task)
        task.status = "failed"

    def add(self, row: TaskRow, rewire: Iterable[tuple[str, Iterable[str]]] = ()) -> None:
        """Add a task created during the run (a revision) and re-point dependants."""
        task = _Task(
            id=row.id,
            owner=row.owner,
            rank=priority_rank(row.priority),
            blocked_by=list(row.blocked_by),
            status=row.status,
            files=_files_of(row),
        )
        self._tasks[row.id] = task
        if row.owner in self._manual_roles:
            self._manual.add(row.id)
        for dep in task.blocked_by:
            blocker = self._tasks.get(dep)
            if blocker is not None:
                blocker.dependants.append(task.id)
                if blocker.status != "completed":
                    task.waiting_on += 1
        for dependant_id, blocked_by in rewire:
            dependant = self._tasks[dependant_id]
            added = [dep for dep in blocked_by if dep not in dependant.blocked_by]
            dependant.blocked_by.extend(added)
            for dep in added:
                blocker = self._tasks[dep]
                blocker.dependants.append(dependant_id)
                if blocker.status != "completed":
                    dependant.waiting_on += 1
        if task.status == "pending" and task.waiting_on == 0:
            self._push_ready(task)
