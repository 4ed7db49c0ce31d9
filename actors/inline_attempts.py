"""Attempts the Executor's own thread watches: no worker thread, no hop.

A plain process attempt (the ``command`` and ``demo`` backends: one program, its output,
its exit) needs no thread of its own.  Its pipes and pidfd join the Executor's event loop
(its inbox, :mod:`actors.reactor_inbox`), and its start, progress and end become the same
:class:`WorkerStarted`, :class:`WorkerProgress` and :class:`WorkerFinished` a TeamWorker
sends, handled as the Executor's next messages.  What may wait goes to the loop's helper
threads: the git captures before and after an attempt in a repository, reading a silent
attempt's working tree, stopping a run through its grace period.

Attempts with a worktree or quality gates, every other backend, and attempts on a cluster
keep their TeamWorker (their steps are minutes of sequential work: a thread is cheap there).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec

from actors.progress_pacer import ProgressPacer
from backends._agent_process import (
    PROGRESS_LINE_PREFIX,
    clear_report,
    parse_progress,
    printed,
    process_of,
    result_from_outcome,
)
from backends.event_loop import EventLoop
from backends.process import Watched, watch_process
from backends.process_tree import stop_tree
from backends.process_types import ProcessOutcome
from protocol._base import Message
from protocol.messages import AttemptCrashed, AttemptResult, WorkerFinished, WorkerProgress, WorkerStarted, WorkOrder
from session.attempt_trees import after_attempt, before_attempt, own_filter
from session.git_trees import repo_root

__all__ = ["InlineAttempts"]

log = logging.getLogger("executor.root")


class InlineAttempts:
    """The attempts running on the Executor's thread, by worker id.

    ``prepare`` writes the attempt's prompt file; ``post`` hands a message to the Executor
    (its inbox: the message is handled as a turn of its own, as a worker's would be).
    """

    def __init__(
        self,
        loop: EventLoop,
        backends: dict[str, Any],
        prepare: Callable[[WorkOrder], None],
        post: Callable[[Message], None],
    ) -> None:
        self.loop = loop
        self.backends = backends
        self.prepare = prepare
        self.post = post
        self.running: dict[str, _Attempt] = {}

    def argv_for(self, order: WorkOrder) -> tuple[str, ...] | None:
        """The argv when ``order`` can run on the Executor's thread, else None (a TeamWorker runs
        it).  A backend offers this with ``inline_argv(order) -> argv | None`` (``command``,
        ``demo``); a getattr, where a runtime-checkable Protocol would cost ~20 µs a check."""
        inline_argv = getattr(self.backends.get(order.role), "inline_argv", None)
        if order.worktree or order.gates or inline_argv is None:
            return None
        try:
            argv: tuple[str, ...] | None = inline_argv(order)
            return argv
        except Exception:  # noqa: BLE001 - the backend's run() says what is wrong, on a worker
            return None

    def start(self, worker_id: str, order: WorkOrder, cancel: threading.Event) -> None:
        """Begin an attempt :meth:`argv_for` accepted when it was dispatched."""
        argv = self.argv_for(order)
        if argv is None:  # the same order was accepted at dispatch: only a bug of ours gets here
            result = AttemptResult(ok=False, error_kind="worker_crashed", error="no longer runnable on the core")
            self.post(WorkerFinished(worker_id=worker_id, task_id=order.task_id, attempt=order.attempt, result=result))
            return
        attempt = _Attempt(self, worker_id, order, argv, cancel)
        self.running[worker_id] = attempt
        attempt.begin()

    def stop_all(self, grace_s: float) -> None:
        """The Executor stops: its loop will not run again, so stop every running process tree
        here and now (what a TeamWorker does when it is stopped)."""
        stoppers = [
            threading.Thread(target=attempt.stop_now, args=(grace_s,), name=f"stop-{attempt.worker_id}", daemon=True)
            for attempt in self.running.values()
        ]
        for stopper in stoppers:  # their grace periods run side by side, not one after another
            stopper.start()
        for stopper in stoppers:
            stopper.join(grace_s + 10.0)
        self.running.clear()


class _Attempt:
    def __init__(
        self, owner: InlineAttempts, worker_id: str, order: WorkOrder, argv: tuple[str, ...], cancel: threading.Event
    ) -> None:
        self.owner = owner
        self.worker_id = worker_id
        self.order = order
        self.argv = argv
        self.cancel = cancel
        self.where = (Path(order.workdir), Path(order.session_dir), order.task_id, order.attempt)
        self.in_repository = repo_root(self.where[0]) is not None
        self.recorded = False
        self.started_wall = time.time()
        self.progress_lines = 0
        self.watched: Watched | None = None
        self.pacer = ProgressPacer(self._send_progress, self._call_at)
        self.over = False

    # --- start ------------------------------------------------------------------------

    def begin(self) -> None:
        if self.in_repository:  # git records the tree the attempt starts from: that waits, on a helper
            self._on_helper(self._prepare, self._spawn)
        else:
            self._guarded(lambda: self._spawn(self._prepare()))

    def _prepare(self) -> bool:
        recorded = before_attempt(*self.where)  # the git state `executor diff` and `rollback` start from
        self.owner.prepare(self.order)
        return recorded

    def _spawn(self, recorded: bool) -> None:
        self.recorded = recorded
        problem = clear_report(self.order)
        if problem is not None:
            self._finish(problem)
            return
        if self.cancel.is_set():  # stopped while it was being prepared
            self._finish(AttemptResult(ok=False, error_kind="interrupted", error="interrupted (cancel requested)"))
            return
        spec, limits = process_of(self.order, self.argv)
        self.started_wall = time.time()
        watched = watch_process(
            spec,
            limits,
            self.owner.loop,
            self._ended_guarded,
            cancel=self.cancel,
            on_stdout_line=self._line,
            stdout_line_prefix=PROGRESS_LINE_PREFIX,
        )
        if isinstance(watched, ProcessOutcome):
            self._ended(watched)
            return
        self.watched = watched
        order = self.order
        self.owner.post(
            WorkerStarted(
                worker_id=self.worker_id,
                task_id=order.task_id,
                attempt=order.attempt,
                pid=watched.pid,
                create_time=watched.create_time,
                log_path=order.log_path,
                node=None,
            )
        )

    # --- while it runs ------------------------------------------------------------------

    def _line(self, line: bytes) -> None:
        progress = parse_progress(line)
        if progress is not None:
            self.progress_lines += 1
            self.pacer.offer(*progress)

    def _send_progress(self, percent: int | None, note: str) -> None:
        order = self.order
        self.owner.post(
            WorkerProgress(
                worker_id=self.worker_id,
                task_id=order.task_id,
                attempt=order.attempt,
                percent=percent,
                note=note[:500],
            )
        )

    def _call_at(self, due: float, call: Callable[[], None]) -> None:
        self.owner.loop.call_later(due - time.monotonic(), call)

    # --- end ----------------------------------------------------------------------------

    def _ended_guarded(self, outcome: ProcessOutcome) -> None:
        self._guarded(lambda: self._ended(outcome))

    def _ended(self, outcome: ProcessOutcome) -> None:
        self.watched = None
        self.pacer.flush()

        def result_of() -> AttemptResult:
            result = result_from_outcome(self.order, outcome, silent_since=self.started_wall)
            if self.recorded:
                after_attempt(*self.where)
            files = own_filter(*self.where[:2], result.files_modified)
            return msgspec.structs.replace(result, progress_lines=self.progress_lines, files_modified=files)

        # A silent clean exit makes result_from_outcome look through the working tree for a
        # change (thousands of stat calls); a repository makes after_attempt run git.
        if self.recorded or (outcome.error_kind is None and not printed(outcome)):
            self._on_helper(result_of, self._finish)
        else:
            self._finish(result_of())

    def _finish(self, result: AttemptResult) -> None:
        order = self.order
        self._end_with(
            WorkerFinished(worker_id=self.worker_id, task_id=order.task_id, attempt=order.attempt, result=result)
        )

    def _end_with(self, message: Message) -> None:
        """The attempt's last word to the Executor (once: a crash after its end is not told)."""
        if self.over:
            return
        self.over = True
        if self.owner.running.get(self.worker_id) is self:
            del self.owner.running[self.worker_id]
        self.owner.post(message)

    # --- failures of our own --------------------------------------------------------------

    def _guarded(self, step: Callable[[], None]) -> None:
        """Run a step; an error of ours fails the attempt (as a worker's crash would), never the Executor."""
        try:
            step()
        except Exception as error:  # noqa: BLE001 - any error of ours fails this attempt alone
            self._crashed(error)

    def _on_helper(self, work: Callable[[], Any], then: Callable[[Any], None]) -> None:
        failure: list[Exception] = []

        def guarded_work() -> Any:
            try:
                return work()
            except Exception as error:  # noqa: BLE001 - reported on the loop's thread, below
                failure.append(error)
                return None

        def guarded_then(value: Any) -> None:
            if failure:
                self._crashed(failure[0])
            else:
                self._guarded(lambda: then(value))

        self.owner.loop.run_blocking(guarded_work, guarded_then)

    def _crashed(self, error: Exception) -> None:
        log.error("%s: attempt %s of %s failed in the executor", self.worker_id, self.order.attempt, self.order.task_id)
        log.debug("the failure", exc_info=error)
        if self.watched is not None:
            self.watched.cancel()  # its end comes back here, and is then ignored
        order = self.order
        self._end_with(
            AttemptCrashed(
                worker_id=self.worker_id,
                task_id=order.task_id,
                attempt=order.attempt,
                error=f"{type(error).__name__}: {error}",
            )
        )

    def stop_now(self, grace_s: float) -> None:
        watched = self.watched
        if watched is not None:
            with contextlib.suppress(Exception):
                stop_tree(watched.pid, watched.create_time, grace_s=grace_s)
