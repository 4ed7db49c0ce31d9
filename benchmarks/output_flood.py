"""A worker that floods its output, beside tiny tasks; and one task printing 1 GB.

Two measurements, both through `executor run` on generated sessions whose roles use
the `command` backend:

1. *Beside*: 40 tiny tasks (`echo ID done`; ``--tiny N`` for more) alone, beside one task that only sleeps
   (what one more task costs), and beside one task running `yes` (a flood of 2-byte
   lines that never ends by itself).  Reported: the
   time until the 40 are completed (polled in the state database), the span from the
   first dispatch to the last completion in the event log, and the slowdown.
   Once the 40 are done the run is stopped (SIGTERM, a graceful shutdown): the 41st
   task would otherwise run until its wall timeout.
2. *1 GB*: one task running `yes | head -c 1000000000`.  Reported: wall time of the
   whole run, the size of the task's log (capped at 64 MiB by default) and whether it
   ends with the truncation note.  `--cutoff` stops a run that takes longer (the
   executor before issue 18 needed more than 300 s).

Usage: python benchmarks/output_flood.py [--executor PATH]... [--repeat 3] [--cutoff 120] [--skip-gb]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.sessions import write_session

TINY = 40
#: Compiled modules are cached as a user's install caches them (see dag_vs_make.py): an
#: environment that sets PYTHONDONTWRITEBYTECODE would compile a fresh checkout at every start.
_ENV = {name: value for name, value in os.environ.items() if name != "PYTHONDONTWRITEBYTECODE"}
GB = 1_000_000_000


def build(folder: Path, *, flood: str | None, tiny: int = TINY) -> None:
    roles = {"worker": "T"}
    extra = {"worker": 'backend: command\ncommand: ["echo", "{task_id} done"]\n'}
    graph: dict[str, list[str]] = {f"T-{index:06d}": [] for index in range(1, tiny + 1)}
    if flood is not None:
        roles["flood"] = "F"
        extra["flood"] = f'backend: command\ncommand: ["sh", "-c", "{flood}"]\n'
        graph = {"F-000001": [], **graph}  # dispatched first
    write_session(folder, roles, graph, role_extra=extra)


def completed(db_path: Path, prefix: str) -> int:
    try:
        with sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=1) as db:
            row = db.execute(
                "SELECT count(*) FROM tasks WHERE id LIKE ? AND status = 'completed'", (prefix + "%",)
            ).fetchone()
            return int(row[0])
    except sqlite3.Error:
        return 0  # not created yet, or busy


def span_in_events(db_path: Path) -> float:
    """Seconds from the first dispatch to the last tiny task's completion, as the event log says
    (the start-up of the executor, the same with or without the flood, left out)."""
    with sqlite3.connect(db_path) as db:
        first = db.execute("SELECT min(occurred_at) FROM events WHERE type = 'task_dispatched'").fetchone()[0]
        last = db.execute(
            "SELECT max(occurred_at) FROM events WHERE type = 'task_completed' AND task_id LIKE 'T-%'"
        ).fetchone()[0]
    return (datetime.fromisoformat(last) - datetime.fromisoformat(first)).total_seconds()


def tiny_tasks_time(executor: str, folder: Path, workers: int, tiny: int = TINY) -> tuple[float, float]:
    """Seconds from the start of `executor run` until the ``tiny`` tasks are completed, and
    the same span in the event log (:func:`span_in_events`)."""
    db_path = folder / ".executor" / "state.db"
    start = time.perf_counter()
    process = subprocess.Popen(
        [executor, "run", "--session", str(folder), "--max-workers", str(workers)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=folder.parent,  # not the caller's folder: see dag_vs_make.py
        env=_ENV,
    )
    try:
        while completed(db_path, "T-") < tiny:
            if process.poll() is not None and completed(db_path, "T-") < tiny:
                raise SystemExit(f"executor ended (exit {process.returncode}) before the tiny tasks were done")
            time.sleep(0.02)
        elapsed = time.perf_counter() - start
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return elapsed, span_in_events(db_path)


#: One line of `claude -p --output-format stream-json`, as an agent prints hundreds of: a
#: tool call and its token counts ("input_tokens": a secret-like name before every number).
AGENT_LINE = json.dumps(
    {
        "type": "assistant",
        "message": {
            "id": "msg_01XyZabcdefghijkLMNOPqrs",
            "type": "message",
            "role": "assistant",
            "model": "claude-sonnet-4-5-20250929",
            "content": [
                {
                    "type": "tool_use",
                    "id": "toolu_01ABCdefGHIjklMNOpqrSTU",
                    "name": "Read",
                    "input": {"file_path": "/home/user/project/src/handlers/authentication_middleware.py"},
                }
            ],
            "stop_reason": None,
            "usage": {
                "input_tokens": 4,
                "cache_creation_input_tokens": 1532,
                "cache_read_input_tokens": 13745,
                "output_tokens": 26,
            },
        },
        "parent_tool_use_id": None,
        "session_id": "3f1c2a9e-8b7d-4e2a-9c1f-0a2b3c4d5e6f",
    }
)


def gb_run(executor: str, folder: Path, cutoff: float, agent_lines: bool = False) -> tuple[float | None, int, bool]:
    """Wall seconds of the whole run (None past the cutoff), log size, whether it ends with the cap note.
    ``agent_lines``: the gigabyte is :data:`AGENT_LINE` again and again instead of `yes`'s "y"."""
    line_file = folder.parent / "agent-line.json"
    line_file.write_text(AGENT_LINE, encoding="utf-8")
    printed = f'yes \\"$(cat {line_file})\\"' if agent_lines else "yes"
    build_flood = f"{printed} | head -c {GB}"
    roles = {"flood": "F"}
    extra = {"flood": f'backend: command\ncommand: ["sh", "-c", "{build_flood}"]\n'}
    write_session(folder, roles, {"F-000001": []}, role_extra=extra)
    start = time.perf_counter()
    process = subprocess.Popen(
        [executor, "run", "--session", str(folder)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=folder.parent,  # not the caller's folder: see dag_vs_make.py
        env=_ENV,
    )
    elapsed: float | None
    try:
        process.wait(timeout=cutoff)
        elapsed = time.perf_counter() - start
    except subprocess.TimeoutExpired:
        elapsed = None
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    logs = sorted(folder.rglob("*.log"), key=lambda path: path.stat().st_size)
    log = logs[-1] if logs else None
    size = log.stat().st_size if log else 0
    capped = False
    if log is not None and size:
        with open(log, "rb") as file:
            file.seek(max(0, size - 200))
            capped = b"log truncated at" in file.read()
    return elapsed, size, capped


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "--executor",
        action="append",
        help="an executor command to time (default: this venv's); give several to compare them, interleaved",
    )
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument(
        "--tiny",
        type=int,
        default=TINY,
        help=f"how many tiny tasks (default {TINY}: done in ~0.07 s, before a flood is in full swing; "
        "400 or more measure the flood's steady state)",
    )
    parser.add_argument("--cutoff", type=float, default=120.0, help="stop the 1 GB run after this many seconds")
    parser.add_argument("--skip-gb", action="store_true")
    parser.add_argument(
        "--agent-lines",
        action="store_true",
        help="the 1 GB is lines of an agent's JSON stream (a tool call with its token counts), not `yes`'s",
    )
    options = parser.parse_args()
    executors = options.executor or [str(Path(sys.executable).with_name("executor"))]
    print(
        f"machine: {platform.machine()} {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"{time.strftime('%Y-%m-%d %H:%M')}, load average {os.getloadavg()[0]:.1f}"
    )
    # The 40 alone; beside a 41st task that only sleeps (the cost of one more task, not of
    # its output); beside a `yes` flood.  Interleaved, so a change in the machine's load
    # (another job starting) hits every configuration alike.
    kinds = {"alone": None, "beside `sleep 60`": "sleep 60", "beside `yes`": "yes"}
    times: dict[tuple[str, str], list[tuple[float, float]]] = {(e, k): [] for e in executors for k in kinds}
    for _ in range(options.repeat):
        for executor in executors:
            for kind, flood in kinds.items():
                with tempfile.TemporaryDirectory() as tmp:
                    folder = Path(tmp) / "session"
                    build(folder, flood=flood, tiny=options.tiny)
                    times[executor, kind].append(tiny_tasks_time(executor, folder, options.workers, options.tiny))
    for executor in executors:
        print(f"executor {executor}:")
        for index, what in ((0, "wall from `executor run`"), (1, "first dispatch to last completion")):
            alone = statistics.median(run[index] for run in times[executor, "alone"])
            parts = []
            for kind in kinds:
                median = statistics.median(run[index] for run in times[executor, kind])
                slowdown = "" if kind == "alone" else f" ({100 * (median / alone - 1):+.0f}%)"
                parts.append(f"{kind} {median:.2f} s{slowdown}")
            print(f"  {options.tiny} tiny tasks, {what}, medians of {options.repeat}: " + " | ".join(parts))
            for kind in kinds:
                print(f"      {kind}: " + ", ".join(f"{run[index]:.2f}" for run in times[executor, kind]))
    if not options.skip_gb:
        for executor in executors:
            with tempfile.TemporaryDirectory() as tmp:
                elapsed, size, capped = gb_run(executor, Path(tmp) / "gb", options.cutoff, options.agent_lines)
            took = f"{elapsed:.1f} s" if elapsed is not None else f"> {options.cutoff:.0f} s (stopped)"
            what = "agent JSON lines" if options.agent_lines else "`yes`"
            print(f"1 GB of {what}, {executor}: {took} | log {size / 2**20:.1f} MiB, ends with the cap note: {capped}")
    print(f"load average at the end: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
