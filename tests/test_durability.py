"""Durable before visible, under repeated kill -9 of the real executor process.

Every execution of the scripted agent leaves a marker file (task, attempt, pid) before it
does anything else.  The executor is killed with SIGKILL again and again at the moments
that matter: first by an agent the instant it starts (so an attempt whose dispatch record
was still in flight would be caught), then by this test the instant a "✓ done" line
appears.  The store is read right after each kill:

- no attempt ran without its dispatch record (each marker has a run row for its task
  and attempt), and
- every task shown "✓ done" has its completion committed.

Finally a resume runs the pipeline to its end, each task completed exactly once.
Before the Executor waited for its turn's commit, this failed two runs in three.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from session.store import StoreReader
from tests.conftest import EXECUTOR
from tests.sessions import scripted_session
from tests.waiting import wait_for

pytestmark = pytest.mark.subprocess

PY = sys.executable
DONE = re.compile(r"✓ (\S+) \(\w+\) done in")
# A wide and deep graph: many dispatches and completions close together.
GRAPH = {f"A-{i:03d}": ([f"A-{i - 8:03d}"] if i > 8 else []) for i in range(1, 33)}
KILLED_BY_AGENTS = 4
KILLED_AT_DONE = 4


def _markers(folder: Path) -> list[tuple[str, int]]:
    found = []
    for path in folder.iterdir():
        task, attempt, _pid = path.name.rsplit("-", 2)
        found.append((task, int(attempt.removeprefix("a"))))
    return found


def _store(folder: Path) -> tuple[Counter[tuple[str, int]], set[str]]:
    """(run rows per task and attempt, tasks with a committed completion)."""
    reader = StoreReader.open(folder)
    if reader is None:
        return Counter(), set()
    try:
        runs = Counter((run.task_id, run.attempt) for run in reader.runs())
        done = {row[0] for row in reader.conn.execute("SELECT task_id FROM events WHERE type = 'task_completed'")}
        return runs, done
    finally:
        reader.close()


def _start(folder: Path, command: str, out: Path) -> subprocess.Popen[bytes]:
    with out.open("wb") as stream:
        return subprocess.Popen(
            [str(EXECUTOR), command, "--session", str(folder), "--max-workers", "8"],
            stdout=stream,
            stderr=subprocess.STDOUT,
            env={**os.environ, "COLUMNS": "200"},
        )


def test_kill_9_never_loses_a_dispatch_or_a_shown_completion(tmp_path):
    marks, kills = tmp_path / "marks", tmp_path / "kills"
    marks.mkdir()
    kills.mkdir()
    behavior = {"sleep": 0.05, "mark": str(marks), "kill_parent": {"dir": str(kills), "times": KILLED_BY_AGENTS}}
    folder = scripted_session(tmp_path / "s", GRAPH, {"default": behavior}, python=PY)
    shown_done: set[str] = set()
    for round_number in range(KILLED_BY_AGENTS + KILLED_AT_DONE):
        out = tmp_path / f"out-{round_number}.txt"
        process = _start(folder, "run" if round_number == 0 else "resume", out)

        def killed_or_done(process: subprocess.Popen[bytes] = process, out: Path = out) -> bool:
            return process.poll() is not None or bool(DONE.search(out.read_text(encoding="utf-8", errors="replace")))

        # The first rounds end when an agent kills the executor the moment it starts; the
        # later ones when this test kills it the moment it shows a task done.
        wait_for(killed_or_done, timeout=120, what="the executor to be killed or to show a task done")
        process.kill()
        process.wait(timeout=30)
        text = out.read_text(encoding="utf-8", errors="replace")
        shown_done |= set(DONE.findall(text))
        runs, committed = _store(folder)
        executions = Counter(_markers(marks))
        unrecorded = {key: n for key, n in executions.items() if n > runs[key]}
        assert not unrecorded, f"round {round_number}: attempts ran without a dispatch record: {unrecorded}"
        assert shown_done <= committed, f"round {round_number}: shown done, not committed: {shown_done - committed}"
        if "pipeline complete" in text:
            break
    assert len(list(kills.iterdir())) == KILLED_BY_AGENTS

    final = subprocess.run(
        [str(EXECUTOR), "resume", "--session", str(folder), "--max-workers", "8"],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert final.returncode == 0, final.stdout + final.stderr
    runs, committed = _store(folder)
    assert committed == set(GRAPH)
    executions = Counter(_markers(marks))
    assert all(n <= runs[key] for key, n in executions.items())
    reader = StoreReader.open(folder)
    assert reader is not None
    try:
        completions = Counter(
            row[0] for row in reader.conn.execute("SELECT task_id FROM events WHERE type = 'task_completed'")
        )
    finally:
        reader.close()
    assert set(completions.values()) == {1}, f"a task completed twice: {completions}"


@pytest.fixture
def small_disk(tmp_path):
    """A 4 MiB tmpfs of our own (needs root: skipped elsewhere)."""
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    made = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount_point)], capture_output=True, check=False
    )
    if made.returncode != 0:
        pytest.skip("cannot mount a small file system here (needs root)")
    yield mount_point
    subprocess.run(["umount", "-l", str(mount_point)], capture_output=True, check=False)


def _fill(disk: Path) -> None:
    with (disk / "filler").open("wb") as filler:
        while True:
            filler.write(b"x" * 65536)


def test_a_full_disk_stops_the_run_with_one_message_and_resume_finishes(small_disk):
    # (A read-only remount cannot be forced while the run holds files open for writing;
    # that failure is classified by the same code: see tests/test_store.py::test_storage_problems_are_named.)
    graph = {f"A-{i:03d}": ([f"A-{i - 1:03d}"] if i > 1 else []) for i in range(1, 9)}
    folder = scripted_session(small_disk / "s", graph, {"default": {"sleep": 0.2}}, python=PY)
    out = small_disk.parent / "out.txt"
    process = _start(folder, "run", out)
    wait_for(lambda: len(DONE.findall(out.read_text(encoding="utf-8"))) >= 2, what="two tasks done")
    with pytest.raises(OSError, match="No space left"):
        _fill(small_disk)
    assert process.wait(timeout=120) == 1
    text = out.read_text(encoding="utf-8")
    assert f"✗ stopping the run: the disk is full (writing {folder}" in text, text
    assert "Traceback" not in text
    shown = set(DONE.findall(text))
    _, committed = _store(folder)
    assert shown <= committed, "everything shown done is recorded"

    (small_disk / "filler").unlink()
    final = subprocess.run(
        [str(EXECUTOR), "resume", "--session", str(folder)], capture_output=True, text=True, timeout=180, check=False
    )
    assert final.returncode == 0, final.stdout + final.stderr
    assert _store(folder)[1] == set(graph)


def test_a_task_cancelled_while_it_ran_stays_cancelled_when_the_run_is_killed_first(tmp_path):
    # The cancel is acknowledged ("the agent is being stopped"); the agent takes its grace period
    # to die, and the run is killed (-9) meanwhile. The task was run again, to completion, by the
    # resumed run: the cancellation lived only in the dead run's memory.
    from tests.test_mcp_bridge import RunningBridge  # noqa: PLC0415 - the MCP client, only here

    marks = tmp_path / "marks"
    marks.mkdir()
    behaviors = {"A-001": {"mark": str(marks), "ignore_term": True, "sleep": 60}}
    folder = scripted_session(tmp_path / "s", {"A-001": [], "A-002": ["A-001"]}, behaviors, python=PY)
    run = RunningBridge(folder)
    try:
        wait_for(lambda: list(marks.iterdir()), timeout=60, what="A-001 to start")
        cancelled = run.call("cancel_task", {"task_id": "A-001"})
        assert cancelled.structured_content["was"] == "in_progress", cancelled
    finally:
        run.process.kill()
        run.process.wait(timeout=30)
        if run.process.stdout is not None:
            run.process.stdout.close()
    resumed = subprocess.run(
        [str(EXECUTOR), "resume", "--session", str(folder)], capture_output=True, text=True, timeout=120, check=False
    )
    assert resumed.returncode == 1, resumed.stdout + resumed.stderr  # a failed task: the exit says so
    assert "cancelled 1 (asked for while they ran)" in resumed.stdout
    assert "failed: A-001" in resumed.stdout
    assert "blocked by failures: A-002" in resumed.stdout
    assert len(list(marks.iterdir())) == 1, "the cancelled task ran again"
    reader = StoreReader.open(folder)
    assert reader is not None
    try:
        task = reader.task("A-001")
        runs = reader.runs("A-001")
    finally:
        reader.close()
    assert task is not None
    assert (task.status, task.last_error_kind) == ("failed", "cancelled"), task
    assert [(r.outcome, r.error_kind, r.cancel_requested_by) for r in runs] == [("failed", "cancelled", "mcp")]
    report = (folder / ".executor" / "recovery").iterdir()
    assert any("A-001: cancelled by mcp" in path.read_text() for path in report)
