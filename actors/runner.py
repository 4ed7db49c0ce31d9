"""What a TeamWorker runs for one attempt, and the permission a role gets by default."""

from __future__ import annotations

import os
import threading
from typing import Any

from backends.base import Backend
from protocol.messages import AttemptResult, Permission, WorkOrder
from session.redaction import redact
from session.safepath import open_new_file, write_all

__all__ = ["AttemptRunner", "default_permission"]


class AttemptRunner:
    """What a TeamWorker runs: write the prompt file, then the role's backend.

    Runs on the worker's thread, so prompt building (which reads upstream
    artifacts) never delays the Executor.
    """

    def __init__(self, backends: dict[str, Backend], prompts: Any) -> None:
        self.backends = backends
        self.prompts = prompts

    def prepare(self, order: WorkOrder) -> None:
        """Write the attempt's prompt file (also before a cluster runs the attempt)."""
        # Upstream artifacts and feedback are agent output: a key one of them leaked goes no further.
        data = redact(self.prompts(order.task_id, order.attempt)).encode("utf-8")
        fd = open_new_file(order.prompt_file, os.O_WRONLY | os.O_TRUNC)
        try:
            write_all(fd, data)
        finally:
            os.close(fd)

    def __call__(self, order: WorkOrder, hooks: Any, cancel: threading.Event) -> AttemptResult:
        self.prepare(order)
        return self.backends[order.role].run(order, hooks, cancel)


_READ_ONLY_ROLES = frozenset({"reviewer", "redteam", "red-team", "auditor"})


def default_permission(role: str, responsibility_type: str | None) -> Permission:
    """Reviewers and red teams read; every other role writes inside the workspace."""
    kind = (responsibility_type or "").lower()
    if role.lower() in _READ_ONLY_ROLES or "review" in kind or "read-only" in kind:
        return "read-only"
    return "workspace-write"
