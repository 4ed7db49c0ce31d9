"""The Session actor: the only writer of a session's state.

Every transition lands in one SQLite transaction (the task row, the run row
and the event together); then the team-session.json projection is marked
dirty (written at most every ``flush_interval_s``).  Once the transaction is
committed, the committed events are handed to the sinks (the terminal view,
``--json-events``) and the upstream-format messages the transitions drafted go
to ``.msg/messages.jsonl``, in one write.  Nothing here is the only copy
of anything: a restarted Session actor rebuilds itself from the database.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import msgspec
import pykka

from actors.base import TreeActor, handles
from actors.queued_writes import tool_of
from actors.session_link import DirectLine
from actors.session_outcome import write_outcome, write_reconciliation
from protocol._base import Message as ProtocolMessage
from protocol.bridge import (
    AnswerEscalation,
    Cancelled,
    CancelTask,
    EscalationRecord,
    Refused,
    SubmitTask,
    TaskAccepted,
)
from protocol.events import (
    EscalationAnswered,
    EscalationOpened,
    Event,
    RunCompleted,
    RunStarted,
    ShutdownCompleted,
    TaskCancelled,
    TaskCompleted,
    TaskCreated,
    TaskDispatched,
    TaskProgress,
    TasksReopened,
    TaskStarted,
    WorkerSpawned,
)
from protocol.messages import (
    AwaitCommit,
    BeginRun,
    Commit,
    Committed,
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
    RecordCancelRequest,
    RecordDispatch,
    RecordEvents,
    RecordOutcome,
    RecordProgress,
    RecordQueuedWrite,
    RecordStart,
    ReopenTasks,
    SettleWrite,
    StateSnapshot,
    StorageFailed,
)
from protocol.records import EscalationRow, TaskRow
from session.escalations import answer_in_store
from session.handoff import HandoffRefused, apply_handoff
from session.loader import TeamSession
from session.message_bus import (
    DEFAULT_TYPE,
    Draft,
    Message,
    MessageBus,
    ProgressPacer,
    progress_message,
)
from session.projection import SessionProjection
from session.store import DB_NAME, STATE_DIR, Store, storage_problem, utc_now
from session.store_changes import RunChange, RunStart, TaskChange

__all__ = ["EventSink", "SessionActor"]

log = logging.getLogger("executor.session")

EventSink = Callable[[int, str, Event], None]
"""Called on the Session actor's thread with (event id, time, event) after each commit."""

#: A batch is committed at the latest this long after it began, even while messages keep
#: coming: readers in other processes (check, the MCP bridge) see the store at most this far behind.
MAX_BATCH_S = 0.1


