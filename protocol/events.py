"""Every event the executor records in a session's event log.

An event is a fact that happened; the ``tasks`` and ``runs`` tables and the
team-session.json projection are derived from the same transitions.  Events are
appended, never edited.  Old logs stay readable: unknown fields are ignored and
missing ones take their defaults.
"""

from __future__ import annotations

from typing import Union

import msgspec

from protocol._base import Message
from protocol.types import ErrorKind, Priority, TaskStatus

__all__ = [
    "EVENT_TYPES",
    "AnyEvent",
    "BlockerReported",
    "BudgetExceeded",
    "BudgetWarning",
    "CapabilityGap",
    "ChangesRequested",
    "ConsensusBlocked",
    "EscalationAnswered",
    "EscalationOpened",
    "Event",
    "EventDecodeError",
    "NotificationDropped",
    "ReportRefused",
    "RevisionCreated",
    "RunCompleted",
    "RunStarted",
    "ServiceRestarted",
    "SessionReconciled",
    "ShutdownCompleted",
    "ShutdownRequested",
    "TaskCancelled",
    "TaskCompleted",
    "TaskCreated",
    "TaskDispatched",
    "TaskFailed",
    "TaskProgress",
    "TaskReady",
    "TaskReset",
    "TaskRolledBack",
    "TaskStalled",
    "TaskStarted",
    "TaskTransition",
    "TasksReopened",
    "WorkerCrashed",
    "WorkerRestarted",
    "WorkerSpawned",
    "decode_event",
    "encode_event",
]


class Event(Message, frozen=True):
    """Base of every logged event."""


# --- the run -----------------------------------------------------------------


class RunStarted(Event, frozen=True):
    run_id: str
    pid: int
    command: str  # "run" or "resume"
    max_workers: int


class SessionReconciled(Event, frozen=True):
    run_id: str
    unclean_previous_stop: bool = False
    reset_tasks: tuple[str, ...] = ()
    cancelled_tasks: tuple[str, ...] = ()  # being cancelled when the previous run stopped
    created_tasks: tuple[str, ...] = ()
    completed_from_session: tuple[str, ...] = ()
    killed_pids: tuple[int, ...] = ()
    report_path: str | None = None


class ShutdownRequested(Event, frozen=True):
    reason: str  # "signal SIGTERM", "escalation", "budget", ...
    graceful: bool = True


class ShutdownCompleted(Event, frozen=True):
    run_id: str
    clean: bool = True
    interrupted_tasks: tuple[str, ...] = ()


class RunCompleted(Event, frozen=True):
    run_id: str
    completed: int
    total: int
    failed: tuple[str, ...] = ()
    blocked: tuple[str, ...] = ()
    duration_s: float = 0.0


# --- tasks -------------------------------------------------------------------


class TaskCreated(Event, frozen=True):
    task_id: str
    owner: str
    priority: Priority = "P1"
    blocked_by: tuple[str, ...] = ()
    source: str = "task-analysis"  # or "revision", "mcp", ...


class TaskReady(Event, frozen=True):
    task_id: str


class TaskDispatched(Event, frozen=True):
    task_id: str
    attempt: int
    worker_id: str
    backend: str


class TaskStarted(Event, frozen=True):
    task_id: str
    attempt: int
    pid: int


class TaskProgress(Event, frozen=True):
    task_id: str
    attempt: int
    note: str = ""
    percent: int | None = None


class TaskCompleted(Event, frozen=True):
    task_id: str
    attempt: int
    artifacts: tuple[str, ...] = ()
    summary: str = ""


class TaskFailed(Event, frozen=True):
    """One attempt failed; ``final`` says the task itself is now failed."""

    task_id: str
    attempt: int
    error_kind: ErrorKind
    error: str
    final: bool = False
    retry_in_s: float | None = None


class TaskReset(Event, frozen=True):
    task_id: str
    previous_status: TaskStatus
    reason: str


class RevisionCreated(Event, frozen=True):
    task_id: str
    revises: str
    reason: str


class TaskTransition(Event, frozen=True):
    """A person (or an IDE agent, or git) moved a task along its handoff lifecycle."""

    task_id: str
    from_status: str
    to_status: str
    by: str
    note: str = ""


class ChangesRequested(Event, frozen=True):
    """A reviewer sent ``task_id`` (the work it reviewed) back with feedback; both run again."""

    task_id: str
    review_task: str
    round: int
    feedback: tuple[str, ...] = ()


class ConsensusBlocked(Event, frozen=True):
    task_id: str
    severity: str
    detail: str
    action: str  # "revision", "paused", "logged"


