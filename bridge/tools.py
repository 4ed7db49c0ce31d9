"""The bridge's tools: each call becomes one protocol message to the right actor.

Tools are plain ``def``s: the SDK runs them on worker threads, where blocking
on a pykka ask (with a timeout) never holds up the event loop or the actor
tree.  Every tool answers at once — work that takes time returns an id to
poll.  Refusals come back as tool errors naming the argument; nothing a
client sends can crash the server or the tree.

Reads of durable state (a task, the task list, the check report) go straight
to the store through a read-only connection: they keep working while the
Executor is busy, and they cost the tree nothing.
"""

from __future__ import annotations

import inspect
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec
import pykka
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from pydantic import Field

from bridge import panic
from bridge.auth import WORKER_TOOLS, Caller, Tokens, caller_from_headers
from bridge.models import (
    CancelOut,
    CheckOut,
    EscalationOut,
    EscalationsOut,
    FleetOut,
    KeyAddedOut,
    KeyOut,
    McpServerOut,
    ModelChoiceOut,
    NextOut,
    PanicOut,
    ProgressOut,
    ReportOut,
    ResumeOut,
    RunOut,
    SubmittedOut,
    TaskOut,
    TasksOut,
    TaskStatusOut,
    WorkerOut,
)
from protocol.bridge import (
    AnswerEscalation,
    Cancelled,
    CancelTask,
    EscalateDecision,
    EscalationRecord,
    FleetSnapshot,
    GetFleet,
    Refused,
    Reopened,
    ReopenFailed,
    ReportBlocker,
    Reported,
    ReportProgress,
    SubmitTask,
    TaskAccepted,
)
from protocol.events import TaskProgress
from protocol.ids import MAX_TASK_ID, TASK_ID_PATTERN, TASK_ID_RULE
from protocol.keys import AddKey, GetKeyStates, KeyAdded, KeyStates
from protocol.mcp_client import GetMcpServers, McpServers
from protocol.messages import GetService, HandoffRequest
from protocol.records import EscalationRow, RunRow, TaskRow
from protocol.routing import ForgetTask, ModelChoice, SelectModel
from protocol.types import TASK_STATUSES
from session.assignment import Assignment, assign_in_session
from session.store import StoreError, StoreReader

__all__ = [
    "PRIORITY_OF",
    "BridgeContext",
    "DuplicateTool",
    "NotRunnable",
    "RefusedByRun",
    "ToolTable",
    "Unavailable",
    "build_server",
    "fleet_out",
    "server_version",
    "task_out",
    "task_view",
]

ASK_TIMEOUT_S = 10.0

#: The tool's priority words -> the session's priorities (P0 runs first).
PRIORITY_OF: dict[str, Literal["P0", "P1", "P2"]] = {"critical": "P0", "high": "P0", "normal": "P1", "low": "P2"}

TaskId = Annotated[
    str,
    Field(
        min_length=1,
        max_length=MAX_TASK_ID,
        pattern=TASK_ID_PATTERN,
        description=f"A task id, e.g. MCP-001 or IMPL-002 ({TASK_ID_RULE})",
    ),
]
AgentId = Annotated[str, Field(min_length=1, max_length=200, description="The agent id given in your prompt")]


class DuplicateTool(Exception):
    """Two tools were registered under one name: a programming error, refused at startup."""


class Unavailable(ToolError):
    """The tree cannot answer now (starting, busy, or gone): the same request may work later."""


class NotRunnable(ToolError):
    """The session cannot run (its preflight failed): tools that need the run say why and the fix."""

    def __init__(self, problem: str) -> None:
        super().__init__(
            f"this session cannot run until this is fixed (then restart the MCP server): {problem}. "
            "Reads, answers and get_fleet_status still work."
        )


class RefusedByRun(ToolError):
    """The run refused the request; ``refused`` says why and names the argument at fault."""

    def __init__(self, refused: Refused) -> None:
        super().__init__(f"{refused.argument}: {refused.reason}" if refused.argument else refused.reason)
        self.refused = refused


