"""The Executor: the root of the tree.  It supervises, dispatches, and ends the run.

Children: the Session actor (the only writer), the Reconciler, and one
TeamWorker per running task (or per inner-loop chain).  The Executor owns the
:class:`Scheduler`; every transition is recorded through the Session actor
before the Executor acts on it.

Time-driven work (retry delays, the shutdown deadline, projection flushes,
the supervision backstop) happens on :class:`Tick`, sent by a small daemon
thread.  The run's outcome reaches the main thread through ``outcome``, a
:class:`concurrent.futures.Future`; the main thread then sends
:class:`Conclude` (the completion action) and stops the Executor.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import threading
import time
import uuid
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import msgspec
import pykka

from actors.base import TreeActor, handles
from actors.handoffs import HandoffHandlers, manual_roles_of
from actors.keypool import KeyPoolActor
from actors.notices import NOTIFIER, NoticeHandlers, notifier_callbacks
from actors.reconciler import Reconciler
from actors.requests import RequestHandlers, goal_of
from actors.router import RouterActor
from actors.runner import AttemptRunner, default_permission
from actors.scheduler import Scheduler
from actors.session import EventSink, SessionActor
from actors.supervision import Backoff, ChildSpec, Escalate, Forget, Intensity, Restart, RestartType, Supervisor
from actors.worker import TeamWorker
from backends.base import Backend
from backends.mcp_call import mcp_call_for
from protocol._base import Message
from protocol.bridge import CAPABILITY_DECISION, CONSENSUS_DECISION, DECISION_OPTIONS, EscalateDecision
from protocol.events import (
    BudgetExceeded,
    BudgetWarning,
    CapabilityGap,
    ConsensusBlocked,
    Event,
    RevisionCreated,
    ServiceRestarted,
    ShutdownRequested,
    TaskCancelled,
    TaskStalled,
    WorkerCrashed,
    WorkerRestarted,
)
from protocol.keys import GetKeyStates, KeyStates, RefreshKeys
from protocol.mcp_client import GetMcpServers, McpServers
from protocol.messages import (
    AttemptResult,
    BeginRun,
    BridgeEndpoint,
    ChildExited,
    CreateTasks,
    Disposition,
    FinishRun,
    Flush,
    GetState,
    McpCall,
    Ok,
    Reconcile,
    ReconcileApplied,
    ReconcilePlan,
    RecordDispatch,
    RecordEvents,
    RecordOutcome,
    RecordProgress,
    RecordStart,
    RestartChild,
    RunSummary,
    RunTask,
    ShutdownRequest,
    StateSnapshot,
    StopWorker,
    Tick,
    WorkerFinished,
    WorkerProgress,
    WorkerStarted,
    WorkOrder,
)
from protocol.records import TaskRow
from session.feedback import rounds_so_far
from session.gates import DEFAULT_GATE_TIMEOUT_S, gate_commands
from session.graph import id_prefix
from session.loader import TeamSession
from session.safepath import task_file
from session.store import STATE_DIR, utc_now

__all__ = ["Boot", "Conclude", "Executor", "RoutingSetup", "RunOptions", "StateWriteFailed"]

log = logging.getLogger("executor.root")

SESSION = "session"
RECONCILER = "reconciler"
ROUTER = "router"
KEYPOOL = "keypool"
MCP_CLIENTS = "mcp-clients"
SERVICES = (SESSION, RECONCILER, ROUTER, KEYPOOL, MCP_CLIENTS, NOTIFIER)
ASK_TIMEOUT_S = 30.0
KEY_SNAPSHOT_INTERVAL_S = 2.0
STALL_CHECK_INTERVAL_S = 1.0
NOTIFIER_GRACE_S = 5.0
DEFAULT_STALL_AFTER_S = 1800.0
DEFAULT_STALL_STOP_AFTER_S = 3600.0
DEFAULT_REVIEW_ROUNDS = 3
#: Error kinds another attempt cannot fix: the task fails at once.  ``auth``: the provider
#: refused the key (the key pool disables it and says so); retrying would only be refused again.
NEVER_RETRIED: frozenset[str] = frozenset({"over_budget", "auth"})


class Boot(Message, frozen=True):
    """Start the run: reconcile, then dispatch."""


class Conclude(Message, frozen=True):
    """The main thread's completion action: record it, then stop the children."""

    session_status: Literal["active", "paused", "completed"] | None


class StateWriteFailed(Exception):
    """The Session actor could not record a transition even after a restart."""


@dataclass(frozen=True)
class RoutingSetup:
    """What the Router and KeyPool services start from (objects, not messages: local only)."""

    config: Any  # session.config_models.Config
    pool: Any  # session.keypool.KeyPool
    store: Any = None  # session.keystore.KeyStore, for keys added while the run goes on
    store_path: Path | None = None  # its file, watched for keys added by `executor keys add`
    open_store: Any = None  # () -> KeyStore: opens the store when it appears during the run


@dataclass(frozen=True)
class RunOptions:
    command: str = "run"  # or "resume"
    max_workers: int = 4
    workdir: Path = Path()
    max_attempts: int = 3
    task_timeout_s: float | None = None
    hang_timeout_s: float | None = None
    kill_grace_s: float = 5.0
    shutdown_grace_s: float = 10.0
    retry_backoff: Backoff = field(default_factory=lambda: Backoff(min_s=2.0, max_s=300.0, jitter=0.2))
    service_backoff: Backoff = field(default_factory=lambda: Backoff(min_s=0.1, max_s=5.0, jitter=0.2))
    intensity: Intensity = field(default_factory=lambda: Intensity(max_restarts=10, period_s=60.0))
    tick_s: float = 0.1
    flush_interval_s: float = 0.5
    session_budget_usd: float | None = None
    task_budget_usd: float | None = None
    budget_warn_at: float = 0.8
    routing: RoutingSetup | None = None
    # Serve: with an MCP bridge, the run stays up when every task is done, waiting
    # for submitted tasks, until it is told to stop.
    keep_alive: bool = False
    # Where workers that speak MCP reach the bridge (url, worker token); None: no bridge.
    worker_bridge: tuple[str, str] | None = None
    # [mcp_servers] of the config: name -> McpServerConfig; with any, an McpClients service health-checks them.
    mcp_servers: dict[str, Any] = field(default_factory=dict)
    # What the Notifier sends and where (notify.setup.NotifySetup); None: no Notifier.
    notify: Any = None


