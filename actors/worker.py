"""TeamWorker: runs one task at a time, one per running task.

It runs an attempt on its own thread (``runner`` picks the backend for the
task's role) and reports to its parent, the Executor, with Structs:
:class:`WorkerStarted` as soon as the agent process exists,
:class:`WorkerProgress` as the agent reports, and :class:`WorkerFinished` with
the :class:`AttemptResult`.  A worker that finishes stays alive for the next
ready task — the next of its inner-loop chain first — so threads are not
created per task; the Executor stops it when nothing is left for it.

Stopping a running attempt is out of band: the Executor sets the worker's
``cancel`` event (the actor's thread is busy inside the backend, so a
message would wait).  If the worker crashes, it stops the agent's process
tree before it dies, so nothing it started outlives it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol, cast

import msgspec
import pykka

from actors.base import TreeActor, handles
from actors.progress_pacer import PROGRESS_INTERVAL_S, ProgressPacer
from actors.timer import call_at
from backends.base import WorkerHooks
from backends.gates import gate_run_for, run_gates
from backends.process_tree import stop_tree
from protocol.bridge import CRITICAL_APPROVAL, AnswerEscalation, EscalateDecision
from protocol.keys import AcquireKey, KeyUnavailable, ReportKey, outcome_for_error
from protocol.messages import (
    AttemptResult,
    RunTask,
    StopWorker,
    WorkerFinished,
    WorkerProgress,
    WorkerStarted,
    WorkOrder,
)
from protocol.routing import ModelChoice, NextModel, NoModel, SelectModel
from protocol.types import ErrorKind
from session.attempt_trees import after_attempt, before_attempt, own_filter
from session.gates import record_gate_failure
from session.key_requests import ADDED, answered_ids, give_up_reason, key_question, open_request
from session.safepath import task_file
from session.store import StoreReader, utc_now
from session.worktrees import NotARepository, WorktreeError, branch_of, commit_all, ensure_worktree

__all__ = ["PROGRESS_INTERVAL_S", "Runner", "TeamWorker"]


class _ActorRouting:
    """``hooks.routing``: model and key choices asked of the Router and KeyPool actors."""

    ASK_TIMEOUT_S = 10.0

    def __init__(self, router: pykka.ActorRef[Any], keypool: pykka.ActorRef[Any], config: Any) -> None:
        self.router = router
        self.keypool = keypool
        self.config = config
        self.escalate: Callable[[Any], None] | None = None  # a question (or an answer) for the Executor
        self.folder: Path | None = None  # the session, whose store holds the questions' answers

    @classmethod
    def find(cls) -> _ActorRouting | None:
        from actors.keypool import KeyPoolActor  # noqa: PLC0415 - only runs with routing need them
        from actors.router import RouterActor  # noqa: PLC0415

        routers = pykka.ActorRegistry.get_by_class(RouterActor)
        pools = pykka.ActorRegistry.get_by_class(KeyPoolActor)
        if not routers or not pools:
            return None
        config = routers[-1].proxy().config.get(timeout=cls.ASK_TIMEOUT_S)
        return cls(routers[-1], pools[-1], config)

    def _ask(self, ref: pykka.ActorRef[Any], message: Any) -> Any:
        try:
            return ref.ask(message, timeout=self.ASK_TIMEOUT_S)
        except (pykka.ActorDeadError, pykka.Timeout) as error:
            return NoModel(task_id="", reason=f"the routing service did not answer: {error}")

    def select_model(self, task_id: str, complexity: str, force_model: str | None, backend: str | None = None) -> Any:
        choice = self._ask(
            self.router,
            SelectModel(task_id=task_id, complexity=complexity, force_model=force_model, backend=backend),
        )
        if isinstance(choice, ModelChoice) and choice.needs_approval and self.escalate is not None:
            # The task runs on the lower tier meanwhile; an approval lets its next attempt use CRITICAL.
            self.escalate(
                EscalateDecision(
                    issue=f"{task_id} asks for a CRITICAL model ({choice.reason}). Approve CRITICAL for it?",
                    options=("approve", "deny"),
                    task_id=task_id,
                    opened_by=CRITICAL_APPROVAL,
                )
            )
        return choice

    def next_model(self, task_id: str, current_model: str, error_kind: str) -> Any:
        # The backends pass the kind their own classifier gave (an ErrorKind), typed str at the seam.
        kind = cast(ErrorKind, error_kind)
        return self._ask(self.router, NextModel(task_id=task_id, current_model=current_model, error_kind=kind))

    def base_url(self, model: str) -> str | None:
        spec = self.config.find_model(model)
        return spec.base_url if spec is not None else None

    def model_spec(self, model: str) -> Any:
        return self.config.find_model(model)

    def acquire_key(self, provider: str) -> Any:
        answer = self._ask(self.keypool, AcquireKey(provider=provider))
        if isinstance(answer, NoModel):
            return KeyUnavailable(provider=provider, reason=answer.reason)
        return answer

    def _questions(self) -> list[Any]:
        reader = StoreReader.open(self.folder) if self.folder is not None else None
        if reader is None:
            return []
        try:
            return reader.escalations()
        finally:
            reader.close()

    def ask_for_key(self, task_id: str, provider: str, reason: str) -> frozenset[str]:
        """Ask the user for a key of ``provider`` (one question per provider); the ids of
        its questions answered before now, which :meth:`key_given_up` ignores."""
        seen = answered_ids(self._questions(), provider)
        if self.escalate is not None:
            self.escalate(key_question(provider, reason, task_id))
        return seen

    def key_given_up(self, provider: str, seen: frozenset[str]) -> str | None:
        """Why to stop waiting for a key of ``provider`` (the user answered ``fail``), or None."""
        return give_up_reason(self._questions(), provider, seen)

    def key_found(self, provider: str) -> None:
        """A key joined the pool: answer the open question about ``provider`` for the user."""
        row = open_request(self._questions(), provider)
        if row is not None and self.escalate is not None:
            self.escalate(AnswerEscalation(escalation_id=row.id, choice=ADDED, answered_by="executor"))

    def report_key(
        self,
        key_id: str,
        error_kind: str | None,
        retry_after_s: float | None,
        tokens_in: int,
        tokens_out: int,
        cost_usd: float,
        error: str | None,
    ) -> None:
        self.keypool.tell(
            ReportKey(
                key_id=key_id,
                outcome=outcome_for_error(error_kind),
                retry_after_s=retry_after_s,
                tokens_in=tokens_in,
                tokens_out=tokens_out,
                cost_usd=cost_usd,
                error=error,
            )
        )


class _Hooks:
    """The backend's callbacks, turned into messages to the Executor."""

    def __init__(self, worker: TeamWorker, order: WorkOrder) -> None:
        self.worker = worker
        self.order = order
        self._routing: _ActorRouting | None = None
        self._routing_looked_up = False
        self.node: str | None = None  # set by a cluster runner once the attempt is placed
        self._pacer = ProgressPacer(self._send_progress, call_at)

    def placed(self, node: str) -> None:
        self.node = node

    @property
    def routing(self) -> _ActorRouting | None:
        """Looked up on first use: only backends that switch keys and models ask for it."""
        if not self._routing_looked_up:
            self._routing = _ActorRouting.find()
            if self._routing is not None:
                self._routing.escalate = self.worker.tell_parent
                self._routing.folder = Path(self.order.session_dir)
            self._routing_looked_up = True
        return self._routing

    def started(self, pid: int, create_time: float | None) -> None:
        self.worker.current_process = (pid, create_time)
        self.worker.tell_parent(
            WorkerStarted(
                worker_id=self.worker.name,
                task_id=self.order.task_id,
                attempt=self.order.attempt,
                pid=pid,
                create_time=create_time,
                log_path=self.order.log_path,
                node=self.node,
            )
        )

    def progress(self, percent: int | None, note: str) -> None:
        """Tell the Executor, paced (:class:`ProgressPacer`)."""
        self._pacer.offer(percent, note)

    def flush_progress(self) -> None:
        """Send the progress held back by :meth:`progress`, if any."""
        self._pacer.flush()

    def _send_progress(self, percent: int | None, note: str) -> None:
        self.worker.tell_parent(
            WorkerProgress(
                worker_id=self.worker.name,
                task_id=self.order.task_id,
                attempt=self.order.attempt,
                percent=percent,
                note=note[:500],
            )
        )


