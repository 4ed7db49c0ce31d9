"""The executor against GNU make on the same DAG of `echo` commands.

A DAG of L layers x 100 tasks, each blocked by 2 tasks of the layer before,
every task the command `echo ID done` (a silent `true` would be `no_work`: an
exit 0 with no output, no artifact and no change proves nothing).  The executor runs it with --max-workers 8 and
full event logging (every event in SQLite, the projection, the message bus);
make runs the equivalent Makefile with -j8.  Reported: wall time of each, the
ratio, the executor's peak RSS (from wait4, so the whole process), and the
time per task so growth with the task count is visible.

``--artifacts``: every task writes its artifact (``sh -c 'echo ... > $TEAM_EXECUTOR_ARTIFACTS/ID-out.md'``),
as real tasks do, and make's recipes write the same files: the executor then finds each
task's upstream artifacts for its prompt and what each attempt left, in a folder of N files.

``--no-cgroup`` runs the executor as a machine without cgroups makes it run (most users': no
root, no delegation), with the descendant list instead (``TEAM_EXECUTOR_NO_CGROUP=1``).

``--repeat N`` runs each size N times and prints medians and ranges; ``--against EXECUTOR`` runs a
second executor in turn with the first (an A/B on the same machine in the same minutes: single
runs here vary by 10-30%, and only interleaved runs compare).

Usage: python benchmarks/dag_vs_make.py [--layers 10] [--layers 100] [--workers 8] [--executor PATH]
       [--against PATH] [--repeat N] [--no-cgroup] [--artifacts]
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.sessions import layered_session

WIDTH = 100


_WRITES_ARTIFACT = 'echo {task_id} done > \\"$TEAM_EXECUTOR_ARTIFACTS/{task_id}-out.md\\"'


def build(folder: Path, layers: int, artifacts: bool = False) -> list[tuple[str, list[str]]]:
    extra = (
        f'backend: command\ncommand: ["sh", "-c", "{_WRITES_ARTIFACT}"]\n'
        if artifacts
        else 'backend: command\ncommand: ["echo", "{task_id} done"]\n'
    )
    layered_session(folder, layers=layers, width=WIDTH, role_extra={"worker": extra})
    tasks = []
    for layer in range(layers):
        for index in range(WIDTH):
            task_id = f"T-{layer * WIDTH + index + 1:06d}"
            deps = [f"T-{(layer - 1) * WIDTH + (index + k) % WIDTH + 1:06d}" for k in range(2)] if layer else []
            tasks.append((task_id, deps))
    return tasks


def makefile(tasks: list[tuple[str, list[str]]], artifacts: bool = False) -> str:
    lines = [".PHONY: all " + " ".join(t for t, _ in tasks), "all: " + " ".join(t for t, _ in tasks)]
    for task_id, deps in tasks:
        lines.append(f"{task_id}: {' '.join(deps)}")
        lines.append("\t@echo $@ done > artifacts/$@-out.md" if artifacts else "\t@echo $@ done")
    return "\n".join(lines) + "\n"


def timed(
    argv: list[str], cwd: Path, extra_env: dict[str, str] | None = None
) -> tuple[float, int, int, float, int, float]:
    """Wall seconds, exit code, peak RSS in KiB of the process, CPU seconds (user + system,
    the process and every child it reaped: the commands' own CPU is in it), and voluntary
    context switches (every thread's sleeps: a GIL hand-off under load is one), from wait4;
    and the wall-clock time (epoch) the process was started, to place the event log's stamps."""
    # `cwd` is a temp folder, never the caller's: an A/B copy run as `python -c "from cli.main
    # import main; ..." ` with PYTHONPATH would otherwise import the checkout it was started in
    # (`-c` puts the current folder first on sys.path, before PYTHONPATH).
    # Compiled modules are cached as a user's install caches them (an environment that sets
    # PYTHONDONTWRITEBYTECODE would compile every changed module again at each start).
    env = {name: value for name, value in os.environ.items() if name != "PYTHONDONTWRITEBYTECODE"}
    env.update(extra_env or {})
    started_at = time.time()
    start = time.perf_counter()
    process = subprocess.Popen(argv, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(process.pid, 0)
    elapsed = time.perf_counter() - start
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        sys.stderr.write(process.stderr.read().decode() if process.stderr else "")
    return elapsed, process.returncode, usage.ru_maxrss, usage.ru_utime + usage.ru_stime, usage.ru_nvcsw, started_at


def _stamp(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def phases(db: sqlite3.Connection, started_at: float, wall_s: float) -> tuple[float, float, float]:
    """Seconds from the process's start to the first dispatch record (imports, loading the
    session, reconciliation, the store), the dispatch span (first dispatch to last completion:
    the part that grows with the tasks), and from the last completion to the exit (the final
    projection, the report).  The first and last are paid once per run, whatever its size."""
    first, last = db.execute(
        "SELECT (SELECT min(occurred_at) FROM events WHERE type = 'task_dispatched'), "
        "(SELECT max(occurred_at) FROM events WHERE type = 'task_completed')"
    ).fetchone()
    to_first = _stamp(first) - started_at
    span = _stamp(last) - _stamp(first)
    return to_first, span, wall_s - to_first - span


def stages(db: sqlite3.Connection) -> str:
    """Median milliseconds of each step of an attempt, from the event log: dispatch record to
    the process started (the commit, the worker's turn, the prompt, the spawn), start to the
    completion record (the command itself, its reaping, the report)."""
    seen: dict[str, dict[str, float]] = {}
    for kind, task_id, at in db.execute(
        "SELECT type, task_id, occurred_at FROM events WHERE type IN "
        "('task_dispatched', 'task_started', 'task_completed')"
    ):
        stamp = _stamp(at)
        seen.setdefault(task_id, {})[kind] = stamp

    def median_ms(first: str, then: str) -> float:
        spans = sorted(t[then] - t[first] for t in seen.values() if first in t and then in t)
        return 1000 * spans[len(spans) // 2] if spans else float("nan")

    return (
        f"dispatch->started {median_ms('task_dispatched', 'task_started'):.1f} ms, "
        f"started->completed {median_ms('task_started', 'task_completed'):.1f} ms (medians)"
    )


@dataclass
class Measure:
    """One executor run beside one make run, on the same DAG."""

    make_s: float
    run_s: float
    rss_mib: float
    cpu_s: float
    to_first_s: float
    span_s: float
    after_last_s: float

    @property
    def ratio(self) -> float:
        return self.run_s / self.make_s


def measure(
    template: Path, work: Path, tasks: list[tuple[str, list[str]]], executor: str, options: argparse.Namespace
) -> Measure:
    """make, then ``executor``, each on a fresh copy of the DAG in ``template``; prints both."""
    if work.exists():
        shutil.rmtree(work)
    work.mkdir()
    folder = work / "dag"
    shutil.copytree(template, folder, symlinks=True)
    (work / "Makefile").write_text(makefile(tasks, options.artifacts))
    (work / "artifacts").mkdir()
    make_s, make_code, _, make_cpu, _, _ = timed(["make", "-s", f"-j{options.workers}", "all"], work)
    run_s, run_code, rss_kib, run_cpu, switches, run_started_at = timed(
        [executor, "run", "--session", str(folder), "--max-workers", str(options.workers)],
        work,
        {"TEAM_EXECUTOR_NO_CGROUP": "1"} if options.no_cgroup else None,
    )
    assert make_code == 0, "make failed"
    assert run_code == 0, "executor failed"
    if options.artifacts:
        written = len(os.listdir(folder / "artifacts"))
        assert written == len(tasks), f"the executor's tasks wrote {written} artifacts, not {len(tasks)}"
    with sqlite3.connect(folder / ".executor" / "state.db") as db:
        events = db.execute("SELECT count(*) FROM events").fetchone()[0]
        steps = stages(db)
        to_first, span, after_last = phases(db, run_started_at, run_s)
    count = len(tasks)
    print(
        f"tasks {count:>6}: make -j{options.workers} {make_s:7.2f} s | executor {run_s:7.2f} s "
        f"({run_s / make_s:4.2f}x make, {1000 * run_s / count:5.2f} ms/task, {events} events) "
        f"| executor peak RSS {rss_kib / 1024:6.1f} MiB"
    )
    print(
        f"             CPU (user+sys, with children): make {make_cpu:6.2f} s | executor {run_cpu:6.2f} s "
        f"({1000 * run_cpu / count:5.2f} ms/task) | {steps} | {switches / count:.0f} context switches/task"
    )
    print(
        f"             once per run: {to_first:5.2f} s to the first dispatch, {after_last:5.2f} s after the "
        f"last completion | dispatch span {span:6.2f} s ({1000 * span / count:5.2f} ms/task, "
        f"{span / make_s:4.2f}x make's whole run)"
    )
    if after_last < 0:  # the stamps are wall-clock times: the clock was set during the run
        print("             ! the wall clock moved during this run: its phases are not comparable")
    return Measure(make_s, run_s, rss_kib / 1024, run_cpu, to_first, span, after_last)


def summary(label: str, runs: list[Measure], count: int) -> str:
    """Medians (and the range) of each figure over ``runs``."""

    def figure(name: str, values: list[float], unit: str = " s", digits: int = 2) -> str:
        low, middle, high = min(values), statistics.median(values), max(values)
        return f"{name} {middle:.{digits}f}{unit} [{low:.{digits}f}-{high:.{digits}f}]"

    return f"{label} ({len(runs)} runs, {count} tasks, medians [range]): " + ", ".join(
        (
            figure("whole", [run.run_s for run in runs]),
            figure("ratio", [run.ratio for run in runs], "x"),
            figure("make", [run.make_s for run in runs]),
            figure("to first dispatch", [run.to_first_s for run in runs]),
            figure("span", [run.span_s for run in runs]),
            figure("after last", [run.after_last_s for run in runs]),
            figure("CPU", [run.cpu_s for run in runs]),
            figure("peak RSS", [run.rss_mib for run in runs], " MiB", 1),
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--layers", type=int, action="append")
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument(
        "--executor", help="the executor command to time (default: this venv's; an A/B run names another)"
    )
    parser.add_argument(
        "--against",
        metavar="EXECUTOR",
        help="a second executor command, run in turn with the first (A/B: each round runs both, in "
        "alternating order, each beside its own make run); the summary compares them",
    )
    parser.add_argument(
        "--repeat", type=int, default=1, help="rounds per size; with more than one, a summary of medians follows"
    )
    parser.add_argument("--no-cgroup", action="store_true", help="run the executor without cgroups")
    parser.add_argument(
        "--artifacts", action="store_true", help="every task writes an artifact (make's tasks write the same files)"
    )
    options = parser.parse_args()
    if options.repeat < 1:
        parser.error("--repeat must be at least 1")
    executors = {"A": options.executor or str(Path(sys.executable).with_name("executor"))}
    if options.against:
        executors["B"] = options.against
    # Each runs in a temporary folder: a path relative to here would name nothing there.
    executors = {label: os.path.abspath(cmd) if os.sep in cmd else cmd for label, cmd in executors.items()}
    print(
        f"machine: {platform.node()} {platform.machine()} {os.cpu_count()} cores, "
        f"Python {platform.python_version()}, {time.strftime('%Y-%m-%d %H:%M %Z')}, "
        f"load {os.getloadavg()[0]:.2f}"
        + (", executor without cgroups" if options.no_cgroup else "")
        + (", every task writes an artifact" if options.artifacts else "")
    )
    if options.against:
        print("\n".join(f"executor {label}: {command}" for label, command in executors.items()))
    for layers in options.layers or [10]:
        with tempfile.TemporaryDirectory() as tmp:
            template = Path(tmp) / "template"
            tasks = build(template, layers, options.artifacts)
            results: dict[str, list[Measure]] = {label: [] for label in executors}
            for round_number in range(options.repeat):
                # Alternate which goes first: a machine that drifts (load, heat, page cache) then
                # weighs on both alike.
                order = list(executors) if round_number % 2 == 0 else list(reversed(executors))
                for label in order:
                    if len(executors) > 1 or options.repeat > 1:
                        print(f"round {round_number + 1}" + (f", executor {label}" if len(executors) > 1 else ""))
                    results[label].append(measure(template, Path(tmp) / "run", tasks, executors[label], options))
            if options.repeat > 1 or len(executors) > 1:
                for label, runs in results.items():
                    print(summary(f"executor {label}" if len(executors) > 1 else "executor", runs, len(tasks)))


if __name__ == "__main__":
    main()
