"""What the executor's own code gives on one core thread — a measure for issue 18, item 1.

``one_thread_core.py`` times a core written for the purpose.  This one runs the real
``executor run`` with its threads folded, step by step, onto the Executor's thread, by
patching the running process (nothing here is product code):

- ``inline``: the Executor's pykka inbox becomes a reactor (one ``epoll`` over an eventfd for
  messages and every attempt's pipes and pidfd).  A committed start of a plain ``command``
  attempt (no worktree, no gates) runs right there: the git probe, the prompt, the cgroup and
  its ``sh`` wrapper, ``Popen``; its output is read and logged as it comes, and its end becomes
  the same ``WorkerFinished`` a worker sends (``result_from_outcome``, ``after_attempt``,
  ``own_filter``), the Executor's next message.  No worker thread, no hop.
- ``+ session``: also the Session actor's handlers on that thread (records written inline, a
  ``Commit`` committed inline, ``Committed`` queued as the next message).
- ``+ spawners``: also ``Popen`` on 2 spawner threads (it blocks until the child has exec'd,
  with the GIL released), the child's pipes handed back to the core thread.

It patches private parts (pykka's inbox, ``actors.turns.Turns``, ``actors.session_link.SessionLink``)
as they are at ``28e64d7``; a core built for real replaces it.  Left out, so the figures are what
the shape gives, not a product: time limits, cancelling, progress lines, the descendant list where
no cgroup can be made, the Session's supervision.
Each variant is timed as its own process from start to exit (``dag_vs_make.timed``), on the
same DAG of ``echo`` commands, interleaved with make and the executor as it is.

Usage: TMPDIR=/dev/shm/bench python benchmarks/inline_core.py [--layers 10] [--workers 8] [--repeat 3]
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import os
import platform
import select
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.dag_vs_make import build, makefile, phases, timed

#: Variant -> what the patched executor folds onto the Executor's thread (environment variables).
VARIANTS: dict[str, dict[str, str]] = {
    "inline attempts": {"INLINE_CORE_ATTEMPTS": "1"},
    "  + the Session": {"INLINE_CORE_ATTEMPTS": "1", "INLINE_CORE_SESSION": "1"},
    "  + 2 spawner threads": {"INLINE_CORE_ATTEMPTS": "1", "INLINE_CORE_SESSION": "1", "INLINE_CORE_SPAWNERS": "2"},
}


class ReactorInbox:
    """A pykka inbox that is also the reactor of the Executor's thread."""

    def __init__(self) -> None:
        self.queue: collections.deque[Any] = collections.deque()
        self.lock = threading.Lock()
        self.wake = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self.epoll = select.epoll()
        self.epoll.register(self.wake, select.EPOLLIN)
        self.handlers: dict[int, Callable[[int], None]] = {}
        self.ready: collections.deque[Any] = collections.deque()  # envelopes made on this thread
        self.callbacks: collections.deque[Callable[[], None]] = collections.deque()

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        with self.lock:
            self.queue.append(item)
        os.eventfd_write(self.wake, 1)

    def call_soon(self, callback: Callable[[], None]) -> None:
        """From another thread: run ``callback`` on the reactor's."""
        with self.lock:
            self.callbacks.append(callback)
        os.eventfd_write(self.wake, 1)

    def get(self, block: bool = True, timeout: float | None = None) -> Any:
        while True:
            if self.ready:
                return self.ready.popleft()
            with self.lock:
                callbacks, self.callbacks = self.callbacks, collections.deque()
            for callback in callbacks:
                callback()
            if self.ready:
                return self.ready.popleft()
            with self.lock:
                if self.queue:
                    return self.queue.popleft()
                if self.callbacks:
                    continue
            for fd, _events in self.epoll.poll():
                if fd == self.wake:
                    with contextlib.suppress(BlockingIOError):
                        os.eventfd_read(self.wake)
                elif fd in self.handlers:
                    self.handlers[fd](fd)

    def empty(self) -> bool:
        with self.lock:
            return not self.queue and not self.ready


