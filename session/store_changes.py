"""What a writer may change in the state store: a task's columns, a new run, a run's columns (UNSET keeps a value)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import msgspec
from msgspec import UNSET, UnsetType

from protocol.records import TaskDetails
from protocol.types import Priority, TaskStatus

if TYPE_CHECKING:
    pass

__all__ = [
    "RunChange",
    "RunStart",
    "TaskChange",
    "given",
]


class TaskChange(msgspec.Struct, kw_only=True, frozen=True):
    """The columns of a task row to change (``update_task``); every field left UNSET is kept."""

    status: TaskStatus | UnsetType = UNSET
    owner: str | UnsetType = UNSET
    subject: str | UnsetType = UNSET
    priority: Priority | UnsetType = UNSET
    description: str | UnsetType = UNSET
    attempts: int | UnsetType = UNSET
    max_attempts: int | UnsetType = UNSET
    attempts_before: int | UnsetType = UNSET
    not_before: str | UnsetType | None = UNSET
    last_error: str | UnsetType | None = UNSET
    last_error_kind: str | UnsetType | None = UNSET
    completed_at: str | UnsetType | None = UNSET
    blocked_by: list[str] | UnsetType = UNSET
    details: TaskDetails | UnsetType = UNSET
    agent: str | UnsetType | None = UNSET


class RunStart(msgspec.Struct, kw_only=True, frozen=True):
    """A new row of ``runs``: one attempt, recorded when it is dispatched (``insert_run``)."""

    run_id: str
    task_id: str
    attempt: int
    worker_id: str
    backend: str
    id: int | UnsetType = UNSET  # the Executor numbers its attempts; a test may let SQLite do it
    log_path: str | None = None
    started_at: str | UnsetType = UNSET  # now, when not given


class RunChange(msgspec.Struct, kw_only=True, frozen=True):
    """The columns of a run row to change (``update_run``); every field left UNSET is kept."""

    pid: int | UnsetType = UNSET
    pid_create_time: float | UnsetType | None = UNSET
    node: str | UnsetType | None = UNSET
    ended_at: str | UnsetType = UNSET
    exit_code: int | UnsetType | None = UNSET
    outcome: str | UnsetType = UNSET
    error_kind: str | UnsetType | None = UNSET
    error: str | UnsetType | None = UNSET
    tokens_in: int | UnsetType = UNSET
    tokens_out: int | UnsetType = UNSET
    tokens_cached: int | UnsetType = UNSET
    cost_usd: float | UnsetType | None = UNSET
    model: str | UnsetType | None = UNSET
    key_id: str | UnsetType | None = UNSET
    agent_session_id: str | UnsetType | None = UNSET
    git_head_before: str | UnsetType | None = UNSET
    git_head_after: str | UnsetType | None = UNSET
    files_changed: list[str] | UnsetType = UNSET
    progress_lines: int | UnsetType | None = UNSET
    cancel_requested_by: str | UnsetType | None = UNSET


def given(change: msgspec.Struct) -> dict[str, Any]:
    """The fields of a change Struct that are set (not UNSET), by name."""
    return {name: value for name in change.__struct_fields__ if (value := getattr(change, name)) is not UNSET}