@dataclass
class _Slot:
    """A live worker and the attempt it is running."""

    worker_id: str
    ref: pykka.ActorRef[Any]
    cancel: threading.Event
    role: str = ""
    task_id: str = ""
    attempt: int = 0
    run_row_id: int = 0
    started: float = 0.0
    dispatch: RecordDispatch | None = None  # re-sent if the Session actor restarts
    start: RecordStart | None = None
    agent_id: str = ""  # this attempt's id on the MCP bridge (unguessable: it authorises reports)
    backend: str = ""
    model: str | None = None
    pid: int | None = None
    cancelled_by: str | None = None  # set when someone cancels the running task
    last_activity: float = 0.0  # monotonic time of the last progress report (or the start)
    stall_reported: bool = False
    stalled: bool = False  # stopped for stalling: the attempt failed (kind hang) and is retried


class Executor(RequestHandlers, NoticeHandlers, HandoffHandlers, TreeActor):
    def __init__(
        self,
        session: TeamSession,
        options: RunOptions,
        backends: dict[str, Backend],
        prompts: Any,
        outcome: Future[RunSummary],
        sinks: list[EventSink],
        marker: str,
        console: Any,
    ) -> None:
        super().__init__("executor", None, 1)
        self.session = session
        self.options = options
        self.backends = backends  # role -> backend
        self.prompts = prompts  # callable(task_id, attempt) -> prompt text; runs on worker threads
        self.outcome = outcome
        self.sinks = sinks
        self.marker = marker
        self.console = console  # callable(str): one line for the person at the terminal
        self.folder = Path(session.folder).resolve()
        self.run_id = time.strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:6]
        self.supervisor = Supervisor("executor", options.intensity)
        self.slots: dict[str, _Slot] = {}
        self.scheduler: Scheduler | None = None
        self.rows: dict[str, TaskRow] = {}
        self.stopping_since: float | None = None
        self.force_stop = False
        self.finished = False
        self.started_at = time.monotonic()
        self.next_flush = 0.0
        self.worker_seq = 0
        self.next_run_row_id = 1
        self.last_errors: dict[str, str] = {}  # child name -> how it last crashed
        self.agent_sessions: dict[str, str] = {}  # task id -> the agent's own session, to resume
        self.spent_by_task: dict[str, float] = {}
        self.session_spent = 0.0
        self.budget_warned: set[str] = set()
        self.budget_stopped = False
        self.runner = AttemptRunner(backends, prompts)
        self._ticker_stop = threading.Event()
        self.idle_announced = False
        self.submitted_seq = 0
        self.critical_asked: set[str] = set()
        self.escalation_deadlines: dict[str, float] = {}
        self.escalation_holds: dict[str, set[str]] = {}
        self.next_key_snapshot = 0.0
        self.next_stall_check = 0.0
        self.open_questions: set[str] = set()
        self.answered_this_run: set[str] = set()
        self.mcp_states: dict[str, tuple[str, tuple[str, ...]]] = {}  # MCP server -> (status, tools)
        self.last_digest = ""
        self.notify_log: Any = None
        self.last_key_snapshot = b""

    # --- life ---------------------------------------------------------------------------

    def started(self) -> None:
        me = self.actor_ref
        self.supervisor.start_child(
            ChildSpec(
                name=SESSION,
                start=lambda inc: SessionActor.start(
                    SESSION, me, inc, self.session, self.sinks, self.options.flush_interval_s
                ),
                restart=RestartType.PERMANENT,
                backoff=self.options.service_backoff,
                shutdown_timeout_s=30.0,
            )
        )
        self.supervisor.start_child(
            ChildSpec(
                name=RECONCILER,
                start=lambda inc: Reconciler.start(
                    RECONCILER, me, inc, self.session, self.marker, self.options.kill_grace_s
                ),
                restart=RestartType.PERMANENT,
                backoff=self.options.service_backoff,
            )
        )
        routing = self.options.routing
        if routing is not None:
            self.supervisor.start_child(
                ChildSpec(
                    name=ROUTER,
                    start=lambda inc: RouterActor.start(ROUTER, me, inc, routing.config),
                    restart=RestartType.PERMANENT,
                    backoff=self.options.service_backoff,
                )
            )
            self.supervisor.start_child(
                ChildSpec(
                    name=KEYPOOL,
                    # The same pool object survives a restart: cooldowns and usage are kept.
                    start=lambda inc: KeyPoolActor.start(
                        KEYPOOL, me, inc, routing.pool, routing.store, routing.store_path, routing.open_store
                    ),
                    restart=RestartType.PERMANENT,
                    backoff=self.options.service_backoff,
                )
            )
        notify = self.options.notify
        if notify is not None:
            from actors.notifier import NotifierActor  # noqa: PLC0415 - only runs that notify pay for it

            # Its console channel writes to a log in the session: the terminal has its own lines.
            self.notify_log = (self.folder / STATE_DIR / "notifications.log").open("a", encoding="utf-8")
            callbacks = notifier_callbacks(me)
            stream = self.notify_log
            self.supervisor.start_child(
                ChildSpec(
                    name=NOTIFIER,
                    start=lambda inc: NotifierActor.start(
                        NOTIFIER, me, inc, notify, console_stream=stream, **callbacks
                    ),
                    restart=RestartType.PERMANENT,
                    backoff=self.options.service_backoff,
                    shutdown_timeout_s=NOTIFIER_GRACE_S + 5,
                )
            )
        mcp_servers = self.options.mcp_servers
        if mcp_servers:
            # The MCP client SDK costs ~1 s to import: only runs with MCP servers pay for it.
            from actors.mcp_clients import McpClientsActor  # noqa: PLC0415

            self.supervisor.start_child(
                ChildSpec(
                    name=MCP_CLIENTS,
                    start=lambda inc: McpClientsActor.start(MCP_CLIENTS, me, inc, mcp_servers),
                    restart=RestartType.PERMANENT,
                    backoff=self.options.service_backoff,
                )
            )
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
        for slot in self.slots.values():
            slot.cancel.set()
        self.supervisor.stop_all()
        if self.notify_log is not None:
            self.notify_log.close()

    # --- talking to the Session actor --------------------------------------------------------

    def _session_ref(self) -> pykka.ActorRef[Any]:
        ref = self.supervisor.ref(SESSION)
        if ref is None or ref.actor_stopped.is_set():
            ref = self._restart_service_now(SESSION)
        return ref

    def _restart_service_now(self, name: str) -> pykka.ActorRef[Any]:
        incarnation = self.supervisor.incarnation(name) or 1
        decision = self.supervisor.child_exited(name, incarnation, abnormal=True)
        if isinstance(decision, Escalate):
            raise StateWriteFailed(decision.reason)
        ref = self.supervisor.restart(name, incarnation)
        if ref is None:
            raise StateWriteFailed(f"{name} could not be restarted")
        self._record(ServiceRestarted(name=name, restarts=incarnation, error="restarted on demand"))
        if name == SESSION:
            self._resync_session(ref)
        return ref

    def _resync_session(self, ref: pykka.ActorRef[Any]) -> None:
        """A restarted Session actor lost its uncommitted batch: send the running
        attempts' records again (they are idempotent)."""
        for slot in self.slots.values():
            for message in (slot.dispatch, slot.start):
                if message is not None:
                    ref.tell(message)

    def _ask(self, message: Message) -> Any:
        """Ask the Session actor; after one failure, restart it and ask once more."""
        for attempt in (1, 2):
            ref = self._session_ref()
            try:
                return ref.ask(message, timeout=ASK_TIMEOUT_S)
            except (pykka.ActorDeadError, pykka.Timeout) as error:
                if attempt == 2:
                    raise StateWriteFailed(
                        f"the Session actor did not record {type(message).__name__}: {error}"
                    ) from error
                self._restart_service_now(SESSION)
        raise AssertionError("unreachable")

    def _tell_session(self, message: Message) -> None:
        try:
            self._session_ref().tell(message)
        except pykka.ActorDeadError:
            log.warning("session actor gone; %s dropped", type(message).__name__)

    def _record(self, *events: Event, wisdom_issue: str | None = None, meta: dict[str, str] | None = None) -> None:
        ref = self.supervisor.ref(SESSION)
        if ref is not None and not ref.actor_stopped.is_set():
            ref.tell(RecordEvents(events=events, wisdom_issue=wisdom_issue, meta=meta or {}))

    # --- boot ---------------------------------------------------------------------------------

    @handles(Boot)
    def boot(self, message: Boot) -> None:
        try:
            previous: StateSnapshot = self._ask(GetState())
            reconciler = self.supervisor.ref(RECONCILER)
            if reconciler is None:
                raise StateWriteFailed("the Reconciler is not running")
            plan: ReconcilePlan = reconciler.ask(Reconcile(run_id=self.run_id, snapshot=previous), timeout=120)
            self._ask(
                BeginRun(
                    run_id=self.run_id,
                    command=self.options.command,
                    pid=os.getpid(),
                    max_workers=self.options.max_workers,
                )
            )
            applied: ReconcileApplied = self._ask(plan)
            if plan.unclean_previous_stop or plan.resets or plan.killed_pids:
                self.console(
                    f"recovered from an unclean stop: reset {len(plan.resets)} task(s), "
                    f"stopped {len(plan.killed_pids)} leftover process(es); report: {applied.report_path}"
                )
                self._notify(
                    "recovery",
                    "Recovered from an unclean stop",
                    f"Reset {len(plan.resets)} task(s) that were running: "
                    f"{', '.join(r.task_id for r in plan.resets[:20]) or 'none'}.\n"
                    f"Stopped {len(plan.killed_pids)} leftover process(es).\n"
                    f"Report: {applied.report_path}",
                    action=self._command("check"),
                )
            snapshot: StateSnapshot = self._ask(GetState())
        except Exception as error:  # noqa: BLE001 - a boot failure ends the run with its reason
            self._escalate(f"could not start the run: {error}")
            return
        self.rows = {row.id: row for row in snapshot.tasks}
        self.next_run_row_id = snapshot.next_run_row_id
        self.agent_sessions = dict(snapshot.agent_sessions)
        self.spent_by_task = dict(snapshot.spent_by_task)
        self.session_spent = sum(self.spent_by_task.values())
        self._record(meta=self._budget_meta("ok"))
        known = {task.id for task in self.session.tasks}
        for row in snapshot.tasks:
            if row.id not in known:  # created during an earlier run (a revision, a submitted task)
                self.prompts.add(row, goal=goal_of(row))
        inner = {name for name, entry in self.session.roles.items() if entry.inner_loop}
        self.scheduler = Scheduler(snapshot.tasks, inner_loop_roles=inner, manual_roles=manual_roles_of(self.backends))
        for escalation in snapshot.open_escalations:  # questions still open from an earlier run
            self._track_escalation(escalation)
        for escalation in snapshot.answered_decisions:  # answered while no run was live
            self._apply_decision(escalation)
        self._check_session_budget()
        self._dispatch()
        self._maybe_finish()

    # --- dispatch -------------------------------------------------------------------------------

    def _dispatch(self) -> None:
        scheduler = self.scheduler
        if scheduler is None or self.stopping_since is not None or self.finished:
            return
        scheduler.release_due(time.monotonic())
        while len(self.slots) < self.options.max_workers:
            task_id = scheduler.pop_ready()
            if task_id is None:
                break
            self._start_task(task_id, slot=None)
        self._report_file_waits()

    def _report_file_waits(self) -> None:
        """Say once per wait which task holds back which: both declared the same file."""
        assert self.scheduler is not None  # noqa: S101
        for task_id, holder, name in self.scheduler.drain_file_waits():
            self.console(f"⧗ {task_id} waits for {holder}: both change {name}, so they do not run at once")

    def _order(self, task_id: str, attempt: int, role: str, agent_id: str) -> WorkOrder:
        folder = self.folder
        state = folder / STATE_DIR
        spec = self.session.role_specs[role].meta
        backend = self.backends[role]
        return WorkOrder(
            task_id=task_id,
            attempt=attempt,
            role=role,
            backend=backend.name,
            session_dir=str(folder),
            artifacts_dir=str(folder / "artifacts"),
            workdir=str(self.options.workdir),
            # task_file checks the id and keeps each file inside .executor/ (UnsafePath otherwise).
            prompt_file=str(task_file(state, task_id, f"-a{attempt}.md", "prompts")),
            report_file=str(task_file(state, task_id, f"-a{attempt}.json", "reports")),
            log_path=str(task_file(state, task_id, f"-a{attempt}.log", "logs")),
            run_id=self.run_id,
            marker=self.marker,
            command=tuple(spec.command or ()),
            timeout_s=spec.timeout or self.options.task_timeout_s,
            hang_timeout_s=spec.hang_timeout or self.options.hang_timeout_s,
            grace_s=self.options.kill_grace_s,
            model=spec.model,
            base_url=spec.base_url,
            permission=spec.permission or default_permission(role, self.session.roles[role].responsibility_type),
            max_turns=spec.max_turns,
            isolate_home=bool(spec.isolate_home),
            resume_session=self.agent_sessions.get(task_id) if attempt > 1 else None,
            bridge=self._bridge_for(agent_id),
            complexity=spec.tier or "medium",  # the role's tier is where the Router starts
            mcp_call=self._reassign_offline(task_id, mcp_call_for(backend.name, spec, self.prompts.spec(task_id))),
            gates=tuple(gate_commands(spec.verify)),
            worktree=spec.isolation == "worktree",
            gate_timeout_s=spec.verify_timeout or DEFAULT_GATE_TIMEOUT_S,
        )

    def _reassign_offline(self, task_id: str, call: McpCall | None) -> McpCall | None:
        """A call to an MCP server its health check found offline goes to an online server that
        offers the same tool, when there is one (else it is tried as it is, and retried)."""
        if call is None or self.mcp_states.get(call.server, ("unknown", ()))[0] != "offline":
            return call
        for name, (status, tools) in sorted(self.mcp_states.items()):
            if status == "online" and call.tool in tools:
                self.console(f"⇄ {task_id}: MCP server {call.server} is offline; calling {call.tool} on {name}")
                return msgspec.structs.replace(call, server=name)
        return call

    def _refresh_mcp_states(self) -> None:
        service = self.supervisor.ref(MCP_CLIENTS)
        if service is None or service.actor_stopped.is_set():
            return
        try:
            servers: McpServers = service.ask(GetMcpServers(), timeout=1.0)
        except (pykka.ActorDeadError, pykka.Timeout):
            return
        self.mcp_states = {state.name: (state.status, tuple(state.tools)) for state in servers.items}

    def _bridge_for(self, agent_id: str) -> BridgeEndpoint | None:
        if self.options.worker_bridge is None:
            return None
        url, token = self.options.worker_bridge
        return BridgeEndpoint(url=url, token=token, agent_id=agent_id)

    def _start_task(self, task_id: str, slot: _Slot | None) -> None:
        """Record the dispatch (a tell: the Session commits it in order) and hand the task
        to ``slot``'s worker, or to a new worker."""
        assert self.scheduler is not None  # noqa: S101 - dispatch only runs after boot
        row = self.rows[task_id]
        role = row.owner
        attempt = row.attempts + 1
        if slot is None:
            self.worker_seq += 1
            slot = self._new_worker(f"worker-{self.worker_seq}")
        agent_id = f"{slot.worker_id}-{secrets.token_hex(8)}"
        order = self._order(task_id, attempt, role, agent_id)
        run_row_id = self.next_run_row_id
        self.next_run_row_id += 1
        slot.dispatch = RecordDispatch(
            run_row_id=run_row_id,
            task_id=task_id,
            attempt=attempt,
            worker_id=slot.worker_id,
            role=role,
            backend=order.backend,
            run_id=self.run_id,
            log_path=order.log_path,
        )
        slot.start = None
        slot.role, slot.task_id, slot.attempt, slot.run_row_id = role, task_id, attempt, run_row_id
        slot.agent_id, slot.backend, slot.model, slot.pid = agent_id, order.backend, order.model, None
        slot.cancelled_by = None
        slot.started = time.monotonic()
        slot.last_activity, slot.stall_reported, slot.stalled = slot.started, False, False
        self._tell_session(slot.dispatch)
        self.rows[task_id] = _with(row, status="in_progress", attempts=attempt)
        self.scheduler.start(task_id)
        slot.ref.tell(RunTask(order=order))

    def _new_worker(self, worker_id: str) -> _Slot:
        cancel = threading.Event()
        me = self.actor_ref
        runner = self.runner
        grace = self.options.kill_grace_s
        ref = self.supervisor.start_child(
            ChildSpec(
                name=worker_id,
                start=lambda inc: TeamWorker.start(worker_id, me, inc, runner, cancel, grace),
                restart=RestartType.TRANSIENT,
                backoff=self.options.retry_backoff,
                shutdown_timeout_s=grace + 5,
            )
        )
        slot = _Slot(worker_id=worker_id, ref=ref, cancel=cancel)
        self.slots[worker_id] = slot
        return slot

    # --- reports from workers -------------------------------------------------------------------

    @handles(WorkerStarted)
    def worker_started(self, message: WorkerStarted) -> None:
        slot = self.slots.get(message.worker_id)
        if slot is None or slot.task_id != message.task_id:
            return
        slot.start = RecordStart(
            run_row_id=slot.run_row_id,
            task_id=message.task_id,
            attempt=message.attempt,
            role=slot.role,
            pid=message.pid,
            create_time=message.create_time,
        )
        slot.pid = message.pid
        slot.last_activity = time.monotonic()
        self._tell_session(slot.start)

    @handles(WorkerProgress)
    def worker_progress(self, message: WorkerProgress) -> None:
        slot = self.slots.get(message.worker_id)
        if slot is None:
            return
        slot.last_activity = time.monotonic()
        self._tell_session(
            RecordProgress(
                task_id=message.task_id,
                attempt=message.attempt,
                role=slot.role,
                percent=message.percent,
                note=message.note,
            )
        )

    @handles(WorkerFinished)
    def worker_finished(self, message: WorkerFinished) -> None:
        slot = self.slots.get(message.worker_id)
        if slot is None or slot.task_id != message.task_id:
            return
        try:
            self._settle(slot, message.result)
            self._next_for(slot)
            self._dispatch()
        except StateWriteFailed as error:
            self._escalate(str(error))
            return
        self._maybe_finish()

    def _settle(self, slot: _Slot, result: AttemptResult) -> None:
        """Record how the attempt ended and move the task accordingly."""
        assert self.scheduler is not None  # noqa: S101
        if result.agent_session_id:
            self.agent_sessions[slot.task_id] = result.agent_session_id
        if self._charge(slot.task_id, result.cost_usd) and not result.ok and result.error_kind != "interrupted":
            spent = self.spent_by_task.get(slot.task_id, 0.0)
            result = msgspec.structs.replace(
                result,
                error_kind="over_budget",
                error=f"the task's budget of ${self.options.task_budget_usd:.2f} is spent (${spent:.2f}); "
                f"last attempt: {result.error_kind}: {result.error}",
            )
        task_id, attempt = slot.task_id, slot.attempt
        row = self.rows[task_id]
        elapsed = time.monotonic() - slot.started
        if not result.ok and slot.stalled and result.error_kind == "interrupted":
            idle = time.monotonic() - slot.last_activity
            result = msgspec.structs.replace(
                result, error_kind="hang", error=f"stalled: no progress and no output for {idle:.0f}s; stopped"
            )
        if not result.ok and slot.cancelled_by is not None:
            self.scheduler.fail(task_id)
            self.rows[task_id] = _with(row, status="failed", last_error_kind="cancelled")
            cancelled = msgspec.structs.replace(
                result, error_kind="cancelled", error=f"cancelled by {slot.cancelled_by} while it ran"
            )
            self._record_outcome(slot, cancelled, "failed")
            self._record(TaskCancelled(task_id=task_id, reason="cancelled while running", by=slot.cancelled_by))
            self.console(f"✗ {task_id} cancelled by {slot.cancelled_by}")
            return
        if not result.ok and result.error_kind == "interrupted":
            self.scheduler.reset(task_id)
            self.rows[task_id] = _with(row, status="pending", attempts=max(0, attempt - 1))
            self._record_outcome(slot, result, "interrupted")
            return
        if result.ok and result.outcome == "changes_requested" and self._changes_requested(slot, result):
            return
        high_block = result.ok and result.outcome == "consensus_blocked" and (result.severity or "").upper() == "HIGH"
        if high_block and self._consensus_blocked_high(slot, result):
            return
        if result.ok:
            unblocked = self.scheduler.complete(task_id)
            self.rows[task_id] = _with(row, status="completed")
            if result.outcome == "consensus_blocked":
                self._record(
                    ConsensusBlocked(
                        task_id=task_id, severity=result.severity or "", detail=result.detail, action="logged"
                    ),
                    wisdom_issue=f"{task_id} consensus_blocked ({result.severity}): {result.detail}",
                )
            elif result.outcome == "capability_gap":
                self._record(CapabilityGap(task_id=task_id, detail=result.detail))
                self.console(
                    f"! {task_id}: capability gap — {result.detail}. The executor never invents roles: continue, "
                    "re-run the coordinator, or add a role-spec by hand."
                )
                self.escalate_decision(
                    EscalateDecision(
                        issue=f"{task_id} reports a capability gap: {result.detail}. The executor never invents "
                        "roles: continue as is, or stop the run to re-run the coordinator or add a role-spec.",
                        options=DECISION_OPTIONS[CAPABILITY_DECISION],
                        task_id=task_id,
                        opened_by=CAPABILITY_DECISION,
                        hold=False,
                    )
                )
            report = _final_report(slot.role, task_id, result, unblocked, self.scheduler)
            self._record_outcome(slot, result, "completed", unblocked=tuple(unblocked), report_text=report)
            self.console(
                f"✓ {task_id} ({slot.role}) done in {elapsed:.1f}s"
                + (f" → {', '.join(result.artifacts)}" if result.artifacts else "")
            )
            return
        self.prompts.attempt_failed(task_id, attempt, result.error_kind, result.error, result.output_tail)
        if attempt < self._max_attempts(slot.role) and result.error_kind not in NEVER_RETRIED:
            delay = self.options.retry_backoff.delay(attempt - 1)
            self.scheduler.retry_at(task_id, time.monotonic() + delay)
            self.rows[task_id] = _with(row, status="pending")
            self._record_outcome(slot, result, "retry", retry_in_s=round(delay, 2))
            self.console(
                f"↻ {task_id} attempt {attempt} failed ({result.error_kind}: {result.error}); retrying in {delay:.1f}s"
            )
            return
        self.scheduler.fail(task_id)
        self.rows[task_id] = _with(row, status="failed")
        self._record_outcome(slot, result, "failed")
        blocked = self.scheduler.blocked()
        self.console(
            f"✗ {task_id} failed after {attempt} attempt(s) ({result.error_kind}: {result.error})"
            + (f"; blocked: {', '.join(blocked[:10])}" if blocked else "")
        )
        self._notify(
            "task_failed",
            f"{task_id} ({slot.role}) failed after {attempt} attempt(s)",
            f"{result.error_kind}: {(result.error or '')[:1000]}"
            + (f"\nBlocked by it: {', '.join(blocked[:20])}" if blocked else ""),
            action=f"executor check --session {self.folder}, fix, then executor resume --session {self.folder}",
        )

    # --- money ------------------------------------------------------------------------------

    def _budget_meta(self, state: str) -> dict[str, str]:
        meta = {"budget_state": state}
        if self.options.session_budget_usd is not None:
            meta["budget_session_usd"] = f"{self.options.session_budget_usd:g}"
        if self.options.task_budget_usd is not None:
            meta["budget_task_usd"] = f"{self.options.task_budget_usd:g}"
        return meta

    def _charge(self, task_id: str, cost_usd: float | None) -> bool:
        """Add an attempt's cost; warn or stop at the limits.  True when the task's own budget is spent."""
        if cost_usd:
            self.spent_by_task[task_id] = self.spent_by_task.get(task_id, 0.0) + cost_usd
            self.session_spent += cost_usd
            self._check_session_budget()
        limit = self.options.task_budget_usd
        spent = self.spent_by_task.get(task_id, 0.0)
        if limit is None:
            return False
        if spent >= limit:
            if f"task-exceeded:{task_id}" not in self.budget_warned:
                self.budget_warned.add(f"task-exceeded:{task_id}")
                self._record(BudgetExceeded(scope="task", task_id=task_id, spent_usd=round(spent, 6), limit_usd=limit))
                self.console(f"$ {task_id} spent its budget (${spent:.2f} of ${limit:.2f}): no more attempts")
                self._notify(
                    "budget_stop",
                    f"{task_id} spent its budget",
                    f"${spent:.2f} of ${limit:.2f}: the task gets no more attempts.",
                    action="raise [budget].task_usd, then " + self._command("resume"),
                )
            return True
        if spent >= self.options.budget_warn_at * limit and f"task:{task_id}" not in self.budget_warned:
            self.budget_warned.add(f"task:{task_id}")
            self._record(BudgetWarning(scope="task", task_id=task_id, spent_usd=round(spent, 6), limit_usd=limit))
        return False

    def _check_session_budget(self) -> None:
        limit = self.options.session_budget_usd
        if limit is None or self.budget_stopped:
            return
        spent = self.session_spent
        if spent >= limit:
            self.budget_stopped = True
            self._record(
                BudgetExceeded(scope="session", spent_usd=round(spent, 6), limit_usd=limit),
                meta=self._budget_meta("exceeded"),
            )
            running = f"; {len(self.slots)} running worker(s) may finish" if self.slots else ""
            self.console(
                f"$ session budget spent (${spent:.2f} of ${limit:.2f}): no new tasks{running}. "
                "Raise [budget].session_usd to go on."
            )
            self._notify(
                "budget_stop",
                "Session budget spent: the run stops",
                f"${spent:.2f} of ${limit:.2f}. No new task starts{running}.",
                action="raise [budget].session_usd, then " + self._command("resume"),
            )
            self.stopping_since = self.stopping_since or time.monotonic()
            self._maybe_finish()
        elif spent >= self.options.budget_warn_at * limit and "session" not in self.budget_warned:
            self.budget_warned.add("session")
            self._record(
                BudgetWarning(scope="session", spent_usd=round(spent, 6), limit_usd=limit),
                meta=self._budget_meta("warning"),
            )
            self.console(f"$ {spent / limit:.0%} of the session budget spent (${spent:.2f} of ${limit:.2f})")
            self._notify(
                "budget_warning",
                f"{spent / limit:.0%} of the session budget spent",
                f"${spent:.2f} of ${limit:.2f}; at 100% no new task starts.",
                action=self._command("check"),
            )

    def _record_outcome(
        self,
        slot: _Slot,
        result: AttemptResult,
        disposition: Disposition,
        retry_in_s: float | None = None,
        unblocked: tuple[str, ...] = (),
        report_text: str = "",
    ) -> None:
        """Tell the Session how ``slot``'s attempt ended (committed in order with what follows)."""
        self._tell_session(
            RecordOutcome(
                run_row_id=slot.run_row_id,
                task_id=slot.task_id,
                attempt=slot.attempt,
                role=slot.role,
                result=result,
                disposition=disposition,
                retry_in_s=retry_in_s,
                unblocked=unblocked,
                report_text=report_text,
            )
        )

    def _max_attempts(self, role: str) -> int:
        spec = self.session.role_specs.get(role)
        return (spec.meta.max_attempts if spec else None) or self.options.max_attempts

    def _reviewed_task(self, review: TaskRow, named: str | None) -> str | None:
        """The work a review judges: the blocker it names, else its last blocker of another role."""
        blockers = [task_id for task_id in review.blocked_by if task_id in self.rows]
        if named is not None and named in blockers:
            return named
        others = [task_id for task_id in blockers if self.rows[task_id].owner != review.owner]
        return others[-1] if others else None

    def _changes_requested(self, slot: _Slot, result: AttemptResult) -> bool:
        """A reviewer's changes_requested sends the work back with the feedback, and the review
        runs again after it; past the role's ``review_rounds`` (default 3) the user decides.

        Returns True when it handled the outcome fully (False: the review simply completes)."""
        assert self.scheduler is not None  # noqa: S101
        review_id = slot.task_id
        review = self.rows[review_id]
        target = self._reviewed_task(review, result.reviewed_task)
        if target is None:
            self.console(f"! {review_id} requested changes but reviews no task of another role; taken as done")
            return False
        spec = self.session.role_specs.get(slot.role)
        limit = (spec.meta.review_rounds if spec else None) or DEFAULT_REVIEW_ROUNDS
        round_number = rounds_so_far(Path(self.session.folder), target) + 1
        items = "; ".join(result.feedback) or result.summary
        if round_number > limit:
            self.scheduler.fail(review_id)
            # The kind is what _apply_decision looks for when the answer comes during this run.
            self.rows[review_id] = _with(review, status="failed", last_error_kind="needs_decision")
            decision = AttemptResult(
                ok=False,
                error_kind="needs_decision",
                error=f"changes still requested on {target} after {limit} review round(s): {items}"[:2000],
            )
            self._record_outcome(slot, decision, "failed")
            self.console(f"? {review_id}: still not accepted after {limit} round(s) on {target} — your decision")
            self.escalate_decision(
                EscalateDecision(
                    issue=f"{review_id} still requests changes on {target} after {limit} review round(s): "
                    f"{items[:1500]}. retry: one more review; accept: take the work as it is so what depends "
                    "on the review goes on; leave failed: its dependants stay blocked.",
                    options=DECISION_OPTIONS[CONSENSUS_DECISION],
                    task_id=review_id,
                    opened_by=CONSENSUS_DECISION,
                    hold=False,
                )
            )
            return True
        self.scheduler.send_back(target, review_id)
        self.rows[target] = _with(self.rows[target], status="pending", completed_at=None)
        self.rows[review_id] = _with(review, status="pending")
        # Asked, not told: the feedback file must be written before the reopened task can be
        # dispatched, or its prompt would be built without the review's items.
        self._ask(
            RecordOutcome(
                run_row_id=slot.run_row_id,
                task_id=review_id,
                attempt=slot.attempt,
                role=slot.role,
                result=result,
                disposition="changes_requested",
                sent_back=target,
                review_round=round_number,
            )
        )
        self.console(
            f"↺ {review_id} requested changes on {target} (round {round_number} of {limit}): "
            f"{target} goes again with the feedback in feedback/{target}.md"
        )
        return True

    def _consensus_blocked_high(self, slot: _Slot, result: AttemptResult) -> bool:
        """One revision task for the same role; a second HIGH block waits for the user.

        Returns True when it handled the outcome fully.
        """
        assert self.scheduler is not None  # noqa: S101
        task_id = slot.task_id
        row = self.rows[task_id]
        already_revised = row.source == "revision" or any(other.revises == task_id for other in self.rows.values())
        if already_revised:
            self.scheduler.fail(task_id)
            self.rows[task_id] = _with(row, status="failed", last_error_kind="needs_decision")
            decision = AttemptResult(
                ok=False,
                error_kind="needs_decision",
                error=f"consensus blocked (HIGH) again after a revision: {result.detail}",
            )
            self._record_outcome(slot, decision, "failed")
            self._record(ConsensusBlocked(task_id=task_id, severity="HIGH", detail=result.detail, action="paused"))
            self.console(
                f"? {task_id}: consensus blocked (HIGH) twice — this needs your decision: {result.detail}. "
                "Only the tasks that depend on it wait."
            )
            self.escalate_decision(
                EscalateDecision(
                    issue=f"{task_id} is blocked by a disagreement (HIGH) again after a revision: {result.detail}. "
                    "retry: run it again; accept: take it as done so what depends on it goes on; "
                    "leave failed: its dependants stay blocked.",
                    options=DECISION_OPTIONS[CONSENSUS_DECISION],
                    task_id=task_id,
                    opened_by=CONSENSUS_DECISION,
                    hold=False,
                )
            )
            return True
        prefix = id_prefix(task_id)
        numbers = [
            int(other[len(prefix) + 1 :])
            for other in self.rows
            if id_prefix(other) == prefix and other[len(prefix) + 1 :].isdigit()
        ]
        revision_id = f"{prefix}-{max(numbers, default=0) + 1:03d}"
        dependants = self.scheduler.dependants(task_id)
        revision = TaskRow(
            id=revision_id,
            owner=row.owner,
            status="pending",
            subject=f"Revise {task_id}",
            priority=row.priority,
            blocked_by=[task_id],
            max_attempts=row.max_attempts,
            source="revision",
            revises=task_id,
            created_at=utc_now(),
            updated_at=utc_now(),
        )
        rewire = tuple((dependant, (revision_id,)) for dependant in dependants)
        self.prompts.add(revision, goal=f"Revise {task_id}: resolve the blocking disagreement — {result.detail}")
        self._ask(CreateTasks(tasks=(revision,), rewire=rewire))
        self.rows[revision_id] = revision
        for dependant, _ in rewire:
            self.rows[dependant] = _with(
                self.rows[dependant], blocked_by=[*self.rows[dependant].blocked_by, revision_id]
            )
        self.scheduler.add(revision, rewire)
        self._record(
            RevisionCreated(task_id=revision_id, revises=task_id, reason=result.detail),
            ConsensusBlocked(task_id=task_id, severity="HIGH", detail=result.detail, action="revision"),
        )
        self.console(f"! {task_id}: consensus blocked (HIGH) — created revision task {revision_id}")
        return False  # the blocked attempt itself completes; its dependants now also wait for the revision

    def _next_for(self, slot: _Slot) -> None:
        """The worker that just finished takes more work: its inner-loop chain first,
        then any ready task; with nothing to do (or while stopping) it stops."""
        assert self.scheduler is not None  # noqa: S101
        if self.stopping_since is None and slot.cancelled_by is None and not slot.stalled:
            next_task = self.scheduler.pop_for_role(slot.role) if self.scheduler.is_inner_loop(slot.role) else None
            if next_task is None and len(self.slots) <= self.options.max_workers:
                next_task = self.scheduler.pop_ready()
            self._report_file_waits()
            if next_task is not None:
                self._start_task(next_task, slot)
                return
        self.slots.pop(slot.worker_id, None)
        slot.ref.tell(StopWorker())

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
        slot = self.slots.get(name)
        if slot is not None:
            # A worker died in the middle of an attempt: that attempt failed, and the
            # task goes back to the queue after the supervisor's backoff.
            self._record(WorkerCrashed(worker_id=name, task_id=slot.task_id, error=error or "died"))
            self.slots.pop(name, None)
            crash = AttemptResult(ok=False, error_kind="worker_crashed", error=error or "the worker died")
            try:
                self._settle(slot, crash)
                if isinstance(decision, Restart):
                    self._record(
                        WorkerRestarted(
                            worker_id=name,
                            task_id=slot.task_id,
                            restarts=decision.restarts,
                            delay_s=round(decision.delay_s, 2),
                        )
                    )
            except StateWriteFailed as failure:
                self._escalate(str(failure))
                return
        if isinstance(decision, Escalate):
            self._escalate(decision.reason)
            return
        if name in SERVICES:
            if isinstance(decision, Restart):
                self._record(ServiceRestarted(name=name, restarts=decision.restarts, error=error or ""))
                timer = threading.Timer(
                    decision.delay_s, self._tell_self, (RestartChild(name=name, incarnation=incarnation),)
                )
                timer.daemon = True
                timer.start()
            return
        if isinstance(decision, (Forget, Restart)):
            self.supervisor.forget(name)
        self._dispatch()
        self._maybe_finish()

    def _check_stalls(self, now: float) -> None:
        """A running task with no progress report and no output for its role's stall_after is
        reported; past stall_stop_after its attempt is stopped (and retried as a hang)."""
        wall = time.time()
        for slot in self.slots.values():
            if slot.stalled or not slot.task_id or slot.cancelled_by is not None:
                continue
            spec = self.session.role_specs[slot.role].meta
            report_after = spec.stall_after or DEFAULT_STALL_AFTER_S
            stop_after = spec.stall_stop_after or max(DEFAULT_STALL_STOP_AFTER_S, 2 * report_after)
            idle = now - slot.last_activity
            if slot.dispatch is not None:
                # Output counts as life: the attempt's log grows with everything the agent prints.
                with contextlib.suppress(OSError):
                    idle = min(idle, wall - os.stat(slot.dispatch.log_path).st_mtime)
            if idle >= stop_after:
                slot.stalled = True
                slot.cancel.set()
                self._record(
                    TaskStalled(task_id=slot.task_id, attempt=slot.attempt, idle_s=round(idle, 1), action="stopped")
                )
                self.console(f"⏸ {slot.task_id} stalled for {idle:.0f}s: stopping it to retry")
                self._notify(
                    "stall",
                    f"{slot.task_id} stalled: stopped to retry",
                    f"No progress and no output for {idle:.0f}s; attempt {slot.attempt} was stopped "
                    "and will be retried.",
                    action=self._command("check"),
                )
            elif idle >= report_after and not slot.stall_reported:
                slot.stall_reported = True
                self._record(
                    TaskStalled(task_id=slot.task_id, attempt=slot.attempt, idle_s=round(idle, 1), action="reported")
                )
                self.console(
                    f"⏸ {slot.task_id} has shown no progress and no output for {idle:.0f}s "
                    f"(stopped at {stop_after:.0f}s)"
                )
                self._notify(
                    "stall",
                    f"{slot.task_id} looks stuck",
                    f"No progress and no output for {idle:.0f}s ({slot.role}, attempt {slot.attempt}); "
                    f"it is stopped and retried at {stop_after:.0f}s.",
                    action=self._command("check"),
                )

    def _snapshot_keys(self) -> None:
        """Put the key pool's states in the store, so `executor models --session` in another
        process shows them live.  Cooldowns are stored as a wall-clock end, so an unchanged
        pool writes nothing."""
        keypool = self.supervisor.ref(KEYPOOL)
        if keypool is None or keypool.actor_stopped.is_set():
            return
        keypool.tell(RefreshKeys())  # keys added in another terminal join first
        try:
            states: KeyStates = keypool.ask(GetKeyStates(), timeout=1.0)
        except (pykka.ActorDeadError, pykka.Timeout):
            return
        now = time.time()
        rows = [
            {
                **msgspec.structs.asdict(state),
                "cooling_for_s": 0.0,
                "cooling_until": round(now + state.cooling_for_s, 1) if state.cooling_for_s else None,
            }
            for state in states.items
        ]
        encoded = msgspec.json.encode(rows)
        if encoded != self.last_key_snapshot:
            self.last_key_snapshot = encoded
            self._record(meta={"key_states": encoded.decode(), "key_states_at": utc_now()})

    def _tell_self(self, message: Message) -> None:
        with contextlib.suppress(pykka.ActorDeadError):
            self.actor_ref.tell(message)

    @handles(RestartChild)
    def restart_child(self, message: RestartChild) -> None:
        ref = self.supervisor.restart(message.name, message.incarnation)
        if ref is not None and message.name == SESSION:
            self._resync_session(ref)

    # --- time ------------------------------------------------------------------------------------

    @handles(Tick)
    def tick(self, message: Tick) -> None:
        if self.finished:
            return
        now = time.monotonic()
        for name, incarnation in self.supervisor.unreported_deaths():
            self._handle_death(name, incarnation, True, "stopped without reporting (failed to start?)")
        if self.stopping_since is not None:
            waited = now - self.stopping_since
            if not self.force_stop and waited >= self.options.shutdown_grace_s:
                self._cancel_all("the shutdown grace period ended")
            elif self.force_stop and waited >= self.options.shutdown_grace_s + self.options.kill_grace_s + 10:
                # Workers that do not even answer a kill: give up on them, keep the state.
                for slot in list(self.slots.values()):
                    self.slots.pop(slot.worker_id, None)
                    log.error("worker %s did not stop; leaving it", slot.worker_id)
        else:
            self._dispatch()
        if now >= self.next_flush:
            self.next_flush = now + self.options.flush_interval_s
            self._tell_session(Flush())
            try:
                self._read_inbox()
            except StateWriteFailed as error:
                self._escalate(str(error))
                return
        if self.escalation_deadlines and self.stopping_since is None:
            try:
                self._expire_escalations()
            except StateWriteFailed as error:
                self._escalate(str(error))
                return
        if now >= self.next_stall_check and self.stopping_since is None:
            self.next_stall_check = now + STALL_CHECK_INTERVAL_S
            self._check_stalls(now)
            self._release_silent_claims(time.time())
        if now >= self.next_key_snapshot:
            self.next_key_snapshot = now + KEY_SNAPSHOT_INTERVAL_S
            self._snapshot_keys()
            self._refresh_mcp_states()
        self._maybe_finish()

    # --- stopping --------------------------------------------------------------------------------

    @handles(ShutdownRequest)
    def shutdown_request(self, message: ShutdownRequest) -> None:
        if self.finished:
            return
        self._record(
            ShutdownRequested(reason=message.reason, graceful=message.graceful and self.stopping_since is None)
        )
        if self.stopping_since is None and message.graceful:
            self.stopping_since = time.monotonic()
            if self.slots:
                self.console(
                    f"stopping: no new tasks; waiting up to {self.options.shutdown_grace_s:g}s for "
                    f"{len(self.slots)} running worker(s) (press Ctrl-C again to stop them now)"
                )
        else:
            self.stopping_since = self.stopping_since or time.monotonic()
            self._cancel_all("stop requested")
        self._maybe_finish()

    def _cancel_all(self, why: str) -> None:
        if not self.force_stop and self.slots:
            self.console(f"stopping {len(self.slots)} running worker(s): {why}")
        self.force_stop = True
        for slot in self.slots.values():
            slot.cancel.set()

    def _escalate(self, reason: str) -> None:
        if self.finished:
            return
        log.error("escalation: %s", reason)
        self.console(f"✗ stopping the run: {reason}")
        self.stopping_since = self.stopping_since or time.monotonic()
        self._cancel_all(reason)
        self._finish(escalated=reason)

    def _maybe_finish(self) -> None:
        if self.finished or self.scheduler is None:
            return
        if self.stopping_since is not None:
            if not self.slots:
                self._finish()
            return
        if not self.slots and self.scheduler.finished():
            if not self.options.keep_alive:
                self._finish()
            elif not self.idle_announced:
                self.idle_announced = True
                counts = self.scheduler.counts()
                self.console(
                    f"idle: {counts.get('completed', 0)}/{self.scheduler.total()} task(s) done; "
                    "waiting for submitted tasks (Ctrl-C to stop)"
                )

    def _finish(self, escalated: str | None = None) -> None:
        self.finished = True
        self._snapshot_keys()  # what the pool looked like at the end stays readable
        scheduler = self.scheduler
        counts = scheduler.counts() if scheduler else {}
        # Stopped with nothing left to do (a served run told to stop when idle) is not an interruption.
        interrupted = self.stopping_since is not None and not (scheduler is not None and scheduler.finished())
        summary = RunSummary(
            run_id=self.run_id,
            completed=counts.get("completed", 0),
            total=scheduler.total() if scheduler else 0,
            failed=tuple(scheduler.failed()) if scheduler else (),
            blocked=tuple(scheduler.blocked()) if scheduler else (),
            duration_s=time.monotonic() - self.started_at,
            interrupted=interrupted and not self.budget_stopped,
            escalated=escalated,
            budget_stopped=self.budget_stopped,
        )
        self._notify_end(summary)
        if interrupted or escalated or self.budget_stopped:
            try:
                self._ask(
                    FinishRun(
                        run_id=self.run_id,
                        clean=True,
                        session_status="paused",
                        interrupted_tasks=tuple(slot.task_id for slot in self.slots.values()),
                        summary=summary,
                    )
                )
            except StateWriteFailed:
                log.exception("could not record the end of the run")
        self.outcome.set_result(summary)

    def _notify_end(self, summary: RunSummary) -> None:
        if summary.interrupted:
            return  # stopped on request: the person who asked knows
        if summary.escalated:
            title, kind = f"Run stopped: {summary.escalated[:150]}", "task_failed"
        elif summary.budget_stopped:
            return  # the budget notice said it
        elif summary.failed or summary.blocked:
            title, kind = (
                f"Pipeline finished with failures: {summary.completed}/{summary.total} done",
                "pipeline_complete",
            )
        else:
            title, kind = f"Pipeline complete: {summary.completed}/{summary.total} tasks", "pipeline_complete"
        lines = [f"Duration: {summary.duration_s / 60:.1f} min, spent ${self.session_spent:.2f}"]
        if summary.failed:
            lines.append(f"Failed: {', '.join(summary.failed[:20])}")
        if summary.blocked:
            lines.append(f"Blocked by failures: {', '.join(summary.blocked[:20])}")
        self._notify(kind, title, "\n".join(lines), action=self._command("check"))  # type: ignore[arg-type]

    @handles(Conclude)
    def conclude(self, message: Conclude) -> Ok:
        summary = self.outcome.result() if self.outcome.done() else None
        if summary is not None and not (summary.interrupted or summary.escalated or summary.budget_stopped):
            self._ask(FinishRun(run_id=self.run_id, clean=True, session_status=message.session_status, summary=summary))
        self._ticker_stop.set()
        self.supervisor.stop_all()
        return Ok()


def _with(row: TaskRow, **changes: Any) -> TaskRow:
    return msgspec.structs.replace(row, **changes)


def _final_report(role: str, task_id: str, result: AttemptResult, unblocked: list[str], scheduler: Scheduler) -> str:
    """The worker's final report in the upstream format: ``[role]`` first, a status line last."""
    first = result.summary.strip().split("\n", 1)[0] if result.summary else f"{task_id} complete"
    if not first.startswith("["):
        first = f"[{role}] {first}"
    if unblocked:
        status = f"Tasks unblocked: {', '.join(unblocked)}. Ready for next stage."
    elif scheduler.finished():
        status = "All my tasks done. Pipeline may be complete."
    else:
        status = "All my tasks done. Other tasks still running."
    return f"{first}\n{status}"