class SessionActor(TreeActor):
    def __init__(
        self,
        name: str,
        parent: pykka.ActorRef[Any] | None,
        incarnation: int,
        session: TeamSession,
        sinks: Iterable[EventSink] = (),
        flush_interval_s: float = 0.5,
        direct: DirectLine | None = None,
    ) -> None:
        super().__init__(name, parent, incarnation)
        self.direct = direct
        # Its handlers run on its own thread (messages from others) and, through ``direct``,
        # on the Executor's: one at a time.
        self._lock = threading.RLock()
        self.session = session
        self.folder = Path(session.folder)
        self.sinks = list(sinks)
        self.flush_interval_s = flush_interval_s
        self._pending_events: list[Event] = []
        self._pending_posts: list[Draft] = []  # bus messages of the open batch, written after its commit
        self.bus_pacer = ProgressPacer()  # every report is stored; the bus gets one now and then
        self._batch_began = 0.0

    # --- life --------------------------------------------------------------------

    def started(self) -> None:
        with self._lock:
            self._open()
        if self.direct is not None:
            self.direct.attach(self)

    def _open(self) -> None:
        self.store = Store.open(self.folder, shared=self.direct is not None)
        # The task rows live in the store only (the Executor's pipeline core holds the run's
        # copy): this actor reads them back where it needs them, inside its own transaction.
        rows = self.store.tasks()
        self.bus = MessageBus.open(self.folder)
        self.projection = SessionProjection(
            self.folder, self.session.team_raw, [*(t.id for t in self.session.tasks), *(row.id for row in rows)]
        )
        for row in rows:
            if row.status == "completed":
                self.projection.task_completed(row.id)

    def stopping(self) -> None:
        with self._lock:
            self._close()

    def _close(self) -> None:
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
        """A message from the mailbox (see :meth:`_receive`); the batch is due when the mailbox is empty."""
        with self._lock:
            return self._receive(message, self.actor_inbox.empty)

    def call(self, message: Any) -> Any:
        """Handle ``message`` on the caller's thread (the Executor's, :class:`DirectLine`), as if
        it came through the mailbox; the batch is due at a reply, a :class:`Commit`, or once
        :data:`MAX_BATCH_S` old (the Executor asks for the rest when it is idle:
        :meth:`commit_open_batch`).  Raises ``ActorDeadError`` once the actor has stopped."""
        with self._lock:
            if self.actor_stopped.is_set():
                raise pykka.ActorDeadError(f"{self.name} has stopped")
            return self._receive(message, lambda: False)

    def commit_open_batch(self) -> None:
        with self._lock:
            if self.actor_stopped.is_set():
                return
            try:
                self._commit_batch()
            except BaseException as error:
                self._storage_failed(error)
                raise

    def _receive(self, message: Any, idle: Callable[[], bool]) -> Any:
        """Handle one message inside the current batch; commit when the batch is due.

        Each handler's writes sit in a savepoint (``store.transaction()``) inside one
        open transaction, so a failing handler undoes only its own writes and the
        batch before it is still committed (the batch's first writer needs no savepoint:
        undoing it is rolling the whole transaction back).  The batch
        is committed before any reply (a caller that asked is told only what is
        durable), whenever the inbox is empty, and once it is :data:`MAX_BATCH_S` old,
        so under load many transitions share one commit, when idle each commits at
        once, and a steady stream of messages (hundreds of agents reporting progress)
        does not keep the batch from readers.  Events reach the sinks only after their commit.
        """
        try:
            if not self.store.conn.in_transaction:
                self.store.begin()
                self._batch_began = time.monotonic()
            shown_before, posted_before = len(self._pending_events), len(self._pending_posts)
            try:
                result = super().on_receive(message)
            except BaseException as error:
                if storage_problem(error) is not None:
                    raise
                # The failing handler's savepoint is already undone, and so are its events and
                # bus lines (never shown: they are not in the store); keep the others' writes,
                # then crash (the supervisor restarts us from the database).
                del self._pending_events[shown_before:], self._pending_posts[posted_before:]
                self._commit_batch()
                raise
            if result is not None or idle() or time.monotonic() - self._batch_began >= MAX_BATCH_S:
                self._commit_batch()
        except BaseException as error:
            self._storage_failed(error)
            raise
        return result

    def _storage_failed(self, error: BaseException) -> None:
        """A full, read-only or failing disk: undo the open batch (the database keeps what was
        committed, and nothing uncommitted was shown) and tell the Executor, which stops the run."""
        problem = storage_problem(error)
        if problem is None:
            return
        with contextlib.suppress(sqlite3.Error):
            if self.store.conn.in_transaction:
                self.store.conn.execute("ROLLBACK")
        self._pending_events = []
        self._pending_posts = []
        where = getattr(error, "filename", None) or str(self.folder / STATE_DIR / DB_NAME)
        if self.parent is not None:
            self.parent.tell(StorageFailed(problem=problem, where=str(where)))

    def _commit_batch(self) -> None:
        if self.store.conn.in_transaction:
            self.store.conn.execute("COMMIT")
        self._publish()

    # --- helpers ------------------------------------------------------------------

    def _append(self, event: Event, task_id: str | None = None) -> None:
        self.store.append(event, task_id)
        self._pending_events.append(event)

    def _append_all(self, *events: Event) -> None:
        """:meth:`_append` each of ``events`` under its own task id, in one statement."""
        self.store.append_all(events)
        self._pending_events.extend(events)

    def _post(self, sender: str, summary: str, type: str = DEFAULT_TYPE, data: dict[str, Any] | None = None) -> None:
        """A bus message, drafted now (redacted and encoded), written once the batch is committed."""
        self._pending_posts.append(self.bus.draft(sender, summary, type, data=data))

    def _post_message(self, sender: str, message: Message) -> None:
        self._post(sender, message.summary, message.type, message.data)

    def _publish(self) -> None:
        events, self._pending_events = self._pending_events, []
        for event in events:
            for sink in self.sinks:
                try:
                    sink(0, utc_now(), event)
                except Exception:  # noqa: BLE001, S112 - a broken view must never stop the writer
                    continue
        posts, self._pending_posts = self._pending_posts, []
        if posts:
            self.bus.post_drafts(posts)

    def _update(self, task_id: str, change: TaskChange) -> None:
        self.store.update_task(task_id, change)

    # --- queries --------------------------------------------------------------------

    @handles(GetState)
    def get_state(self, message: GetState) -> StateSnapshot:
        return StateSnapshot(
            tasks=tuple(self.store.tasks()),
            meta=self.store.meta(),
            next_run_row_id=self.store.max_run_id() + 1,
            open_escalations=tuple(self.store.escalations("open")),
            answered_decisions=tuple(
                row for row in self.store.escalations("answered") if row.opened_by.startswith("executor:")
            ),
            agent_sessions=self.store.latest_agent_sessions(),
            spent_by_task=self.store.spent_by_task(),
            open_runs=tuple(
                OpenRun(
                    run_row_id=r.id,
                    task_id=r.task_id,
                    attempt=r.attempt,
                    pid=r.pid,
                    create_time=r.pid_create_time,
                    cancel_requested_by=r.cancel_requested_by,
                )
                for r in self.store.open_runs()
            ),
            queued_writes=tuple(self.store.unsettled_writes()),
        )

    @handles(GetDeliverables)
    def get_deliverables(self, message: GetDeliverables) -> Deliverables:
        latest = dict(self.store.completions())
        rows = {row.id: row for row in self.store.tasks()}
        return Deliverables(
            items=tuple(
                Deliverable(task_id=task_id, role=rows[task_id].owner, artifacts=artifacts)
                for task_id, artifacts in latest.items()
                if task_id in rows and rows[task_id].status == "completed"
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
        return write_reconciliation(self, plan)

    @handles(RecordDispatch)
    def record_dispatch(self, message: RecordDispatch) -> None:
        with self.store.transaction():
            inserted = self.store.insert_run(
                RunStart(
                    id=message.run_row_id,
                    run_id=message.run_id,
                    task_id=message.task_id,
                    attempt=message.attempt,
                    worker_id=message.worker_id,
                    backend=message.backend,
                    log_path=message.log_path,
                )
            )
            if not inserted:  # recorded before (re-sent after a restart of this actor): nothing to do
                return
            self._update(message.task_id, TaskChange(status="in_progress", attempts=message.attempt, not_before=None))
            self._append_all(
                WorkerSpawned(worker_id=message.worker_id, role=message.role, task_id=message.task_id),
                TaskDispatched(
                    task_id=message.task_id,
                    attempt=message.attempt,
                    worker_id=message.worker_id,
                    backend=message.backend,
                ),
            )
        self.projection.worker_started(message.task_id, message.role, None, utc_now())
        self.projection.task_reopened(message.task_id)
        self._post_message(
            message.role, progress_message(message.task_id, message.role, "in_progress", 0, "dispatched")
        )

    @handles(RecordStart)
    def record_start(self, message: RecordStart) -> None:
        with self.store.transaction():
            self.store.update_run(
                message.run_row_id, RunChange(pid=message.pid, pid_create_time=message.create_time, node=message.node)
            )
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
        if self.bus_pacer.due(message.task_id, time.monotonic()):
            self._post_message(
                message.role,
                progress_message(message.task_id, message.role, "in_progress", message.percent or 0, message.note[:80]),
            )

    @handles(RecordOutcome)
    def record_outcome(self, message: RecordOutcome) -> None:
        self.bus_pacer.forget(message.task_id)
        write_outcome(self, message)

    @handles(HandoffRequest)
    def handoff(self, message: HandoffRequest) -> TaskRow | HandoffRefused:
        """A person's step on a task (``session.handoff``), its event told to the run's views."""
        result = apply_handoff(self.store, message, self._append)
        if isinstance(result, TaskRow):
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
                current = self.store.task(task_id)
                merged = list(dict.fromkeys([*(current.blocked_by if current else []), *blocked_by]))
                self._update(task_id, TaskChange(blocked_by=merged))
            if message.write_id is not None:  # a queued submit: applied and settled in one commit
                self._settle(message.write_id, SubmitTask, TaskAccepted(task=message.tasks[0]))
        for row in message.tasks:
            self.projection.add_task(row.id)
        return Ok()

    @handles(RecordCancel)
    def record_cancel(self, message: RecordCancel) -> Ok:
        with self.store.transaction():
            if message.write_id is not None:
                before = self.store.task(message.task_id)
                was = before.status if before is not None else "pending"
                self._settle(message.write_id, CancelTask, Cancelled(task_id=message.task_id, was=was))
            self._update(
                message.task_id,
                TaskChange(
                    status="failed",
                    not_before=None,
                    last_error=f"cancelled by {message.by}" + (f": {message.reason}" if message.reason else ""),
                    last_error_kind="cancelled",
                ),
            )
            self._append(TaskCancelled(task_id=message.task_id, reason=message.reason, by=message.by))
        return Ok()

    @handles(RecordCancelRequest)
    def record_cancel_request(self, message: RecordCancelRequest) -> None:
        with self.store.transaction():
            self.store.update_run(message.run_row_id, RunChange(cancel_requested_by=message.by))
            if message.write_id is not None:
                reply = Cancelled(task_id=message.task_id, was="in_progress")
                self._settle(message.write_id, CancelTask, reply)

    @handles(RecordAccepted)
    def record_accepted(self, message: RecordAccepted) -> Ok:
        with self.store.transaction():
            self._update(message.task_id, TaskChange(status="completed", completed_at=utc_now(), last_error=None))
            self._append(TaskCompleted(task_id=message.task_id, attempt=0, summary=f"accepted as done by {message.by}"))
        self.projection.task_completed(message.task_id)
        return Ok()

    @handles(ReopenTasks)
    def reopen_tasks(self, message: ReopenTasks) -> Ok:
        with self.store.transaction():
            for task_id in message.task_ids:
                row = self.store.task(task_id)
                before = row.attempts if row is not None else 0
                # A fresh budget; attempt numbers go on, so no earlier attempt's log or record is overwritten.
                self._update(task_id, TaskChange(status="pending", attempts_before=before, not_before=None))
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
        with self.store.transaction():
            answered = answer_in_store(self.store, message.escalation_id, message.choice, message.answered_by)
            if isinstance(answered, EscalationRow) and message.write_id is not None:
                self._settle(message.write_id, AnswerEscalation, EscalationRecord(escalation=answered))
        if isinstance(answered, EscalationRow):
            self._pending_events.append(
                EscalationAnswered(escalation_id=answered.id, choice=message.choice, answered_by=message.answered_by)
            )
        return answered

    # --- queued writes (the MCP queue_* tools) ------------------------------------------

    @handles(RecordQueuedWrite)
    def record_queued_write(self, message: RecordQueuedWrite) -> None:
        with self.store.transaction():
            self.store.record_queued_write(message.write_id, message.tool, message.message_json, message.queued_at)

    @handles(SettleWrite)
    def settle_write(self, message: SettleWrite) -> None:
        with self.store.transaction():
            self.store.settle_write(message.write_id, message.tool, message.reply_json, message.error)

    def _settle(self, write_id: str, kind: type[ProtocolMessage], reply: ProtocolMessage) -> None:
        """Settle ``write_id`` as applied, inside the transaction that applies it."""
        self.store.settle_write(write_id, tool_of(kind), msgspec.json.encode(reply).decode(), None)

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

    @handles(Commit)
    def commit(self, message: Commit) -> None:
        self._commit_batch()
        if self.parent is not None:
            self.parent.tell(Committed(turn=message.turn))

    @handles(AwaitCommit)
    def await_commit(self, message: AwaitCommit) -> Ok:
        # on_receive commits the open batch before any reply: answering is the whole job.
        return Ok()

    @handles(Flush)
    def flush(self, message: Flush) -> None:
        self.projection.flush_if_due(time.monotonic(), self.flush_interval_s)
