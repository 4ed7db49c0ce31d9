"""What every tool shares: the context (asks to the tree, read-only store access), the errors
tools raise, the caller check, and the converters from protocol records to the tool models.

Reads of durable state (a task, the task list, the check report) go straight
to the store through a read-only connection: they keep working while the
Executor is busy, and they cost the tree nothing.
"""

import inspect
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Annotated, Any, Literal, Protocol

import msgspec
import pykka
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from pydantic import Field

from bridge import panic
from bridge.auth import WORKER_TOOLS, Caller, Tokens, caller_from_headers
from bridge.models import (
    EscalationOut,
    FleetOut,
    KeyOut,
    McpServerOut,
    ProgressOut,
    RunOut,
    TaskOut,
    TaskStatusOut,
    WorkerOut,
)
from protocol.bridge import (
    FleetSnapshot,
    GetFleet,
    Refused,
)
from protocol.events import TaskProgress
from protocol.ids import MAX_TASK_ID, TASK_ID_PATTERN, TASK_ID_RULE
from protocol.keys import GetKeyStates, KeyStates
from protocol.mcp_client import GetMcpServers, McpServers
from protocol.messages import GetService
from protocol.records import EscalationRow, RunRow, TaskRow
from protocol.types import TASK_STATUSES
from session.assignment import Assignment, assign_in_session
from session.store import StoreError, StoreReader

__all__ = [
    "ASK_TIMEOUT_S",
    "PRIORITY_OF",
    "ActorLink",
    "AgentId",
    "BridgeContext",
    "DuplicateTool",
    "NotRunnable",
    "Recalled",
    "RefusedByRun",
    "TaskId",
    "TaskView",
    "ToolTable",
    "Unavailable",
    "answer_outside",
    "assign",
    "escalation_out",
    "fleet_out",
    "guard",
    "server_version",
    "task_out",
    "task_status_out",
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


class ActorLink(Protocol):
    """What the tools need of an actor: a ``pykka.ActorRef`` in the run's process, or its stand-in
    in the bridge's own process (:class:`bridge.remote.RemoteRef`), which raises the same
    ``pykka.Timeout`` and ``pykka.ActorDeadError``."""

    def ask(self, message: Any, *, block: bool = True, timeout: float | None = None) -> Any: ...

    def tell(self, message: Any) -> None: ...


@dataclass(frozen=True)
class Recalled:
    """A queued write the run remembers by its request id (the bridge process that took it may
    have been replaced since): ``future`` is settled once the run has the outcome, else None."""

    tool: str
    message: Any
    queued_at: float
    future: pykka.Future[Any] | None


@dataclass
class BridgeContext:
    """What the tools need.  ``executor`` is late-bound: the HTTP server may start first."""

    folder: Path
    executor: Callable[[], ActorLink | None]
    tokens: Tokens | None = None  # None: stdio only, the caller is the owner
    ask_timeout_s: float = ASK_TIMEOUT_S
    installed_backends: Callable[[], dict[str, bool]] = dict
    #: Why the session cannot run (``executor mcp`` serving without a tree), or None.
    unusable: str | None = None
    #: The run's record of a queued write by request id (a bridge process: :meth:`bridge.remote.RunLink.recall`).
    recall: Callable[[str], Recalled | None] | None = None
    _local: threading.local = field(default_factory=threading.local)

    # --- talking to the tree ------------------------------------------------------------

    def ask(self, message: Any, timeout_s: float | None = None) -> Any:
        if self.unusable is not None:
            raise NotRunnable(self.unusable)
        ref = self.executor()
        if ref is None:
            raise Unavailable("the executor is still starting; try again in a moment")
        return self._ask_ref(ref, message, "the executor", timeout_s)

    def _ask_ref(self, ref: ActorLink, message: Any, who: str, timeout_s: float | None = None) -> Any:
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

    def service(self, name: str) -> ActorLink | None:
        ref: ActorLink | None = self.ask(GetService(name=name))  # GetService's reply
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


def guard(context: BridgeContext, ctx: Context, tool: str, mutating: bool) -> Caller:
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


def escalation_out(row: EscalationRow) -> EscalationOut:
    return EscalationOut(**msgspec.structs.asdict(row))


def assign(context: BridgeContext, text: str) -> Assignment:
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


def answer_outside(context: BridgeContext, escalation_id: str, choice: str) -> EscalationOut:
    from session.escalations import answer_from_outside  # noqa: PLC0415 - only a session that cannot run

    recorded, message = answer_from_outside(context.folder, escalation_id, choice, "mcp")
    if not recorded:
        raise ToolError(message)
    row = next((row for row in context.reader().escalations(None) if row.id == escalation_id), None)
    if row is None:  # recorded moments ago: only a folder swapped underneath us gets here
        raise ToolError(message)
    return escalation_out(row)


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