def patch_executor() -> None:
    """Fold what the environment asks for onto the Executor's thread (see the module's doc)."""
    import msgspec  # noqa: PLC0415 - this process is the executor: its imports are part of what is timed
    from pykka._envelope import Envelope  # noqa: PLC0415

    import actors.executor as executor_module  # noqa: PLC0415
    from actors.turns import Turns  # noqa: PLC0415
    from backends._agent_process import order_env, result_from_outcome  # noqa: PLC0415
    from backends.command import order_argv  # noqa: PLC0415
    from backends.containment import AttemptCgroup  # noqa: PLC0415
    from backends.output_capture import OutputLog, Tail  # noqa: PLC0415
    from backends.process_types import ProcessLimits, ProcessOutcome  # noqa: PLC0415
    from protocol.messages import AwaitCommit, Commit, WorkerFinished, WorkerStarted  # noqa: PLC0415
    from session.attempt_trees import after_attempt, before_attempt, own_filter  # noqa: PLC0415
    from session.processes import started_at  # noqa: PLC0415
    from session.redaction import register_environment  # noqa: PLC0415

    limits = ProcessLimits()
    spawners = int(os.environ.get("INLINE_CORE_SPAWNERS", "0"))
    pool = ThreadPoolExecutor(spawners, thread_name_prefix="spawner") if spawners else None

    class InlineAttempt:
        def __init__(self, inbox: ReactorInbox, worker_id: str, order: Any, prepare: Callable[[Any], None]) -> None:
            self.inbox, self.worker_id, self.order = inbox, worker_id, order
            self.where = (Path(order.workdir), Path(order.session_dir), order.task_id, order.attempt)
            self.recorded = before_attempt(*self.where)
            prepare(order)
            Path(order.report_file).unlink(missing_ok=True)
            self.started, self.start = time.time(), time.monotonic()
            env = order_env(order)
            argv = order_argv(order)
            self.log = OutputLog(order.log_path, limits.log_max_bytes)
            self.cgroup = AttemptCgroup.create(env.get("TEAM_EXECUTOR_MARKER"))
            wrapped = self.cgroup.wrap(argv, env, order.workdir) if self.cgroup is not None else None
            register_environment(env)
            self.out, self.err = Tail(limits.tail_bytes), Tail(limits.tail_bytes)

            def spawn() -> subprocess.Popen[bytes]:
                return subprocess.Popen(
                    list(wrapped or argv),
                    cwd=order.workdir,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    start_new_session=True,
                    close_fds=True,
                    bufsize=0,
                )

            if pool is None:
                self.spawned(spawn())
            else:
                pool.submit(lambda: (child := spawn(), inbox.call_soon(lambda: self.spawned(child))))

        def spawned(self, child: subprocess.Popen[bytes]) -> None:
            assert child.stdout is not None and child.stderr is not None  # noqa: PT018
            self.child = child
            self.create_time = started_at(child.pid) or time.time()
            self.pidfd = os.pidfd_open(child.pid)
            self.open = 3  # two pipes and the pidfd
            self.tails = {child.stdout.fileno(): self.out, child.stderr.fileno(): self.err}
            for fd in self.tails:
                self.inbox.handlers[fd] = self.readable
                self.inbox.epoll.register(fd, select.EPOLLIN)
            self.inbox.handlers[self.pidfd] = self.closed
            self.inbox.epoll.register(self.pidfd, select.EPOLLIN)
            order = self.order
            started = WorkerStarted(
                worker_id=self.worker_id,
                task_id=order.task_id,
                attempt=order.attempt,
                pid=child.pid,
                create_time=self.create_time,
                log_path=order.log_path,
                node=None,
            )
            self.inbox.ready.append(Envelope(started))

        def readable(self, fd: int) -> None:
            chunk = os.read(fd, 65536)
            if not chunk:
                self.closed(fd)
                return
            self.log.write(chunk)
            self.tails[fd].add(chunk)

        def closed(self, fd: int) -> None:
            self.inbox.epoll.unregister(fd)
            del self.inbox.handlers[fd]
            self.open -= 1
            if self.open == 0:
                self.finish()

        def finish(self) -> None:
            code = self.child.wait()
            os.close(self.pidfd)
            for stream in (self.child.stdout, self.child.stderr):
                if stream is not None:
                    stream.close()
            if self.cgroup is not None:
                self.cgroup.stop(limits.grace_s)
            self.log.close()
            outcome = ProcessOutcome(
                pid=self.child.pid,
                create_time=self.create_time,
                exit_code=code if code >= 0 else None,
                signal=-code if code < 0 else None,
                error_kind=None if code == 0 else "crash",
                error=None if code == 0 else f"exited with code {code}",
                stdout_tail=self.out.value(),
                stderr_tail=self.err.value(),
                stdout_bytes=self.out.total,
                stderr_bytes=self.err.total,
                duration_s=time.monotonic() - self.start,
            )
            result = result_from_outcome(self.order, outcome, silent_since=self.started)
            if self.recorded:
                after_attempt(*self.where)
            result = msgspec.structs.replace(result, files_modified=own_filter(*self.where[:2], result.files_modified))
            order = self.order
            finished = WorkerFinished(
                worker_id=self.worker_id, task_id=order.task_id, attempt=order.attempt, result=result
            )
            self.inbox.ready.append(Envelope(finished))

    executor_module.Executor._create_actor_inbox = staticmethod(ReactorInbox)  # type: ignore[method-assign]
    executors: list[Any] = []
    original_init = executor_module.Executor.__init__

    def init(self: Any, *args: Any, **kwargs: Any) -> None:
        original_init(self, *args, **kwargs)
        executors.append(self)

    def release(self: Turns, turn: int) -> None:
        executor = executors[-1]
        while self._awaiting and self._awaiting[0][0] <= turn:
            _, starts, shows = self._awaiting.popleft()
            for worker_id, run in starts:
                order = run.order
                if order.backend == "command" and not order.worktree and not order.gates:
                    InlineAttempt(executor.actor_inbox, worker_id, order, executor.runner.prepare)
                    continue
                worker = self.workers.get(worker_id)
                if worker is not None:
                    worker.ref.tell(run)
            for show in shows:
                show()

    executor_module.Executor.__init__ = init  # type: ignore[method-assign]
    Turns.release = release  # type: ignore[method-assign]
    if os.environ.get("INLINE_CORE_SESSION") != "1":
        return

    import actors.session as session_module  # noqa: PLC0415
    import actors.session_link as link_module  # noqa: PLC0415
    import session.store as store_module  # noqa: PLC0415

    connect = store_module.redacting_connection
    store_module.redacting_connection = lambda path, **kw: connect(path, check_same_thread=False, **kw)
    writer = threading.RLock()  # the Session's own thread still takes messages from others
    on_receive = session_module.SessionActor.on_receive

    def locked_on_receive(self: Any, message: Any) -> Any:
        with writer:
            return on_receive(self, message)

    def actor_of(link: Any) -> Any:
        ref = link.ref()
        if getattr(link, "inline_ref", None) is not ref:
            actor = ref.proxy()._actor
            while not hasattr(actor, "projection"):  # its started() runs on its own thread
                time.sleep(0.001)
            link.inline_ref, link.inline_actor = ref, actor
        return link.inline_actor

    def handle(link: Any, message: Any) -> Any:
        actor = actor_of(link)
        with writer:
            if not actor.store.conn.in_transaction:
                actor.store.begin()
                actor._batch_began = time.monotonic()
            result = getattr(actor, actor._handlers[type(message)])(message)
            if isinstance(message, (Commit, AwaitCommit)) or result is not None:
                actor._commit_batch()
            return result

    session_module.SessionActor.on_receive = locked_on_receive  # type: ignore[method-assign]
    link_module.SessionLink.tell = handle  # type: ignore[method-assign,assignment]
    link_module.SessionLink.ask = handle  # type: ignore[method-assign]


