"""The pipeline core: the task table, the running attempts, and the run's life.

:class:`Pipeline` is called by the Executor actor for each input and collects effects
in :attr:`Pipeline.out` (the host takes them with :meth:`Pipeline.drain`).  How an
attempt's end moves its task is in :mod:`pipeline.settle`; requests from outside the
tree (submit, cancel, answers, handoff) in :mod:`pipeline.requests`.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime

import msgspec

from pipeline.budget import Ledger
from pipeline.clock import Instant
from pipeline.effects import (
    AnswerByDefault,
    CancelAttempt,
    Effect,
    Finish,
    NotifyUser,
    Record,
    ReleaseClaim,
    RememberTask,
    RetireWorker,
    Say,
    StartAttempt,
)
from pipeline.policy import PipelineConfig
from pipeline.questions import Questions
from pipeline.readiness import Scheduler
from protocol._base import Message
from protocol.events import Event, ReportRefused, ShutdownRequested, TaskStalled
from protocol.messages import RecordDispatch, RecordEvents, RecordProgress, RecordStart, RunSummary
from protocol.records import TaskRow

__all__ = ["Attempt", "Pipeline", "goal_of"]


@dataclass
class Attempt:
    """A running attempt and the worker that runs it."""

    worker_id: str
    task_id: str
    attempt: int
    role: str
    run_row_id: int
    agent_id: str
    started: float
    last_activity: float
    dispatch: RecordDispatch
    start: RecordStart | None = None
    node: str | None = None  # on a cluster: the node it was placed on
    pid: int | None = None
    model: str | None = None
    cancelled_by: str | None = None
    stall_reported: bool = False
    stalled: bool = False  # stopped for stalling: its failure is a hang, and it is retried


def goal_of(row: TaskRow) -> str:
    """The goal a worker sees for a task created at run time."""
    if row.description and row.description.strip() != row.subject.strip():
        return f"{row.subject}\n\n{row.description}"
    return row.subject


class Pipeline:
    def __init__(
        self,
        config: PipelineConfig,
        rows: Iterable[TaskRow],
        now: Instant,
        *,
        next_run_row_id: int = 1,
        spent_by_task: Mapping[str, float] | None = None,
        review_rounds: Mapping[str, int] | None = None,
    ) -> None:
        self.config = config
        self.rows: dict[str, TaskRow] = {row.id: row for row in rows}
        roles = config.roles
        self.table = Scheduler(
            self.rows.values(),
            inner_loop_roles=[name for name, role in roles.items() if role.inner_loop],
            manual_roles=[name for name, role in roles.items() if role.manual],
        )
        self.attempts: dict[str, Attempt] = {}  # worker id -> its attempt
        self.ledger = Ledger(config, dict(spent_by_task or {}))
        self.questions = Questions()
        self.review_rounds: dict[str, int] = dict(review_rounds or {})
        self.out: list[Effect] = []
        self.started_at = now.mono
        self.next_run_row_id = next_run_row_id
        self.worker_seq = 0
        # Keyed once: a copy per attempt costs a fraction of setting the key up again.
        self._agent_mac = hmac.new(config.secret, digestmod=hashlib.sha256)
        self.submitted_seq = 0
        self.stopping_since: float | None = None
        self.force_stop = False
        self.finished = False
        self.idle_announced = False
        self.next_stall_check = 0.0

    # --- plumbing -------------------------------------------------------------------

    def drain(self) -> list[Effect]:
        effects, self.out = self.out, []
        return effects

    def record(self, message: Message) -> None:
        self.out.append(Record(message=message))

    def events(self, *events: Event, wisdom_issue: str | None = None) -> None:
        self.record(RecordEvents(events=events, wisdom_issue=wisdom_issue))

    def say(self, line: str) -> None:
        self.out.append(Say(line=line))

    def notify(self, notice: NotifyUser) -> None:
        self.out.append(notice)

    def update(self, task_id: str, **changes: object) -> TaskRow:
        row = msgspec.structs.replace(self.rows[task_id], **changes)
        self.rows[task_id] = row
        return row

    def add_task(self, row: TaskRow, goal: str, rewire: tuple[tuple[str, tuple[str, ...]], ...] = ()) -> None:
        """A task created during the run joins the table (the caller records it)."""
        self.rows[row.id] = row
        for dependant, blocked_by in rewire:
            merged = list(dict.fromkeys([*self.rows[dependant].blocked_by, *blocked_by]))
            self.update(dependant, blocked_by=merged)
        self.table.add(row, rewire)
        self.out.append(RememberTask(row=row, goal=goal))

    def accepting(self) -> bool:
        return not (self.stopping_since is not None or self.finished)

    # --- start --------------------------------------------------------------------

    def start(self, known_task_ids: Iterable[str], now: Instant) -> None:
        """The first turn: prompts for tasks created by earlier runs, the budget, then dispatch."""
        self.record(RecordEvents(events=(), meta=self.ledger.meta("ok")))
        known = set(known_task_ids)
        for row in self.rows.values():
            if row.id not in known:  # created during an earlier run (a revision, a submitted task)
                self.out.append(RememberTask(row=row, goal=goal_of(row)))
        if self.ledger.check_session(0, self.out):
            self.stopping_since = now.mono
        self.dispatch(now)

    # --- dispatch -------------------------------------------------------------------

    def dispatch(self, now: Instant) -> None:
        """Start ready tasks on free workers, then see whether the run is over."""
        if self.accepting():
            self.table.release_due(now.mono)
            while len(self.attempts) < self.config.max_workers:
                task_id = self.table.pop_ready()
                if task_id is None:
                    break
                self._start(task_id, None, now)
            self._report_file_waits()
        self.maybe_finish(now)

    def _report_file_waits(self) -> None:
        for task_id, holder, name in self.table.drain_file_waits():
            self.say(f"⧗ {task_id} waits for {holder}: both change {name}, so they do not run at once")

    def _agent_id(self, worker_id: str, run_row_id: int) -> str:
        digest = self._agent_mac.copy()
        digest.update(f"{self.config.run_id}:{run_row_id}".encode())
        return f"{worker_id}-{digest.hexdigest()[:16]}"

    def _start(self, task_id: str, worker_id: str | None, now: Instant) -> None:
        row = self.rows[task_id]
        attempt_number = row.attempts + 1
        new_worker = worker_id is None
        if worker_id is None:
            self.worker_seq += 1
            worker_id = f"worker-{self.worker_seq}"
        run_row_id = self.next_run_row_id
        self.next_run_row_id += 1
        backend = self.config.role(row.owner).backend
        log_path = f"{self.config.state_dir}/logs/{task_id}-a{attempt_number}.log"
        dispatch = RecordDispatch(
            run_row_id=run_row_id,
            task_id=task_id,
            attempt=attempt_number,
            worker_id=worker_id,
            role=row.owner,
            backend=backend,
            run_id=self.config.run_id,
            log_path=log_path,
        )
        agent_id = self._agent_id(worker_id, run_row_id)
        self.attempts[worker_id] = Attempt(
            worker_id=worker_id,
            task_id=task_id,
            attempt=attempt_number,
            role=row.owner,
            run_row_id=run_row_id,
            agent_id=agent_id,
            started=now.mono,
            last_activity=now.mono,
            dispatch=dispatch,
        )
        self.record(dispatch)
        self.update(task_id, status="in_progress", attempts=attempt_number)
        self.table.start(task_id)
        self.out.append(
            StartAttempt(
                worker_id=worker_id,
                new_worker=new_worker,
                task_id=task_id,
                attempt=attempt_number,
                role=row.owner,
                run_row_id=run_row_id,
                agent_id=agent_id,
                log_path=log_path,
            )
        )

    def next_for(self, done: Attempt, now: Instant) -> None:
        """The worker that just finished takes more work: its inner-loop chain first, then any
        ready task; with nothing to do (or while stopping) it stops."""
        if self.accepting() and done.cancelled_by is None and not done.stalled:
            self.table.release_due(now.mono)
            next_task = self.table.pop_for_role(done.role) if self.table.is_inner_loop(done.role) else None
            if next_task is None and len(self.attempts) < self.config.max_workers:
                next_task = self.table.pop_ready()
            self._report_file_waits()
            if next_task is not None:
                self._start(next_task, done.worker_id, now)
                return
        self.out.append(RetireWorker(worker_id=done.worker_id))

    # --- reports from workers ---------------------------------------------------------

    def attempt_of(
        self, worker_id: str, task_id: str, number: int | None = None, report: str = "finished"
    ) -> Attempt | None:
        """The running attempt a report is about, or None.  ``number`` is the report's fencing
        token: a report from an attempt that is no longer current (a lost node's late result,
        a restarted worker's) is refused and logged, never applied."""
        attempt = self.attempts.get(worker_id)
        if attempt is None or attempt.task_id != task_id:
            if number is not None:
                self.events(
                    ReportRefused(
                        worker_id=worker_id, task_id=task_id, attempt=number, current_attempt=None, report=report
                    )
                )
            return None
        if number is not None and number != attempt.attempt:
            self.events(
                ReportRefused(
                    worker_id=worker_id,
                    task_id=task_id,
                    attempt=number,
                    current_attempt=attempt.attempt,
                    report=report,
                )
            )
            return None
        return attempt

    def attempt_started(
        self,
        worker_id: str,
        task_id: str,
        pid: int,
        create_time: float | None,
        now: Instant,
        number: int | None = None,
        node: str | None = None,
    ) -> None:
        attempt = self.attempt_of(worker_id, task_id, number, "started")
        if attempt is None:
            return
        attempt.start = RecordStart(
            run_row_id=attempt.run_row_id,
            task_id=task_id,
            attempt=attempt.attempt,
            role=attempt.role,
            pid=pid,
            create_time=create_time,
            node=node,
        )
        attempt.pid = pid
        attempt.node = node
        attempt.last_activity = now.mono
        self.record(attempt.start)

    def attempt_progress(self, attempt: Attempt, percent: int | None, note: str, now: Instant) -> None:
        attempt.last_activity = now.mono
        self.record(
            RecordProgress(
                task_id=attempt.task_id, attempt=attempt.attempt, role=attempt.role, percent=percent, note=note
            )
        )

    def running_records(self) -> list[Message]:
        """The running attempts' records, to send again to a restarted Session actor (idempotent)."""
        return [m for a in self.attempts.values() for m in (a.dispatch, a.start) if m is not None]

    # --- time ---------------------------------------------------------------------------

    def tick(self, now: Instant, log_mtimes: Mapping[str, float] | None = None) -> None:
        """Time passed: the shutdown grace, due answers, stalls and silent claims, then dispatch."""
        if self.finished:
            return
        if self.stopping_since is not None:
            waited = now.mono - self.stopping_since
            if not self.force_stop and waited >= self.config.shutdown_grace_s:
                self.cancel_all("the shutdown grace period ended")
            elif self.force_stop and waited >= self.config.shutdown_grace_s + self.config.kill_grace_s + 10:
                # Workers that do not even answer a kill: give up on them, keep the state.
                for attempt in list(self.attempts.values()):
                    self.attempts.pop(attempt.worker_id, None)
                    self.out.append(RetireWorker(worker_id=attempt.worker_id))
        else:
            for escalation_id, choice in self.questions.due(now.wall):  # past its deadline: the default
                self.out.append(AnswerByDefault(escalation_id=escalation_id, choice=choice))
            if now.mono >= self.next_stall_check:
                self.next_stall_check = now.mono + self.config.stall_check_s
                self.check_stalls(now, log_mtimes or {})
                self.release_silent_claims(now)
        self.dispatch(now)

    def check_stalls(self, now: Instant, log_mtimes: Mapping[str, float]) -> None:
        """A running task with no progress report and no output for its role's stall_after is
        reported; past stall_stop_after its attempt is stopped (and retried as a hang)."""
        for attempt in self.attempts.values():
            if attempt.stalled or attempt.cancelled_by is not None:
                continue
            report_after, stop_after = self.config.role(attempt.role).stall_limits()
            idle = now.mono - attempt.last_activity
            if attempt.worker_id in log_mtimes:  # output counts as life: the attempt's log grows
                idle = min(idle, now.wall - log_mtimes[attempt.worker_id])
            task_id, number = attempt.task_id, attempt.attempt
            if idle >= stop_after:
                attempt.stalled = True
                self.out.append(CancelAttempt(worker_id=attempt.worker_id))
                self.events(TaskStalled(task_id=task_id, attempt=number, idle_s=round(idle, 1), action="stopped"))
                self.say(f"⏸ {task_id} stalled for {idle:.0f}s: stopping it to retry")
                self.notify(
                    NotifyUser(
                        kind="stall",
                        title=f"{task_id} stalled: stopped to retry",
                        body=f"No progress and no output for {idle:.0f}s; attempt {number} was stopped "
                        "and will be retried.",
                        action=self.config.command("check"),
                    )
                )
            elif idle >= report_after and not attempt.stall_reported:
                attempt.stall_reported = True
                self.events(TaskStalled(task_id=task_id, attempt=number, idle_s=round(idle, 1), action="reported"))
                self.say(
                    f"⏸ {task_id} has shown no progress and no output for {idle:.0f}s (stopped at {stop_after:.0f}s)"
                )
                self.notify(
                    NotifyUser(
                        kind="stall",
                        title=f"{task_id} looks stuck",
                        body=f"No progress and no output for {idle:.0f}s ({attempt.role}, attempt {number}); "
                        f"it is stopped and retried at {stop_after:.0f}s.",
                        action=self.config.command("check"),
                    )
                )

    def release_silent_claims(self, now: Instant) -> None:
        """A claimed task whose agent has been silent past its role's claim_idle_timeout is
        released for someone else (its last sign of life: the row's last update)."""
        for task_id in self.table.manual_open():  # only the manual tasks, never the whole list
            row = self.rows[task_id]
            limit = self.config.role(row.owner).claim_idle_timeout_s
            if row.status != "in_progress" or row.agent is None or not limit:
                continue
            try:
                silent_s = now.wall - datetime.fromisoformat(row.updated_at).timestamp()
            except ValueError:
                continue
            if silent_s >= limit:
                reason = f"{row.agent} was silent for {silent_s:.0f}s (claim_idle_timeout {limit:g}s)"
                self.out.append(ReleaseClaim(task_id=task_id, reason=reason))

    # --- stopping -------------------------------------------------------------------------

    def shutdown(self, reason: str, graceful: bool, now: Instant) -> None:
        if self.finished:
            return
        self.events(ShutdownRequested(reason=reason, graceful=graceful and self.stopping_since is None))
        if self.stopping_since is None and graceful:
            self.stopping_since = now.mono
            if self.attempts:
                self.say(
                    f"stopping: no new tasks; waiting up to {self.config.shutdown_grace_s:g}s for "
                    f"{len(self.attempts)} running worker(s) (press Ctrl-C again to stop them now)"
                )
        else:
            self.stopping_since = self.stopping_since or now.mono
            self.cancel_all("stop requested")
        self.maybe_finish(now)

    def cancel_all(self, why: str) -> None:
        if not self.force_stop and self.attempts:
            self.say(f"stopping {len(self.attempts)} running worker(s): {why}")
        self.force_stop = True
        for attempt in self.attempts.values():
            self.out.append(CancelAttempt(worker_id=attempt.worker_id))

    def escalate(self, reason: str, now: Instant) -> None:
        """The run cannot go on (its state cannot be written, a service gave up): stop it."""
        if self.finished:
            return
        self.stopping_since = self.stopping_since or now.mono
        self.cancel_all(reason)
        self.finish(now, escalated=reason)

    def maybe_finish(self, now: Instant) -> None:
        if self.finished:
            return
        if self.stopping_since is not None:
            if not self.attempts:
                self.finish(now)
            return
        if not self.attempts and self.table.finished():
            if not self.config.keep_alive:
                self.finish(now)
            elif not self.idle_announced:
                self.idle_announced = True
                counts = self.table.counts()
                self.say(
                    f"idle: {counts.get('completed', 0)}/{self.table.total()} task(s) done; "
                    "waiting for submitted tasks (Ctrl-C to stop)"
                )

    def finish(self, now: Instant, escalated: str | None = None) -> None:
        self.finished = True
        table = self.table
        counts = table.counts()
        # Stopped with nothing left to do (a served run told to stop when idle) is not an interruption.
        interrupted = self.stopping_since is not None and not table.finished()
        budget_stopped = self.ledger.stopped
        summary = RunSummary(
            run_id=self.config.run_id,
            completed=counts.get("completed", 0),
            total=table.total(),
            failed=tuple(table.failed()),
            blocked=tuple(table.blocked()),
            duration_s=now.mono - self.started_at,
            interrupted=interrupted and not budget_stopped,
            escalated=escalated,
            budget_stopped=budget_stopped,
        )
        self._notify_end(summary)
        self.out.append(
            Finish(
                summary=summary,
                record=bool(interrupted or escalated or budget_stopped),
                interrupted_tasks=tuple(a.task_id for a in self.attempts.values()),
            )
        )

    def _notify_end(self, summary: RunSummary) -> None:
        if summary.interrupted or summary.budget_stopped:
            return  # stopped on request: the person who asked knows; the budget notice said it
        if summary.escalated:
            title, kind = f"Run stopped: {summary.escalated[:150]}", "task_failed"
        elif summary.failed or summary.blocked:
            title = f"Pipeline finished with failures: {summary.completed}/{summary.total} done"
            kind = "pipeline_complete"
        else:
            title, kind = f"Pipeline complete: {summary.completed}/{summary.total} tasks", "pipeline_complete"
        lines = [f"Duration: {summary.duration_s / 60:.1f} min, spent ${self.ledger.session_spent:.2f}"]
        if summary.failed:
            lines.append(f"Failed: {', '.join(summary.failed[:20])}")
        if summary.blocked:
            lines.append(f"Blocked by failures: {', '.join(summary.blocked[:20])}")
        self.notify(
            NotifyUser(
                kind="task_failed" if kind == "task_failed" else "pipeline_complete",
                title=title,
                body="\n".join(lines),
                action=self.config.command("check"),
            )
        )
