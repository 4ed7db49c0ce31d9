"""The Session actor: the only writer of a session's state.

Every transition lands in one SQLite transaction (the task row, the run row
and the event together); then the team-session.json projection is marked
dirty (written at most every ``flush_interval_s``), upstream-format messages
go to ``.msg/messages.jsonl``, and the committed events are handed to the
sinks (the terminal view, ``--json-events``).  Nothing here is the only copy
of anything: a restarted Session actor rebuilds itself from the database.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import msgspec
import pykka

from actors.base import TreeActor, handles
from protocol.bridge import Refused
from protocol.events import (
    ChangesRequested,
    EscalationAnswered,
    EscalationOpened,
    Event,
    RunCompleted,
    RunStarted,
    SessionReconciled,
    ShutdownCompleted,
    TaskCancelled,
    TaskCompleted,
    TaskCreated,
    TaskDispatched,
    TaskFailed,
    TaskProgress,
    TaskReset,
    TasksReopened,
    TaskStarted,
    WorkerSpawned,
)
from protocol.messages import (
    BeginRun,
    CreateTasks,
    Deliverable,
    Deliverables,
    FinishRun,
    Flush,
    GetDeliverables,
    GetEscalation,
    GetState,
    HandoffRequest,
    Ok,
    OpenEscalation,
    OpenRun,
    ReconcileApplied,
    ReconcilePlan,
    RecordAccepted,
    RecordAnswer,
    RecordCancel,
    RecordDispatch,
    RecordEvents,
    RecordOutcome,
    RecordProgress,
    RecordStart,
    ReopenTasks,
    StateSnapshot,
)
from protocol.records import EscalationRow, TaskRow
from session.escalations import answer_in_store
from session.feedback import append_round
from session.handoff import HandoffRefused, apply_handoff
from session.loader import TeamSession
from session.message_bus import (
    MessageBus,
    error_message,
    progress_message,
    task_complete_message,
    task_unblocked_message,
)
from session.projection import SessionProjection, write_atomic
from session.store import STATE_DIR, Store, utc_now

__all__ = ["EventSink", "SessionActor"]

log = logging.getLogger("executor.session")

EventSink = Callable[[int, str, Event], None]
"""Called on the Session actor's thread with (event id, time, event) after each commit."""