@dataclass
class BridgeContext:
    """What the tools need.  ``executor`` is late-bound: the HTTP server may start first."""

    folder: Path
    executor: Callable[[], pykka.ActorRef[Any] | None]
    tokens: Tokens | None = None  # None: stdio only, the caller is the owner
    ask_timeout_s: float = ASK_TIMEOUT_S
    installed_backends: Callable[[], dict[str, bool]] = dict
    #: Why the session cannot run (``executor mcp`` serving without a tree), or None.
    unusable: str | None = None
    _local: threading.local = field(default_factory=threading.local)

    # --- talking to the tree ------------------------------------------------------------

    def ask(self, message: Any, timeout_s: float | None = None) -> Any:
        if self.unusable is not None:
            raise NotRunnable(self.unusable)
        ref = self.executor()
        if ref is None:
            raise Unavailable("the executor is still starting; try again in a moment")
        return self._ask_ref(ref, message, "the executor", timeout_s)

    def _ask_ref(self, ref: pykka.ActorRef[Any], message: Any, who: str, timeout_s: float | None = None) -> Any:
        timeout = timeout_s or self.ask_timeout_s
        deadline = time.monotonic() + timeout
        while True:
            try:
                reply = ref.ask(message, timeout=max(0.1, deadline - time.monotonic()))
            except pykka.Timeout:
                raise Unavailable(f"{who} did not answer within {timeout:g}s (busy); try again") from None
            except pykka.ActorDeadError:
                raise Unavailable(f"{who} is not running (the run has ended or is restarting it)") from None
            # The run is still booting: the same request succeeds in a moment, so wait for it here.
            if not (isinstance(reply, Refused) and reply.retry_later and time.monotonic() < deadline):
                break
            time.sleep(0.05)
        if isinstance(reply, Refused):
            raise RefusedByRun(reply)
        return reply

    def service(self, name: str) -> pykka.ActorRef[Any] | None:
        ref: pykka.ActorRef[Any] | None = self.ask(GetService(name=name))  # GetService's reply
        return ref

    # --- reading the store -------------------------------------------------------------

    def reader(self) -> StoreReader:
        """A read-only connection per tool thread (sqlite3 connections are not shared)."""
        reader: StoreReader | None = getattr(self._local, "reader", None)
        if reader is not None and reader.stale:  # opened before the run's first write
            reader.close()
            reader = None
        if reader is None:
            try:
                reader = StoreReader.open(self.folder)
            except StoreError as error:
                raise ToolError(str(error)) from None
            if reader is None:
                raise ToolError("this session has no state yet (it has never run)")
            self._local.reader = reader
        return reader


class ToolTable:
    """Registers tools on a server, refusing a second tool with a name already taken."""

    def __init__(self, server: MCPServer) -> None:
        self.server = server
        self.names: set[str] = set()

    def add(self, fn: Callable[..., Any], name: str | None = None, description: str | None = None) -> None:
        tool_name = name or fn.__name__
        if tool_name in self.names:
            raise DuplicateTool(
                f"two MCP tools are named '{tool_name}' ({fn.__module__}.{fn.__qualname__} is the second); "
                "rename one of them"
            )
        self.names.add(tool_name)
        self.server.add_tool(fn, name=tool_name, description=description or inspect.cleandoc(fn.__doc__ or ""))


def _guard(context: BridgeContext, ctx: Context, tool: str, mutating: bool) -> Caller:
    caller = caller_from_headers(ctx.headers, context.tokens)
    if caller is None:
        raise ToolError("unauthorized: send the session's bearer token")
    if caller == "worker" and tool not in WORKER_TOOLS:
        raise ToolError(f"{tool} is not open to workers (allowed: {', '.join(sorted(WORKER_TOOLS))})")
    if mutating and panic.is_on(context.folder):
        raise ToolError(
            f"the panic switch is on ({panic.reason(context.folder) or 'no reason given'}): {tool} is refused; "
            f"reads still work. Clear it with `executor panic off --session {context.folder}`."
        )
    return caller


def _mcp_servers(context: BridgeContext) -> list[McpServerOut]:
    """The configured MCP servers as the McpClients service last saw them (none configured: [])."""
    service = context.service("mcp-clients")
    if service is None:
        return []
    servers: McpServers = context._ask_ref(service, GetMcpServers(), "the MCP clients service")
    return [McpServerOut(**msgspec.structs.asdict(state)) for state in servers.items]