def _after_gates(order: WorkOrder, result: AttemptResult, hooks: _Hooks, cancel: threading.Event) -> AttemptResult:
    """The attempt's result once its quality gates ran: a failing gate turns it into a
    ``gate_failed`` failure (retried like any other) and leaves its output in the feedback file;
    gates stopped because the run is stopping make the attempt ``interrupted`` (not the work's
    fault: it runs again, gates included, when the run resumes)."""
    hooks.progress(None, f"running {len(order.gates)} quality gate(s)")
    hooks.flush_progress()  # the gates may take minutes: say so now
    outcome = run_gates(order.gates, gate_run_for(order, cancel))
    if outcome.ok:
        return result
    if cancel.is_set():
        return msgspec.structs.replace(
            result, ok=False, error_kind="interrupted", error="stopped during its quality gates"
        )
    record_gate_failure(Path(order.session_dir), order.task_id, outcome, utc_now(), f"attempt {order.attempt}")
    why = outcome.why or f"exit {outcome.exit_code}"
    return msgspec.structs.replace(
        result,
        ok=False,
        error_kind="gate_failed",
        error=f"quality gate `{outcome.command}` failed ({why}); its output is in feedback/{order.task_id}.md",
        output_tail=outcome.output_tail[-2000:],
    )


def _commit_worktree(order: WorkOrder, result: AttemptResult) -> AttemptResult:
    """Commit what the agent left in its worktree and tell the next task where the work is."""
    try:
        commit = commit_all(Path(order.workdir), f"{order.task_id}: attempt {order.attempt} (team-executor)")
    except WorktreeError as error:
        return msgspec.structs.replace(
            result, ok=False, error_kind="crash", error=f"could not commit its work: {error}"
        )
    branch = branch_of(order.task_id)
    note = task_file(Path(order.artifacts_dir), order.task_id, "-worktree.md")
    note.parent.mkdir(parents=True, exist_ok=True)
    note.write_text(
        f"# {order.task_id}: its work is on branch `{branch}`\n\n"
        f"- worktree: `{order.workdir}`\n"
        f"- newest commit of this attempt: `{commit or 'none (nothing changed)'}`\n"
        f"- see it: `git diff HEAD...{branch}`; take it: `git merge {branch}`\n",
        encoding="utf-8",
    )
    relative = f"artifacts/{note.name}"
    return msgspec.structs.replace(result, artifacts=(*result.artifacts, relative))


