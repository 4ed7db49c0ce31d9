"""The handoff lifecycle people see: pending -> ready -> in_progress -> review -> completed | failed.

The words are the store's and ``executor check``'s; the lifecycle adds one, ``ready``
(a pending task whose blockers are all completed).  It is derived, never stored
twice, so it cannot disagree with the scheduler.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from protocol.events import TasksReopened
from protocol.records import TaskRow
from session.store import Store
from session.store_changes import TaskChange

__all__ = ["LIFECYCLE", "lifecycle_of", "lifecycle_status", "reopen_failed"]

LIFECYCLE: tuple[str, ...] = ("pending", "ready", "in_progress", "review", "completed", "failed")


def lifecycle_status(row: TaskRow, completed: set[str] | frozenset[str]) -> str:
    if row.status == "pending":
        return "ready" if all(blocker in completed for blocker in row.blocked_by) else "pending"
    return row.status  # in_progress, review, completed, failed


def lifecycle_of(rows: Iterable[TaskRow], completed: set[str] | None = None) -> dict[str, str]:
    """Task id -> lifecycle status, for a whole task list in one pass; or for some tasks, given
    which of their blockers are ``completed``."""
    rows = list(rows)
    done = frozenset(row.id for row in rows if row.status == "completed") if completed is None else completed
    return {row.id: lifecycle_status(row, done) for row in rows}


def reopen_failed(folder: Path, by: str) -> list[str]:
    """Every failed task pending again with a new set of attempts, and one ``TasksReopened``
    event: what the ``resume_session`` MCP tool does in a live run, for ``resume
    --retry-failed`` before the tree starts.  The caller holds the session lock."""
    store = Store.open(folder)
    try:
        failed = [row for row in store.tasks() if row.status == "failed"]
        if failed:
            with store.transaction():
                for row in failed:
                    # A fresh budget; attempt numbers go on, so no earlier attempt's log or record is overwritten.
                    change = TaskChange(status="pending", attempts_before=row.attempts, not_before=None)
                    store.update_task(row.id, change)
                store.append(TasksReopened(task_ids=tuple(row.id for row in failed), by=by))
    finally:
        store.close()
    return [row.id for row in failed]