def task_out(row: TaskRow) -> TaskOut:
    return TaskOut(
        id=row.id,
        name=row.subject,
        owner=row.owner,
        status=row.status,
        priority=row.priority,
        blocked_by=list(row.blocked_by),
        attempts=row.attempts,
        max_attempts=row.max_attempts,
        source=row.source,
        last_error=row.last_error,
        last_error_kind=row.last_error_kind,
        created_at=row.created_at,
        updated_at=row.updated_at,
        completed_at=row.completed_at,
        agent=row.agent,
    )


def _escalation_out(row: EscalationRow) -> EscalationOut:
    return EscalationOut(**msgspec.structs.asdict(row))


def _assign(context: BridgeContext, text: str) -> Assignment:
    """The role for a task submitted without one (see :mod:`session.assignment`)."""
    from session.agents import AgentsFileError, load_agents  # noqa: PLC0415
    from session.loader import inspect_session  # noqa: PLC0415 - loads the role-specs; only here

    session, problems = inspect_session(context.folder)
    if session is None:
        why = problems[0] if problems else "unreadable"
        raise ToolError(f"assigned_to: the session cannot be read to choose a role ({why}); name one")
    try:
        agents = load_agents(context.folder)
    except AgentsFileError as error:
        raise ToolError(str(error)) from None
    return assign_in_session(session, text, agents)


def _answer_outside(context: BridgeContext, escalation_id: str, choice: str) -> EscalationOut:
    from session.escalations import answer_from_outside  # noqa: PLC0415 - only a session that cannot run

    recorded, message = answer_from_outside(context.folder, escalation_id, choice, "mcp")
    if not recorded:
        raise ToolError(message)
    row = next((row for row in context.reader().escalations(None) if row.id == escalation_id), None)
    if row is None:  # recorded moments ago: only a folder swapped underneath us gets here
        raise ToolError(message)
    return _escalation_out(row)


@dataclass(frozen=True)
class TaskView:
    """One task as the store has it: its row, every attempt, newest progress, artifacts."""

    row: TaskRow
    runs: list[RunRow]
    progress: ProgressOut | None
    artifacts: list[str]


def task_view(context: BridgeContext, task_id: str) -> TaskView:
    reader = context.reader()
    row = reader.task(task_id)
    if row is None:
        raise ToolError(f"task_id: no task '{task_id}' in this session (list_tasks shows them)")
    latest = reader.latest_progress(task_id)
    progress = None
    if latest is not None and isinstance(latest[1], TaskProgress):
        progress = ProgressOut(percent=latest[1].percent, note=latest[1].note, at=latest[0])
    return TaskView(row, reader.runs(task_id), progress, list(reader.latest_artifacts(task_id)))


def task_status_out(context: BridgeContext, task_id: str) -> TaskStatusOut:
    """One task from the store: its row, runs, newest progress and artifacts."""
    view = task_view(context, task_id)
    return TaskStatusOut(
        task=task_out(view.row),
        description=view.row.description,
        runs=[RunOut.model_validate(run, from_attributes=True) for run in view.runs],
        progress=view.progress,
        artifacts=view.artifacts,
    )


def _unusable_fleet(context: BridgeContext, problem: str) -> FleetOut:
    """No tree runs: what the store says of the tasks, and the problems that keep the run from starting."""
    counts = dict.fromkeys(TASK_STATUSES, 0)
    try:
        for row in context.reader().tasks():
            counts[row.status] = counts.get(row.status, 0) + 1
    except ToolError:
        pass  # a session that never ran has no tasks in the store yet
    problems = [line.strip() for line in problem.splitlines() if line.strip()]
    if len(problems) > 1 and problems[0].endswith(":"):
        problems = problems[1:]  # the heading ("cannot run this session:") says nothing by itself
    return FleetOut(
        run_id="",
        state="unusable",
        max_workers=0,
        backends_installed=context.installed_backends(),
        tasks_by_status=counts,
        problems=problems,
        panic=panic.is_on(context.folder),
    )


