"""The tools that change the run: each is one protocol message to the right actor.

The ``queue_*`` tools do not wait for the Executor at all: the message goes into
its inbox and the tool returns a request id at once (see :mod:`bridge.writes`);
``get_write_status`` gives the outcome.  The other write tools wait for the
Executor's answer (bounded by the ask timeout) and return what it did.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, Literal

from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ToolError
from pydantic import Field

from bridge import panic
from bridge.context import (
    PRIORITY_OF,
    AgentId,
    BridgeContext,
    NotRunnable,
    TaskId,
    answer_outside,
    assign,
    escalation_out,
    guard,
    task_out,
)
from bridge.models import (
    CancelOut,
    EscalationOut,
    KeyAddedOut,
    PanicOut,
    QueuedOut,
    ReportOut,
    ResumeOut,
    SubmittedOut,
    TaskOut,
    cancel_note,
)
from bridge.writes import WriteQueue
from protocol.bridge import (
    AnswerEscalation,
    Cancelled,
    CancelTask,
    EscalateDecision,
    EscalationRecord,
    Reopened,
    ReopenFailed,
    ReportBlocker,
    Reported,
    ReportProgress,
    SubmitTask,
    TaskAccepted,
)
from protocol.keys import AddKey, KeyAdded
from protocol.messages import HandoffRequest

__all__ = ["write_tools"]

Name = Annotated[str, Field(min_length=1, max_length=500, description="A one-line title")]
Description = Annotated[str, Field(max_length=100_000)]
Priority = Literal["low", "normal", "high", "critical"]
Role = Annotated[
    str | None,
    Field(description="The role that should do it; left out, the role is chosen by capability"),
]
BlockedBy = Annotated[list[TaskId] | None, Field(description="Task ids that must complete first")]


def _submitted(accepted: TaskAccepted) -> dict[str, Any]:
    row = accepted.task
    return {"task_id": row.id, "owner": row.owner, "status": row.status, "priority": row.priority}


def _cancelled(cancelled: Cancelled) -> dict[str, Any]:
    return {"task_id": cancelled.task_id, "was": cancelled.was}


def _answered(record: EscalationRecord) -> dict[str, Any]:
    return {"escalation_id": record.escalation.id, "status": record.escalation.status}


def write_tools(context: BridgeContext, writes: WriteQueue) -> dict[str, Callable[..., Any]]:
    """The write tools by name (registered by :func:`bridge.tools.build_server`)."""
    writes.register("queue_submit_task", _submitted)
    writes.register("queue_cancel_task", _cancelled)
    writes.register("queue_answer_escalation", _answered)

    def _submit_message(
        name: str, description: str, priority: Priority, assigned_to: str | None, blocked_by: list[str] | None
    ) -> tuple[SubmitTask, str]:
        if context.unusable is not None:
            raise NotRunnable(context.unusable)
        if assigned_to is None:
            chosen = assign(context, f"{name}\n{description}")
            assigned_to, why = chosen.role, chosen.reason
        else:
            why = "assigned_to named it"
        message = SubmitTask(
            name=name,
            description=description,
            priority=PRIORITY_OF[priority],
            assigned_to=assigned_to,
            blocked_by=tuple(blocked_by or ()),
        )
        return message, why

    def submit_task(
        name: Name,
        ctx: Context,
        description: Description = "",
        priority: Priority = "normal",
        assigned_to: Role = None,
        blocked_by: BlockedBy = None,
    ) -> SubmittedOut:
        """Add a task to the running pipeline; it is dispatched when its blockers are done.

        Returns its id and which role takes it and why: without assigned_to, the role whose
        capabilities match the task's words, else the session's intake role."""
        guard(context, ctx, "submit_task", mutating=True)
        message, why = _submit_message(name, description, priority, assigned_to, blocked_by)
        accepted: TaskAccepted = context.ask(message)
        task = task_out(accepted.task)
        return SubmittedOut(**task.model_dump(), assignment=f"{task.owner}: {why}")

    def cancel_task(task_id: TaskId, ctx: Context) -> CancelOut:
        """Cancel a pending or running task (a running agent is stopped). It ends failed, kind 'cancelled'."""
        guard(context, ctx, "cancel_task", mutating=True)
        cancelled: Cancelled = context.ask(CancelTask(task_id=task_id, by="mcp"))
        note = cancel_note(cancelled.was)
        return CancelOut(task_id=cancelled.task_id, was=cancelled.was, note=note)

    def resume_session(ctx: Context) -> ResumeOut:
        """Give every failed task a new set of attempts; what they blocked can move again."""
        guard(context, ctx, "resume_session", mutating=True)
        reopened: Reopened = context.ask(ReopenFailed(by="mcp"))
        note = f"{len(reopened.task_ids)} task(s) reopened" if reopened.task_ids else "no failed task to reopen"
        return ResumeOut(reopened=list(reopened.task_ids), note=note)

    def report_progress(
        task_id: TaskId,
        pct: Annotated[int, Field(ge=0, le=100, description="How far along, 0..100")],
        note: Annotated[str, Field(max_length=2000)],
        agent_id: AgentId,
        ctx: Context,
    ) -> ReportOut:
        """For workers: say how far your own task is."""
        guard(context, ctx, "report_progress", mutating=True)
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
        guard(context, ctx, "report_blocker", mutating=True)
        reported: Reported = context.ask(
            ReportBlocker(task_id=task_id, agent_id=agent_id, detail=detail, severity=severity)
        )
        return ReportOut(task_id=reported.task_id, escalation_id=reported.escalation_id)

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
        caller = guard(context, ctx, "escalate_decision", mutating=True)
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
        return escalation_out(record.escalation)

    def answer_escalation(
        id: Annotated[str, Field(min_length=1, description="The escalation id, e.g. ESC-001")],
        choice: Annotated[str, Field(min_length=1)],
        ctx: Context,
    ) -> EscalationOut:
        """Answer an open question with one of its options."""
        guard(context, ctx, "answer_escalation", mutating=True)
        if context.unusable is not None:  # no tree here: the store (or a run elsewhere) takes it
            return answer_outside(context, id, choice)
        record: EscalationRecord = context.ask(AnswerEscalation(escalation_id=id, choice=choice, answered_by="mcp"))
        return escalation_out(record.escalation)

    def add_api_key(
        provider: Annotated[str, Field(min_length=1, max_length=64, description="e.g. openai, anthropic")],
        key: Annotated[str, Field(min_length=8, max_length=4096, description="The API key; never echoed back")],
        ctx: Context,
        tier: Annotated[str | None, Field(description="FREE | STANDARD | PREMIUM | CRITICAL")] = None,
    ) -> KeyAddedOut:
        """Add an API key to the running key pool (and the encrypted key store). Only its last 4 are shown."""
        guard(context, ctx, "add_api_key", mutating=True)
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

    def set_panic(on: bool, ctx: Context) -> PanicOut:
        """The panic switch: on, every mutating tool is refused (reads keep working) until it is off."""
        guard(context, ctx, "set_panic", mutating=False)
        changed = panic.switch(context.folder, on, by="mcp")
        state = "on" if on else "off"
        return PanicOut(panic=on, changed=changed, note=f"panic is {state}" + ("" if changed else " (it already was)"))

    def _handoff(ctx: Context, tool: str, request: HandoffRequest) -> TaskOut:
        guard(context, ctx, tool, mutating=True)
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

    def queue_submit_task(
        name: Name,
        ctx: Context,
        description: Description = "",
        priority: Priority = "normal",
        assigned_to: Role = None,
        blocked_by: BlockedBy = None,
    ) -> QueuedOut:
        """submit_task without waiting for the executor: returns a request id at once.

        get_write_status(request_id) then says queued, applied (with the new task's id) or refused (why)."""
        guard(context, ctx, "queue_submit_task", mutating=True)
        message, _why = _submit_message(name, description, priority, assigned_to, blocked_by)
        return writes.enqueue("queue_submit_task", message, _submitted)

    def queue_cancel_task(task_id: TaskId, ctx: Context) -> QueuedOut:
        """cancel_task without waiting for the executor: returns a request id for get_write_status at once."""
        guard(context, ctx, "queue_cancel_task", mutating=True)
        return writes.enqueue("queue_cancel_task", CancelTask(task_id=task_id, by="mcp"), _cancelled)

    def queue_answer_escalation(
        id: Annotated[str, Field(min_length=1, description="The escalation id, e.g. ESC-001")],
        choice: Annotated[str, Field(min_length=1)],
        ctx: Context,
    ) -> QueuedOut:
        """answer_escalation without waiting for the executor: returns a request id for get_write_status at once."""
        guard(context, ctx, "queue_answer_escalation", mutating=True)
        message = AnswerEscalation(escalation_id=id, choice=choice, answered_by="mcp")
        return writes.enqueue("queue_answer_escalation", message, _answered)

    tools = (
        submit_task,
        cancel_task,
        resume_session,
        report_progress,
        report_blocker,
        escalate_decision,
        answer_escalation,
        add_api_key,
        set_panic,
        task_create,
        task_prep,
        task_claim,
        task_review,
        task_complete,
        task_fail,
        queue_submit_task,
        queue_cancel_task,
        queue_answer_escalation,
    )
    return {tool.__name__: tool for tool in tools}
