"""What the bridge's tools return: pydantic models, so every tool has an output schema.

Built from the protocol Structs at the boundary (msgspec Structs give MCP
clients no schema).  Nothing here can hold a key: key states carry the
provider and the last four characters only.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

__all__ = [
    "CancelOut",
    "CheckOut",
    "EscalationOut",
    "EscalationsOut",
    "FleetOut",
    "KeyAddedOut",
    "KeyOut",
    "McpServerOut",
    "ModelChoiceOut",
    "NextOut",
    "PanicOut",
    "ProgressOut",
    "QueuedOut",
    "ReportOut",
    "ResumeOut",
    "RunOut",
    "SubmittedOut",
    "TaskOut",
    "TaskStatusOut",
    "TasksOut",
    "WorkerOut",
    "WriteStatusOut",
    "cancel_note",
]


class TaskOut(BaseModel):
    id: str
    name: str = Field(description="The task's subject line")
    owner: str = Field(description="The role that runs it")
    status: str = Field(description="pending | in_progress | review | completed | failed")
    priority: str = Field(description="P0 (first) .. P2")
    blocked_by: list[str] = []
    attempts: int = 0
    max_attempts: int = 3
    source: str = ""
    last_error: str | None = None
    last_error_kind: str | None = None
    created_at: str = ""
    updated_at: str = ""
    completed_at: str | None = None
    agent: str | None = Field(default=None, description="Who claimed it (manual tasks)")


class SubmittedOut(TaskOut):
    assignment: str = Field(description="Which role takes the task, and why (capability match or intake role)")


class NextOut(BaseModel):
    task_id: str | None = Field(description="The task to take next; null when none fits")
    why: str


class RunOut(BaseModel):
    attempt: int
    backend: str
    model: str | None = None
    started_at: str = ""
    ended_at: str | None = None
    outcome: str | None = None
    error_kind: str | None = None
    error: str | None = None
    cost_usd: float | None = None


class ProgressOut(BaseModel):
    percent: int | None = None
    note: str = ""
    at: str = ""


class TaskStatusOut(BaseModel):
    task: TaskOut
    description: str = ""
    runs: list[RunOut] = []
    progress: ProgressOut | None = None
    artifacts: list[str] = Field(default=[], description="Paths relative to the session folder")


class TasksOut(BaseModel):
    tasks: list[TaskOut]
    total: int


class CancelOut(BaseModel):
    task_id: str
    was: str
    note: str


def cancel_note(was: str) -> str:
    """What a cancel answer promises: a running agent may still finish before it is stopped."""
    if was == "in_progress":
        return (
            "the agent is being stopped; if it finishes before it sees the cancel, its result stands "
            "(get_task_status tells which)"
        )
    return "it will not run"


class ResumeOut(BaseModel):
    reopened: list[str]
    note: str


class ReportOut(BaseModel):
    task_id: str
    recorded: bool = True
    escalation_id: str | None = None


class EscalationOut(BaseModel):
    id: str
    issue: str
    options: list[str] = []
    task_id: str | None = None
    opened_by: str = ""
    status: str = "open"
    choice: str | None = None
    answered_by: str | None = None
    created_at: str = ""
    answered_at: str | None = None
    default_choice: str | None = None
    deadline: str | None = Field(default=None, description="When default_choice is taken (ISO time)")
    holds_task: bool = Field(default=False, description="task_id waits for the answer")


class EscalationsOut(BaseModel):
    escalations: list[EscalationOut]


class WorkerOut(BaseModel):
    worker_id: str
    task_id: str
    attempt: int
    role: str
    backend: str
    model: str | None = None
    pid: int | None = None
    elapsed_s: float
    node: str | None = None  # on a cluster: the node running it


class KeyOut(BaseModel):
    provider: str
    key_id: str
    last4: str = Field(description="The key's last four characters; the key itself is never shown")
    status: str
    cooling_for_s: float = 0.0
    requests: int = 0
    tokens_in: int = 0
    tokens_out: int = 0
    cost_usd: float = 0.0
    rate_limits: int = 0
    errors: int = 0
    last_error: str | None = None
    tier: str | None = None
    source: str = ""


class McpServerOut(BaseModel):
    name: str
    transport: str = Field(description="stdio | http")
    endpoint: str = Field(description="The program or the URL (credentials masked)")
    status: str = Field(description="online | offline | unknown")
    tools: list[str] = []
    last_error: str | None = None
    last_checked: float | None = Field(default=None, description="Epoch seconds of the last health check")
    latency_ms: float | None = None
    failures: int = Field(default=0, description="Health checks failed in a row")


class FleetOut(BaseModel):
    run_id: str
    state: str = Field(description="booting | running | idle | stopping | finished | unusable (cannot run)")
    max_workers: int
    workers: list[WorkerOut] = []
    actors: list[str] = Field(default=[], description="Supervised children that are alive")
    backends_in_use: list[str] = []
    backends_installed: dict[str, bool] = {}
    tasks_by_status: dict[str, int] = {}
    session_spent_usd: float = 0.0
    keys: list[KeyOut] = []
    mcp_servers: list[McpServerOut] = []
    panic: bool = False
    problems: list[str] = Field(
        default=[], description="Why the session cannot run, each with its fix (state unusable); empty when it runs"
    )


class KeyAddedOut(BaseModel):
    key_id: str
    provider: str
    last4: str
    persisted: bool
    warning: str | None = None


class ModelChoiceOut(BaseModel):
    model: str
    tier: str
    backend: str
    provider: str
    needs_approval: bool = False
    reason: str = ""


class CheckOut(BaseModel):
    session_id: str | None
    status: str | None
    completed: int
    total: int
    percent: float
    ready: list[str] = []
    failed: list[str] = []
    blocked: list[str] = []
    running: list[str] = []
    next_command: str = ""
    recovery_report: str | None = None
    report: dict[str, Any] = Field(default={}, description="Everything `executor check --json` prints")


class PanicOut(BaseModel):
    panic: bool
    changed: bool
    note: str


class QueuedOut(BaseModel):
    request_id: str = Field(description="Pass it to get_write_status for the outcome")
    tool: str = Field(description="The write that was queued")
    state: Literal["queued"] = "queued"
    note: str = ""


class WriteStatusOut(BaseModel):
    request_id: str
    tool: str
    state: Literal["queued", "applied", "refused"] = Field(
        description="queued: the executor has not handled it yet; applied: done (see result); refused: see error"
    )
    result: dict[str, Any] | None = Field(default=None, description="What the write did, e.g. the new task's id")
    error: str | None = Field(default=None, description="Why it was refused, naming the argument at fault")
    queued_at: str = ""