class SessionActor(TreeActor):
    def __init__(
        self,
        name: str,
        parent: pykka.ActorRef[Any] | None,
        incarnation: int,
        session: TeamSession,
        sinks: Iterable[EventSink] = (),
        flush_interval_s: float = 0.5,
    ) -> None:
        super().__init__(name, parent, incarnation)
        self.session = session
        self.folder = Path(session.folder)
        self.sinks = list(sinks)
        self.flush_interval_s = flush_interval_s
        self._pending_events: list[Event] = []

    # --- life --------------------------------------------------------------------

    def started(self) -> None:
        self.store = Store.open(self.folder)
        self.rows: dict[str, TaskRow] = {row.id: row for row in self.store.tasks()}
        self.bus = MessageBus.open(self.folder)
        self.projection = SessionProjection(
            self.folder, self.session.team_raw, [*(t.id for t in self.session.tasks), *self.rows]
        )
        for row in self.rows.values():
            if row.status == "completed":
                self.projection.task_completed(row.id)

    def stopping(self) -> None:
        try:
            self._commit_batch()
        except Exception:
            log.exception("session: the last batch could not be committed")
        for closer in (self.projection.flush, self.bus.close, self.store.close):
            try:
                closer()
            except Exception:  # closing must go on; the database is already the truth
                log.exception("session: %s failed while stopping", getattr(closer, "__name__", closer))

    # --- group commit ---------------------------------------------------------------

    def on_receive(self, message: Any) -> Any:
        """Handle one message inside the current batch; commit when the batch is due.

        Each handler's writes sit in a savepoint (``store.transaction()``) inside one
        open transaction, so a failing handler undoes only its own writes and the
        batch before it is still committed.  The batch
        is committed before any reply (a caller that asked is told only what is
        durable) and whenever the inbox is empty, so under load many transitions
        share one commit and when idle each commits at once.  Events reach the sinks
        only after their commit.
        """
        if not self.store.conn.in_transaction:
            self.store.conn.execute("BEGIN")
        try:
            result = super().on_receive(message)
        except BaseException:
            # The failing handler's savepoint is already undone: keep the others'
            # writes, then crash (the supervisor restarts us from the database).
            self._commit_batch()
            raise
        if result is not None or self.actor_inbox.empty():
            self._commit_batch()
        return result

    def _commit_batch(self) -> None:
        if self.store.conn.in_transaction:
            self.store.conn.execute("COMMIT")
        self._publish()

    # --- helpers ------------------------------------------------------------------

    def _append(self, event: Event, task_id: str | None = None) -> None:
        self.store.append(event, task_id)
        self._pending_events.append(event)

    def _publish(self) -> None:
        events, self._pending_events = self._pending_events, []
        for event in events:
            for sink in self.sinks:
                try:
                    sink(0, utc_now(), event)
                except Exception:  # noqa: BLE001, S112 - a broken view must never stop the writer
                    continue

    def _update(self, task_id: str, **changes: Any) -> None:
        self.store.update_task(task_id, **changes)
        row = self.rows.get(task_id)
        if row is not None:
            self.rows[task_id] = msgspec.structs.replace(
                row, **{k: v for k, v in changes.items() if k in TaskRow.__struct_fields__}
            )

    # --- queries --------------------------------------------------------------------

    @handles(GetState)
    def get_state(self, message: GetState) -> StateSnapshot:
        return StateSnapshot(
            tasks=tuple(self.rows.values()),
            meta=self.store.meta(),
            next_run_row_id=self.store.max_run_id() + 1,
            open_escalations=tuple(self.store.escalations("open")),
            answered_decisions=tuple(
                row for row in self.store.escalations("answered") if row.opened_by.startswith("executor:")
            ),
            agent_sessions=self.store.latest_agent_sessions(),
            spent_by_task=self.store.spent_by_task(),
            open_runs=tuple(
                OpenRun(run_row_id=r.id, task_id=r.task_id, attempt=r.attempt, pid=r.pid, create_time=r.pid_create_time)
                for r in self.store.open_runs()
            ),
        )

    @handles(GetDeliverables)
    def get_deliverables(self, message: GetDeliverables) -> Deliverables:
        latest = dict(self.store.completions())
        return Deliverables(
            items=tuple(
                Deliverable(task_id=task_id, role=self.rows[task_id].owner if task_id in self.rows else "", artifacts=a)
                for task_id, a in latest.items()
                if self.rows.get(task_id) is not None and self.rows[task_id].status == "completed"
            )
        )

    # --- the run ----------------------------------------------------------------------

    @handles(BeginRun)
    def begin_run(self, message: BeginRun) -> Ok:
        with self.store.transaction():
            self.store.set_meta(
                run_id=message.run_id, clean_stop="0", run_started_at=utc_now(), run_pid=str(message.pid)
            )
            self._append(
                RunStarted(
                    run_id=message.run_id, pid=message.pid, command=message.command, max_workers=message.max_workers
                )
            )
        self.projection.set_status("active")
        return Ok()

    @handles(ReconcilePlan)
    def apply_reconcile(self, plan: ReconcilePlan) -> ReconcileApplied:
        report_path: str | None = None
        if plan.report_markdown:
            stamp = utc_now().replace(":", "").replace("-", "").split(".")[0]
            path = self.folder / STATE_DIR / "recovery" / f"{stamp}-{plan.run_id}.md"
            path.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(path, plan.report_markdown.encode())
            report_path = str(path)
        now = utc_now()
        with self.store.transaction():
            if plan.created:
                self.store.put_tasks(list(plan.created))
                for row in plan.created:
                    self.rows[row.id] = row
                    self._append(
                        TaskCreated(
                            task_id=row.id, owner=row.owner, priority=row.priority, blocked_by=tuple(row.blocked_by)
                        )
                    )
            for task_id in plan.completed_from_session:
                self._update(task_id, status="completed", completed_at=now)
            for reset in plan.resets:
                row = self.rows[reset.task_id]
                # The interrupted attempt was not the task's fault: it does not count.
                self._update(reset.task_id, status="pending", attempts=max(0, row.attempts - 1))
                self._append(
                    TaskReset(task_id=reset.task_id, previous_status=reset.previous_status, reason=reset.reason)
                )
            for run_row_id in plan.closed_runs:
                self.store.update_run(
                    run_row_id, ended_at=now, outcome="interrupted", error="the executor stopped while this attempt ran"
                )
            if report_path:
                self.store.set_meta(recovery_report=report_path)
            self._append(
                SessionReconciled(
                    run_id=plan.run_id,
                    unclean_previous_stop=plan.unclean_previous_stop,
                    reset_tasks=tuple(r.task_id for r in plan.resets),
                    created_tasks=tuple(r.id for r in plan.created),
                    completed_from_session=plan.completed_from_session,
                    killed_pids=plan.killed_pids,
                    report_path=report_path,
                )
            )
        for row in plan.created:
            self.projection.add_task(row.id)
        for row in self.rows.values():
            if row.status == "completed":
                self.projection.task_completed(row.id)
            else:
                self.projection.task_reopened(row.id)
        self.projection.flush(force=True)
        return ReconcileApplied(report_path=report_path)

    @handles(RecordDispatch)
    def record_dispatch(self, message: RecordDispatch) -> None:
        if self.store.run_exists(message.run_row_id):
            return
        with self.store.transaction():
            self._update(message.task_id, status="in_progress", attempts=message.attempt, not_before=None)
            self.store.insert_run(
                id=message.run_row_id,
                run_id=message.run_id,
                task_id=message.task_id,
                attempt=message.attempt,
                worker_id=message.worker_id,
                backend=message.backend,
                log_path=message.log_path,
            )
            self._append(WorkerSpawned(worker_id=message.worker_id, role=message.role, task_id=message.task_id))
            self._append(
                TaskDispatched(
                    task_id=message.task_id,
                    attempt=message.attempt,
                    worker_id=message.worker_id,
                    backend=message.backend,
                )
            )
        self.projection.worker_started(message.task_id, message.role, None, utc_now())
        self.projection.task_reopened(message.task_id)
        self.bus.post_message(
            message.role, progress_message(message.task_id, message.role, "in_progress", 0, "dispatched")
        )

    @handles(RecordStart)
    def record_start(self, message: RecordStart) -> None:
        with self.store.transaction():
            self.store.update_run(message.run_row_id, pid=message.pid, pid_create_time=message.create_time)
            self._append(TaskStarted(task_id=message.task_id, attempt=message.attempt, pid=message.pid))
        self.projection.worker_started(message.task_id, message.role, message.pid, utc_now())

    @handles(RecordProgress)
    def record_progress(self, message: RecordProgress) -> None:
        with self.store.transaction():
            self._append(
                TaskProgress(
                    task_id=message.task_id, attempt=message.attempt, note=message.note, percent=message.percent
                )
            )
        self.bus.post_message(
            message.role,
            progress_message(message.task_id, message.role, "in_progress", message.percent or 0, message.note[:80]),
        )

    @handles(RecordOutcome)
    def record_outcome(self, message: RecordOutcome) -> None:
        result = message.result
        now = utc_now()
        run_changes: dict[str, Any] = {
            "ended_at": now,
            "exit_code": result.exit_code,
            "outcome": message.disposition if message.disposition != "retry" else "failed",
            "error_kind": result.error_kind,
            "error": result.error,
            "tokens_in": result.tokens_in,
            "tokens_out": result.tokens_out,
            "tokens_cached": result.tokens_cached,
            "cost_usd": result.cost_usd,
            "model": result.model,
            "key_id": result.key_id,
            "agent_session_id": result.agent_session_id,
            "git_head_before": result.git_head_before,
            "git_head_after": result.git_head_after,
            "files_changed": list(result.files_modified) or None,
        }
        with self.store.transaction():
            self.store.update_run(message.run_row_id, **{k: v for k, v in run_changes.items() if v is not None})
            if message.disposition == "completed":
                self._update(
                    message.task_id, status="completed", completed_at=now, last_error=None, last_error_kind=None
                )
                self._append(
                    TaskCompleted(
                        task_id=message.task_id,
                        attempt=message.attempt,
                        artifacts=result.artifacts,
                        summary=result.summary[:500],
                    )
                )
            elif message.disposition == "changes_requested" and message.sent_back is not None:
                # The review runs again after the work it sent back; neither is done for now.
                self._update(message.task_id, status="pending", last_error=None, last_error_kind=None)
                self._update(message.sent_back, status="pending", completed_at=None)
                self._append(
                    ChangesRequested(
                        task_id=message.sent_back,
                        review_task=message.task_id,
                        round=message.review_round,
                        feedback=result.feedback,
                    )
                )
            elif message.disposition == "interrupted":
                row = self.rows[message.task_id]
                self._update(message.task_id, status="pending", attempts=max(0, row.attempts - 1))
                self._append(
                    TaskReset(
                        task_id=message.task_id,
                        previous_status="in_progress",
                        reason="interrupted by the executor's shutdown",
                    )
                )
            else:
                final = message.disposition == "failed"
                not_before = None
                if message.retry_in_s is not None:
                    not_before = time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(time.time() + message.retry_in_s))
                self._update(
                    message.task_id,
                    status="failed" if final else "pending",
                    not_before=not_before,
                    last_error=(result.error or "")[:2000],
                    last_error_kind=result.error_kind,
                )
                self._append(
                    TaskFailed(
                        task_id=message.task_id,
                        attempt=message.attempt,
                        error_kind=result.error_kind or "crash",
                        error=(result.error or "")[:2000],
                        final=final,
                        retry_in_s=message.retry_in_s,
                    )
                )
        self.projection.worker_stopped(message.task_id)
        if message.sent_back is not None:
            # The ChangesRequested event holds the items too, should this write be lost to a crash.
            append_round(self.folder, message.sent_back, message.review_round, message.task_id, now, result.feedback)
            self.projection.task_reopened(message.sent_back)
        if message.disposition == "completed":
            self.projection.task_completed(message.task_id)
            artifact = result.artifacts[0] if result.artifacts else None
            self.bus.post(
                message.role,
                message.report_text or result.summary or f"{message.task_id} complete",
                type="task_complete",
                data=task_complete_message(message.task_id, message.role, artifact, result.files_modified).data,
            )
            if message.unblocked:
                self.bus.post_message(message.role, task_unblocked_message(message.unblocked, message.task_id))
        elif message.disposition in ("failed", "retry"):
            self.bus.post_message(
                message.role,
                error_message(
                    f"{message.task_id} attempt {message.attempt} failed ({result.error_kind}): {result.error}",
                    task_id=message.task_id,
                    error_kind=result.error_kind,
                ),
            )

    @handles(HandoffRequest)
    def handoff(self, message: HandoffRequest) -> TaskRow | HandoffRefused:
        """A person's step on a task (``session.handoff``), its event told to the run's views."""
        result = apply_handoff(self.store, message, self._append)
        if isinstance(result, TaskRow):
            self.rows[result.id] = result
            if message.op == "create":
                self.projection.add_task(result.id)
            elif result.status == "completed":
                self.projection.task_completed(result.id)
            else:  # a rollback takes a completed task back
                self.projection.task_reopened(result.id)
        return result

    @handles(CreateTasks)
    def create_tasks(self, message: CreateTasks) -> Ok:
        with self.store.transaction():
            self.store.put_tasks(list(message.tasks))
            for row in message.tasks:
                self.rows[row.id] = row
                self._append(
                    TaskCreated(
                        task_id=row.id,
                        owner=row.owner,
                        priority=row.priority,
                        blocked_by=tuple(row.blocked_by),
                        source=row.source,
                    )
                )
            for task_id, blocked_by in message.rewire:
                merged = list(dict.fromkeys([*self.rows[task_id].blocked_by, *blocked_by]))
                self._update(task_id, blocked_by=merged)
        for row in message.tasks:
            self.projection.add_task(row.id)
        return Ok()

    @handles(RecordCancel)
    def record_cancel(self, message: RecordCancel) -> Ok:
        with self.store.transaction():
            self._update(
                message.task_id,
                status="failed",
                not_before=None,
                last_error=f"cancelled by {message.by}" + (f": {message.reason}" if message.reason else ""),
                last_error_kind="cancelled",
            )
            self._append(TaskCancelled(task_id=message.task_id, reason=message.reason, by=message.by))
        return Ok()

    @handles(RecordAccepted)
    def record_accepted(self, message: RecordAccepted) -> Ok:
        with self.store.transaction():
            self._update(message.task_id, status="completed", completed_at=utc_now(), last_error=None)
            self._append(TaskCompleted(task_id=message.task_id, attempt=0, summary=f"accepted as done by {message.by}"))
        self.projection.task_completed(message.task_id)
        return Ok()

    @handles(ReopenTasks)
    def reopen_tasks(self, message: ReopenTasks) -> Ok:
        with self.store.transaction():
            for task_id in message.task_ids:
                self._update(task_id, status="pending", attempts=0, not_before=None)
                self.projection.task_reopened(task_id)
            self._append(TasksReopened(task_ids=message.task_ids, by=message.by))
        return Ok()

    @handles(OpenEscalation)
    def open_escalation(self, message: OpenEscalation) -> EscalationRow:
        with self.store.transaction():
            row = EscalationRow(
                id=self.store.next_escalation_id(),
                issue=message.issue,
                options=list(message.options),
                task_id=message.task_id,
                opened_by=message.opened_by,
                created_at=utc_now(),
                default_choice=message.default_choice,
                deadline=message.deadline,
                holds_task=message.holds_task,
            )
            self.store.put_escalation(row)
            self._append(
                EscalationOpened(
                    escalation_id=row.id,
                    issue=row.issue,
                    options=message.options,
                    task_id=row.task_id,
                    opened_by=row.opened_by,
                ),
                task_id=row.task_id,
            )
        return row

    @handles(GetEscalation)
    def get_escalation(self, message: GetEscalation) -> EscalationRow | None:
        return self.store.escalation(message.escalation_id)

    @handles(RecordAnswer)
    def record_answer(self, message: RecordAnswer) -> EscalationRow | Refused:
        answered = answer_in_store(self.store, message.escalation_id, message.choice, message.answered_by)
        if isinstance(answered, EscalationRow):
            self._pending_events.append(
                EscalationAnswered(escalation_id=answered.id, choice=message.choice, answered_by=message.answered_by)
            )
        return answered

    @handles(RecordEvents)
    def record_events(self, message: RecordEvents) -> Ok:
        with self.store.transaction():
            for event in message.events:
                self._append(event)
            if message.meta:
                self.store.set_meta(**message.meta)
        if message.wisdom_issue:
            path = self.folder / "wisdom" / "issues.md"
            path.parent.mkdir(exist_ok=True)
            with path.open("a", encoding="utf-8") as handle:
                handle.write(f"\n- {utc_now()} {message.wisdom_issue}\n")
        return Ok()

    @handles(FinishRun)
    def finish_run(self, message: FinishRun) -> Ok:
        with self.store.transaction():
            if message.summary is not None and not message.summary.interrupted:
                summary = message.summary
                self._append(
                    RunCompleted(
                        run_id=message.run_id,
                        completed=summary.completed,
                        total=summary.total,
                        failed=summary.failed,
                        blocked=summary.blocked,
                        duration_s=round(summary.duration_s, 3),
                    )
                )
            self._append(
                ShutdownCompleted(
                    run_id=message.run_id, clean=message.clean, interrupted_tasks=message.interrupted_tasks
                )
            )
            if message.clean:
                self.store.set_meta(clean_stop="1", run_stopped_at=utc_now())
        if message.session_status is not None:
            self.projection.set_status(message.session_status)
        self.projection.flush(force=True)
        return Ok()

    @handles(Flush)
    def flush(self, message: Flush) -> None:
        self.projection.flush_if_due(time.monotonic(), self.flush_interval_s)
