"""An in-memory backend for the in-process harness: each attempt ends the way the test says.

It implements the same ``Backend`` protocol as every backend in ``backends.registry`` and is
handed to the Executor in its ``backends`` map, like the registry's.  No process is started:
``run`` (on the worker's thread) takes the next scripted result for the task, or — for
:data:`HOLD` — waits until the test releases the attempt or the executor cancels it.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from typing import ClassVar

from backends.base import WorkerHooks
from protocol.messages import AttemptResult, WorkOrder
from session.rolespec import RoleSpecFrontmatter

__all__ = ["HOLD", "OK", "FakeBackend", "failure"]

OK = AttemptResult(ok=True, summary="done")
HOLD = AttemptResult(ok=False, error_kind="crash", error="(held: the test releases it)")


def failure(kind: str = "crash", **extra: object) -> AttemptResult:
    return AttemptResult(ok=False, error_kind=kind, error=f"{kind} on purpose", **extra)  # type: ignore[arg-type]


class FakeBackend:
    name: ClassVar[str] = "fake"

    def __init__(self) -> None:
        self._lock = threading.Condition()
        self._scripts: dict[str, list[AttemptResult]] = defaultdict(list)
        self._released: dict[str, AttemptResult] = {}
        self.orders: list[WorkOrder] = []  # every attempt, in the order they started
        self.running: set[str] = set()

    # --- what the test says ---------------------------------------------------------------

    def script(self, task_id: str, *results: AttemptResult) -> None:
        """How the next attempts of ``task_id`` end, in order (after them: OK)."""
        with self._lock:
            self._scripts[task_id].extend(results)

    def release(self, task_id: str, result: AttemptResult = OK) -> None:
        """End the held attempt of ``task_id`` with ``result``."""
        with self._lock:
            self._released[task_id] = result
            self._lock.notify_all()

    def attempts(self, task_id: str) -> list[WorkOrder]:
        with self._lock:
            return [order for order in self.orders if order.task_id == task_id]

    # --- the Backend protocol -----------------------------------------------------------------

    def preflight(self, role: str, spec: RoleSpecFrontmatter) -> str | None:
        return None

    def run(self, order: WorkOrder, hooks: WorkerHooks, cancel: threading.Event) -> AttemptResult:
        with self._lock:
            self.orders.append(order)
            script = self._scripts[order.task_id]
            result = script.pop(0) if script else OK
            if result is not HOLD:
                return result
            self.running.add(order.task_id)
            try:
                while order.task_id not in self._released:
                    if cancel.is_set():
                        return AttemptResult(ok=False, error_kind="interrupted", error="stopped by the executor")
                    self._lock.wait(timeout=0.02)  # the cancel event does not notify this condition
                return self._released.pop(order.task_id)
            finally:
                self.running.discard(order.task_id)
