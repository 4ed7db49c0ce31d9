"""Many agents streaming progress at once: is every line counted, what does it cost, how fresh is `check`?

Issue 18's must-show: 200 concurrent fake agents, each printing 20 JSON progress lines a
second for 60 s, run by the real console script (`executor run --max-workers 200`) on a
generated session whose role uses the `command` backend.  Each agent is a small stdlib
Python script printing, on an open-loop schedule (no drift when it falls behind),
``{"type": "progress", "percent": P, "note": "seq N/TOTAL t=PRINT_TIME"}`` and finally one
summary line.  The executor reads them through the same path as the agent CLIs' JSON
streams (lines cut in C, only lines starting with ``{`` become objects, one parse each).

Measured and printed:

1. *Every event counted*: for every agent, all of these hold — its task is completed, its
   run row's ``progress_lines`` (the executor's own count of the progress lines it read) is
   TOTAL, its log holds TOTAL progress lines, and the newest progress recorded for it (the
   event log, coalesced to at most 4 a second) is ``seq TOTAL/TOTAL``.
2. *Executor CPU and RSS*: the executor process's own user and system CPU (read from
   ``/proc`` after it exits, before it is reaped: its children's CPU is not in it) and its
   peak RSS (the kernel's high-water mark, ``VmHWM``, sampled while it runs).
3. *Progress in `check`*: while the run goes, `executor check --session S --json` is run
   again and again; for each running agent it shows, the age of the progress it shows is
   (the moment check's output was complete) - (when the agent printed that line).  That
   includes check's own run time (an interpreter start), so it is what a person running
   `check` sees.  And for every recorded progress report: (when a read-only connection
   polling every 0.1 s first saw it committed) - (when the agent printed it), i.e. how long
   until any reader, check included, could see it (over by up to 0.1 s); and the same up
   to the moment the Session appended it (its ``occurred_at``, before the commit).
   The executor keeps at most 4 reports a second per attempt, each the newest line, so a
   report shows a line printed up to 0.25 s before it was sent.

Usage: python benchmarks/stream_agents.py [--agents 200] [--rate 20] [--seconds 60]
       [--check-gap 0.25] [--executor PATH] [--keep]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.sessions import write_session

AGENT = r"""
import json, os, sys, time
rate, seconds = float(sys.argv[1]), float(sys.argv[2])
task = os.environ["TEAM_EXECUTOR_TASK_ID"]
total = max(1, round(rate * seconds))
out = sys.stdout
start = time.monotonic()
behind = 0.0
for n in range(1, total + 1):
    due = start + (n - 1) / rate
    wait = due - time.monotonic()
    if wait > 0:
        time.sleep(wait)
    else:
        behind = max(behind, -wait)
    note = f"seq {n}/{total} t={time.time():.6f}"
    out.write(json.dumps({"type": "progress", "percent": n * 100 // total, "note": note}) + "\n")
    out.flush()
out.write(f"[worker] {task}: printed {total} progress lines, at most {behind:.3f}s behind schedule\n")
out.flush()
"""

NOTE = re.compile(r"seq (\d+)/(\d+) t=(\d+\.\d+)")
BEHIND = re.compile(r"at most (\d+\.\d+)s behind")


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


def spread(values: list[float]) -> str:
    if not values:
        return "no samples"
    return (
        f"p50 {statistics.median(values):.3f} s, p99 {percentile(values, 0.99):.3f} s, "
        f"max {max(values):.3f} s ({len(values)} samples)"
    )


def build(folder: Path, agents: int, rate: float, seconds: float) -> None:
    folder.mkdir(parents=True)
    agent = folder / "stream_agent.py"
    agent.write_text(AGENT)
    argv = [sys.executable, "-I", str(agent), f"{rate:g}", f"{seconds:g}"]
    extra = {"worker": f"backend: command\ncommand: {json.dumps(argv)}\n"}
    graph: dict[str, list[str]] = {f"S-{index:06d}": [] for index in range(1, agents + 1)}
    write_session(folder, {"worker": "S"}, graph, role_extra=extra)


@dataclass
class Watch:
    """What the sampling threads saw while the run went on."""

    hwm_kib: int = 0
    steady: tuple[float, float] = (0.0, 0.0)  # wall-clock window when every agent prints and none ends
    steady_check_ages: list[float] = field(default_factory=list)
    steady_visible_ages: list[float] = field(default_factory=list)
    check_ages: list[float] = field(default_factory=list)  # output complete - printed
    check_ages_at_start: list[float] = field(default_factory=list)  # check started - printed (lower bound)
    check_times: list[float] = field(default_factory=list)
    check_failures: int = 0
    polls: int = 0
    visible_ages: list[float] = field(default_factory=list)  # first seen by a reader - printed
    commit_lags: list[float] = field(default_factory=list)  # first seen by a reader - appended (occurred_at)
    stop: threading.Event = field(default_factory=threading.Event)


def sample_memory(pid: int, watch: Watch) -> None:
    while not watch.stop.wait(0.1):
        try:
            text = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            return
        for line in text.splitlines():
            if line.startswith("VmHWM:"):
                watch.hwm_kib = max(watch.hwm_kib, int(line.split()[1]))


def poll_check(executor: str, folder: Path, gap: float, watch: Watch) -> None:
    while not watch.stop.is_set():
        started_wall, started = time.time(), time.perf_counter()
        done = subprocess.run(
            [executor, "check", "--session", str(folder), "--json"],
            capture_output=True,
            text=True,
            check=False,
            cwd=folder.parent,
        )
        ended_wall = time.time()
        watch.check_times.append(time.perf_counter() - started)
        watch.polls += 1
        try:
            report = json.loads(done.stdout)
        except ValueError:
            watch.check_failures += 1
            continue
        for worker in report.get("active_workers", []):
            match = NOTE.search(worker.get("note") or "")
            if match is None:
                continue
            printed = float(match.group(3))
            watch.check_ages.append(ended_wall - printed)
            if watch.steady[0] <= started_wall and ended_wall <= watch.steady[1]:
                watch.steady_check_ages.append(ended_wall - printed)
            watch.check_ages_at_start.append(started_wall - printed)
        watch.stop.wait(gap)


def poll_store(folder: Path, watch: Watch) -> None:
    """Every 0.1 s, read the progress reports committed since the last look (a read-only
    connection, as `check` opens): how long after its print each became visible to a reader."""
    path = folder / ".executor" / "state.db"
    last = 0
    db: sqlite3.Connection | None = None
    while not watch.stop.wait(0.1):
        try:
            if db is None:
                if not path.exists():
                    continue
                db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
            rows = db.execute(
                "SELECT id, payload_json, occurred_at FROM events WHERE id > ? AND type = 'task_progress' ORDER BY id",
                [last],
            ).fetchall()
        except sqlite3.Error:
            continue
        now = time.time()
        for row_id, payload, occurred_at in rows:
            last = row_id
            watch.commit_lags.append(now - epoch(occurred_at))
            match = NOTE.search(json.loads(payload).get("note", ""))
            if match:
                watch.visible_ages.append(now - float(match.group(3)))
                if watch.steady[0] <= now <= watch.steady[1]:
                    watch.steady_visible_ages.append(now - float(match.group(3)))
    if db is not None:
        db.close()


def process_cpu(pid: int) -> tuple[float, float]:
    """User and system CPU seconds of the process itself (not its children), from /proc/PID/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / ticks, int(fields[12]) / ticks


def epoch(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()


def verify(folder: Path, agents: int, total: int) -> tuple[dict[str, int], list[float], list[float], list[str]]:
    """Counts of what holds, print-to-store delays, how far behind schedule agents were, problems."""
    db = sqlite3.connect(f"file:{folder / '.executor' / 'state.db'}?mode=ro", uri=True)
    problems: list[str] = []
    counts = {"completed": 0, "progress_lines": 0, "log_lines": 0, "last_seq": 0}
    status = dict(db.execute("SELECT id, status FROM tasks").fetchall())
    runs = db.execute("SELECT task_id, attempt, progress_lines, log_path FROM runs ORDER BY id").fetchall()
    attempts: dict[str, int] = {}
    for task_id, _, _, _ in runs:
        attempts[task_id] = attempts.get(task_id, 0) + 1
    extra = {task: n for task, n in attempts.items() if n > 1}
    if extra:
        problems.append(f"{len(extra)} tasks ran more than once: {sorted(extra)[:5]}")
    delays: list[float] = []
    last_note: dict[str, str] = {}
    for task_id, occurred_at, payload in db.execute(
        "SELECT task_id, occurred_at, payload_json FROM events WHERE type = 'task_progress' ORDER BY id"
    ):
        note = json.loads(payload).get("note", "")
        last_note[task_id] = note
        match = NOTE.search(note)
        if match:
            delays.append(epoch(occurred_at) - float(match.group(3)))
    behind: list[float] = []
    for task_id, _, progress_lines, log_path in runs:
        if status.get(task_id) == "completed":
            counts["completed"] += 1
        else:
            problems.append(f"{task_id}: {status.get(task_id)}")
        if progress_lines == total:
            counts["progress_lines"] += 1
        elif len(problems) < 20:
            problems.append(f"{task_id}: progress_lines {progress_lines}, expected {total}")
        log_text = Path(log_path).read_text(errors="replace") if log_path and Path(log_path).exists() else ""
        in_log = sum(1 for line in log_text.splitlines() if line.startswith('{"type": "progress"'))
        if in_log == total:
            counts["log_lines"] += 1
        elif len(problems) < 20:
            problems.append(f"{task_id}: {in_log} progress lines in its log, expected {total}")
        found = BEHIND.search(log_text)
        if found:
            behind.append(float(found.group(1)))
        match = NOTE.search(last_note.get(task_id, ""))
        if match and int(match.group(1)) == total:
            counts["last_seq"] += 1
        elif len(problems) < 20:
            problems.append(f"{task_id}: newest progress recorded is {last_note.get(task_id)!r}")
    if len(runs) < agents:
        problems.append(f"only {len(runs)} attempts recorded for {agents} agents")
    counts["progress_events"] = len(delays)
    db.close()
    return counts, delays, behind, problems


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--agents", type=int, default=200)
    parser.add_argument("--rate", type=float, default=20.0, help="progress lines a second, per agent")
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--check-gap", type=float, default=0.25, help="seconds between two `check` runs")
    parser.add_argument("--executor", help="the executor command (default: this venv's)")
    parser.add_argument("--keep", action="store_true", help="keep the session folder and say where it is")
    options = parser.parse_args()
    executor = options.executor or str(Path(sys.executable).with_name("executor"))
    total = max(1, round(options.rate * options.seconds))
    print(
        f"machine: {platform.machine()} {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"{time.strftime('%Y-%m-%d %H:%M:%S %Z')}, load average {os.getloadavg()[0]:.2f}"
    )
    print(
        f"{options.agents} agents x {options.rate:g} lines/s x {options.seconds:g} s = {total} lines each, "
        f"{options.agents * total} in all; --max-workers {options.agents}"
    )
    tmp = Path(tempfile.mkdtemp(prefix="stream-agents-"))
    folder = tmp / "session"
    build(folder, options.agents, options.rate, options.seconds)
    watch = Watch()
    # Starting 200 agents takes the executor a few seconds; from 10 s on until the first agent
    # stops printing, every agent streams and none is being started or finished.
    watch.steady = (time.time() + 10, time.time() + options.seconds)
    started = time.perf_counter()
    process = subprocess.Popen(
        [executor, "run", "--session", str(folder), "--max-workers", str(options.agents)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        cwd=folder.parent,  # not the caller's folder: see dag_vs_make.py
    )
    threads = [
        threading.Thread(target=sample_memory, args=(process.pid, watch), daemon=True),
        threading.Thread(target=poll_check, args=(executor, folder, options.check_gap, watch), daemon=True),
        threading.Thread(target=poll_store, args=(folder, watch), daemon=True),
    ]
    for thread in threads:
        thread.start()
    # Wait for the exit without reaping, so /proc still has the process's own CPU times.
    os.waitid(os.P_PID, process.pid, os.WEXITED | os.WNOWAIT)
    wall = time.perf_counter() - started
    user, system = process_cpu(process.pid)
    watch.stop.set()
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    stderr = process.stderr.read().decode(errors="replace") if process.stderr else ""
    for thread in threads:
        thread.join(timeout=30)
    load_end = os.getloadavg()[0]

    counts, delays, behind, problems = verify(folder, options.agents, total)
    print(f"executor exit {process.returncode}, wall {wall:.1f} s (agents print for {options.seconds:g} s)")
    if process.returncode != 0:
        print("executor stderr (tail):\n" + stderr[-2000:])
    print(
        f"every event counted: {counts['completed']}/{options.agents} completed; run row progress_lines = {total} "
        f"for {counts['progress_lines']}; log holds {total} progress lines for {counts['log_lines']}; newest "
        f"recorded progress is seq {total}/{total} for {counts['last_seq']}"
    )
    all_counted = all(
        counts[name] == options.agents for name in ("completed", "progress_lines", "log_lines", "last_seq")
    )
    print(f"  -> {'MET' if all_counted and not problems else 'NOT MET'}")
    for problem in problems[:20]:
        print(f"     {problem}")
    print(
        f"progress reports recorded: {counts['progress_events']} "
        f"({counts['progress_events'] / max(1, options.agents):.0f} per agent; at most 4/s are kept)"
    )
    print(
        f"executor CPU: user {user:.1f} s + system {system:.1f} s = {user + system:.1f} s "
        f"({100 * (user + system) / wall:.0f}% of one core over the run); peak RSS {watch.hwm_kib / 1024:.1f} MiB "
        f"(wait4 max RSS of it and its children: {usage.ru_maxrss / 1024:.1f} MiB)"
    )
    if behind:
        print(f"agents behind their schedule (their own measure): {spread(behind)}")
    print(f"print -> appended in the Session (every progress report, its occurred_at): {spread(delays)}")
    print(f"print -> committed, seen by a reader polling every 0.1 s (every report): {spread(watch.visible_ages)}")
    print(f"appended -> seen by that reader (the group commit, plus up to 0.1 s): {spread(watch.commit_lags)}")
    within = sum(1 for age in watch.check_ages if age <= 1.0)
    print(f"`check --json` runs: {watch.polls} ({watch.check_failures} unreadable), each {spread(watch.check_times)}")
    print(f"age of the progress `check` showed, when its output was complete: {spread(watch.check_ages)}")
    if watch.check_ages:
        share = 100 * within / len(watch.check_ages)
        print(f"  within 1 s: {within}/{len(watch.check_ages)} ({share:.1f}%)")
    print(f"  ... when check started (a lower bound): {spread(watch.check_ages_at_start)}")
    print(
        f"  ... only the checks between {10} s and {options.seconds:g} s after the start (every agent printing, "
        f"none starting or ending): {spread(watch.steady_check_ages)}"
    )
    steady_within = sum(1 for age in watch.steady_check_ages if age <= 1.0)
    if watch.steady_check_ages:
        print(f"      within 1 s: {steady_within}/{len(watch.steady_check_ages)}")
    print(f"print -> committed in that window (every report): {spread(watch.steady_visible_ages)}")
    print(f"load average at the end: {load_end:.2f}")
    if options.keep:
        print(f"session kept in {folder}")
    else:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
