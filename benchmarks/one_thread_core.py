"""What would a one-thread core doing today's per-task work take?  A measure for issue 18, item 1.

``dispatch_floor.py`` shows the least any Python dispatcher pays (1.1-1.2x make).  This one
keeps that shape -- one thread, one ``epoll`` over every child's output pipe and a pidfd per
child, readiness by counting -- but does for each attempt what the executor does today, with
the executor's own code:

- the prompt (``actors.prompting.PromptSource``: role spec, task, upstream artifacts, wisdom,
  feedback), redacted and written to ``.executor/prompts/`` as the worker writes it;
- the attempt's cgroup and the ``sh`` wrapper that joins it (``backends.containment``), the
  program found on PATH, its output read in 64 KiB chunks, redacted, appended to its log;
- its start time from ``/proc`` (``session.processes.started_at``), the cgroup looked at after
  the exit and kept for the next attempt;
- the dispatch, start and outcome records through the real Session actor's handlers (the
  store, its redaction, the message bus, the projection), called on this thread and committed
  once per pass of the loop (the Session's group commit).

Left out: the pipeline core's decisions (about 0.1 ms a task on the Executor's thread), the
task mirror (its own thread, about 0.1 ms a task), the console.  So the figure is a floor for
such a core, not a promise.  Each dispatcher is timed as its own process from interpreter
start to exit, beside make and the executor, on the same DAG as ``dag_vs_make.py``.

Usage: TMPDIR=/dev/shm/bench python benchmarks/one_thread_core.py [--layers 10] [--workers 8] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import platform
import select
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.dag_vs_make import build, makefile, timed

PARTS = ("prompt", "cgroup", "redaction", "records")


@dataclass
class _Attempt:
    task: str
    row: int
    child: subprocess.Popen[bytes]
    log: int  # the log's descriptor
    cgroup: Any  # backends.containment.AttemptCgroup | None
    out: int  # the output pipe's descriptor
    pidfd: int
    open: int = 2  # the pipe and the pidfd: the attempt is over when both are done


def core(folder: Path, workers: int, without: frozenset[str] = frozenset()) -> None:
    """The one-thread core: run every task of the session at ``folder``, ``workers`` at a time,
    leaving out the ``without`` parts of today's work (to see what each costs)."""
    from actors.prompting import PromptSource  # noqa: PLC0415 - imports are part of what is timed
    from actors.session import SessionActor  # noqa: PLC0415
    from backends.containment import AttemptCgroup  # noqa: PLC0415
    from protocol.messages import (  # noqa: PLC0415
        AttemptResult,
        BeginRun,
        Commit,
        CreateTasks,
        FinishRun,
        RecordDispatch,
        RecordOutcome,
        RecordStart,
    )
    from protocol.records import TaskRow  # noqa: PLC0415
    from session.loader import load_session  # noqa: PLC0415
    from session.processes import started_at  # noqa: PLC0415
    from session.redaction import redact, redact_bytes  # noqa: PLC0415
    from session.safepath import open_new_file, task_file_text, write_all  # noqa: PLC0415
    from session.store_changes import TaskChange  # noqa: PLC0415

    if "redaction" in without:
        from session import redaction  # noqa: PLC0415

        def redact(text: str) -> str:
            return text

        def redact_bytes(data: bytes) -> bytes:
            return data

        redaction.redact, redaction.redact_bytes = redact, redact_bytes
    session = load_session(folder)
    prompts = PromptSource(session)
    role = session.role_specs["worker"].meta
    state = os.path.join(folder, ".executor")
    for sub in ("prompts", "reports", "logs"):
        os.makedirs(os.path.join(state, sub), exist_ok=True)

    store = SessionActor("session", None, 1, session, (), 0.5)
    store.started()
    store.actor_inbox.put(cast(Any, None))  # never empty: the Session commits on Commit, as under load
    store.on_receive(BeginRun(run_id="core", command="run", pid=os.getpid(), max_workers=workers))
    store.on_receive(
        CreateTasks(tasks=tuple(TaskRow(id=t.id, owner=t.owner, blocked_by=list(t.blocked_by)) for t in session.tasks))
    )
    store.on_receive(Commit(turn=0))

    blocked_by = {task.id: list(task.blocked_by) for task in session.tasks}
    dependants: dict[str, list[str]] = {task: [] for task in blocked_by}
    for task, deps in blocked_by.items():
        for dep in deps:
            dependants[dep].append(task)
    waiting_on = {task: len(deps) for task, deps in blocked_by.items()}
    ready = [task for task, count in waiting_on.items() if not count]
    poller = select.epoll()
    by_fd: dict[int, _Attempt] = {}  # output pipe or pidfd -> its attempt
    env = {"PATH": os.environ.get("PATH", os.defpath)}
    done = run_row = turn = 0
    pending: list[Any] = []

    def record() -> None:
        """The records so far, committed (one transaction: the Session's group commit)."""
        nonlocal turn
        if "records" not in without:
            for message in pending:
                store.on_receive(message)
            turn += 1
            store.on_receive(Commit(turn=turn))
        pending.clear()

    def dispatch(task_id: str) -> None:
        nonlocal run_row
        run_row += 1
        pending.append(
            RecordDispatch(
                run_row_id=run_row,
                task_id=task_id,
                attempt=1,
                worker_id=f"worker-{run_row % workers + 1}",
                role="worker",
                backend="command",
                run_id="core",
                log_path=task_file_text(state, task_id, "-a1.log", "logs"),
            )
        )

    def start(task_id: str, row: int) -> None:
        log_path = task_file_text(state, task_id, "-a1.log", "logs")
        prompt_file = task_file_text(state, task_id, "-a1.md", "prompts")
        if "prompt" not in without:
            data = redact(prompts(task_id, 1)).encode("utf-8")
            fd = open_new_file(prompt_file, os.O_WRONLY | os.O_TRUNC)
            write_all(fd, data)
            os.close(fd)
        log_fd = open_new_file(log_path, os.O_WRONLY | os.O_APPEND)
        argv = [part.replace("{task_id}", task_id) for part in role.command or ()]
        cgroup = AttemptCgroup.create("core") if "cgroup" not in without else None
        wrapped = cgroup.wrap(argv, env, str(folder)) if cgroup is not None else None
        child = subprocess.Popen(
            wrapped or argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env
        )
        assert child.stdout is not None
        attempt = _Attempt(task_id, row, child, log_fd, cgroup, child.stdout.fileno(), os.pidfd_open(child.pid))
        os.set_blocking(attempt.out, False)
        by_fd[attempt.out], by_fd[attempt.pidfd] = attempt, attempt
        poller.register(attempt.out, select.EPOLLIN)
        poller.register(attempt.pidfd, select.EPOLLIN)
        pending.append(
            RecordStart(
                run_row_id=row,
                task_id=task_id,
                attempt=1,
                role="worker",
                pid=child.pid,
                create_time=started_at(child.pid),
            )
        )

    def finish(attempt: _Attempt) -> None:
        nonlocal done
        os.close(attempt.log)
        cgroup = attempt.cgroup
        if cgroup is not None:
            if cgroup.members():
                cgroup.stop(5.0)
            else:
                cgroup.release()
        task_id = attempt.task
        done += 1
        unblocked = []
        for after in dependants[task_id]:
            waiting_on[after] -= 1
            if not waiting_on[after]:
                ready.append(after)
                unblocked.append(after)
        pending.append(
            RecordOutcome(
                run_row_id=attempt.row,
                task_id=task_id,
                attempt=1,
                role="worker",
                result=AttemptResult(ok=True, exit_code=attempt.child.returncode, summary=f"{task_id} done"),
                disposition="completed",
                unblocked=tuple(unblocked),
                report_text=f"[worker] {task_id} done",
            )
        )

    running = 0
    while done < len(blocked_by):
        batch = []
        while ready and running < workers:
            task_id = ready.pop()
            dispatch(task_id)
            batch.append((task_id, run_row))
            running += 1
        record()  # durable before visible: an attempt starts once its dispatch record is committed
        for task_id, row in batch:
            start(task_id, row)
        for fd, _ in poller.poll():
            attempt = by_fd.get(fd)
            if attempt is None:
                continue
            if fd == attempt.out:
                chunk = os.read(fd, 65536)
                if chunk:
                    write_all(attempt.log, redact_bytes(chunk))
                    continue
                poller.unregister(fd)
                assert attempt.child.stdout is not None
                attempt.child.stdout.close()  # the Popen's file object owns the pipe
            else:
                attempt.child.wait()
                poller.unregister(fd)
                os.close(fd)
            del by_fd[fd]
            attempt.open -= 1
            if not attempt.open:
                running -= 1
                finish(attempt)
    if "records" in without:  # the tasks' final state only, so the run can be checked like the others
        for task_id in blocked_by:
            store.store.update_task(task_id, TaskChange(status="completed"))
        pending.clear()
    for message in pending:
        store.on_receive(message)
    store.on_receive(FinishRun(run_id="core", clean=True, interrupted_tasks=()))
    store.stopping()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--layers", type=int, default=10)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--executor", help="the executor command to time beside (default: this venv's)")
    parser.add_argument(
        "--parts", action="store_true", help="also time the core without each part of the work: " + ", ".join(PARTS)
    )
    parser.add_argument("--inner", help=argparse.SUPPRESS)  # the core itself, on the session at this path
    parser.add_argument("--without", action="append", choices=PARTS, default=[], help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.inner:
        core(Path(options.inner), options.workers, frozenset(options.without))
        return
    executor = options.executor or str(Path(sys.executable).with_name("executor"))
    print(
        f"machine: {platform.node()} {platform.machine()} {os.cpu_count()} cores, "
        f"Python {platform.python_version()}, {time.strftime('%Y-%m-%d %H:%M')} UTC, "
        f"load average {os.getloadavg()[0]:.2f}"
    )
    this = [sys.executable, str(Path(__file__).resolve())]
    variants: dict[str, Callable[..., list[str]]] = {
        f"make -j{options.workers}": lambda _folder: ["make", "-s", f"-j{options.workers}", "all"],
        "one-thread core, today's work": lambda folder: [
            *this,
            "--inner",
            str(folder),
            "--workers",
            str(options.workers),
        ],
    }
    for part in PARTS if options.parts else ():
        variants[f"  ... without the {part}"] = lambda folder, part=part: [
            *this,
            "--inner",
            str(folder),
            "--workers",
            str(options.workers),
            "--without",
            part,
        ]
    variants["executor run"] = lambda folder: [
        executor,
        "run",
        "--session",
        str(folder),
        "--max-workers",
        str(options.workers),
    ]
    figures: dict[str, list[tuple[float, float]]] = {name: [] for name in variants}
    count = 0
    for _ in range(options.repeat):  # interleaved: this VM's speed drifts from one minute to the next
        for name, argv_for in variants.items():
            with tempfile.TemporaryDirectory() as tmp:
                folder = Path(tmp) / "dag"
                tasks = build(folder, options.layers)
                count = len(tasks)
                (Path(tmp) / "Makefile").write_text(makefile(tasks))
                seconds, code, _, cpu, *_ = timed(argv_for(folder), Path(tmp))
                assert code == 0, f"{name} failed"
                if not name.startswith("make"):
                    with sqlite3.connect(folder / ".executor" / "state.db") as db:
                        (completed,) = db.execute("SELECT count(*) FROM tasks WHERE status = 'completed'").fetchone()
                    assert completed == count, f"{name}: {completed} of {count} tasks completed"
                figures[name].append((seconds, cpu))
    make_s = statistics.median(seconds for seconds, _ in next(iter(figures.values())))
    print(f"{count} tasks, {options.workers} at a time; medians of {options.repeat} (each run's wall in brackets)")
    for name, runs in figures.items():
        wall = statistics.median(seconds for seconds, _ in runs)
        cpu = statistics.median(c for _, c in runs)
        each = ", ".join(f"{seconds:.2f}" for seconds, _ in runs)
        print(
            f"  {name:<33} {wall:6.2f} s ({wall / make_s:5.2f}x make) [{each}]  "
            f"CPU {cpu:6.2f} s ({1000 * cpu / count:5.2f} ms/task)"
        )


if __name__ == "__main__":
    main()
