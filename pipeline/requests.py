"""Requests from outside the pipeline: submitted, cancelled and reopened tasks, questions
for the user and their answers, and people moving manual tasks (handoff).

Each function answers at once and refuses bad requests with a :class:`Refused` that
names the argument, never by raising (a crash would take the run down for a typo).
Where the store must say something first (an escalation's id, whether an answer is
accepted, a handoff's resulting row), the host asks the Session actor and hands the
result in (:func:`question_opened`, :func:`answered`, :func:`handoff_applied`).
"""

from __future__ import annotations

from datetime import UTC, datetime

from pipeline.clock import Instant, iso
from pipeline.core import Attempt, Pipeline, goal_of
from pipeline.effects import ApproveCriticalModel, CancelAttempt, NotifyUser, OpenQuestion
from protocol.bridge import (
    CAPABILITY_DECISION,
    CONSENSUS_DECISION,
    CRITICAL_APPROVAL,
    Cancelled,
    CancelTask,
    EscalateDecision,
    Refused,
    Reopened,
    ReopenFailed,
    SubmitTask,
    TaskAccepted,
)
from protocol.messages import (
    CreateTasks,
    OpenEscalation,
    RecordAccepted,
    RecordCancel,
    RecordCancelRequest,
    ReopenTasks,
)
from protocol.records import EscalationRow, TaskRow

__all__ = [
    "SUBMITTED_PREFIX",
    "answered",
    "apply_decision",
    "ask_user",
    "cancel",
    "handoff_applied",
    "own_attempt",
    "question_for",
    "question_opened",
    "remind_open_questions",
    "reopen_failed",
    "resume_questions",
    "submit",
    "track",
]

SUBMITTED_PREFIX = "MCP"


def not_accepting(core: Pipeline) -> Refused | None:
    if not core.accepting():
        return Refused(reason="the run is stopping; no new work is accepted")
    return None


# --- tasks ---------------------------------------------------------------------------


def _next_submitted_id(core: Pipeline) -> str:
    # Numbered after the highest MCP-n already there, so ids stay unique across runs.
    if core.submitted_seq == 0:
        numbers = [
            int(task_id[len(SUBMITTED_PREFIX) + 1 :])
            for task_id in core.rows
            if task_id.startswith(SUBMITTED_PREFIX + "-") and task_id[len(SUBMITTED_PREFIX) + 1 :].isdigit()
        ]
        core.submitted_seq = max(numbers, default=0)
    core.submitted_seq += 1
    return f"{SUBMITTED_PREFIX}-{core.submitted_seq:03d}"


def submit(core: Pipeline, message: SubmitTask, roles: list[str], now: Instant) -> TaskAccepted | Refused:
    refusal = not_accepting(core)
    if refusal is not None:
        return refusal
    owner = message.assigned_to
    if owner is None:
        if len(roles) != 1:
            return Refused(
                reason=f"this session has several roles; name one of: {', '.join(roles)}", argument="assigned_to"
            )
        owner = roles[0]
    elif owner not in roles:
        return Refused(
            reason=f"'{owner}' is not a role of this session; use one of: {', '.join(roles)}", argument="assigned_to"
        )
    unknown = [dep for dep in message.blocked_by if dep not in core.rows]
    if unknown:
        return Refused(reason=f"no task {', '.join(unknown)} in this session", argument="blocked_by")
    stamp = iso(now.wall)
    row = TaskRow(
        id=_next_submitted_id(core),
        owner=owner,
        subject=message.name[:200],
        description=message.description,
        priority=message.priority,
        blocked_by=list(dict.fromkeys(message.blocked_by)),
        max_attempts=core.config.max_attempts,
        source=message.source,
        created_at=stamp,
        updated_at=stamp,
    )
    core.record(CreateTasks(tasks=(row,), write_id=message.write_id))
    core.add_task(row, goal_of(row))
    core.idle_announced = False
    core.say(f"+ {row.id} ({owner}, {row.priority}) submitted through {message.source}: {row.subject}")
    core.dispatch(now)
    return TaskAccepted(task=core.rows[row.id])


def cancel(core: Pipeline, message: CancelTask, now: Instant) -> Cancelled | Refused:
    row = core.rows.get(message.task_id)
    if row is None:
        return Refused(reason=f"no task '{message.task_id}' in this session", argument="task_id")
    if row.status in ("completed", "failed"):
        return Refused(reason=f"{row.id} is already {row.status}", argument="task_id")
    if row.status == "in_progress":
        attempt = next((a for a in core.attempts.values() if a.task_id == row.id), None)
        if attempt is not None:
            attempt.cancelled_by = message.by
            # Its end records the cancellation; until then the request is kept on its run row, so
            # a run killed first does not run the task again when it resumes.
            core.record(
                RecordCancelRequest(
                    run_row_id=attempt.run_row_id, task_id=row.id, by=message.by, write_id=message.write_id
                )
            )
            core.out.append(CancelAttempt(worker_id=attempt.worker_id))
            return Cancelled(task_id=row.id, was="in_progress")
    core.table.fail(row.id)
    core.update(row.id, status="failed", last_error_kind="cancelled")
    core.record(RecordCancel(task_id=row.id, reason=message.reason, by=message.by, write_id=message.write_id))
    core.say(f"✗ {row.id} cancelled by {message.by}")
    core.maybe_finish(now)
    return Cancelled(task_id=row.id, was=row.status)


