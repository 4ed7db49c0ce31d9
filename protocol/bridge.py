"""What the MCP bridge asks the Executor, and what it answers.

Every request is an ask with a short timeout; none waits for a task to run.
A request the Executor will not carry out gets a :class:`Refused` naming the
argument at fault (when one is) and the reason, which the bridge turns into
a tool error.  Reads that only need durable state go to the store instead.
"""

from __future__ import annotations

from typing import Literal

import msgspec

from protocol._base import Message
from protocol.records import EscalationRow, TaskRow
from protocol.types import Priority

__all__ = [
    "CAPABILITY_DECISION",
    "CONSENSUS_DECISION",
    "CRITICAL_APPROVAL",
    "DECISION_OPTIONS",
    "KEY_REQUEST",
    "QUEUED_WRITES",
    "AnswerEscalation",
    "CancelTask",
    "Cancelled",
    "EscalateDecision",
    "EscalationRecord",
    "FleetSnapshot",
    "GetFleet",
    "Refused",
    "ReopenFailed",
    "Reopened",
    "ReportBlocker",
    "ReportProgress",
    "Reported",
    "SubmitTask",
    "TaskAccepted",
    "WorkerInfo",
]


class Refused(Message, frozen=True):
    reason: str
    argument: str | None = None  # the tool argument at fault, if one is
    retry_later: bool = False  # a passing state (the run is booting): the same request will do soon


# --- tasks ------------------------------------------------------------------------


class SubmitTask(Message, frozen=True):
    name: str
    description: str = ""
    priority: Priority = "P1"
    assigned_to: str | None = None  # a role of the session
    blocked_by: tuple[str, ...] = ()
    source: str = "mcp"
    write_id: str | None = None  # a queued write's request id: its outcome is recorded under it


class TaskAccepted(Message, frozen=True):
    task: TaskRow


class CancelTask(Message, frozen=True):
    task_id: str
    reason: str = ""
    write_id: str | None = None  # see SubmitTask
    by: str = "mcp"


class Cancelled(Message, frozen=True):
    task_id: str
    was: str  # the status it had: "pending" or "in_progress"


class ReopenFailed(Message, frozen=True):
    """Give every failed task a new set of attempts (what it blocked moves again)."""

    by: str = "mcp"


class Reopened(Message, frozen=True):
    task_ids: tuple[str, ...]


# --- workers report back ------------------------------------------------------------


class ReportProgress(Message, frozen=True):
    task_id: str
    agent_id: str
    percent: int | None = None
    note: str = ""


class ReportBlocker(Message, frozen=True):
    task_id: str
    agent_id: str
    detail: str
    severity: Literal["low", "medium", "high", "critical"] = "medium"


class Reported(Message, frozen=True):
    task_id: str
    escalation_id: str | None = None


# --- questions for the user ----------------------------------------------------------


#: ``opened_by`` of the question the Router's approval gate asks: "approve" lets the task use CRITICAL.
CRITICAL_APPROVAL = "router:critical"
#: ``opened_by`` prefix of the question "add a key for <provider>" (one open per provider).
KEY_REQUEST = "keys:"
#: The question after a second HIGH consensus block: retry / accept / leave failed.
CONSENSUS_DECISION = "executor:consensus"
#: The question after a capability gap: continue / stop the run.
CAPABILITY_DECISION = "executor:capability_gap"
DECISION_OPTIONS: dict[str, tuple[str, ...]] = {
    CONSENSUS_DECISION: ("retry", "accept", "leave failed"),
    CAPABILITY_DECISION: ("continue", "stop the run"),
}


class EscalateDecision(Message, frozen=True):
    issue: str
    options: tuple[str, ...] = ()
    task_id: str | None = None
    opened_by: str = "mcp"
    hold: bool = True  # a pending task_id waits for the answer (and its dependants with it)
    timeout_s: float | None = None  # then default_choice is taken
    default_choice: str | None = None


class AnswerEscalation(Message, frozen=True):
    escalation_id: str
    choice: str
    answered_by: str = "mcp"
    write_id: str | None = None  # see SubmitTask


class EscalationRecord(Message, frozen=True):
    escalation: EscalationRow


# --- the fleet ----------------------------------------------------------------------


class GetFleet(Message, frozen=True):
    """Ask the Executor for :class:`FleetSnapshot`."""


class WorkerInfo(Message, frozen=True):
    worker_id: str
    task_id: str
    attempt: int
    role: str
    backend: str
    model: str | None
    pid: int | None
    elapsed_s: float
    node: str | None = None  # on a cluster: the node running it


class FleetSnapshot(Message, frozen=True):
    run_id: str
    state: Literal["booting", "running", "idle", "stopping", "finished"]
    max_workers: int
    workers: tuple[WorkerInfo, ...] = ()
    actors: tuple[str, ...] = ()  # the supervised children that are alive
    backends: tuple[str, ...] = ()  # backend of each role, distinct
    tasks_by_status: dict[str, int] = msgspec.field(default_factory=dict)
    session_spent_usd: float = 0.0
    open_escalations: int = 0
    manual_roles: tuple[str, ...] = ()  # roles whose tasks people take (`backend: manual`)


# --- queued writes ------------------------------------------------------------------

#: The tools that queue a write (the bridge answers with a request id at once), with the
#: message each puts in the Executor's inbox and the reply it gets: the store keeps both
#: (:class:`protocol.records.QueuedWriteRow`), so a write outlives the run that took it.
QUEUED_WRITES: dict[str, tuple[type[Message], type[Message]]] = {
    "queue_submit_task": (SubmitTask, TaskAccepted),
    "queue_cancel_task": (CancelTask, Cancelled),
    "queue_answer_escalation": (AnswerEscalation, EscalationRecord),
}
