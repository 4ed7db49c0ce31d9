"""How fast can any Python dispatcher run dag_vs_make's DAG?  The floor under the executor.

The same DAG as ``dag_vs_make.py`` (L layers x 100 `echo` tasks, each blocked by 2 of
the layer before), run by the smallest dispatcher Python allows: one thread, up to
``--workers`` children at a time (``subprocess.Popen``, stdout to a log file per task),
``os.wait`` to reap whichever ends, readiness by counting unmet dependencies.  Three
levels of "what else a real executor must do", each timed as its own process from
interpreter start to exit (like make):

- ``bare``: spawn and reap only;
- ``+log``: a log file per task (the executor keeps each attempt's output);
- ``+sqlite``: plus three durable events per task in SQLite (WAL, synchronous=NORMAL,
  one commit per batch of reaped children), the least a resumable run can record.

Beside them: make -j on the Makefile, and the executor itself.  Nothing of ours is
imported by the dispatcher, so what it shows is the cost of CPython and the kernel here.

Usage: TMPDIR=/work/bench-tmp python benchmarks/dispatch_floor.py [--layers 10] [--workers 8]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.dag_vs_make import build, makefile, timed

# The dispatcher, run as `python -c DISPATCHER LEVEL WORKERS TASKFILE FOLDER`: one line per
# task in TASKFILE, "ID DEP DEP...".
DISPATCHER = r"""
import os, sqlite3, subprocess, sys
level, workers, taskfile, folder = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
deps, waiting_on, ready = {}, {}, []
for line in open(taskfile):
    task, *blocked_by = line.split()
    deps[task] = blocked_by
    waiting_on[task] = len(blocked_by)
    if not blocked_by:
        ready.append(task)
dependents = {task: [] for task in deps}
for task, blocked_by in deps.items():
    for dep in blocked_by:
        dependents[dep].append(task)
db = None
if level == "sqlite":
    db = sqlite3.connect(os.path.join(folder, "floor.db"))
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.execute("CREATE TABLE events (id INTEGER PRIMARY KEY, task TEXT, kind TEXT, at REAL)")
running = {}
events = []
done = 0
while done < len(deps):
    while ready and len(running) < workers:
        task = ready.pop()
        out = open(os.path.join(folder, task + ".log"), "wb") if level != "bare" else subprocess.DEVNULL
        child = subprocess.Popen(["echo", task + " done"], stdout=out, stderr=subprocess.STDOUT)
        if out is not subprocess.DEVNULL:
            out.close()
        running[child.pid] = (task, child)
        events.append((task, "dispatched", 0.0))
        events.append((task, "started", 0.0))
    pid, status = os.wait()
    task, child = running.pop(pid)
    child.returncode = os.waitstatus_to_exitcode(status)
    events.append((task, "completed", 0.0))
    done += 1
    for after in dependents[task]:
        waiting_on[after] -= 1
        if not waiting_on[after]:
            ready.append(after)
    if db is not None:
        db.executemany("INSERT INTO events (task, kind, at) VALUES (?, ?, ?)", events)
        db.commit()
    events.clear()
"""


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--layers", type=int, default=10)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--executor", help="the executor command to time beside (default: this venv's)")
    options = parser.parse_args()
    executor = options.executor or str(Path(sys.executable).with_name("executor"))
    print(
        f"machine: {platform.node()} {platform.machine()} {os.cpu_count()} cores, "
        f"Python {platform.python_version()}, {time.strftime('%Y-%m-%d %H:%M')} UTC, "
        f"load average {os.getloadavg()[0]:.2f}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "dag"
        tasks = build(folder, options.layers)
        (Path(tmp) / "Makefile").write_text(makefile(tasks))
        taskfile = Path(tmp) / "tasks.txt"
        taskfile.write_text("".join(f"{task} {' '.join(deps)}\n" for task, deps in tasks))
        rows: list[tuple[str, float, float]] = []
        make_s, code, _, make_cpu, *_ = timed(["make", "-s", f"-j{options.workers}", "all"], Path(tmp))
        assert code == 0, "make failed"
        rows.append((f"make -j{options.workers}", make_s, make_cpu))
        for level in ("bare", "log", "sqlite"):
            logs = Path(tmp) / f"logs-{level}"
            logs.mkdir()
            argv = [sys.executable, "-c", DISPATCHER, level, str(options.workers), str(taskfile), str(logs)]
            seconds, code, _, cpu, *_ = timed(argv, Path(tmp))
            assert code == 0, f"the {level} dispatcher failed"
            rows.append((f"python floor: {level if level == 'bare' else '+' + level}", seconds, cpu))
        seconds, code, _, cpu, *_ = timed(
            [executor, "run", "--session", str(folder), "--max-workers", str(options.workers)], Path(tmp)
        )
        assert code == 0, "executor failed"
        rows.append(("executor run", seconds, cpu))
        started, code, _, start_cpu, *_ = timed([sys.executable, "-c", "import actors.run, cli.run_cmd"], Path(tmp))
        rows.append(("executor's imports alone", started, start_cpu))
    count = len(tasks)
    print(f"{count} tasks, {options.workers} at a time; wall and CPU (user+sys, children included)")
    for name, seconds, cpu in rows:
        print(
            f"  {name:<28} {seconds:6.2f} s  ({seconds / make_s:5.2f}x make)  "
            f"CPU {cpu:6.2f} s  ({1000 * cpu / count:5.2f} ms/task)"
        )


if __name__ == "__main__":
    main()
