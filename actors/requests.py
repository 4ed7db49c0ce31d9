"""What the Executor does for requests from outside the tree (the MCP bridge).

A mixin of :class:`actors.executor.Executor`: the handlers run on the
Executor's thread like every other message, so they see and change the
scheduler without locks.  Each one answers at once — nothing here waits for a
task to run — and refuses bad requests with a :class:`Refused` that names the
argument, never by raising (a crash here would take the run down for a typo).
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec
import pykka

from actors.base import handles
from protocol._base import Message
from protocol.bridge import (
    CAPABILITY_DECISION,
    CONSENSUS_DECISION,
    CRITICAL_APPROVAL,
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
from protocol.events import BlockerReported
from protocol.messages import (
    CreateTasks,
    GetEscalation,
    OpenEscalation,
    RecordAccepted,
    RecordAnswer,
    RecordCancel,
    RecordProgress,
    ReopenTasks,
    ShutdownRequest,
)
from protocol.records import EscalationRow, TaskRow
from protocol.routing import ApproveCritical
from session import inbox
from session.store import utc_now

if TYPE_CHECKING:
    from actors.executor import _Slot

__all__ = ["SUBMITTED_PREFIX", "GetService", "RequestHandlers", "goal_of"]

SUBMITTED_PREFIX = "MCP"
_ESCALATING_SEVERITIES = ("high", "critical")


class GetService(Message, frozen=True):
    """Ask for the live ref of a service child (``router``, ``keypool``, ...), or None.

    In-process only: the reply is an actor ref.
    """

    name: str


class RequestHandlers:
    """Handlers for :mod:`protocol.bridge` requests; mixed into the Executor."""

    # Provided by the Executor.
    rows: dict[str, TaskRow]
    slots: dict[str, _Slot]
    scheduler: Any
    backends: dict[str, Any]
    options: Any
    session: Any
    prompts: Any
    supervisor: Any
    run_id: str
    folder: Path
    stopping_since: float | None
    finished: bool
    session_spent: float
    submitted_seq: int
    critical_asked: set[str]
    escalation_deadlines: dict[str, float]  # escalation id -> epoch seconds its default is due
    escalation_holds: dict[str, set[str]]  # task id -> open escalations holding it
    open_questions: set[str]
    answered_this_run: set[str]
    actor_ref: Any
    idle_announced: bool
    console: Any

    if TYPE_CHECKING:  # provided by the Executor and NoticeHandlers; stubs here would shadow them

        def _ask(self, message: Any) -> Any: ...
        def _tell_session(self, message: Any) -> None: ...
        def _record(self, *events: Any, **kwargs: Any) -> None: ...
        def _dispatch(self) -> None: ...
        def _maybe_finish(self) -> None: ...
        def _notify(self, kind: Any, title: str, body: str = "", **kwargs: Any) -> None: ...
        def _handoff_from_inbox(self, name: str, request: dict[str, Any]) -> None: ...

    # --- tasks ---------------------------------------------------------------------

    def _not_accepting(self) -> Refused | None:
        if self.scheduler is None:
            return Refused(
                reason="the run is still starting (reconciling the session); try again in a moment", retry_later=True
            )
        if self.stopping_since is not None or self.finished:
            return Refused(reason="the run is stopping; no new work is accepted")
        return None

    def _next_submitted_id(self) -> str:
        # Numbered after the highest MCP-n already there, so ids stay unique across runs.
        if self.submitted_seq == 0:
            numbers = [
                int(task_id[len(SUBMITTED_PREFIX) + 1 :])
                for task_id in self.rows
                if task_id.startswith(SUBMITTED_PREFIX + "-") and task_id[len(SUBMITTED_PREFIX) + 1 :].isdigit()
            ]
            self.submitted_seq = max(numbers, default=0)
        self.submitted_seq += 1
        return f"{SUBMITTED_PREFIX}-{self.submitted_seq:03d}"

    @handles(SubmitTask)
    def submit_task(self, message: SubmitTask) -> TaskAccepted | Refused:
        refusal = self._not_accepting()
        if refusal is not None:
            return refusal
        roles = sorted(self.backends)
        owner = message.assigned_to
        if owner is None:
            if len(roles) != 1:
                return Refused(
                    reason=f"this session has several roles; name one of: {', '.join(roles)}", argument="assigned_to"
                )
            owner = roles[0]
        elif owner not in self.backends:
            return Refused(
                reason=f"'{owner}' is not a role of this session; use one of: {', '.join(roles)}",
                argument="assigned_to",
            )
        unknown = [dep for dep in message.blocked_by if dep not in self.rows]
        if unknown:
            return Refused(reason=f"no task {', '.join(unknown)} in this session", argument="blocked_by")
        now = utc_now()
        row = TaskRow(
            id=self._next_submitted_id(),
            owner=owner,
            subject=message.name[:200],
            description=message.description,
            priority=message.priority,
            blocked_by=list(dict.fromkeys(message.blocked_by)),
            max_attempts=self.options.max_attempts,
            source=message.source,
            created_at=now,
            updated_at=now,
        )
        self.prompts.add(row, goal=goal_of(row))
        self._ask(CreateTasks(tasks=(row,)))
        self.rows[row.id] = row
        self.scheduler.add(row)
        self.idle_announced = False
        self.console(f"+ {row.id} ({owner}, {row.priority}) submitted through {message.source}: {row.subject}")
        self._dispatch()
        return TaskAccepted(task=self.rows[row.id])

    @handles(CancelTask)
    def cancel_task(self, message: CancelTask) -> Cancelled | Refused:
        if self.scheduler is None:
            return Refused(reason="the run is still starting; try again in a moment", retry_later=True)
        row = self.rows.get(message.task_id)
        if row is None:
            return Refused(reason=f"no task '{message.task_id}' in this session", argument="task_id")
        if row.status in ("completed", "failed"):
            return Refused(reason=f"{row.id} is already {row.status}", argument="task_id")
        if row.status == "in_progress":
            slot = next((s for s in self.slots.values() if s.task_id == row.id), None)
            if slot is not None:
                slot.cancelled_by = message.by
                slot.cancel.set()  # the worker stops the agent; _settle records the cancellation
                return Cancelled(task_id=row.id, was="in_progress")
        self.scheduler.fail(row.id)
        self.rows[row.id] = msgspec.structs.replace(row, status="failed", last_error_kind="cancelled")
        self._ask(RecordCancel(task_id=row.id, reason=message.reason, by=message.by))
        self.console(f"✗ {row.id} cancelled by {message.by}")
        self._maybe_finish()
        return Cancelled(task_id=row.id, was=row.status)

    @handles(ReopenFailed)
    def reopen_failed(self, message: ReopenFailed) -> Reopened | Refused:
        refusal = self._not_accepting()
        if refusal is not None:
            return refusal
        failed = tuple(self.scheduler.failed())
        if not failed:
            return Reopened(task_ids=())
        self._ask(ReopenTasks(task_ids=failed, by=message.by))
        for task_id in failed:
            self.rows[task_id] = msgspec.structs.replace(
                self.rows[task_id], status="pending", attempts=0, last_error=None, last_error_kind=None
            )
            self.scheduler.reset(task_id)
        self.idle_announced = False
        self.console(f"↻ reopened {len(failed)} failed task(s): {', '.join(failed[:10])}")
        self._dispatch()
        return Reopened(task_ids=failed)

    # --- workers report back ------------------------------------------------------------

    def _own_slot(self, task_id: str, agent_id: str) -> _Slot | Refused:
        """The slot running ``task_id`` for ``agent_id``: a worker reports only on its own task."""
        for slot in self.slots.values():
            if slot.agent_id and slot.agent_id == agent_id:
                if slot.task_id != task_id:
                    return Refused(
                        reason=f"agent {agent_id} is running {slot.task_id}, not {task_id}: "
                        "a worker may report only on its own task",
                        argument="task_id",
                    )
                return slot
        return Refused(
            reason=f"no running attempt has agent id '{agent_id}' (use the id given in your prompt; "
            "it changes with every attempt)",
            argument="agent_id",
        )

    @handles(ReportProgress)
    def report_progress(self, message: ReportProgress) -> Reported | Refused:
        slot = self._own_slot(message.task_id, message.agent_id)
        if isinstance(slot, Refused):
            return slot
        slot.last_activity = time.monotonic()
        self._tell_session(
            RecordProgress(
                task_id=slot.task_id,
                attempt=slot.attempt,
                role=slot.role,
                percent=message.percent,
                note=message.note[:2000],
            )
        )
        return Reported(task_id=slot.task_id)

    @handles(ReportBlocker)
    def report_blocker(self, message: ReportBlocker) -> Reported | Refused:
        slot = self._own_slot(message.task_id, message.agent_id)
        if isinstance(slot, Refused):
            return slot
        escalation_id = None
        if message.severity in _ESCALATING_SEVERITIES:
            row: EscalationRow = self._ask(
                OpenEscalation(
                    issue=f"{slot.task_id} ({slot.role}) is blocked: {message.detail[:2000]}",
                    options=("continue", "cancel"),
                    task_id=slot.task_id,
                    opened_by=message.agent_id,
                )
            )
            escalation_id = row.id
            self.console(
                f"? {slot.task_id}: blocker ({message.severity}) — {message.detail[:200]}. "
                f"Answer {row.id} with continue or cancel."
            )
        self._record(
            BlockerReported(
                task_id=slot.task_id,
                agent_id=message.agent_id,
                severity=message.severity,
                detail=message.detail[:2000],
                escalation_id=escalation_id,
            )
        )
        return Reported(task_id=slot.task_id, escalation_id=escalation_id)

    # --- questions for the user ------------------------------------------------------------

    @handles(EscalateDecision)
    def escalate_decision(self, message: EscalateDecision) -> EscalationRecord | Refused | None:
        if message.task_id is not None and message.task_id not in self.rows:
            return Refused(reason=f"no task '{message.task_id}' in this session", argument="task_id")
        if message.default_choice is not None and message.options and message.default_choice not in message.options:
            return Refused(
                reason=f"{message.default_choice!r} is not one of the options ({', '.join(message.options)})",
                argument="default_choice",
            )
        if message.timeout_s is not None and message.default_choice is None:
            return Refused(reason="a timeout needs a default_choice to take when it passes", argument="timeout_s")
        if message.opened_by == CRITICAL_APPROVAL:
            # Each attempt of the task meets the gate again: ask once per task and run.
            if message.task_id in self.critical_asked:
                return None
            self.critical_asked.add(message.task_id or "")
        pending = message.task_id is not None and self.rows[message.task_id].status == "pending"
        deadline = None
        if message.timeout_s is not None:
            deadline = datetime.fromtimestamp(time.time() + message.timeout_s, UTC).isoformat(timespec="seconds")
        row: EscalationRow = self._ask(
            OpenEscalation(
                issue=message.issue,
                options=message.options,
                task_id=message.task_id,
                opened_by=message.opened_by,
                default_choice=message.default_choice,
                deadline=deadline,
                holds_task=message.hold and pending,
            )
        )
        self._track_escalation(row)
        options = f" ({' / '.join(row.options)})" if row.options else ""
        waits = f"; {row.task_id} waits for the answer" if row.holds_task else ""
        self.console(f"? {row.id}: {row.issue[:300]}{options}{waits}")
        choices = "|".join(row.options) if row.options else "CHOICE"
        self._notify(
            "escalation_opened",
            f"Question {row.id}" + (f" about {row.task_id}" if row.task_id else ""),
            row.issue + (f"\n{row.task_id} waits for the answer." if row.holds_task else ""),
            action=f"executor answer {row.id} {choices} --session {self.folder}",
            escalation_id=row.id,
            options=tuple(row.options),
        )
        return EscalationRecord(escalation=row)

    def _track_escalation(self, row: EscalationRow) -> None:
        """Hold the task an open question is about; remember when its default is due."""
        self.open_questions.add(row.id)
        if row.deadline:
            try:
                due = datetime.fromisoformat(row.deadline).timestamp()
            except ValueError:
                due = None
            if due is not None:
                self.escalation_deadlines[row.id] = due
        task = self.rows.get(row.task_id or "")
        if row.holds_task and task is not None and task.status == "pending" and self.scheduler is not None:
            self.escalation_holds.setdefault(task.id, set()).add(row.id)
            self.scheduler.hold(task.id)

    def _untrack_escalation(self, row: EscalationRow) -> None:
        self.open_questions.discard(row.id)
        self.escalation_deadlines.pop(row.id, None)
        holds = self.escalation_holds.get(row.task_id or "")
        if holds is not None:
            holds.discard(row.id)
            if not holds:
                del self.escalation_holds[row.task_id or ""]
                self.scheduler.release(row.task_id)
                self.idle_announced = False

    def _apply_decision(self, row: EscalationRow) -> None:
        """Carry out the answer to one of the executor's own questions (at once, or at the next
        boot when it was answered while no run was live).  Idempotent: a decision about a task
        that has moved on since is left alone."""
        task = self.rows.get(row.task_id or "")
        if task is None or self.scheduler is None:
            return
        if row.opened_by == CONSENSUS_DECISION and task.status == "failed" and task.last_error_kind == "needs_decision":
            if row.choice == "retry":
                self._ask(ReopenTasks(task_ids=(task.id,), by=row.answered_by or "user"))
                self.rows[task.id] = msgspec.structs.replace(
                    task, status="pending", attempts=0, last_error=None, last_error_kind=None
                )
                self.scheduler.reset(task.id)
                self.console(f"↻ {task.id} runs again ({row.id}: retry)")
            elif row.choice == "accept":
                self._ask(RecordAccepted(task_id=task.id, by=row.answered_by or "user"))
                self.rows[task.id] = msgspec.structs.replace(task, status="completed", last_error_kind=None)
                unblocked = self.scheduler.complete(task.id)
                self.console(
                    f"✓ {task.id} accepted as done ({row.id})"
                    + (f"; unblocked {', '.join(unblocked)}" if unblocked else "")
                )
            self.idle_announced = False
            self._dispatch()
        elif (
            row.opened_by == CAPABILITY_DECISION
            and row.choice == "stop the run"
            and row.id in self.answered_this_run  # a stop asked for in an earlier run is not repeated
            and self.stopping_since is None
            and not self.finished
        ):
            self.actor_ref.tell(ShutdownRequest(reason=f"{row.id}: stop the run (capability gap)"))

    def _expire_escalations(self) -> None:
        """Questions past their deadline take their default answer."""
        now = time.time()
        for escalation_id, due in list(self.escalation_deadlines.items()):
            if now < due:
                continue
            self.escalation_deadlines.pop(escalation_id, None)
            row = self._ask(GetEscalation(escalation_id=escalation_id))
            if isinstance(row, EscalationRow) and row.status == "open" and row.default_choice is not None:
                self.answer_escalation(
                    AnswerEscalation(escalation_id=escalation_id, choice=row.default_choice, answered_by="timeout")
                )

    @handles(AnswerEscalation)
    def answer_escalation(self, message: AnswerEscalation) -> EscalationRecord | Refused:
        answered = self._ask(
            RecordAnswer(escalation_id=message.escalation_id, choice=message.choice, answered_by=message.answered_by)
        )
        if isinstance(answered, Refused):
            return answered
        self.console(f"✓ {answered.id} answered: {answered.choice} (by {answered.answered_by})")
        self.answered_this_run.add(answered.id)
        self._untrack_escalation(answered)
        self._apply_decision(answered)
        if answered.opened_by == CRITICAL_APPROVAL and answered.choice == "approve" and answered.task_id:
            router = self.supervisor.ref("router")
            if router is not None:
                router.tell(ApproveCritical(task_id=answered.task_id))
        if answered.task_id and answered.choice == "cancel":
            row = self.rows.get(answered.task_id)
            if row is not None and row.status in ("pending", "in_progress"):
                self.cancel_task(CancelTask(task_id=row.id, reason=f"answer to {answered.id}", by=message.answered_by))
        return EscalationRecord(escalation=answered)

    # --- requests dropped by other processes (`executor answer`) -------------------------

    def _read_inbox(self) -> None:
        for name, request in inbox.read_requests(self.folder):
            if request.get("kind") == "task":
                self._handoff_from_inbox(name, request)
                continue
            if request.get("kind") != "answer":
                inbox.reply(self.folder, name, {"ok": False, "message": f"unknown request {request.get('kind')!r}"})
                continue
            result = self.answer_escalation(
                AnswerEscalation(
                    escalation_id=str(request.get("id", "")),
                    choice=str(request.get("choice", "")),
                    answered_by=str(request.get("by", "cli"))[:100],
                )
            )
            if isinstance(result, Refused):
                inbox.reply(self.folder, name, {"ok": False, "message": result.reason})
            else:
                row = result.escalation
                inbox.reply(self.folder, name, {"ok": True, "message": f"{row.id} answered: {row.choice}"})

    # --- the fleet -------------------------------------------------------------------------

    @handles(GetFleet)
    def get_fleet(self, message: GetFleet) -> FleetSnapshot:
        now = time.monotonic()
        if self.scheduler is None:
            state = "booting"
        elif self.finished:
            state = "finished"
        elif self.stopping_since is not None:
            state = "stopping"
        elif not self.slots and self.scheduler.finished():
            state = "idle"
        else:
            state = "running"
        return FleetSnapshot(
            run_id=self.run_id,
            state=state,
            max_workers=self.options.max_workers,
            workers=tuple(
                WorkerInfo(
                    worker_id=slot.worker_id,
                    task_id=slot.task_id,
                    attempt=slot.attempt,
                    role=slot.role,
                    backend=slot.backend,
                    model=slot.model,
                    pid=slot.pid,
                    elapsed_s=round(now - slot.started, 1),
                )
                for slot in self.slots.values()
            ),
            actors=tuple(name for name in self.supervisor.names() if self.supervisor.ref(name) is not None),
            backends=tuple(sorted({backend.name for backend in self.backends.values()})),
            tasks_by_status=self.scheduler.counts() if self.scheduler is not None else {},
            session_spent_usd=round(self.session_spent, 6),
            manual_roles=tuple(sorted(role for role, backend in self.backends.items() if backend.name == "manual")),
        )

    @handles(GetService)
    def get_service(self, message: GetService) -> pykka.ActorRef[Any] | None:
        ref = self.supervisor.ref(message.name)
        return None if ref is None or ref.actor_stopped.is_set() else ref


def goal_of(row: TaskRow) -> str:
    """The goal a worker sees for a task created at run time."""
    if row.description and row.description.strip() != row.subject.strip():
        return f"{row.subject}\n\n{row.description}"
    return row.subject
