"""The Executor: the root of the tree and the mailbox of the pipeline core.

It receives a protocol message, calls the core (:mod:`pipeline`), and carries out the
effects the core returns.  Durable before visible: the records of a turn are told to
the Session actor, a :class:`Commit` at the end of the turn commits them together (the
Session's group commit), and only once it answers :class:`Committed` are the turn's
attempts started and its lines and notices shown (:mod:`actors.turns`).

Children: the services (:mod:`actors.services`) and one TeamWorker per running task
(or per inner-loop chain).  Time-driven work happens on :class:`Tick`, sent by a small
daemon thread.  The run's outcome reaches the main thread through ``outcome``; the
main thread then sends :class:`Conclude` (the completion action) and stops the Executor.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import IO, Any, cast

import pykka

from actors.base import TreeActor, handles
from actors.desk import Desk, notice_of, report_recovery
from actors.inline_attempts import InlineAttempts
from actors.options import RoutingSetup, RunOptions
from actors.orders import McpStates, pipeline_config, review_rounds, work_order
from actors.prompting import PromptSource
from actors.queued_writes import redo, settlement
from actors.reactor_inbox import ReactorInbox
from actors.runner import AttemptRunner
from actors.services import (
    KEYPOOL,
    MCP_CLIENTS,
    NOTIFIER,
    RECONCILER,
    ROUTER,
    SERVICES,
    SESSION,
    mcp_states,
    snapshot_keys,
    start_services,
)
from actors.session import EventSink
from actors.session_link import DirectLine, SessionLink, StateWriteFailed
from actors.supervision import ChildSpec, Escalate, Forget, Restart, RestartType, Supervisor
from actors.turns import Turns, Worker
from actors.worker import Runner, TeamWorker
from backends.base import Backend
from pipeline import requests, settle
from pipeline.clock import Instant
from pipeline.core import Pipeline
from pipeline.effects import (
    AnswerByDefault,
    ApproveCriticalModel,
    CancelAttempt,
    Effect,
    Finish,
    NotifyUser,
    OpenQuestion,
    Record,
    ReleaseClaim,
    RememberFailure,
    RememberTask,
    RetireWorker,
    Say,
    StartAttempt,
)
from protocol._base import Message
from protocol.bridge import AnswerEscalation, Refused
from protocol.events import ServiceRestarted, WorkerRestarted
from protocol.messages import (
    AttemptCrashed,
    BeginRun,
    Boot,
    ChildExited,
    Committed,
    Conclude,
    FinishRun,
    Flush,
    GetState,
    Ok,
    Reconcile,
    ReconcileApplied,
    ReconcilePlan,
    RestartChild,
    RunSummary,
    RunTask,
    SettleWrite,
    ShutdownRequest,
    StateSnapshot,
    StorageFailed,
    Tick,
    WorkerFinished,
    WorkerProgress,
    WorkerStarted,
)
from protocol.notify import Notify
from protocol.routing import ApproveCritical
from session.loader import TeamSession
from session.store import utc_now

__all__ = ["Boot", "Conclude", "Executor", "RoutingSetup", "RunOptions", "StateWriteFailed"]

log = logging.getLogger("executor.root")

KEY_SNAPSHOT_INTERVAL_S = 2.0
# Messages only ever told: nobody waits for the turn's commit.
_TOLD = (
    WorkerFinished,
    AttemptCrashed,
    WorkerStarted,
    WorkerProgress,
    Tick,
    ChildExited,
    Committed,
    RestartChild,
    StorageFailed,
)
INTERRUPTED = (
    "the executor stopped (a crash or a kill) while this attempt ran, and its process was stopped; "
    "what it changed may be partly done (files, commits, calls it made). Check the working tree and "
    "the artifacts folder, and finish or repair that work rather than doing it a second time"
)


def now() -> Instant:
    return Instant(mono=time.monotonic(), wall=time.time())


class Executor(TreeActor):
    def __init__(
        self,
        session: TeamSession,
        options: RunOptions,
        backends: dict[str, Backend],
        prompts: PromptSource,
        outcome: Future[RunSummary],
        sinks: list[EventSink],
        marker: str,
        console: Callable[[str], None],
        clock: Callable[[], Instant] | None = None,
        booted: threading.Event | None = None,
    ) -> None:
        super().__init__("executor", None, 1)
        self.booted = booted  # set once the session is loaded into the store (or the boot failed)
        self.now = clock or now  # a test harness brings a manual clock (and sends its own Ticks)
        self.session = session
        self.options = options
        self.backends = backends  # role -> backend
        self.prompts = prompts  # runs on worker threads; tasks created during the run are added
        self.outcome = outcome
        self.sinks = sinks
        self.marker = marker
        self._console = console  # one line for the person at the terminal
        self.folder = Path(session.folder).resolve()
        self.run_id = time.strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:6]
        self.supervisor = Supervisor("executor", options.intensity)
        # The Session's handlers run on this thread: a turn's records cost no hop and no hand-off.
        self.direct = DirectLine()
        self.link = SessionLink(
            self.supervisor, lambda: self.turns.resync(self.core.running_records() if self.core else []), self.direct
        )
        self.core: Pipeline | None = None
        self.workers: dict[str, Worker] = {}
        local = AttemptRunner(backends, prompts)
        self.runner: Runner = local
        # Plain process attempts run on this thread, whose inbox is its event loop.
        self.reactor = cast(ReactorInbox, self.actor_inbox)
        self.inline: InlineAttempts | None = InlineAttempts(self.reactor, backends, local.prepare, self._tell_self)
        if options.cluster is not None:
            self.inline = None
            # The cluster's half (git shipping, the attempt host) loads only for a run on a cluster.
            from cluster.runner import RayRunner  # noqa: PLC0415

            self.runner = RayRunner(options.cluster, backends, local.prepare)
        self.agent_sessions: dict[str, str] = {}  # task id -> the agent's own session, to resume
        self.mcp_states: McpStates = {}
        self.last_errors: dict[str, str] = {}  # child name -> how it last crashed
        self.last_digest = ""
        self.last_key_snapshot = b""
        self.next_flush = 0.0
        self.next_key_snapshot = 0.0
        self.notify_log: IO[str] | None = None
        self._ticker_stop = threading.Event()
        # Durable before visible: what a turn starts or shows waits for the turn's commit.
        self.turns = Turns(self.link, self.workers, self._fail)
        self.desk = Desk(self)  # requests from outside the tree
        self.early_shutdowns: list[ShutdownRequest] = []

    @staticmethod
    def _create_actor_inbox() -> ReactorInbox:
        return ReactorInbox()

    # --- life ---------------------------------------------------------------------------

    def started(self) -> None:
        me = self.actor_ref
        self.notify_log = start_services(
            self.supervisor, me, self.session, self.options, self.sinks, self.marker, self.folder, self.direct
        )
        if self.options.tick_s > 0:  # 0: whoever started the tree sends Tick itself (a test's manual clock)
            threading.Thread(target=self._tick_loop, name="executor-ticker", daemon=True).start()
        me.tell(Boot())

    def _tick_loop(self) -> None:
        while not self._ticker_stop.wait(self.options.tick_s):
            try:
                self.actor_ref.tell(Tick())
            except pykka.ActorDeadError:
                return

    def stopping(self) -> None:
        self._ticker_stop.set()
        for worker in self.workers.values():
            worker.cancel.set()
        if self.inline is not None:  # this thread's loop runs no more: stop their processes now
            self.inline.stop_all(self.options.kill_grace_s)
        self.supervisor.stop_all()
        if self.notify_log is not None:
            self.notify_log.close()
        self.reactor.close()  # its epoll, eventfd and helpers (what is left in it is only read)

    # --- one turn: call the core, carry out its effects, commit, then show ---------------------

    def on_receive(self, message: Any) -> Any:
        write_id: str | None = getattr(message, "write_id", None)
        try:
            handler = self.desk.handler_for(message)
            try:
                reply = handler(message) if handler is not None else super().on_receive(message)
            except Exception as error:
                if write_id is not None:
                    self.link.tell(settlement(write_id, message, error=f"the executor failed on this write: {error}"))
                raise
            self._carry_out()
            # A queued write applied is settled by the record that applies it, in its transaction;
            # this settles refusals, and is a no-op (first settlement stands) for the rest: a
            # safety net, so no write stays "queued" to be applied again by the next run.
            if write_id is not None and not (isinstance(reply, Refused) and reply.retry_later):
                self.link.tell(settlement(write_id, message, reply))
        except StateWriteFailed as error:
            self._fail(str(error))
            reply = None
        finally:
            # Whoever asked is answered only once everything so far is committed.
            self.turns.end(wait=not isinstance(message, _TOLD))
            if self.actor_inbox.empty():  # idle: what this turn recorded is committed now
                self.link.commit_open_batch()
        return reply

    def _carry_out(self) -> None:
        core = self.core
        while core is not None and core.out:
            for effect in core.drain():
                self._apply(effect, core)

    def _apply(self, effect: Effect, core: Pipeline) -> None:
        if isinstance(effect, Record):
            self.link.tell(effect.message)
        elif isinstance(effect, StartAttempt):
            self._start(effect)
        elif isinstance(effect, CancelAttempt):
            worker = self.workers.get(effect.worker_id)
            if worker is not None:
                worker.cancel.set()
        elif isinstance(effect, RetireWorker):
            worker = self.workers.pop(effect.worker_id, None)
            if worker is not None:
                worker.stop()
        elif isinstance(effect, Say):
            self.say(effect.line)
        elif isinstance(effect, NotifyUser):
            self.notify(effect)
        elif isinstance(effect, OpenQuestion):
            requests.question_opened(core, self.link.ask(effect.question), str(self.folder))
        elif isinstance(effect, AnswerByDefault):
            answer = AnswerEscalation(escalation_id=effect.escalation_id, choice=effect.choice, answered_by="timeout")
            self.desk.answer(answer)
        elif isinstance(effect, ReleaseClaim):
            self.desk.release_claim(effect.task_id, effect.reason)
        elif isinstance(effect, ApproveCriticalModel):
            router = self.supervisor.ref(ROUTER)
            if router is not None:
                router.tell(ApproveCritical(task_id=effect.task_id))
        elif isinstance(effect, RememberTask):
            self.prompts.add(effect.row, goal=effect.goal)
        elif isinstance(effect, RememberFailure):
            self.prompts.attempt_failed(effect.task_id, effect.attempt, effect.kind, effect.error, effect.tail)
        elif isinstance(effect, Finish):
            self._finish(effect)

    def say(self, line: str) -> None:
        """Show ``line`` once what this turn recorded is committed."""
        self.turns.to_show.append(lambda: self._console(line))

    def notify(self, notice: NotifyUser) -> None:
        notifier = self.supervisor.ref(NOTIFIER)
        if notifier is None or notifier.actor_stopped.is_set():
            return
        message = Notify(notice=notice_of(notice, self.session.session_id))
        self.turns.to_show.append(lambda: notifier.tell(message))

    @handles(StorageFailed)
    def storage_failed(self, message: StorageFailed) -> None:
        self.turns.drop()  # the turns still waiting for a commit may have been in the rolled-back batch
        self._fail(
            f"{message.problem} (writing {message.where}). Everything shown as done is recorded; "
            f"make room (or make it writable), then: executor resume --session {self.folder}"
        )

    @handles(Committed)
    def committed(self, message: Committed) -> None:
        self.turns.release(message.turn)

    def _start(self, effect: StartAttempt) -> None:
        order = work_order(
            effect,
            session=self.session,
            options=self.options,
            backends=self.backends,
            prompts=self.prompts,
            folder=self.folder,
            marker=self.marker,
            run_id=self.run_id,
            resume_session=self.agent_sessions.get(effect.task_id),
            mcp_states=self.mcp_states,
            say=self.say,
        )
        inline = self.inline is not None and self.inline.argv_for(order) is not None
        worker = self.workers.get(effect.worker_id)
        # A TeamWorker keeps its chain (an inner loop's next attempt); a slot on this thread
        # gives way to a TeamWorker for an attempt it cannot run (gates, a worktree).
        if worker is None or effect.new_worker or (worker.ref is None and not inline):
            worker = self._new_inline_worker(effect.worker_id) if inline else self._new_worker(effect.worker_id)
        worker.cancel.clear()
        self.turns.to_start.append((effect.worker_id, RunTask(order=order)))

    def _new_inline_worker(self, worker_id: str) -> Worker:
        cancel = threading.Event()
        worker = Worker(ref=None, cancel=cancel, begin=lambda run: self._begin_inline(worker_id, run, cancel))
        self.workers[worker_id] = worker
        return worker

    def _begin_inline(self, worker_id: str, run: RunTask, cancel: threading.Event) -> None:
        if self.inline is not None:
            self.inline.start(worker_id, run.order, cancel)

    def _new_worker(self, worker_id: str) -> Worker:
        cancel = threading.Event()
        me, runner, grace = self.actor_ref, self.runner, self.options.kill_grace_s
        ref = self.supervisor.start_child(
            ChildSpec(
                name=worker_id,
                start=lambda inc: TeamWorker.start(worker_id, me, inc, runner, cancel, grace),
                restart=RestartType.TRANSIENT,
                backoff=self.options.retry_backoff,
                shutdown_timeout_s=grace + 5,
            )
        )
        worker = Worker(ref=ref, cancel=cancel)
        self.workers[worker_id] = worker
        return worker

    def _fail(self, reason: str) -> None:
        """The run cannot go on: say so at once (it claims nothing durable), stop everything."""
        core = self.core
        if core is not None and core.finished:
            return
        log.error("escalation: %s", reason)
        self._console(f"✗ stopping the run: {reason}")
        if core is None:
            self.outcome.set_result(
                RunSummary(run_id=self.run_id, completed=0, total=0, duration_s=0.0, escalated=reason)
            )
            return
        core.escalate(reason, self.now())
        with contextlib.suppress(StateWriteFailed):
            self._carry_out()

    # --- boot ---------------------------------------------------------------------------------

    @handles(Boot)
    def boot(self, message: Boot) -> None:
        try:
            self._boot()
        finally:
            if self.booted is not None:
                self.booted.set()

    def _boot(self) -> None:
        try:
            previous: StateSnapshot = self.link.ask(GetState())
            reconciler = self.supervisor.ref(RECONCILER)
            if reconciler is None:
                raise StateWriteFailed("the Reconciler is not running")
            plan = cast(ReconcilePlan, reconciler.ask(Reconcile(run_id=self.run_id, snapshot=previous), timeout=120))
            self.link.ask(
                BeginRun(
                    run_id=self.run_id,
                    command=self.options.command,
                    pid=os.getpid(),
                    max_workers=self.options.max_workers,
                )
            )
            applied: ReconcileApplied = self.link.ask(plan)
            snapshot: StateSnapshot = self.link.ask(GetState())
        except Exception as error:  # noqa: BLE001 - a boot failure ends the run with its reason
            self._fail(f"could not start the run: {error}")
            return
        config = pipeline_config(self.session, self.options, self.backends, self.run_id, self.folder)
        start = self.now()
        core = Pipeline(
            config,
            snapshot.tasks,
            start,
            next_run_row_id=snapshot.next_run_row_id,
            spent_by_task=snapshot.spent_by_task,
            review_rounds=review_rounds(self.folder),
        )
        self.core = core
        self.agent_sessions = dict(snapshot.agent_sessions)
        if plan.unclean_previous_stop or plan.resets or plan.cancels or plan.killed_pids:
            report_recovery(core, plan, applied)
        attempts_before = {row.id: row.attempts for row in previous.tasks}
        for reset in plan.resets:  # at least once: the next attempt is told what may be half done
            self.prompts.attempt_failed(
                reset.task_id, attempts_before.get(reset.task_id, 0), "interrupted", INTERRUPTED, ""
            )
        requests.resume_questions(core, snapshot.open_escalations, snapshot.answered_decisions, start)
        if plan.unclean_previous_stop:
            requests.remind_open_questions(core, snapshot.open_escalations, str(self.folder))
        core.start((task.id for task in self.session.tasks), start)
        for early in self.early_shutdowns:
            core.shutdown(early.reason, early.graceful, start)
        for write in snapshot.queued_writes:  # queued before a run stopped, never handled: handled now
            again = redo(write)
            if isinstance(again, SettleWrite):
                self.link.tell(again)
            else:
                self._tell_self(again)

    # --- reports from workers -------------------------------------------------------------------

    @handles(WorkerStarted)
    def worker_started(self, message: WorkerStarted) -> None:
        if self.core is not None:
            self.core.attempt_started(
                message.worker_id,
                message.task_id,
                message.pid,
                message.create_time,
                self.now(),
                message.attempt,
                message.node,
            )

    @handles(WorkerProgress)
    def worker_progress(self, message: WorkerProgress) -> None:
        core = self.core
        attempt = core.attempt_of(message.worker_id, message.task_id, message.attempt, "progress") if core else None
        if attempt is not None and self.core is not None:
            self.core.attempt_progress(attempt, message.percent, message.note, self.now())

    @handles(WorkerFinished)
    def worker_finished(self, message: WorkerFinished) -> None:
        if self.core is None:
            return
        if message.result.agent_session_id:
            self.agent_sessions[message.task_id] = message.result.agent_session_id
        settle.attempt_finished(
            self.core, message.worker_id, message.task_id, message.result, self.now(), message.attempt
        )

    @handles(AttemptCrashed)
    def attempt_crashed(self, message: AttemptCrashed) -> None:
        """An attempt on this thread failed in our own code: as if its worker had died."""
        core = self.core
        attempt = core.attempt_of(message.worker_id, message.task_id, message.attempt) if core else None
        if core is None or attempt is None:
            return
        self.workers.pop(message.worker_id, None)
        settle.worker_died(core, message.worker_id, message.error, self.now())
        core.dispatch(self.now())

    # --- supervision ---------------------------------------------------------------------------

    @handles(ChildExited)
    def child_exited(self, message: ChildExited) -> None:
        self._handle_death(message.name, message.incarnation, message.abnormal, message.error)

    def _handle_death(self, name: str, incarnation: int, abnormal: bool, error: str | None) -> None:
        if abnormal and error:
            self.last_errors[name] = error
        decision = self.supervisor.child_exited(name, incarnation, abnormal)
        if decision is None:
            return
        core = self.core
        if core is not None and name in core.attempts:
            # A worker died in the middle of an attempt: the attempt failed, and the task
            # goes back to the queue after the retry backoff.
            task_id = core.attempts[name].task_id
            self.workers.pop(name, None)
            settle.worker_died(core, name, error, self.now())
            if isinstance(decision, Restart):
                core.events(
                    WorkerRestarted(
                        worker_id=name, task_id=task_id, restarts=decision.restarts, delay_s=round(decision.delay_s, 2)
                    )
                )
        if isinstance(decision, Escalate):
            self._fail(decision.reason)
            return
        if name in SERVICES:
            if isinstance(decision, Restart):
                self.link.record(ServiceRestarted(name=name, restarts=decision.restarts, error=error or ""))
                timer = threading.Timer(
                    decision.delay_s, self._tell_self, (RestartChild(name=name, incarnation=incarnation),)
                )
                timer.daemon = True
                timer.start()
            return
        if isinstance(decision, (Forget, Restart)):
            self.supervisor.forget(name)
        if core is not None:
            core.dispatch(self.now())

    def _tell_self(self, message: Message) -> None:
        with contextlib.suppress(pykka.ActorDeadError):
            self.actor_ref.tell(message)

    @handles(RestartChild)
    def restart_child(self, message: RestartChild) -> None:
        ref = self.supervisor.restart(message.name, message.incarnation)
        if ref is not None and message.name == SESSION:
            self.link.resync(ref)

    # --- time ------------------------------------------------------------------------------------

    @handles(Tick)
    def tick(self, message: Tick) -> None:
        core = self.core
        if core is None or core.finished:
            return
        for name, incarnation in self.supervisor.unreported_deaths():
            self._handle_death(name, incarnation, True, "stopped without reporting (failed to start?)")
        at = self.now()
        log_mtimes: dict[str, float] = {}
        if at.mono >= core.next_stall_check:
            for attempt in core.attempts.values():  # output counts as life: the log grows with it
                with contextlib.suppress(OSError):
                    log_mtimes[attempt.worker_id] = os.stat(attempt.dispatch.log_path).st_mtime
        core.tick(at, log_mtimes)
        if at.mono >= self.next_flush:
            self.next_flush = at.mono + self.options.flush_interval_s
            self.link.tell(Flush())
            self.desk.read_inbox()
        if at.mono >= self.next_key_snapshot:
            self.next_key_snapshot = at.mono + KEY_SNAPSHOT_INTERVAL_S
            self._snapshot_keys()
            self._refresh_mcp_states()

    def _snapshot_keys(self) -> None:
        encoded = snapshot_keys(self.supervisor.ref(KEYPOOL), self.last_key_snapshot)
        if encoded is not None:
            self.last_key_snapshot = encoded
            self.link.record(meta={"key_states": encoded.decode(), "key_states_at": utc_now()})

    def _refresh_mcp_states(self) -> None:
        states = mcp_states(self.supervisor.ref(MCP_CLIENTS))
        if states is not None:
            self.mcp_states = states

    # --- stopping --------------------------------------------------------------------------------

    @handles(ShutdownRequest)
    def shutdown_request(self, message: ShutdownRequest) -> None:
        if self.core is None:
            # Before Boot: a signal that came while the services started (it can reach the
            # mailbox ahead of Boot) is carried out as soon as the core exists.
            self.early_shutdowns.append(message)
            return
        self.core.shutdown(message.reason, message.graceful, self.now())

    def _finish(self, effect: Finish) -> None:
        self._snapshot_keys()  # what the pool looked like at the end stays readable
        if effect.record:
            try:
                self.link.ask(
                    FinishRun(
                        run_id=self.run_id,
                        clean=True,
                        session_status="paused",
                        interrupted_tasks=effect.interrupted_tasks,
                        summary=effect.summary,
                    )
                )
            except StateWriteFailed:
                log.exception("could not record the end of the run")
        self.turns.end(wait=True)  # what the run shows comes before the completion report
        self.outcome.set_result(effect.summary)

    @handles(Conclude)
    def conclude(self, message: Conclude) -> Ok:
        summary = self.outcome.result() if self.outcome.done() else None
        if summary is not None and not (summary.interrupted or summary.escalated or summary.budget_stopped):
            self.link.ask(
                FinishRun(run_id=self.run_id, clean=True, session_status=message.session_status, summary=summary)
            )
        self._ticker_stop.set()
        self.turns.end(wait=True)  # the last lines, before the services stop
        self.supervisor.stop_all()
        self.turns.drop()  # nothing after this commits
        return Ok()