class Runner(Protocol):
    def __call__(self, order: WorkOrder, hooks: WorkerHooks, cancel: threading.Event) -> AttemptResult:
        """Run one attempt with the backend of ``order.role``."""


class TeamWorker(TreeActor):
    def __init__(
        self,
        name: str,
        parent: pykka.ActorRef[Any],
        incarnation: int,
        runner: Runner,
        cancel: threading.Event,
        grace_s: float = 5.0,
    ) -> None:
        super().__init__(name, parent, incarnation)
        self.runner = runner
        self.cancel = cancel
        self.grace_s = grace_s
        self.current_process: tuple[int, float | None] | None = None

    def tell_parent(self, message: Any) -> None:
        if self.parent is not None:
            self.parent.tell(message)

    @handles(RunTask)
    def run_task(self, message: RunTask) -> None:
        order = message.order
        self.current_process = None
        hooks = _Hooks(self, order)
        project = order.workdir
        if order.worktree:
            try:
                order = msgspec.structs.replace(
                    order, workdir=str(ensure_worktree(Path(project), Path(order.session_dir), order.task_id))
                )
            except NotARepository:
                # Nothing to isolate from: the task works where every task works, and says so.
                hooks.progress(None, "isolation: worktree needs a git repository; working in the shared tree")
                order = msgspec.structs.replace(order, worktree=False)
            except WorktreeError as error:
                result = AttemptResult(ok=False, error_kind="spawn_failed", error=f"no worktree for it: {error}")
                self.tell_parent(
                    WorkerFinished(worker_id=self.name, task_id=order.task_id, attempt=order.attempt, result=result)
                )
                return
        where = (Path(order.workdir), Path(order.session_dir), order.task_id, order.attempt)
        recorded = before_attempt(*where)  # the git state `executor diff` and `rollback` start from
        result = self.runner(order, hooks, self.cancel)
        self.current_process = None
        hooks.flush_progress()
        if result.ok and result.outcome == "completed" and order.gates and not self.cancel.is_set():
            result = _after_gates(order, result, hooks, self.cancel)
        if order.worktree and result.ok:
            result = _commit_worktree(order, result)
        if recorded:
            after_attempt(*where)
        result = msgspec.structs.replace(result, files_modified=own_filter(*where[:2], result.files_modified))
        self.tell_parent(
            WorkerFinished(worker_id=self.name, task_id=order.task_id, attempt=order.attempt, result=result)
        )

    @handles(StopWorker)
    def stop_worker(self, message: StopWorker) -> None:
        self.stop()

    def stopping(self) -> None:
        # Only reached with a live process when the backend raised: never leave it behind.
        if self.current_process is not None:
            pid, create_time = self.current_process
            stop_tree(pid, create_time, grace_s=self.grace_s)
            self.current_process = None
