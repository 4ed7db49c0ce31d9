"""An agent's progress lines through the real console script: each attempt's count of them in
its run row, and the running attempt's newest progress in `executor check`."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import EXECUTOR
from tests.sessions import write_session

AGENT = textwrap.dedent(
    """
    import json, os, sys, time
    task = os.environ["TEAM_EXECUTOR_TASK_ID"]
    session = os.environ["TEAM_EXECUTOR_SESSION"]
    lines = int(sys.argv[1])
    for n in range(1, lines + 1):
        print(json.dumps({"type": "progress", "percent": n * 50 // lines, "note": f"line {n}"}), flush=True)
        print('{"type": "something else"}')  # JSON, but not progress
        print("{not json at all")
    print(json.dumps({"type": "progress", "percent": 50, "note": "waiting for go"}), flush=True)
    deadline = time.monotonic() + 120
    while not os.path.exists(os.path.join(session, "go-" + task)) and time.monotonic() < deadline:
        time.sleep(0.05)
    print(f"[worker] {task} done", flush=True)
    """
)


@pytest.fixture
def started() -> Iterator[list[subprocess.Popen[str]]]:
    processes: list[subprocess.Popen[str]] = []
    yield processes
    for process in processes:  # a test that fails half way leaves no executor running
        if process.poll() is None:
            process.kill()
        process.communicate()


def session(folder: Path, tasks: list[str], lines: int) -> Path:
    agent = folder.parent / "agent.py"
    agent.write_text(AGENT)
    command = json.dumps([sys.executable, str(agent), str(lines)])
    graph: dict[str, list[str]] = {task: [] for task in tasks}
    return write_session(
        folder, {"worker": "P"}, graph, role_extra={"worker": f"backend: command\ncommand: {command}\n"}
    )


def check_json(folder: Path) -> dict[str, Any]:
    done = subprocess.run(
        [str(EXECUTOR), "check", "--session", str(folder), "--json"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, "COLUMNS": "200"},
    )
    return dict(json.loads(done.stdout))


def wait_for(predicate: Any, timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.1)


def test_check_shows_each_running_attempts_newest_progress_and_the_run_row_counts_every_line(
    tmp_path: Path, started: list[subprocess.Popen[str]]
) -> None:
    folder = session(tmp_path / "s", ["P-001", "P-002"], lines=40)
    process = subprocess.Popen(
        [str(EXECUTOR), "run", "--session", str(folder), "--max-workers", "2"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    started.append(process)

    def both_waiting() -> list[dict[str, Any]] | None:
        workers = check_json(folder)["active_workers"]
        ready = [w for w in workers if w["note"] == "waiting for go"]
        return workers if len(ready) == 2 else None

    workers = wait_for(both_waiting)
    assert workers, check_json(folder)
    assert sorted(w["task_id"] for w in workers) == ["P-001", "P-002"]
    assert {w["percent"] for w in workers} == {50}
    assert all(w["progress_at"] for w in workers)
    shown = subprocess.run(
        [str(EXECUTOR), "check", "--session", str(folder)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, "COLUMNS": "200"},
    ).stdout
    assert "50%  waiting for go" in shown, shown

    for task in ("P-001", "P-002"):
        (folder / f"go-{task}").touch()
    out, err = process.communicate(timeout=120)
    assert process.returncode == 0, out + err
    with sqlite3.connect(folder / ".executor" / "state.db") as db:
        rows = db.execute("SELECT task_id, outcome, progress_lines FROM runs ORDER BY task_id").fetchall()
    # 40 progress lines and the last one; neither the other JSON nor the broken lines count.
    assert rows == [("P-001", "completed", 41), ("P-002", "completed", 41)]
    assert check_json(folder)["active_workers"] == []
