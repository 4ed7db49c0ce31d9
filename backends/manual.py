"""The ``manual`` backend: a person or an IDE agent does the role's tasks, not a process.

Its tasks are never dispatched (the scheduler keeps them out of the ready queue);
someone takes one with ``executor task claim ID --agent NAME`` (or the MCP tool),
works, and hands it on with ``review`` / ``complete`` / ``fail``.  The run waits
for them as it waits for an answer.  ``run`` exists only to satisfy the protocol.
"""

from __future__ import annotations

import threading
from typing import ClassVar

from backends.base import WorkerHooks
from protocol.messages import AttemptResult, WorkOrder
from session.rolespec import RoleSpecFrontmatter

__all__ = ["ManualBackend"]


class ManualBackend:
    name: ClassVar[str] = "manual"

    def preflight(self, role: str, spec: RoleSpecFrontmatter) -> str | None:
        """People need nothing installed."""
        return None

    def run(self, order: WorkOrder, hooks: WorkerHooks, cancel: threading.Event) -> AttemptResult:
        """Never called by the executor; refuses plainly if something else does."""
        return AttemptResult(
            ok=False,
            error_kind="spawn_failed",
            error=f"{order.task_id} belongs to a manual role: claim it with `executor task claim {order.task_id}`",
        )
