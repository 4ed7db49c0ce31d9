"""What the Session actor spends per task: CPU of its thread, SQL statements, redact() calls.

Drives the real :class:`actors.session.SessionActor` (a real SQLite file in a temp dir,
the real message bus and projection) with the records a run of dag_vs_make's DAG sends
for each task, in turns of ``--workers`` tasks as the Executor does: the dispatches and a
:class:`Commit`, the starts, the outcomes (each naming the tasks it unblocks) and a
:class:`Commit`.  One task in 50 fails its first attempt (its error and summary hold a
registered secret and a key-shaped value) and is retried, so the failure path and the
redaction of agent text are in the measure too.

Printed: CPU seconds of the Session actor's thread per task (``pthread_getcpuclockid``;
best of ``--repeat``), and the deterministic counts per task: SQL statements the
connection ran (``set_trace_callback``), calls of ``session.redaction.redact`` and the
characters they scanned, message-bus lines.  The counts do not depend on the machine's
load; compare them first.

``--dump FILE`` writes what the run left behind (every row of tasks, runs, events and
meta, every bus line, team-session.json), timestamps replaced by ``<ts>``: two versions
of the code that write the same things give the same file.

Usage: TMPDIR=/work/bench-tmp python benchmarks/session_write.py [--tasks 1000] [--repeat 3] [--dump FILE]
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import pstats
import re
import sqlite3
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from actors.session import SessionActor
from protocol.messages import (
    AttemptResult,
    AwaitCommit,
    BeginRun,
    Commit,
    CreateTasks,
    FinishRun,
    RecordDispatch,
    RecordOutcome,
    RecordStart,
)
from protocol.records import TaskRow
from session import redaction
from session.loader import load_session
from tests.sessions import layered_session

WIDTH = 100
SECRET = "benchmark-secret-0123456789abcdef"  # noqa: S105 - registered, so masked wherever it appears
SHAPED = "sk-ant-" + "A1b2C3d4" * 4  # never registered: masked by its shape
_TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?(?:\+00:00|Z)")


class Counts:
    def __init__(self) -> None:
        self.statements = 0
        self.redacts = 0
        self.redacted_chars = 0


def _count(counts: Counts) -> Callable[[], None]:
    """Count every redact() call (wherever it was imported to); returns the undo."""
    original = redaction.redact

    def counting_redact(text: str) -> str:
        counts.redacts += 1
        counts.redacted_chars += len(text)
        return original(text)

    patched = [module for module in list(sys.modules.values()) if getattr(module, "redact", None) is original]
    for module in patched:
        module.redact = counting_redact  # type: ignore[attr-defined]

    def undo() -> None:
        for module in patched:
            module.redact = original  # type: ignore[attr-defined]

    return undo


class _TracedSession(SessionActor):
    """The Session actor, its connection counting statements (hooked on its own thread)."""

    counts = Counts()
    profile: cProfile.Profile | None = None

    def on_receive(self, message: Any) -> Any:
        if self.profile is None:
            return super().on_receive(message)
        self.profile.enable()
        try:
            return super().on_receive(message)
        finally:
            self.profile.disable()

    def started(self) -> None:
        super().started()

        def trace(_statement: str) -> None:
            _TracedSession.counts.statements += 1

        self.store.conn.set_trace_callback(trace)


def _graph(count: int) -> dict[str, list[str]]:
    graph: dict[str, list[str]] = {}
    for n in range(count):
        layer, index = divmod(n, WIDTH)
        deps = [f"T-{(layer - 1) * WIDTH + (index + k) % WIDTH + 1:06d}" for k in range(2)] if layer else []
        graph[f"T-{n + 1:06d}"] = deps
    return graph


def _messages(count: int, workers: int) -> list[list[Any]]:
    """The turns of a run: lists of messages, each ending with a Commit."""
    graph = _graph(count)
    dependants: dict[str, list[str]] = {task: [] for task in graph}
    for task, deps in graph.items():
        for dep in deps:
            dependants[dep].append(task)
    done: set[str] = set()
    turns: list[list[Any]] = []
    run_row = 0
    tasks = list(graph)
    for start in range(0, len(tasks), workers):
        batch = tasks[start : start + workers]
        attempts: list[tuple[int, str, int]] = []
        for task in batch:
            failing = int(task[2:]) % 50 == 0
            for attempt in (1, 2) if failing else (1,):
                run_row += 1
                attempts.append((run_row, task, attempt))
        dispatch, begin, end = [], [], []
        for row, task, attempt in attempts:
            worker = f"worker-{row % workers + 1}"
            dispatch.append(
                RecordDispatch(
                    run_row_id=row,
                    task_id=task,
                    attempt=attempt,
                    worker_id=worker,
                    role="worker",
                    backend="command",
                    run_id="bench",
                    log_path=f"/bench/.executor/logs/{task}-a{attempt}.log",
                )
            )
            begin.append(
                RecordStart(
                    run_row_id=row, task_id=task, attempt=attempt, role="worker", pid=10_000 + row, create_time=1.5
                )
            )
            failed = int(task[2:]) % 50 == 0 and attempt == 1
            if failed:
                result = AttemptResult(
                    ok=False,
                    error_kind="crash",
                    error=f"exit 1: token={SECRET} and {SHAPED}",
                    exit_code=1,
                    summary=f"{task} failed with {SHAPED}",
                )
                end.append(
                    RecordOutcome(
                        run_row_id=row, task_id=task, attempt=attempt, role="worker", result=result, disposition="retry"
                    )
                )
                continue
            done.add(task)
            unblocked = tuple(d for d in dependants[task] if all(p in done for p in graph[d]))
            summary = f"{task} done" + (f" key {SECRET}" if int(task[2:]) % 50 == 0 else "")
            result = AttemptResult(ok=True, exit_code=0, summary=summary)
            end.append(
                RecordOutcome(
                    run_row_id=row,
                    task_id=task,
                    attempt=attempt,
                    role="worker",
                    result=result,
                    disposition="completed",
                    unblocked=unblocked,
                    report_text=f"[worker] {summary}\nAll my tasks done. Other tasks still running.",
                )
            )
        turns.append([*dispatch, Commit(turn=len(turns) + 1)])
        turns.append([*begin, Commit(turn=len(turns) + 1)])
        turns.append([*end, Commit(turn=len(turns) + 1)])
    return turns


def _normalise(value: Any) -> Any:
    if isinstance(value, str):
        return _TIMESTAMP.sub("<ts>", value)
    if isinstance(value, dict):
        return {key: _normalise(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_normalise(item) for item in value]
    return value


def dump(folder: Path) -> str:
    """What a run left in ``folder``, timestamps replaced: equal dumps, equal writes."""
    out: dict[str, Any] = {}
    with sqlite3.connect(folder / ".executor" / "state.db") as db:
        for table in ("tasks", "runs", "events", "meta"):
            cursor = db.execute(f"SELECT * FROM {table} ORDER BY 1")  # noqa: S608 - our table names
            names = [column[0] for column in cursor.description]
            out[table] = [_normalise(dict(zip(names, row, strict=True))) for row in cursor]
    out["bus"] = [_normalise(line) for line in (folder / ".msg" / "messages.jsonl").read_text().splitlines()]
    out["session"] = _normalise(json.loads((folder / "team-session.json").read_text()))
    return json.dumps(out, indent=1, sort_keys=True, ensure_ascii=False)


def once(count: int, workers: int, dump_to: Path | None) -> tuple[float, Counts, int]:
    """One run: (Session thread CPU seconds, counts, bus lines)."""
    redaction.register_secret(SECRET)
    with tempfile.TemporaryDirectory(prefix="session-write-") as tmp:
        folder = layered_session(Path(tmp) / "s", layers=max(1, count // WIDTH), width=min(WIDTH, count))
        session = load_session(folder)
        rows = tuple(TaskRow(id=task, owner="worker", blocked_by=deps) for task, deps in _graph(count).items())
        turns = _messages(count, workers)
        before = set(threading.enumerate())
        ref = _TracedSession.start("session", None, 1, session, (), 0.5)
        try:
            ref.ask(BeginRun(run_id="bench", command="run", pid=1, max_workers=workers), timeout=30)
            ref.ask(CreateTasks(tasks=rows), timeout=60)
            (thread,) = (t for t in threading.enumerate() if t not in before)
            clock = time.pthread_getcpuclockid(thread.ident or 0)
            counts = _TracedSession.counts = Counts()
            undo = _count(counts)
            cpu_before = time.clock_gettime(clock)
            try:
                for turn in turns:
                    for message in turn:
                        ref.tell(message)
                ref.ask(AwaitCommit(), timeout=120)
                cpu = time.clock_gettime(clock) - cpu_before
            finally:
                undo()
            ref.ask(FinishRun(run_id="bench", clean=True, interrupted_tasks=()), timeout=30)
        finally:
            ref.stop(block=True, timeout=30)
        lines = len((folder / ".msg" / "messages.jsonl").read_text().splitlines())
        if dump_to is not None:
            dump_to.write_text(dump(folder))
    return cpu, counts, lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--dump", type=Path, help="write the normalised rows and lines of the last run here")
    parser.add_argument("--profile", action="store_true", help="cProfile the Session's handlers, print the top")
    options = parser.parse_args()
    if options.profile:
        _TracedSession.profile = cProfile.Profile()
    best = float("inf")
    counts = Counts()
    lines = 0
    for index in range(options.repeat):
        last = index == options.repeat - 1
        cpu, counts, lines = once(options.tasks, options.workers, options.dump if last else None)
        best = min(best, cpu)
    n = options.tasks
    print(
        f"tasks {n}: Session thread CPU {best * 1000 / n:.3f} ms/task (best of {options.repeat}) | "
        f"SQL {counts.statements / n:.2f}/task | redact() {counts.redacts / n:.1f}/task, "
        f"{counts.redacted_chars / n:.0f} chars/task | bus {lines / n:.2f} lines/task"
    )
    if _TracedSession.profile is not None:
        out = io.StringIO()
        pstats.Stats(_TracedSession.profile, stream=out).sort_stats("tottime").print_stats(30)
        print(out.getvalue())


if __name__ == "__main__":
    main()