def _reopen(core: Pipeline, task_ids: tuple[str, ...], by: str) -> None:
    core.record(ReopenTasks(task_ids=task_ids, by=by))
    for task_id in task_ids:
        # A fresh budget; attempt numbers go on, so no earlier attempt's log or record is overwritten.
        before = core.rows[task_id].attempts
        core.update(task_id, status="pending", attempts_before=before, last_error=None, last_error_kind=None)
        core.table.reset(task_id)
    core.idle_announced = False


def reopen_failed(core: Pipeline, message: ReopenFailed, now: Instant) -> Reopened | Refused:
    refusal = not_accepting(core)
    if refusal is not None:
        return refusal
    failed = tuple(core.table.failed())
    if not failed:
        return Reopened(task_ids=())
    _reopen(core, failed, message.by)
    core.say(f"↻ reopened {len(failed)} failed task(s): {', '.join(failed[:10])}")
    core.dispatch(now)
    return Reopened(task_ids=failed)


# --- workers report back --------------------------------------------------------------


def own_attempt(core: Pipeline, task_id: str, agent_id: str) -> Attempt | Refused:
    """The attempt running ``task_id`` for ``agent_id``: a worker reports only on its own task."""
    for attempt in core.attempts.values():
        if attempt.agent_id == agent_id:
            if attempt.task_id != task_id:
                return Refused(
                    reason=f"agent {agent_id} is running {attempt.task_id}, not {task_id}: "
                    "a worker may report only on its own task",
                    argument="task_id",
                )
            return attempt
    return Refused(
        reason=f"no running attempt has agent id '{agent_id}' (use the id given in your prompt; "
        "it changes with every attempt)",
        argument="agent_id",
    )


# --- questions for the user --------------------------------------------------------------


def question_for(core: Pipeline, message: EscalateDecision, now: Instant) -> OpenEscalation | Refused | None:
    """The escalation to open for ``message``, a refusal, or None (already asked)."""
    if message.task_id is not None and message.task_id not in core.rows:
        return Refused(reason=f"no task '{message.task_id}' in this session", argument="task_id")
    if message.default_choice is not None and message.options and message.default_choice not in message.options:
        return Refused(
            reason=f"{message.default_choice!r} is not one of the options ({', '.join(message.options)})",
            argument="default_choice",
        )
    if message.timeout_s is not None and message.default_choice is None:
        return Refused(reason="a timeout needs a default_choice to take when it passes", argument="timeout_s")
    if core.questions.asking(message.opened_by):
        return None  # every task waiting for a provider's key shares its one question
    if message.opened_by == CRITICAL_APPROVAL:
        # Each attempt of the task meets the gate again: ask once per task and run.
        if message.task_id in core.questions.critical_asked:
            return None
        core.questions.critical_asked.add(message.task_id or "")
    pending = message.task_id is not None and core.rows[message.task_id].status == "pending"
    deadline = None
    if message.timeout_s is not None:
        deadline = datetime.fromtimestamp(now.wall + message.timeout_s, UTC).isoformat(timespec="seconds")
    return OpenEscalation(
        issue=message.issue,
        options=message.options,
        task_id=message.task_id,
        opened_by=message.opened_by,
        default_choice=message.default_choice,
        deadline=deadline,
        holds_task=message.hold and pending,
    )


def ask_user(core: Pipeline, message: EscalateDecision, now: Instant) -> None:
    """Ask the user (the host opens the question in the store, then calls :func:`question_opened`)."""
    question = question_for(core, message, now)
    if isinstance(question, OpenEscalation):
        core.out.append(OpenQuestion(question=question))


def track(core: Pipeline, row: EscalationRow) -> None:
    """Hold the task an open question is about; remember when its default is due."""
    task = core.rows.get(row.task_id or "")
    if core.questions.track(row, holdable=task is not None and task.status == "pending") and task is not None:
        core.table.hold(task.id)


def question_opened(core: Pipeline, row: EscalationRow, folder: str) -> None:
    track(core, row)
    _ask_owner(core, row, folder)


def remind_open_questions(core: Pipeline, rows: tuple[EscalationRow, ...], folder: str) -> None:
    """After an unclean stop: ask again what is still open.  The notice of a question asked just
    before the crash may have died with the run, and a task it holds would wait for an answer
    its owner was never asked for."""
    for row in rows:
        _ask_owner(core, row, folder, again=True)


