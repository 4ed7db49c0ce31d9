"""Messages between actors, and the work order / result a backend deals in.

Every ask and tell carries one of these; replies to asks are Structs too.
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec

from protocol._base import Message
from protocol.events import Event
from protocol.records import EscalationRow, QueuedWriteRow, TaskRow
from protocol.types import ErrorKind, Priority, TaskStatus

__all__ = [
    "AttemptCrashed",
    "AttemptResult",
    "AwaitCommit",
    "BeginRun",
    "Boot",
    "BridgeEndpoint",
    "BuildDigest",
    "ChildExited",
    "Commit",
    "Committed",
    "Conclude",
    "CreateTasks",
    "Deliverable",
    "Deliverables",
    "Disposition",
    "FinishRun",
    "Flush",
    "GetDeliverables",
    "GetEscalation",
    "GetService",
    "GetState",
    "HandoffOp",
    "HandoffRequest",
    "McpCall",
    "NoticeDropped",
    "Ok",
    "OpenEscalation",
    "OpenRun",
    "Permission",
    "Reconcile",
    "ReconcileApplied",
    "ReconcilePlan",
    "RecordAccepted",
    "RecordAnswer",
    "RecordCancel",
    "RecordCancelRequest",
    "RecordDispatch",
    "RecordEvents",
    "RecordOutcome",
    "RecordProgress",
    "RecordQueuedWrite",
    "RecordStart",
    "ReopenTasks",
    "RestartChild",
    "RunSummary",
    "RunTask",
    "SettleWrite",
    "ShutdownRequest",
    "StateSnapshot",
    "StopWorker",
    "StorageFailed",
    "TaskCancelPlan",
    "TaskResetPlan",
    "Tick",
    "WorkOrder",
    "WorkerFinished",
    "WorkerProgress",
    "WorkerStarted",
]


class Ok(Message, frozen=True):
    """The generic positive reply to an ask that returns nothing else."""


# --- what a backend gets and gives back -------------------------------------------


Permission = Literal["read-only", "workspace-write", "full"]


class BridgeEndpoint(Message, frozen=True):
    """How a worker that speaks MCP reaches the executor's bridge (streamable HTTP).

    ``token`` is the worker bearer token (it opens only the worker-facing tools);
    ``agent_id`` is this attempt's own id, which every worker-facing call carries
    and which the bridge checks against the task the call names.
    """

    url: str  # http://127.0.0.1:PORT/mcp
    token: str
    agent_id: str
    server_name: str = "executor"  # the name the agent sees: tools appear as mcp__executor__...


class McpCall(Message, frozen=True):
    """The one tool call a task of a role on the ``mcp`` backend makes (``server`` is a name in [mcp_servers])."""

    server: str
    tool: str
    arguments: dict[str, Any] = msgspec.field(default_factory=dict)


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
    nice: int = 0  # the agent process's scheduling niceness (added to the executor's)
    upstream_artifacts: tuple[str, ...] = ()
    model: str | None = None
    base_url: str | None = None  # the role-spec's endpoint for OpenAI-compatible backends
    # For agent CLIs: what the agent may do, how long it may go on, where it keeps state.
    permission: Permission = "workspace-write"
    max_turns: int | None = None
    isolate_home: bool = False  # a throwaway HOME and TMPDIR for this attempt
    resume_session: str | None = None  # the agent's own session id from an earlier attempt
    bridge: BridgeEndpoint | None = None  # the executor's MCP bridge, for agents that speak MCP
    # For routed backends: where the Router starts (low/medium/high, a tier name, or 0..1).
    complexity: str = "medium"
    mcp_call: McpCall | None = None  # for the mcp backend: the tool call that is the task
    # Quality gates (the role's verify commands), run in workdir after a completed attempt.
    gates: tuple[tuple[str, ...], ...] = ()
    gate_timeout_s: float = 600.0
    gate_env: tuple[str, ...] = ()  # the executor's variables the gates get besides the allowlist
    worktree: bool = False  # work in a git worktree of its own (made from workdir's repository)


class AttemptResult(Message, frozen=True):
    """How one attempt ended, in the terms the executor acts on."""

    ok: bool
    error_kind: ErrorKind | None = None
    error: str | None = None
    exit_code: int | None = None
    summary: str = ""
    artifacts: tuple[str, ...] = ()  # relative to the session folder
    files_modified: tuple[str, ...] = ()
    # What the worker reported beyond done/failed (consensus_blocked, capability_gap, and a
    # reviewer's changes_requested with its feedback items and, optionally, the task it reviewed).
    outcome: Literal["completed", "failed", "consensus_blocked", "capability_gap", "changes_requested"] = "completed"
    feedback: tuple[str, ...] = ()
    reviewed_task: str | None = None
    severity: str | None = None
    detail: str = ""
    output_tail: str = ""
    duration_s: float = 0.0
    tokens_in: int | None = None
    tokens_out: int | None = None
    tokens_cached: int | None = None
    cost_usd: float | None = None
    cost_estimated: bool = False  # computed from a price table, not reported by the agent
    retry_after_s: float | None = None  # with error_kind "rate_limited"
    model: str | None = None
    key_id: str | None = None  # the key pool's id of the key the attempt used last (never the key)
    agent_session_id: str | None = None  # the CLI's own session, to resume it on a retry
    git_head_before: str | None = None
    git_head_after: str | None = None
    # How many progress lines the executor read from the agent's output (command and demo
    # backends; None for the others): every line counts, the coalesced messages do not matter.
    progress_lines: int | None = None


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
    node: str | None = None  # on a cluster: the node the attempt was placed on


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


class AttemptCrashed(Message, frozen=True):
    """Our own code failed while running an attempt on the Executor's thread (what a
    worker actor's death is for an attempt on a worker): the attempt failed, and is retried."""

    worker_id: str
    task_id: str
    attempt: int
    error: str


