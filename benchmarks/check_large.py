"""How long `executor check` takes on a 10,000-task session, mid-run.

Builds a session of 100 layers x 100 tasks (each blocked by 2 of the layer
before), writes a state database with the first half completed, then times
the real console script (process start included), text and --json.

Usage: python benchmarks/check_large.py [--tasks 10000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from session.store import Store, TaskRow
from tests.sessions import layered_session


def build(folder: Path, tasks: int) -> None:
    width = 100
    layered_session(folder, layers=tasks // width, width=width)
    store = Store.open(folder)
    rows = []
    for index in range(tasks):
        task_id = f"T-{index + 1:06d}"
        status = "completed" if index < tasks // 2 else "pending"
        rows.append(TaskRow(id=task_id, owner="worker", status=status, attempts=int(status == "completed")))
    with store.transaction():
        store.put_tasks(rows)
    store.close()


def time_command(args: list[str], repeat: int) -> list[float]:
    timings = []
    for _ in range(repeat):
        start = time.perf_counter()
        subprocess.run(args, check=True, capture_output=True)
        timings.append(time.perf_counter() - start)
    return timings


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=5)
    options = parser.parse_args()
    executor = str(Path(sys.executable).with_name("executor"))
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "big"
        build(folder, options.tasks)
        baseline = time_command([sys.executable, "-c", "import cli.main"], options.repeat)
        text = time_command([executor, "check", "--session", str(folder)], options.repeat)
        as_json = time_command([executor, "check", "--session", str(folder), "--json"], options.repeat)
    print(f"machine: {platform.node()} {platform.machine()} {platform.python_version()}, {time.strftime('%Y-%m-%d')}")
    print(f"tasks: {options.tasks}")
    for name, values in (("import only", baseline), ("check", text), ("check --json", as_json)):
        print(f"{name:>14}: median {statistics.median(values):.3f} s  max {max(values):.3f} s  (n={len(values)})")


if __name__ == "__main__":
    main()
