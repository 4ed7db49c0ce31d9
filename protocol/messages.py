"""Messages between actors, and the work order / result a backend deals in.

Every ask and tell carries one of these; replies to asks are Structs too.
"""

from __future__ import annotations

from typing import Literal

from protocol._base import Message
from protocol.types import ErrorKind

__all__ = [
    "AttemptResult",
    "ChildExited",
    "Ok",
    "RestartChild",
    "RunTask",
    "ShutdownRequest",
    "StopWorker",
    "Tick",
    "WorkOrder",
    "WorkerFinished",
    "WorkerProgress",
    "WorkerStarted",
]


class Ok(Message, frozen=True):
    """The generic positive reply to an ask that returns nothing else."""


# --- what a backend gets and gives back -------------------------------------------


class WorkOrder(Message, frozen=True):
    """Everything a backend needs to run one attempt of one task.

    Paths are absolute strings.  ``command`` is an argv template (``backend:
    command``) whose placeholders ``{task_id}``, ``{prompt_file}``,
    ``{session}``, ``{artifacts}`` and ``{role}`` are substituted per element.
    """

    task_id: str
    attempt: int
    role: str
    backend: str
    session_dir: str
    artifacts_dir: str
    workdir: str
    prompt_file: str
    report_file: str  # where the worker may write its JSON report
    log_path: str
    run_id: str
    marker: str  # set in the worker's environment so orphans can be found after a crash
    command: tuple[str, ...] = ()
    timeout_s: float | None = None
    hang_timeout_s: float | None = None
    grace_s: float = 5.0
    upstream_artifacts: tuple[str, ...] = ()
    model: str | None = None


class AttemptResult(Message, frozen=True):
    """How one attempt ended, in the terms the executor acts on."""

    ok: bool
    error_kind: ErrorKind | None = None
    error: str | None = None
    exit_code: int | None = None
    summary: str = ""
    artifacts: tuple[str, ...] = ()  # relative to the session folder
    files_modified: tuple[str, ...] = ()
    # What the worker reported beyond done/failed (consensus_blocked, capability_gap).
    outcome: Literal["completed", "failed", "consensus_blocked", "capability_gap"] = "completed"
    severity: str | None = None
    detail: str = ""
    output_tail: str = ""
    duration_s: float = 0.0
    tokens_in: int | None = None
    tokens_out: int | None = None
    cost_usd: float | None = None


# --- executor <-> workers ---------------------------------------------------------------


class RunTask(Message, frozen=True):
    order: WorkOrder


class StopWorker(Message, frozen=True):
    reason: str = "done"


class WorkerStarted(Message, frozen=True):
    worker_id: str
    task_id: str
    attempt: int
    pid: int
    create_time: float | None
    log_path: str


class WorkerProgress(Message, frozen=True):
    worker_id: str
    task_id: str
    attempt: int
    percent: int | None = None
    note: str = ""


class WorkerFinished(Message, frozen=True):
    worker_id: str
    task_id: str
    attempt: int
    result: AttemptResult


# --- supervision and control ----------------------------------------------------------------


class ChildExited(Message, frozen=True):
    """A supervised child stopped; ``abnormal`` when it crashed (or failed to start)."""

    name: str
    abnormal: bool
    error: str | None = None


class RestartChild(Message, frozen=True):
    name: str


class ShutdownRequest(Message, frozen=True):
    reason: str
    graceful: bool = True


class Tick(Message, frozen=True):
    """Sent periodically to actors that act on time (retries, deadlines, flushes)."""
