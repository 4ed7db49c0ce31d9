"""The tools that only read: answered from the store's read-only connection where the store
has the answer (a task, the task list, the questions, the check report), so they never wait
on the dispatch path; the live fleet and the router's choice ask their actor."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Annotated, Any, Literal

import msgspec
from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ToolError
from pydantic import Field

from bridge.context import (
    AgentId,
    BridgeContext,
    TaskId,
    escalation_out,
    fleet_out,
    guard,
    task_out,
    task_status_out,
)
from bridge.models import (
    CheckOut,
    EscalationsOut,
    FleetOut,
    ModelChoiceOut,
    NextOut,
    TasksOut,
    TaskStatusOut,
    WriteStatusOut,
)
from bridge.writes import WriteQueue
from protocol.bridge import FleetSnapshot, GetFleet
from protocol.routing import ForgetTask, ModelChoice, SelectModel
from session.store import StoreError

__all__ = ["read_tools"]


def read_tools(context: BridgeContext, writes: WriteQueue) -> dict[str, Callable[..., Any]]:
    """The read tools by name (registered by :func:`bridge.tools.build_server`)."""

    def get_task_status(task_id: TaskId, ctx: Context) -> TaskStatusOut:
        """One task: its status, attempts, latest progress and artifacts."""
        guard(context, ctx, "get_task_status", mutating=False)
        return task_status_out(context, task_id)

    def list_tasks(
        ctx: Context,
        status: Literal["pending", "in_progress", "review", "completed", "failed"] | None = None,
        owner: Annotated[str | None, Field(description="Only this role's tasks")] = None,
    ) -> TasksOut:
        """The session's tasks, optionally only one status or one role's."""
        guard(context, ctx, "list_tasks", mutating=False)
        rows = context.reader().tasks()
        chosen = [
            row for row in rows if (status is None or row.status == status) and (owner is None or row.owner == owner)
        ]
        chosen.sort(key=lambda row: row.id)
        return TasksOut(tasks=[task_out(row) for row in chosen], total=len(chosen))

    def check_session(ctx: Context) -> CheckOut:
        """Where the pipeline stands: progress, what is ready, running, failed or blocked, what to do next."""
        guard(context, ctx, "check_session", mutating=False)
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

    def list_escalations(ctx: Context, status: Literal["open", "answered"] | None = None) -> EscalationsOut:
        """The questions for the user, open or answered."""
        guard(context, ctx, "list_escalations", mutating=False)
        return EscalationsOut(escalations=[escalation_out(row) for row in context.reader().escalations(status)])

    def get_fleet_status(ctx: Context) -> FleetOut:
        """Actors, running workers (pid, elapsed, backend, model), backends, MCP servers, key pool (no secrets).

        When the session cannot run (state `unusable`), `problems` says why, each with its fix."""
        guard(context, ctx, "get_fleet_status", mutating=False)
        return fleet_out(context)

    def select_model(
        task_complexity: Annotated[
            str, Field(description="low | medium | high, a tier (FREE..CRITICAL), or a number 0..1")
        ],
        ctx: Context,
        force_model: Annotated[str | None, Field(description="A registry model that wins over the rest")] = None,
    ) -> ModelChoiceOut:
        """Which model the router would pick for work of this complexity (CRITICAL needs the user's approval)."""
        guard(context, ctx, "select_model", mutating=False)
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

    def task_next(agent: AgentId, ctx: Context) -> NextOut:
        """The next task this agent should do, and why."""
        guard(context, ctx, "task_next", mutating=False)
        from session.agents import AgentsFileError, capabilities_of  # noqa: PLC0415
        from session.handoff import choose_next  # noqa: PLC0415

        snapshot: FleetSnapshot = context.ask(GetFleet())
        try:
            capabilities = capabilities_of(context.folder, agent)
        except AgentsFileError as error:
            raise ToolError(str(error)) from None
        row, why = choose_next(context.reader().tasks(), agent, snapshot.manual_roles, capabilities)
        return NextOut(task_id=row.id if row else None, why=why)

    def get_write_status(
        request_id: Annotated[str, Field(min_length=1, max_length=100, description="The id a queue_* tool returned")],
        ctx: Context,
    ) -> WriteStatusOut:
        """The outcome of a queued write: queued (not handled yet), applied (with its result) or refused (why)."""
        guard(context, ctx, "get_write_status", mutating=False)
        return writes.status(request_id)

    tools = (
        get_task_status,
        list_tasks,
        check_session,
        list_escalations,
        get_fleet_status,
        select_model,
        task_next,
        get_write_status,
    )
    return {tool.__name__: tool for tool in tools}