# --- supervision and control ----------------------------------------------------------------


class ChildExited(Message, frozen=True):
    """A supervised child stopped; ``abnormal`` when it crashed (or failed to start).

    ``incarnation`` tells a late notice about an earlier instance from the
    current one, so one death is never handled twice.
    """

    name: str
    incarnation: int
    abnormal: bool
    error: str | None = None


class RestartChild(Message, frozen=True):
    name: str
    incarnation: int


class ShutdownRequest(Message, frozen=True):
    reason: str
    graceful: bool = True


class Tick(Message, frozen=True):
    """Sent periodically to actors that act on time (retries, deadlines, flushes)."""


# --- the Session actor: the single writer of state ---------------------------------------


class BeginRun(Message, frozen=True):
    """Open a run: meta says a run is live (an unclean stop is detectable later)."""

    run_id: str
    command: str
    pid: int
    max_workers: int


class StateSnapshot(Message, frozen=True):
    tasks: tuple[TaskRow, ...]
    meta: dict[str, str]
    open_runs: tuple[OpenRun, ...]
    next_run_row_id: int = 1
    open_escalations: tuple[EscalationRow, ...] = ()
    answered_decisions: tuple[EscalationRow, ...] = ()  # the executor's own questions, answered
    agent_sessions: dict[str, str] = msgspec.field(default_factory=dict)  # task id -> latest agent session
    spent_by_task: dict[str, float] = msgspec.field(default_factory=dict)  # USD recorded in runs so far
    queued_writes: tuple[QueuedWriteRow, ...] = ()  # recorded but never handled: a run stopped first


class OpenRun(Message, frozen=True):
    run_row_id: int
    task_id: str
    attempt: int
    pid: int | None
    create_time: float | None
    cancel_requested_by: str | None = None  # the task was being cancelled when the run stopped


class GetState(Message, frozen=True):
    """Ask for a :class:`StateSnapshot`."""


class TaskResetPlan(Message, frozen=True):
    task_id: str
    previous_status: TaskStatus
    reason: str


class TaskCancelPlan(Message, frozen=True):
    """A task that was being cancelled when the previous run stopped: it ends cancelled."""

    task_id: str
    run_row_id: int
    by: str


