"""The HTTP API's bodies: pydantic models, so /openapi.json describes every one of them.

Task, escalation, worker and key shapes are the MCP bridge's (``bridge.models``):
one vocabulary for both surfaces.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from bridge.models import EscalationOut, KeyOut, ProgressOut, RunOut, TaskOut, WorkerOut
from protocol.ids import TASK_ID_PATTERN

__all__ = [
    "AgentStatsOut",
    "AgentsOut",
    "AnswerIn",
    "DiffFileOut",
    "DiffOut",
    "HealthOut",
    "RunInfoOut",
    "SessionOut",
    "SpendOut",
    "SubmitIn",
    "TaskDetailOut",
    "TaskRunOut",
]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class HealthOut(BaseModel):
    live: bool = Field(description="The process answers")
    ready: bool = Field(description="The actor tree answers and is not stopping")
    state: str = Field(description="booting | running | idle | stopping | finished | unavailable")
    actors: list[str] = Field(default=[], description="Supervised children that are alive")
    detail: str = ""


class RunInfoOut(BaseModel):
    run_id: str
    state: str
    max_workers: int


class SpendOut(BaseModel):
    backend: str
    model: str | None = None
    key_id: str | None = None
    runs: int = 0
    tokens_in: int = 0
    tokens_out: int = 0
    cost_usd: float = 0.0


class SessionOut(BaseModel):
    session_id: str | None
    status: str | None
    completed: int
    total: int
    percent: float
    run: RunInfoOut | None = Field(default=None, description="The live run; null while it cannot answer")
    panic: bool = False
    spent_usd: float = 0.0
    spend: list[SpendOut] = []
    keys: list[KeyOut] = []
    recovery_report: str | None = None
    next_command: str = ""
    open_escalations: int = 0
    last_event_id: int = Field(default=0, description="Pass it as ?after= to /api/events to miss nothing")


class TaskRunOut(RunOut):
    worker_id: str = ""
    tokens_in: int | None = None
    tokens_out: int | None = None


class TaskDetailOut(BaseModel):
    task: TaskOut
    description: str = ""
    runs: list[TaskRunOut] = []
    progress: ProgressOut | None = None
    artifacts: list[str] = Field(default=[], description="Paths relative to the session folder")
    log_tail: str = Field(default="", description="The end of the newest attempt's log")
    escalations: list[EscalationOut] = []


class DiffFileOut(BaseModel):
    path: str = Field(description="Relative to the repository's top folder")
    status: str = Field(description="A added, M modified, D deleted, T type changed")
    added: int | None = Field(default=None, description="Lines added; null for a binary file")
    removed: int | None = None


class DiffOut(BaseModel):
    task_id: str
    attempts: list[int] = Field(description="The attempts the diff spans, first to last")
    before: str = Field(description="The git tree before the first of them")
    after: str = Field(description="The git tree after the last (the work tree now, when live)")
    live: bool = Field(description="The last attempt is still running")
    files: list[DiffFileOut]
    added: int
    removed: int
    patch: str | None = Field(default=None, description="The unified diff; null when only the stat was asked for")


class AgentStatsOut(BaseModel):
    backend: str
    role: str
    runs: int
    completed: int
    failed: int
    mean_completion_s: float | None = None
    error_rate: float = Field(description="failed / (completed + failed); 0 when none finished")


class AgentsOut(BaseModel):
    workers: list[WorkerOut] = []
    agents: list[AgentStatsOut] = []
    installed: dict[str, bool] = {}


class SubmitIn(_Strict):
    name: str = Field(min_length=1, max_length=500, description="A one-line title")
    description: str = Field(default="", max_length=100_000)
    priority: Literal["low", "normal", "high", "critical"] = "normal"
    assigned_to: str | None = Field(default=None, max_length=200, description="The role that should do it")
    blocked_by: list[Annotated[str, Field(pattern=TASK_ID_PATTERN)]] = Field(
        default=[], max_length=1000, description="Task ids that must complete first"
    )


class AnswerIn(_Strict):
    choice: str = Field(min_length=1, max_length=5000, description="One of the escalation's options")
