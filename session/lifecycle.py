"""The handoff lifecycle people see: pending -> ready -> in_progress -> review -> completed | failed.

The words are the store's and ``executor check``'s; the lifecycle adds one, ``ready``
(a pending task whose blockers are all completed).  It is derived, never stored
twice, so it cannot disagree with the scheduler.
"""

from __future__ import annotations

from collections.abc import Iterable

from protocol.records import TaskRow

__all__ = ["LIFECYCLE", "lifecycle_of", "lifecycle_status"]

LIFECYCLE: tuple[str, ...] = ("pending", "ready", "in_progress", "review", "completed", "failed")


def lifecycle_status(row: TaskRow, completed: set[str] | frozenset[str]) -> str:
    if row.status == "pending":
        return "ready" if all(blocker in completed for blocker in row.blocked_by) else "pending"
    return row.status  # in_progress, review, completed, failed


def lifecycle_of(rows: Iterable[TaskRow]) -> dict[str, str]:
    """Task id -> lifecycle status, for a whole task list in one pass."""
    rows = list(rows)
    completed = frozenset(row.id for row in rows if row.status == "completed")
    return {row.id: lifecycle_status(row, completed) for row in rows}