class ReconcilePlan(Message, frozen=True):
    """What the Reconciler decided; the Session actor applies it in one transaction."""

    run_id: str
    unclean_previous_stop: bool
    created: tuple[TaskRow, ...] = ()
    completed_from_session: tuple[str, ...] = ()
    resets: tuple[TaskResetPlan, ...] = ()
    cancels: tuple[TaskCancelPlan, ...] = ()
    closed_runs: tuple[int, ...] = ()
    killed_pids: tuple[int, ...] = ()
    report_markdown: str | None = None


class ReconcileApplied(Message, frozen=True):
    report_path: str | None


class RecordDispatch(Message, frozen=True):
    """A tell: the Executor numbers run rows itself so dispatch never waits on a commit.

    Idempotent: recording an already recorded run row changes nothing (the
    Executor re-sends them after a Session restart).
    """

    run_row_id: int
    task_id: str
    attempt: int
    worker_id: str
    role: str
    backend: str
    run_id: str
    log_path: str


class RecordStart(Message, frozen=True):
    run_row_id: int
    task_id: str
    attempt: int
    role: str
    pid: int
    create_time: float | None
    node: str | None = None  # the cluster node running it


class RecordProgress(Message, frozen=True):
    task_id: str
    attempt: int
    role: str
    percent: int | None
    note: str


Disposition = Literal["completed", "retry", "failed", "interrupted", "changes_requested"]


class RecordOutcome(Message, frozen=True):
    """How an attempt ended and what the executor decided to do about it."""

    run_row_id: int
    task_id: str
    attempt: int
    role: str
    result: AttemptResult
    disposition: Disposition
    retry_in_s: float | None = None
    unblocked: tuple[str, ...] = ()
    report_text: str = ""
    # With "changes_requested": the task the review sends back, and which round this is.
    sent_back: str | None = None
    review_round: int = 0


class CreateTasks(Message, frozen=True):
    tasks: tuple[TaskRow, ...]
    # task id -> its new blocked_by, for dependants that must now also wait.
    rewire: tuple[tuple[str, tuple[str, ...]], ...] = ()
    write_id: str | None = None  # the queued write this applies: settled in the same transaction


class RecordCancel(Message, frozen=True):
    """A task that was not running is cancelled: it ends failed (kind ``cancelled``)."""

    task_id: str
    reason: str
    by: str
    write_id: str | None = None  # see CreateTasks


class RecordAccepted(Message, frozen=True):
    """The user took a task as done without it completing (answer "accept")."""

    task_id: str
    by: str


class ReopenTasks(Message, frozen=True):
    """Failed tasks go back to pending with a fresh set of attempts."""

    task_ids: tuple[str, ...]
    by: str


class OpenEscalation(Message, frozen=True):
    """Record a question for the user; the reply is its ``EscalationRow`` (id assigned)."""

    issue: str
    options: tuple[str, ...] = ()
    task_id: str | None = None
    opened_by: str = "executor"
    default_choice: str | None = None
    deadline: str | None = None
    holds_task: bool = False


class GetEscalation(Message, frozen=True):
    """Ask for one ``EscalationRow`` (or None)."""

    escalation_id: str


class RecordAnswer(Message, frozen=True):
    """Record the user's choice; the reply is the answered ``EscalationRow`` or ``Refused``."""

    escalation_id: str
    choice: str
    answered_by: str
    write_id: str | None = None  # see CreateTasks


class RecordCancelRequest(Message, frozen=True):
    """A running task is being cancelled (its attempt is being stopped).  Kept on the attempt's
    run row: a run that stops before the attempt ends cancels the task when it resumes, rather
    than running it again."""

    run_row_id: int
    task_id: str
    by: str
    write_id: str | None = None  # see CreateTasks


class RecordQueuedWrite(Message, frozen=True):
    """A queued write, recorded before the Executor handles it (it may be in its inbox when
    the run stops: the next run applies it)."""

    write_id: str
    tool: str
    message_json: str
    queued_at: float


class SettleWrite(Message, frozen=True):
    """How the Executor handled a queued write: its reply (applied) or why not (refused).
    A write already settled (by the record that applied it) stays as it is."""

    write_id: str
    tool: str
    reply_json: str | None = None
    error: str | None = None