def main() -> None:
    if sys.argv[1:2] == ["run"]:  # the patched executor itself
        patch_executor()
        from cli.main import main as executor_main  # noqa: PLC0415

        sys.argv = ["executor", *sys.argv[1:]]
        executor_main()
        return
    parser = argparse.ArgumentParser()
    parser.add_argument("--layers", type=int, default=10)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=3)
    options = parser.parse_args()
    print(
        f"machine: {platform.node()} {platform.machine()} {os.cpu_count()} cores, "
        f"Python {platform.python_version()}, {time.strftime('%Y-%m-%d %H:%M')} UTC, "
        f"load average {os.getloadavg()[0]:.2f}"
    )
    run = ["run", "--max-workers", str(options.workers), "--session"]
    variants: dict[str, tuple[list[str], dict[str, str]]] = {
        f"make -j{options.workers}": (["make", "-s", f"-j{options.workers}", "all"], {}),
        "executor run": ([str(Path(sys.executable).with_name("executor")), *run], {}),
    }
    for name, env in VARIANTS.items():
        variants[name] = ([sys.executable, str(Path(__file__).resolve()), *run], env)
    figures: dict[str, list[tuple[float, float, float]]] = {name: [] for name in variants}
    count = 0
    for _ in range(options.repeat):  # interleaved: this VM's speed drifts from one minute to the next
        for name, (argv, env) in variants.items():
            with tempfile.TemporaryDirectory() as tmp:
                folder = Path(tmp) / "dag"
                tasks = build(folder, options.layers)
                count = len(tasks)
                (Path(tmp) / "Makefile").write_text(makefile(tasks))
                command = argv if name.startswith("make") else [*argv, str(folder)]
                seconds, code, _, cpu, _, started_at = timed(command, Path(tmp), env)
                assert code == 0, f"{name} failed"
                span = 0.0
                if not name.startswith("make"):
                    with sqlite3.connect(folder / ".executor" / "state.db") as db:
                        (completed,) = db.execute("SELECT count(*) FROM tasks WHERE status = 'completed'").fetchone()
                        assert completed == count, f"{name}: {completed} of {count} tasks completed"
                        span = phases(db, started_at, seconds)[1]
                figures[name].append((seconds, cpu, span))
    make_s = statistics.median(seconds for seconds, _, _ in next(iter(figures.values())))
    print(f"{count} tasks, {options.workers} at a time; medians of {options.repeat} (each run's wall in brackets)")
    for name, runs in figures.items():
        wall = statistics.median(seconds for seconds, _, _ in runs)
        cpu = statistics.median(c for _, c, _ in runs)
        span = statistics.median(s for _, _, s in runs)
        each = ", ".join(f"{seconds:.2f}" for seconds, _, _ in runs)
        shown = f"  span {1000 * span / count:4.2f} ms/task" if span else ""
        print(
            f"  {name:<24} {wall:6.2f} s ({wall / make_s:5.2f}x make) [{each}]  "
            f"CPU {1000 * cpu / count:5.2f} ms/task{shown}"
        )


if __name__ == "__main__":
    main()
