"""Rows of the session's state: the task list and the worker attempts.

They live in ``protocol`` because actors pass them to each other (the Session
actor reads and writes them; the Executor and Reconciler reason about them).
"""

from __future__ import annotations

import msgspec

from protocol.types import ErrorKind, Priority, TaskStatus

__all__ = ["EscalationRow", "QueuedWriteRow", "RunRow", "TaskDetails", "TaskRow"]


class TaskDetails(msgspec.Struct, kw_only=True, omit_defaults=True):
    """What a person fills in when preparing a task (``executor task prep``) for handoff."""

    goal: str = ""
    acceptance_criteria: list[str] = msgspec.field(default_factory=list)
    definition_of_ready: list[str] = msgspec.field(default_factory=list)
    definition_of_done: list[str] = msgspec.field(default_factory=list)
    files_affected: list[str] = msgspec.field(default_factory=list)
    implementation_notes: str = ""
    capabilities: list[str] = msgspec.field(default_factory=list)  # what an agent needs to take it


class TaskRow(msgspec.Struct, kw_only=True):
    id: str
    owner: str
    status: TaskStatus = "pending"
    subject: str = ""
    priority: Priority = "P1"
    blocked_by: list[str] = msgspec.field(default_factory=list)
    attempts: int = 0
    max_attempts: int = 3
    # Attempts made before a rollback reopened the task: its attempt budget counts from there,
    # while attempt numbers (logs, diffs) keep growing and stay unique.
    attempts_before: int = 0
    not_before: str | None = None  # no dispatch before this time (retry backoff)
    last_error: str | None = None
    last_error_kind: ErrorKind | None = None
    source: str = "task-analysis"
    revises: str | None = None
    created_at: str = ""
    updated_at: str = ""
    completed_at: str | None = None
    description: str = ""  # what the task asks for, when it did not come from task-analysis.json
    agent: str | None = None  # who claimed it (manual tasks: `executor task claim ID --agent NAME`)
    details: TaskDetails = msgspec.field(default_factory=TaskDetails)


class RunRow(msgspec.Struct, kw_only=True):
    id: int
    run_id: str
    task_id: str
    attempt: int
    worker_id: str
    backend: str
    model: str | None = None
    key_id: str | None = None
    pid: int | None = None
    pid_create_time: float | None = None
    started_at: str = ""
    ended_at: str | None = None
    exit_code: int | None = None
    outcome: str | None = None  # "completed", "failed", "interrupted"
    error_kind: str | None = None
    error: str | None = None
    tokens_in: int | None = None
    tokens_out: int | None = None
    tokens_cached: int | None = None
    cost_usd: float | None = None
    log_path: str | None = None
    agent_session_id: str | None = None
    git_head_before: str | None = None
    git_head_after: str | None = None
    files_changed: list[str] = msgspec.field(default_factory=list)
    node: str | None = None  # the cluster node it ran on; None: in the executor's process
    progress_lines: int | None = None  # progress lines read from the agent's output (command, demo)
    # Who asked to cancel the task while this attempt ran: should the run stop before the attempt
    # ends, the next run cancels the task instead of running it again.
    cancel_requested_by: str | None = None


class EscalationRow(msgspec.Struct, kw_only=True):
    """A question for the user: opened by the executor, a worker or an MCP client."""

    id: str  # ESC-001
    issue: str
    options: list[str] = msgspec.field(default_factory=list)
    task_id: str | None = None  # the task that waits on the answer, if any
    opened_by: str = "executor"  # "executor", "mcp", or a worker's agent id
    status: str = "open"  # "open" or "answered"
    choice: str | None = None
    answered_by: str | None = None
    created_at: str = ""
    answered_at: str | None = None
    default_choice: str | None = None  # taken when nobody answers by the deadline
    deadline: str | None = None  # ISO time; None: wait for as long as it takes
    holds_task: bool = False  # task_id is not dispatched until this is answered


class QueuedWriteRow(msgspec.Struct, kw_only=True):
    """A write an MCP client queued (``queue_*`` tools), kept by its request id.

    Recorded when it is queued, settled in the transaction that applies it: a run that stops
    in between finds it still ``queued`` and applies it when it resumes, so a queued write
    is applied once, and its outcome can be read back however many runs later.
    """

    id: str  # the request id the client was given: W-<hex>-<number>
    tool: str  # queue_submit_task, ... (protocol.bridge.QUEUED_WRITES)
    message_json: str | None = None  # the message for the Executor; None if only its outcome was recorded
    queued_at: float = 0.0  # seconds since the epoch
    state: str = "queued"  # "queued", "applied" or "refused"
    reply_json: str | None = None  # the Executor's reply (applied)
    error: str | None = None  # why it was refused
    settled_at: str | None = None