class CapabilityGap(Event, frozen=True):
    task_id: str
    detail: str


class TaskCancelled(Event, frozen=True):
    """Someone cancelled the task; it ends failed (kind ``cancelled``) and is not retried."""

    task_id: str
    reason: str = ""
    by: str = ""  # "mcp", "cli", ...


class TaskRolledBack(Event, frozen=True):
    """``executor rollback``: the files the task changed were put back as they were before it."""

    task_id: str
    to_status: str  # "pending" (it runs again) or "cancelled"
    files: tuple[str, ...] = ()
    by: str = ""
    cascade_of: str | None = None  # rolled back because that task's rollback named it in --cascade


class TasksReopened(Event, frozen=True):
    """Failed tasks given a new set of attempts (``resume_session``)."""

    task_ids: tuple[str, ...]
    by: str = ""


class TaskStalled(Event, frozen=True):
    """No progress report and no output for ``idle_s``; ``action``: "reported" or "stopped"."""

    task_id: str
    attempt: int
    idle_s: float
    action: str


class BlockerReported(Event, frozen=True):
    task_id: str
    agent_id: str
    severity: str
    detail: str
    escalation_id: str | None = None


# --- questions for the user ---------------------------------------------------------


class EscalationOpened(Event, frozen=True):
    escalation_id: str
    issue: str
    options: tuple[str, ...] = ()
    task_id: str | None = None
    opened_by: str = "executor"


class EscalationAnswered(Event, frozen=True):
    escalation_id: str
    choice: str
    answered_by: str = ""


class NotificationDropped(Event, frozen=True):
    """A notification channel gave up on a message (after its retries, or refused for good)."""

    channel: str
    kind: str
    reason: str


# --- money -------------------------------------------------------------------------


class BudgetWarning(Event, frozen=True):
    """Spending passed the warning fraction of a budget (``scope``: session or task)."""

    scope: str
    spent_usd: float
    limit_usd: float
    task_id: str | None = None


class BudgetExceeded(Event, frozen=True):
    """A budget is spent: the session stops dispatching, or the task gets no more attempts."""

    scope: str
    spent_usd: float
    limit_usd: float
    task_id: str | None = None


# --- workers and services --------------------------------------------------------


class WorkerSpawned(Event, frozen=True):
    worker_id: str
    role: str
    task_id: str


class WorkerCrashed(Event, frozen=True):
    worker_id: str
    task_id: str | None
    error: str


class ReportRefused(Event, frozen=True):
    """A report (start, progress or result) from an attempt that is no longer the current
    one of its worker: the attempt number is its fencing token, and a stale one is not applied."""

    worker_id: str
    task_id: str
    attempt: int
    current_attempt: int | None
    report: str  # "started", "progress" or "finished"


class WorkerRestarted(Event, frozen=True):
    worker_id: str
    task_id: str | None
    restarts: int
    delay_s: float


class ServiceRestarted(Event, frozen=True):
    name: str
    restarts: int
    error: str


AnyEvent = Union[  # noqa: UP007 - msgspec needs a real Union object at runtime here
    RunStarted,
    SessionReconciled,
    ShutdownRequested,
    ShutdownCompleted,
    RunCompleted,
    TaskCreated,
    TaskReady,
    TaskDispatched,
    TaskStarted,
    TaskProgress,
    TaskCompleted,
    TaskFailed,
    TaskReset,
    TaskCancelled,
    TasksReopened,
    TaskRolledBack,
    TaskStalled,
    BlockerReported,
    EscalationOpened,
    EscalationAnswered,
    NotificationDropped,
    RevisionCreated,
    ChangesRequested,
    ConsensusBlocked,
    TaskTransition,
    CapabilityGap,
    BudgetWarning,
    BudgetExceeded,
    WorkerSpawned,
    WorkerCrashed,
    WorkerRestarted,
    ServiceRestarted,
    ReportRefused,
]

EVENT_TYPES: dict[str, type[Event]] = {
    cls.__struct_config__.tag: cls
    for cls in AnyEvent.__args__  # type: ignore[attr-defined]
}

_encoder = msgspec.json.Encoder()
_decoder: msgspec.json.Decoder[Event] = msgspec.json.Decoder(AnyEvent)

EventDecodeError = msgspec.DecodeError


def encode_event(event: Event) -> bytes:
    """The JSON payload stored in the ``events`` table (``type`` included)."""
    return _encoder.encode(event)


def decode_event(payload: bytes | str) -> Event:
    """Read a stored payload back; raises :class:`EventDecodeError` on bad input."""
    return _decoder.decode(payload)