def fleet_out(context: BridgeContext) -> FleetOut:
    """The live fleet from the Executor, with the key pool and the MCP servers (no secrets)."""
    if context.unusable is not None:
        return _unusable_fleet(context, context.unusable)
    snapshot: FleetSnapshot = context.ask(GetFleet())
    keys: list[KeyOut] = []
    keypool = context.service("keypool")
    if keypool is not None:
        states: KeyStates = context._ask_ref(keypool, GetKeyStates(), "the key pool")
        keys = [KeyOut(**msgspec.structs.asdict(state)) for state in states.items]
    return FleetOut(
        run_id=snapshot.run_id,
        state=snapshot.state,
        max_workers=snapshot.max_workers,
        workers=[WorkerOut(**msgspec.structs.asdict(worker)) for worker in snapshot.workers],
        actors=list(snapshot.actors),
        backends_in_use=list(snapshot.backends),
        backends_installed=context.installed_backends(),
        tasks_by_status={status: snapshot.tasks_by_status.get(status, 0) for status in TASK_STATUSES},
        session_spent_usd=snapshot.session_spent_usd,
        keys=keys,
        mcp_servers=_mcp_servers(context),
        panic=panic.is_on(context.folder),
    )


def server_version() -> str:
    """The installed distribution's version (what clients see in the handshake)."""
    try:
        return version("team-executor")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "0+unknown"


