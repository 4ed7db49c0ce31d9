"""The Executor's desk for requests from outside the tree: the MCP bridge, the inbox that
``executor answer`` / ``executor task`` write to, and the Notifier's callbacks.

A collaborator of the Executor (it holds a typed reference to it, never redeclares its
state): each handler runs on the Executor's thread, validates, calls the pipeline core
(:mod:`pipeline.requests`) and answers at once.  Where the store must speak first (an
escalation's id, an accepted answer, a handoff's row) it asks the Session actor and hands
the answer to the core.  Bad requests get a :class:`Refused` naming the argument.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal, cast

import msgspec
import pykka

from actors.notices import build_digest
from pipeline import requests
from pipeline.clock import Instant
from pipeline.core import Pipeline
from pipeline.effects import NotifyUser
from protocol._base import Message
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
    WorkerInfo,
)
from protocol.events import BlockerReported, NotificationDropped
from protocol.messages import (
    BuildDigest,
    GetService,
    HandoffRequest,
    NoticeDropped,
    OpenEscalation,
    ReconcileApplied,
    ReconcilePlan,
    RecordAnswer,
    RecordEvents,
)
from protocol.notify import Notice
from protocol.records import EscalationRow, TaskRow
from session import inbox
from session.agents import AgentsFileError, capabilities_of
from session.handoff import HandoffRefused

if TYPE_CHECKING:
    from actors.executor import Executor

__all__ = ["Desk", "notice_of", "report_recovery"]

_ESCALATING_SEVERITIES = ("high", "critical")
_STARTING = "the run is still starting (reconciling the session); try again in a moment"


def notice_of(notice: NotifyUser, session_id: str) -> Notice:
    return Notice(
        kind=notice.kind,
        title=notice.title[:200],
        body=notice.body[:3000],
        action=notice.action,
        escalation_id=notice.escalation_id,
        options=notice.options,
        session_id=session_id,
    )


def report_recovery(core: Pipeline, plan: ReconcilePlan, applied: ReconcileApplied) -> None:
    cancelled = f"cancelled {len(plan.cancels)} (asked for while they ran), " if plan.cancels else ""
    core.say(
        f"recovered from an unclean stop: reset {len(plan.resets)} task(s), {cancelled}"
        f"stopped {len(plan.killed_pids)} leftover process(es); report: {applied.report_path}"
    )
    cancelled_body = (
        f"Cancelled {len(plan.cancels)} whose cancellation was asked for while they ran: "
        f"{', '.join(c.task_id for c in plan.cancels[:20])}.\n"
        if plan.cancels
        else ""
    )
    core.notify(
        NotifyUser(
            kind="recovery",
            title="Recovered from an unclean stop",
            body=f"Reset {len(plan.resets)} task(s) that were running: "
            f"{', '.join(r.task_id for r in plan.resets[:20]) or 'none'}.\n"
            f"{cancelled_body}"
            f"Stopped {len(plan.killed_pids)} leftover process(es).\n"
            f"Report: {applied.report_path}",
            action=core.config.command("check"),
        )
    )


class Desk:
    def __init__(self, executor: Executor) -> None:
        self.executor = executor
        self._handlers: dict[type[Message], Callable[[Any], Any]] = {
            SubmitTask: self.submit_task,
            CancelTask: self.cancel_task,
            ReopenFailed: self.reopen_failed,
            ReportProgress: self.report_progress,
            ReportBlocker: self.report_blocker,
            EscalateDecision: self.escalate_decision,
            AnswerEscalation: self.answer,
            GetFleet: self.get_fleet,
            GetService: self.get_service,
            HandoffRequest: self.handoff,
            NoticeDropped: self.notice_dropped,
            BuildDigest: self.build_digest,
        }

    def handler_for(self, message: object) -> Callable[[Any], Any] | None:
        # Keyed by message class; a message of another class simply finds no handler.
        return self._handlers.get(type(message))  # type: ignore[arg-type]

    @property
    def core(self) -> Pipeline | None:
        return self.executor.core

    def _now(self) -> Instant:
        return self.executor.now()

    # --- tasks ---------------------------------------------------------------------

    def submit_task(self, message: SubmitTask) -> TaskAccepted | Refused:
        if self.core is None:
            return Refused(reason=_STARTING, retry_later=True)
        return requests.submit(self.core, message, sorted(self.executor.backends), self._now())

    def cancel_task(self, message: CancelTask) -> Cancelled | Refused:
        if self.core is None:
            return Refused(reason="the run is still starting; try again in a moment", retry_later=True)
        return requests.cancel(self.core, message, self._now())

    def reopen_failed(self, message: ReopenFailed) -> Reopened | Refused:
        if self.core is None:
            return Refused(reason=_STARTING, retry_later=True)
        return requests.reopen_failed(self.core, message, self._now())

    # --- workers report back ------------------------------------------------------------

    def report_progress(self, message: ReportProgress) -> Reported | Refused:
        if self.core is None:
            return Refused(reason=_STARTING, retry_later=True)
        attempt = requests.own_attempt(self.core, message.task_id, message.agent_id)
        if isinstance(attempt, Refused):
            return attempt
        self.core.attempt_progress(attempt, message.percent, message.note[:2000], self._now())
        return Reported(task_id=attempt.task_id)

    def report_blocker(self, message: ReportBlocker) -> Reported | Refused:
        if self.core is None:
            return Refused(reason=_STARTING, retry_later=True)
        attempt = requests.own_attempt(self.core, message.task_id, message.agent_id)
        if isinstance(attempt, Refused):
            return attempt
        escalation_id = None
        if message.severity in _ESCALATING_SEVERITIES:
            row: EscalationRow = self.executor.link.ask(
                OpenEscalation(
                    issue=f"{attempt.task_id} ({attempt.role}) is blocked: {message.detail[:2000]}",
                    options=("continue", "cancel"),
                    task_id=attempt.task_id,
                    opened_by=message.agent_id,
                )
            )
            escalation_id = row.id
            self.core.say(
                f"? {attempt.task_id}: blocker ({message.severity}) — {message.detail[:200]}. "
                f"Answer {row.id} with continue or cancel."
            )
        blocker = BlockerReported(
            task_id=attempt.task_id,
            agent_id=message.agent_id,
            severity=message.severity,
            detail=message.detail[:2000],
            escalation_id=escalation_id,
        )
        self.core.record(RecordEvents(events=(blocker,)))
        return Reported(task_id=attempt.task_id, escalation_id=escalation_id)

    # --- questions for the user ------------------------------------------------------------

    def escalate_decision(self, message: EscalateDecision) -> EscalationRecord | Refused | None:
        if self.core is None:
            return Refused(reason=_STARTING, retry_later=True)
        question = requests.question_for(self.core, message, self._now())
        if not isinstance(question, OpenEscalation):
            return question
        row: EscalationRow = self.executor.link.ask(question)
        requests.question_opened(self.core, row, str(self.executor.folder))
        return EscalationRecord(escalation=row)

    def answer(self, message: AnswerEscalation) -> EscalationRecord | Refused:
        answered = self.executor.link.ask(
            RecordAnswer(
                escalation_id=message.escalation_id,
                choice=message.choice,
                answered_by=message.answered_by,
                write_id=message.write_id,
            )
        )
        if isinstance(answered, Refused):
            return answered
        if self.core is not None:
            requests.answered(self.core, answered, self._now())
        return EscalationRecord(escalation=answered)

    # --- people moving manual tasks -------------------------------------------------------

    def handoff(self, message: HandoffRequest) -> TaskRow | Refused:
        core = self.core
        if core is None:
            return Refused(reason="the run is still starting; try again in a moment", retry_later=True)
        if not core.accepting():
            return Refused(reason="the run is stopping; try again when it has stopped")
        session = self.executor.session
        manual = tuple(sorted(name for name, role in core.config.roles.items() if role.manual))
        extra: dict[str, Any] = {"manual_roles": manual}
        if message.op == "claim":
            try:
                declared = capabilities_of(self.executor.folder, message.agent)
            except AgentsFileError as error:
                return Refused(reason=str(error), argument="agent")
            extra["agent_capabilities"] = tuple(sorted(declared)) if declared is not None else None
        if message.op == "create":
            role = session.roles.get(message.role)
            if role is None:
                roles = ", ".join(sorted(session.roles))
                return Refused(
                    reason=f"'{message.role}' is not a role of this session; use one of: {roles}", argument="role"
                )
            spec = session.role_specs[message.role].meta
            extra |= {"prefix": role.prefix, "max_attempts": spec.max_attempts or self.executor.options.max_attempts}
        result = self.executor.link.ask(msgspec.structs.replace(message, **extra))
        if isinstance(result, HandoffRefused):
            return Refused(reason=result.reason, argument=result.argument)
        requests.handoff_applied(core, message.op, message.by, result, self._now())
        return cast(TaskRow, result)  # the Session answers a handoff with the row or HandoffRefused

    def release_claim(self, task_id: str, reason: str) -> None:
        released = self.handoff(HandoffRequest(op="release", by="executor", task_id=task_id, reason=reason))
        if isinstance(released, TaskRow) and self.core is not None:
            self.core.say(f"⇠ {task_id} released: {reason}; it is ready for someone else")

    # --- requests dropped by other processes (`executor answer`, `executor task`) ----------------

    def read_inbox(self) -> None:
        folder = self.executor.folder
        for name, request in inbox.read_requests(folder):
            if request.get("kind") == "task":
                self._handoff_from_inbox(name, request)
                continue
            if request.get("kind") != "answer":
                inbox.reply(folder, name, {"ok": False, "message": f"unknown request {request.get('kind')!r}"})
                continue
            result = self.answer(
                AnswerEscalation(
                    escalation_id=str(request.get("id", "")),
                    choice=str(request.get("choice", "")),
                    answered_by=str(request.get("by", "cli"))[:100],
                )
            )
            if isinstance(result, Refused):
                inbox.reply(folder, name, {"ok": False, "message": result.reason})
            else:
                row = result.escalation
                inbox.reply(folder, name, {"ok": True, "message": f"{row.id} answered: {row.choice}"})

    def _handoff_from_inbox(self, name: str, request: dict[str, Any]) -> None:
        folder = self.executor.folder
        try:
            message = msgspec.convert(
                {**request.get("request", {}), "by": str(request.get("by", "cli"))[:100]}, HandoffRequest
            )
        except msgspec.ValidationError as error:
            inbox.reply(folder, name, {"ok": False, "message": f"a malformed task request: {error}"})
            return
        result = self.handoff(message)
        if isinstance(result, Refused):
            inbox.reply(folder, name, {"ok": False, "message": result.reason, "argument": result.argument})
        else:
            inbox.reply(folder, name, {"ok": True, "task": msgspec.to_builtins(result)})

    # --- the fleet and the Notifier -------------------------------------------------------------

    def get_fleet(self, message: GetFleet) -> FleetSnapshot:
        core, executor = self.core, self.executor
        mono = executor.now().mono
        state: Literal["booting", "running", "idle", "stopping", "finished"]
        if core is None:
            state = "booting"
        elif core.finished:
            state = "finished"
        elif core.stopping_since is not None:
            state = "stopping"
        elif not core.attempts and core.table.finished():
            state = "idle"
        else:
            state = "running"
        attempts = list(core.attempts.values()) if core is not None else []
        backends = executor.backends
        return FleetSnapshot(
            run_id=executor.run_id,
            state=state,
            max_workers=executor.options.max_workers,
            workers=tuple(
                WorkerInfo(
                    worker_id=a.worker_id,
                    task_id=a.task_id,
                    attempt=a.attempt,
                    role=a.role,
                    backend=a.dispatch.backend,
                    model=a.model,
                    pid=a.pid,
                    elapsed_s=round(mono - a.started, 1),
                    node=a.node,
                )
                for a in attempts
            ),
            actors=tuple(name for name in executor.supervisor.names() if executor.supervisor.ref(name) is not None),
            backends=tuple(sorted({backend.name for backend in backends.values()})),
            tasks_by_status=core.table.counts() if core is not None else {},
            session_spent_usd=round(core.ledger.session_spent, 6) if core is not None else 0.0,
            manual_roles=tuple(sorted(role for role, backend in backends.items() if backend.name == "manual")),
        )

    def get_service(self, message: GetService) -> pykka.ActorRef[Any] | None:
        ref = self.executor.supervisor.ref(message.name)
        return None if ref is None or ref.actor_stopped.is_set() else ref

    def notice_dropped(self, message: NoticeDropped) -> None:
        dropped = NotificationDropped(channel=message.channel, kind=message.kind, reason=message.reason)
        self.executor.link.record(dropped)

    def build_digest(self, message: BuildDigest) -> Notice | None:
        if self.core is None:
            return None
        notice, self.executor.last_digest = build_digest(
            self.core, self.executor.session.session_id, self.executor.now().mono, self.executor.last_digest
        )
        return notice