def _ask_owner(core: Pipeline, row: EscalationRow, folder: str, again: bool = False) -> None:
    options = f" ({' / '.join(row.options)})" if row.options else ""
    waits = f"; {row.task_id} waits for the answer" if row.holds_task else ""
    still = "still open after a restart: " if again else ""
    core.say(f"? {still}{row.id}: {row.issue[:300]}{options}{waits}")
    choices = "|".join(row.options) if row.options else "CHOICE"
    core.notify(
        NotifyUser(
            kind="escalation_opened",
            title=f"Question {row.id}"
            + (f" about {row.task_id}" if row.task_id else "")
            + (" (still open after a restart)" if again else ""),
            body=row.issue + (f"\n{row.task_id} waits for the answer." if row.holds_task else ""),
            action=f"executor answer {row.id} {choices} --session {folder}",
            escalation_id=row.id,
            options=tuple(row.options),
        )
    )


def answered(core: Pipeline, row: EscalationRow, now: Instant) -> None:
    """The store accepted an answer to ``row``: release what it held and carry out the decision."""
    core.say(f"✓ {row.id} answered: {row.choice} (by {row.answered_by})")
    core.questions.answered_this_run.add(row.id)
    if core.questions.untrack(row) and row.task_id in core.rows:
        core.table.release(row.task_id or "")
        core.idle_announced = False
    apply_decision(core, row, now)
    if row.opened_by == CRITICAL_APPROVAL and row.choice == "approve" and row.task_id:
        core.out.append(ApproveCriticalModel(task_id=row.task_id))
    if row.task_id and row.choice == "cancel":
        task = core.rows.get(row.task_id)
        if task is not None and task.status in ("pending", "in_progress"):
            cancel(core, CancelTask(task_id=task.id, reason=f"answer to {row.id}", by=row.answered_by or "user"), now)
    core.dispatch(now)


def apply_decision(core: Pipeline, row: EscalationRow, now: Instant) -> None:
    """Carry out the answer to one of the executor's own questions (at once, or at the next
    boot when it was answered while no run was live).  Idempotent: a decision about a task
    that has moved on since is left alone."""
    task = core.rows.get(row.task_id or "")
    if task is None:
        return
    if row.opened_by == CONSENSUS_DECISION and task.status == "failed" and task.last_error_kind == "needs_decision":
        by = row.answered_by or "user"
        if row.choice == "retry":
            _reopen(core, (task.id,), by)
            core.say(f"↻ {task.id} runs again ({row.id}: retry)")
        elif row.choice == "accept":
            core.record(RecordAccepted(task_id=task.id, by=by))
            core.update(task.id, status="completed", last_error_kind=None)
            unblocked = core.table.complete(task.id)
            core.say(
                f"✓ {task.id} accepted as done ({row.id})"
                + (f"; unblocked {', '.join(unblocked)}" if unblocked else "")
            )
        core.idle_announced = False
    elif (
        row.opened_by == CAPABILITY_DECISION
        and row.choice == "stop the run"
        and row.id in core.questions.answered_this_run  # a stop asked for in an earlier run is not repeated
        and core.accepting()
    ):
        core.shutdown(f"{row.id}: stop the run (capability gap)", True, now)


def resume_questions(
    core: Pipeline, open_rows: tuple[EscalationRow, ...], answered_rows: tuple[EscalationRow, ...], now: Instant
) -> None:
    """At the start of a run: questions still open from an earlier run, and answers given while none ran."""
    for row in open_rows:
        track(core, row)
    for row in answered_rows:
        apply_decision(core, row, now)


# --- people moving manual tasks ---------------------------------------------------------


def handoff_applied(core: Pipeline, op: str, by: str, row: TaskRow, now: Instant) -> None:
    """Bring the table in line with what the store now says after a handoff step."""
    before = core.rows.get(row.id)
    if op == "create":
        core.add_task(row, row.subject)
        core.say(f"+ {row.id} ({row.owner}, {row.priority}) created by {by}: {row.subject}")
        core.idle_announced = False
        core.dispatch(now)
        return
    core.rows[row.id] = row
    if before is not None and before.status != row.status:
        if row.status == "completed":
            unblocked = core.table.complete(row.id)
            then = f"; unblocked {', '.join(unblocked)}" if unblocked else ""
            core.say(f"✓ {row.id} completed by {row.agent or by}{then}")
        elif row.status == "failed":
            core.table.fail(row.id)
            core.say(f"✗ {row.id} failed, said {row.agent or by}: {row.last_error}")
        else:
            core.table.set_status(row.id, row.status)
            verb = {"in_progress": f"claimed by {row.agent}", "review": "handed in for review"}
            if row.status != "pending":  # a release says why itself
                core.say(f"✋ {row.id} {verb.get(row.status, row.status)}")
    core.idle_announced = False
    core.dispatch(now)
