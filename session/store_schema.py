"""The state database's schema: its migrations, in order, each turning version N-1 into N inside one transaction."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import sqlite_utils

__all__ = [
    "MIGRATIONS",
    "SCHEMA_VERSION",
]


def _migration_1(db: sqlite_utils.Database) -> None:
    db.table("events").create(
        {"id": int, "type": str, "task_id": str, "payload_json": str, "occurred_at": str},
        pk="id",
        not_null={"type", "payload_json", "occurred_at"},
    )
    db.table("events").create_index(["task_id"])
    db.table("tasks").create(
        {
            "id": str,
            "owner": str,
            "status": str,
            "subject": str,
            "priority": str,
            "blocked_by": str,
            "attempts": int,
            "max_attempts": int,
            "not_before": str,
            "last_error": str,
            "last_error_kind": str,
            "source": str,
            "revises": str,
            "created_at": str,
            "updated_at": str,
            "completed_at": str,
        },
        pk="id",
        not_null={"owner", "status"},
    )
    db.table("tasks").create_index(["status"])
    db.table("runs").create(
        {
            "id": int,
            "run_id": str,
            "task_id": str,
            "attempt": int,
            "worker_id": str,
            "backend": str,
            "model": str,
            "key_id": str,
            "pid": int,
            "pid_create_time": float,
            "started_at": str,
            "ended_at": str,
            "exit_code": int,
            "outcome": str,
            "error_kind": str,
            "error": str,
            "tokens_in": int,
            "tokens_out": int,
            "tokens_cached": int,
            "cost_usd": float,
            "log_path": str,
        },
        pk="id",
    )
    db.table("runs").create_index(["task_id"])
    db.table("runs").create_index(["ended_at"])
    db.table("meta").create({"key": str, "value": str}, pk="key")


def _migration_2(db: sqlite_utils.Database) -> None:
    """Agent CLIs: their own session id (to resume it), the git HEAD around an attempt."""
    for column, kind in (
        ("agent_session_id", str),
        ("git_head_before", str),
        ("git_head_after", str),
        ("files_changed", str),
    ):
        db.table("runs").add_column(column, kind)


def _migration_3(db: sqlite_utils.Database) -> None:
    """Tasks submitted at run time (MCP) keep their description; questions for the user."""
    db.table("tasks").add_column("description", str)
    db.table("escalations").create(
        {
            "id": str,
            "issue": str,
            "options": str,
            "task_id": str,
            "opened_by": str,
            "status": str,
            "choice": str,
            "answered_by": str,
            "created_at": str,
            "answered_at": str,
            "default_choice": str,
            "deadline": str,
            "holds_task": int,
        },
        pk="id",
        not_null={"issue", "status"},
    )
    db.table("escalations").create_index(["status"])


def _migration_4(db: sqlite_utils.Database) -> None:
    """Handoff: who claimed a task, and what its preparation says (a JSON object)."""
    db.table("tasks").add_column("agent", str)
    db.table("tasks").add_column("details", str)


def _migration_5(db: sqlite_utils.Database) -> None:
    """A rolled-back task gets a fresh attempt budget counted from the attempts it had made."""
    db.table("tasks").add_column("attempts_before", int, not_null_default=0)


def _migration_6(db: sqlite_utils.Database) -> None:
    """On a cluster: the node an attempt ran on (its host and Ray node id)."""
    db.table("runs").add_column("node", str)


def _migration_7(db: sqlite_utils.Database) -> None:
    """How many progress lines an attempt's agent printed, as the executor read them."""
    db.table("runs").add_column("progress_lines", int)


def _migration_8(db: sqlite_utils.Database) -> None:
    """Queued writes (the MCP ``queue_*`` tools) by request id: recorded when queued, settled
    when applied, so one outlives the run that took it and is applied once."""
    db.table("queued_writes").create(
        {
            "id": str,
            "tool": str,
            "message_json": str,
            "queued_at": float,
            "state": str,
            "reply_json": str,
            "error": str,
            "settled_at": str,
        },
        pk="id",
        not_null={"tool", "state"},
    )
    db.table("queued_writes").create_index(["state"])


def _migration_9(db: sqlite_utils.Database) -> None:
    """Who asked to cancel a task while this attempt ran (a run that stops first cancels it on resume)."""
    db.table("runs").add_column("cancel_requested_by", str)


# Append only: migration N turns schema N-1 into N, inside one transaction.
MIGRATIONS: list[Callable[[sqlite_utils.Database], None]] = [
    _migration_1,
    _migration_2,
    _migration_3,
    _migration_4,
    _migration_5,
    _migration_6,
    _migration_7,
    _migration_8,
    _migration_9,
]
SCHEMA_VERSION = len(MIGRATIONS)