def build_server(context: BridgeContext) -> MCPServer:
    """The MCP server with every tool registered (raises :class:`DuplicateTool`)."""
    server = MCPServer(
        name="team-executor",
        version=server_version(),
        instructions=(
            "Drive a team-executor session: submit tasks, read their status, watch the fleet, answer "
            "the questions the pipeline asks. Every tool answers at once; poll get_task_status for progress."
        ),
        warn_on_duplicate_tools=False,  # ToolTable refuses duplicates outright
        log_level="WARNING",  # the SDK configures the root logger with this level
    )
    table = ToolTable(server)

    # --- tasks -------------------------------------------------------------------------

    def submit_task(
        name: Annotated[str, Field(min_length=1, max_length=500, description="A one-line title")],
        ctx: Context,
        description: Annotated[str, Field(max_length=100_000)] = "",
        priority: Literal["low", "normal", "high", "critical"] = "normal",
        assigned_to: Annotated[
            str | None,
            Field(description="The role that should do it; left out, the role is chosen by capability"),
        ] = None,
        blocked_by: Annotated[list[TaskId] | None, Field(description="Task ids that must complete first")] = None,
    ) -> SubmittedOut:
        """Add a task to the running pipeline; it is dispatched when its blockers are done.

        Returns its id and which role takes it and why: without assigned_to, the role whose
        capabilities match the task's words, else the session's intake role."""
        _guard(context, ctx, "submit_task", mutating=True)
        if context.unusable is not None:
            raise NotRunnable(context.unusable)
        if assigned_to is None:
            chosen = _assign(context, f"{name}\n{description}")
            assigned_to, why = chosen.role, chosen.reason
        else:
            why = "assigned_to named it"
        accepted: TaskAccepted = context.ask(
            SubmitTask(
                name=name,
                description=description,
                priority=PRIORITY_OF[priority],
                assigned_to=assigned_to,
                blocked_by=tuple(blocked_by or ()),
            )
        )
        task = task_out(accepted.task)
        return SubmittedOut(**task.model_dump(), assignment=f"{task.owner}: {why}")

    def get_task_status(task_id: TaskId, ctx: Context) -> TaskStatusOut:
        """One task: its status, attempts, latest progress and artifacts."""
        _guard(context, ctx, "get_task_status", mutating=False)
        return task_status_out(context, task_id)

    def list_tasks(
        ctx: Context,
        status: Literal["pending", "in_progress", "review", "completed", "failed"] | None = None,
        owner: Annotated[str | None, Field(description="Only this role's tasks")] = None,
    ) -> TasksOut:
        """The session's tasks, optionally only one status or one role's."""
        _guard(context, ctx, "list_tasks", mutating=False)
        rows = context.reader().tasks()
        chosen = [
            row for row in rows if (status is None or row.status == status) and (owner is None or row.owner == owner)
        ]
        chosen.sort(key=lambda row: row.id)
        return TasksOut(tasks=[task_out(row) for row in chosen], total=len(chosen))

    def cancel_task(task_id: TaskId, ctx: Context) -> CancelOut:
        """Cancel a pending or running task (a running agent is stopped). It ends failed, kind 'cancelled'."""
        _guard(context, ctx, "cancel_task", mutating=True)
        cancelled: Cancelled = context.ask(CancelTask(task_id=task_id, by="mcp"))
        note = "the agent is being stopped" if cancelled.was == "in_progress" else "it will not run"
        return CancelOut(task_id=cancelled.task_id, was=cancelled.was, note=note)

    def resume_session(ctx: Context) -> ResumeOut:
        """Give every failed task a new set of attempts; what they blocked can move again."""
        _guard(context, ctx, "resume_session", mutating=True)
        reopened: Reopened = context.ask(ReopenFailed(by="mcp"))
        note = f"{len(reopened.task_ids)} task(s) reopened" if reopened.task_ids else "no failed task to reopen"
        return ResumeOut(reopened=list(reopened.task_ids), note=note)

    def check_session(ctx: Context) -> CheckOut:
        """Where the pipeline stands: progress, what is ready, running, failed or blocked, what to do next."""
        _guard(context, ctx, "check_session", mutating=False)
        from session.report import build_report  # noqa: PLC0415 - the report pulls in the loader; only here

        try:
            report = build_report(context.folder)
        except StoreError as error:
            raise ToolError(str(error)) from None
        return CheckOut(
            session_id=report.session_id,
            status=report.status,
            completed=report.progress.completed,
            total=report.progress.total,
            percent=report.progress.percent,
            ready=report.ready,
            failed=[task.id for task in report.failed],
            blocked=[task.id for task in report.blocked],
            running=[worker.task_id for worker in report.active_workers],
            next_command=report.next_command,
            recovery_report=report.recovery_report,
            report=msgspec.to_builtins(report),
        )

    # --- workers report back -------------------------------------------------------------

    def report_progress(
        task_id: TaskId,
        pct: Annotated[int, Field(ge=0, le=100, description="How far along, 0..100")],
        note: Annotated[str, Field(max_length=2000)],
        agent_id: AgentId,
        ctx: Context,
    ) -> ReportOut:
        """For workers: say how far your own task is."""
        _guard(context, ctx, "report_progress", mutating=True)
        reported: Reported = context.ask(ReportProgress(task_id=task_id, agent_id=agent_id, percent=pct, note=note))
        return ReportOut(task_id=reported.task_id)

    def report_blocker(
        task_id: TaskId,
        detail: Annotated[str, Field(min_length=1, max_length=5000)],
        severity: Literal["low", "medium", "high", "critical"],
        agent_id: AgentId,
        ctx: Context,
    ) -> ReportOut:
        """For workers: say what blocks your own task. high/critical opens a question for the user."""
        _guard(context, ctx, "report_blocker", mutating=True)
        reported: Reported = context.ask(
            ReportBlocker(task_id=task_id, agent_id=agent_id, detail=detail, severity=severity)
        )
        return ReportOut(task_id=reported.task_id, escalation_id=reported.escalation_id)

    # --- questions for the user -------------------------------------------------------------

    def escalate_decision(
        issue: Annotated[str, Field(min_length=1, max_length=5000, description="The question")],
        options: Annotated[list[str], Field(min_length=1, max_length=20, description="The choices")],
        ctx: Context,
        task_id: Annotated[str | None, Field(description="The task the question is about")] = None,
        hold: Annotated[bool, Field(description="A pending task_id (and what depends on it) waits")] = True,
        timeout_s: Annotated[float | None, Field(gt=0, description="Then default_choice is taken")] = None,
        default_choice: str | None = None,
    ) -> EscalationOut:
        """Ask the user to decide. Returns an id at once; the answer comes through answer_escalation.

        Only the task it is about waits (with hold), the rest of the pipeline goes on."""
        caller = _guard(context, ctx, "escalate_decision", mutating=True)
        if any(not option.strip() for option in options):
            raise ToolError("options: every option needs some text")
        record: EscalationRecord = context.ask(
            EscalateDecision(
                issue=issue,
                options=tuple(options),
                task_id=task_id,
                opened_by=f"mcp:{caller}",
                hold=hold,
                timeout_s=timeout_s,
                default_choice=default_choice,
            )
        )
        return _escalation_out(record.escalation)

    def answer_escalation(
        id: Annotated[str, Field(min_length=1, description="The escalation id, e.g. ESC-001")],
        choice: Annotated[str, Field(min_length=1)],
        ctx: Context,
    ) -> EscalationOut:
        """Answer an open question with one of its options."""
        _guard(context, ctx, "answer_escalation", mutating=True)
        if context.unusable is not None:  # no tree here: the store (or a run elsewhere) takes it
            return _answer_outside(context, id, choice)
        record: EscalationRecord = context.ask(AnswerEscalation(escalation_id=id, choice=choice, answered_by="mcp"))
        return _escalation_out(record.escalation)

    def list_escalations(ctx: Context, status: Literal["open", "answered"] | None = None) -> EscalationsOut:
        """The questions for the user, open or answered."""
        _guard(context, ctx, "list_escalations", mutating=False)
        return EscalationsOut(escalations=[_escalation_out(row) for row in context.reader().escalations(status)])

    # --- the fleet, models and keys ---------------------------------------------------------

    def get_fleet_status(ctx: Context) -> FleetOut:
        """Actors, running workers (pid, elapsed, backend, model), backends, MCP servers, key pool (no secrets).

        When the session cannot run (state `unusable`), `problems` says why, each with its fix."""
        _guard(context, ctx, "get_fleet_status", mutating=False)
        return fleet_out(context)

    def add_api_key(
        provider: Annotated[str, Field(min_length=1, max_length=64, description="e.g. openai, anthropic")],
        key: Annotated[str, Field(min_length=8, max_length=4096, description="The API key; never echoed back")],
        ctx: Context,
        tier: Annotated[str | None, Field(description="FREE | STANDARD | PREMIUM | CRITICAL")] = None,
    ) -> KeyAddedOut:
        """Add an API key to the running key pool (and the encrypted key store). Only its last 4 are shown."""
        _guard(context, ctx, "add_api_key", mutating=True)
        from session.secret import Secret  # noqa: PLC0415 - config models are heavy; only here

        keypool = context.service("keypool")
        if keypool is None:
            raise ToolError("this run has no key pool")
        added = context._ask_ref(
            keypool, AddKey(provider=provider, secret=Secret(provider, key), tier=tier), "the key pool"
        )
        if not isinstance(added, KeyAdded):
            raise ToolError(f"key: {getattr(added, 'reason', 'refused')}")
        return KeyAddedOut(
            key_id=added.key_id,
            provider=added.provider,
            last4=added.last4,
            persisted=added.persisted,
            warning=added.warning,
        )

    def select_model(
        task_complexity: Annotated[
            str, Field(description="low | medium | high, a tier (FREE..CRITICAL), or a number 0..1")
        ],
        ctx: Context,
        force_model: Annotated[str | None, Field(description="A registry model that wins over the rest")] = None,
    ) -> ModelChoiceOut:
        """Which model the router would pick for work of this complexity (CRITICAL needs the user's approval)."""
        _guard(context, ctx, "select_model", mutating=False)
        router = context.service("router")
        if router is None:
            raise ToolError("this run has no router")
        probe_id = f"mcp-select-{threading.get_ident()}"
        try:
            choice = context._ask_ref(
                router,
                SelectModel(task_id=probe_id, complexity=task_complexity, force_model=force_model),
                "the router",
            )
        finally:
            router.tell(ForgetTask(task_id=probe_id))
        if not isinstance(choice, ModelChoice):
            raise ToolError(f"task_complexity/force_model: {getattr(choice, 'reason', 'no model')}")
        return ModelChoiceOut(
            model=choice.model,
            tier=choice.tier,
            backend=choice.backend,
            provider=choice.provider,
            needs_approval=choice.needs_approval,
            reason=choice.reason,
        )

    def set_panic(on: bool, ctx: Context) -> PanicOut:
        """The panic switch: on, every mutating tool is refused (reads keep working) until it is off."""
        _guard(context, ctx, "set_panic", mutating=False)
        changed = panic.switch(context.folder, on, by="mcp")
        state = "on" if on else "off"
        return PanicOut(panic=on, changed=changed, note=f"panic is {state}" + ("" if changed else " (it already was)"))

    # --- handoff: manual tasks taken by people and IDE agents -------------------------------

    def _handoff(ctx: Context, tool: str, request: HandoffRequest) -> TaskOut:
        _guard(context, ctx, tool, mutating=True)
        return task_out(context.ask(request))

    def task_create(
        title: Annotated[str, Field(min_length=1, max_length=500)],
        role: Annotated[str, Field(min_length=1, description="The role whose task it is")],
        ctx: Context,
        priority: Literal["P0", "P1", "P2"] = "P1",
        blocked_by: list[TaskId] | None = None,
        description: Annotated[str, Field(max_length=100_000)] = "",
    ) -> TaskOut:
        """Create a task of a role (a manual role's tasks wait for someone to claim them)."""
        request = HandoffRequest(
            op="create",
            by="mcp",
            title=title,
            role=role,
            priority=priority,
            blocked_by=tuple(blocked_by or ()),
            description=description,
        )
        return _handoff(ctx, "task_create", request)

    def task_prep(
        task_id: TaskId,
        ctx: Context,
        goal: str | None = None,
        acceptance_criteria: list[str] | None = None,
        definition_of_ready: list[str] | None = None,
        definition_of_done: list[str] | None = None,
        files_affected: list[str] | None = None,
        implementation_notes: str | None = None,
        capabilities: list[str] | None = None,
    ) -> TaskOut:
        """Prepare a task for handoff; a field left out keeps its value."""
        given = {
            "goal": goal,
            "acceptance_criteria": acceptance_criteria,
            "definition_of_ready": definition_of_ready,
            "definition_of_done": definition_of_done,
            "files_affected": files_affected,
            "implementation_notes": implementation_notes,
            "capabilities": capabilities,
        }
        changes = {key: value for key, value in given.items() if value is not None}
        return _handoff(ctx, "task_prep", HandoffRequest(op="prep", by="mcp", task_id=task_id, details=changes))

    def task_claim(task_id: TaskId, agent: AgentId, ctx: Context) -> TaskOut:
        """Take a ready task of a manual role: it is yours (in progress) until you hand it on."""
        return _handoff(ctx, "task_claim", HandoffRequest(op="claim", by="mcp", task_id=task_id, agent=agent))

    def task_review(task_id: TaskId, ctx: Context) -> TaskOut:
        """Hand a claimed task in for review (what depends on it still waits)."""
        return _handoff(ctx, "task_review", HandoffRequest(op="review", by="mcp", task_id=task_id))

    def task_complete(task_id: TaskId, ctx: Context) -> TaskOut:
        """Mark a claimed task done: what waited on it goes on."""
        return _handoff(ctx, "task_complete", HandoffRequest(op="complete", by="mcp", task_id=task_id))

    def task_fail(
        task_id: TaskId, reason: Annotated[str, Field(min_length=1, max_length=2000)], ctx: Context
    ) -> TaskOut:
        """Mark a claimed task failed, with the reason."""
        return _handoff(ctx, "task_fail", HandoffRequest(op="fail", by="mcp", task_id=task_id, reason=reason))

    def task_next(agent: AgentId, ctx: Context) -> NextOut:
        """The next task this agent should do, and why."""
        _guard(context, ctx, "task_next", mutating=False)
        from session.agents import AgentsFileError, capabilities_of  # noqa: PLC0415
        from session.handoff import choose_next  # noqa: PLC0415

        snapshot: FleetSnapshot = context.ask(GetFleet())
        try:
            capabilities = capabilities_of(context.folder, agent)
        except AgentsFileError as error:
            raise ToolError(str(error)) from None
        row, why = choose_next(context.reader().tasks(), agent, snapshot.manual_roles, capabilities)
        return NextOut(task_id=row.id if row else None, why=why)

    for tool in (
        submit_task,
        get_task_status,
        list_tasks,
        cancel_task,
        resume_session,
        check_session,
        report_progress,
        report_blocker,
        escalate_decision,
        answer_escalation,
        list_escalations,
        get_fleet_status,
        add_api_key,
        select_model,
        set_panic,
        task_create,
        task_prep,
        task_claim,
        task_review,
        task_complete,
        task_fail,
        task_next,
    ):
        table.add(tool)
    return server