class RecordEvents(Message, frozen=True):
    """Log events that change no table (crashes, warnings, shutdown requests)."""

    events: tuple[Event, ...]
    wisdom_issue: str | None = None  # a line appended to wisdom/issues.md
    meta: dict[str, str] = msgspec.field(default_factory=dict)  # run bookkeeping to set in the store


class FinishRun(Message, frozen=True):
    run_id: str
    clean: bool
    session_status: Literal["active", "paused", "completed"] | None = None
    interrupted_tasks: tuple[str, ...] = ()
    summary: RunSummary | None = None


class Flush(Message, frozen=True):
    """Write the team-session.json projection now if anything changed."""


class Commit(Message, frozen=True):
    """Told to the Session actor at the end of an Executor turn: commit what came before,
    then tell the Executor :class:`Committed` with the same ``turn``.  The Executor goes on
    meanwhile; what the turn makes visible waits for the answer."""

    turn: int


class Committed(Message, frozen=True):
    turn: int


class AwaitCommit(Message, frozen=True):
    """Asked by the Executor at the end of a mailbox turn: the reply (:class:`Ok`) comes only
    once everything told before it is committed (one group commit for the whole turn), so
    what the turn made visible (a started process, a "done" line, a notice) is durable."""


class GetDeliverables(Message, frozen=True):
    """Ask for :class:`Deliverables`: every completed task's artifacts and role."""


class Deliverable(Message, frozen=True):
    task_id: str
    role: str
    artifacts: tuple[str, ...]


class Deliverables(Message, frozen=True):
    items: tuple[Deliverable, ...]


class RunSummary(Message, frozen=True):
    run_id: str
    completed: int
    total: int
    failed: tuple[str, ...] = ()
    blocked: tuple[str, ...] = ()
    duration_s: float = 0.0
    interrupted: bool = False
    escalated: str | None = None
    budget_stopped: bool = False


class Reconcile(Message, frozen=True):
    """Ask the Reconciler for a :class:`ReconcilePlan` given the stored state."""

    run_id: str
    snapshot: StateSnapshot


HandoffOp = Literal["create", "prep", "claim", "review", "complete", "fail", "release", "rollback"]


class HandoffRequest(Message, frozen=True):
    """A person's (or an IDE agent's) step on a task: ``executor task ...`` or the MCP tools.

    The Executor fills ``manual_roles``, ``prefix`` and ``max_attempts`` before the Session
    actor carries it out (``session.handoff``)."""

    op: HandoffOp
    by: str
    task_id: str = ""
    agent: str = ""
    reason: str = ""
    title: str = ""
    role: str = ""
    priority: Priority = "P1"
    blocked_by: tuple[str, ...] = ()
    description: str = ""
    details: dict[str, Any] = msgspec.field(default_factory=dict)
    manual_roles: tuple[str, ...] = ()
    prefix: str = ""
    max_attempts: int = 3
    agent_capabilities: tuple[str, ...] | None = None  # from agents.yaml; None: it may take anything


# --- the Executor's own mailbox ------------------------------------------------------------


class Boot(Message, frozen=True):
    """Start the run: reconcile, then dispatch (the Executor tells it to itself)."""


class Conclude(Message, frozen=True):
    """The main thread's completion action: record it, then stop the children."""

    session_status: Literal["active", "paused", "completed"] | None


class GetService(Message, frozen=True):
    """Ask for the live ref of a service child (``router``, ``keypool``, ...), or None.

    In-process only: the reply is an actor ref.
    """

    name: str


class NoticeDropped(Message, frozen=True):
    """The Notifier gave up on a notice (told by its sender thread)."""

    channel: str
    kind: str
    reason: str


class BuildDigest(Message, frozen=True):
    """Ask for the periodic digest: a ``protocol.notify.Notice``, or None when nothing changed."""


class StorageFailed(Message, frozen=True):
    """The Session actor could not write: the disk is full, read-only or failing.

    Its transaction was rolled back (nothing recorded is lost); the run stops."""

    problem: str  # "the disk is full", "the file system is read-only", ...
    where: str  # the file it was writing
