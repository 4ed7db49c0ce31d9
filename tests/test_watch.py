"""`executor watch`: a read-only live view of a run going on in another process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from tests.conftest import EXECUTOR
from tests.sessions import copy_demo, scripted_session
from tests.test_mcp_bridge import RunningBridge


def test_watch_shows_the_run_going_on_its_workers_and_questions(tmp_path: Path, executor_cli: Any) -> None:
    folder = scripted_session(
        tmp_path / "s", {"T-001": [], "T-002": ["T-001"]}, {"T-001": {"sleep": 30}}, python=sys.executable
    )
    bridge = RunningBridge(folder)
    try:
        question = bridge.call("escalate_decision", {"issue": "Ship T-002?", "options": ["ship", "hold"]})
        deadline = time.monotonic() + 30
        shown = ""
        while time.monotonic() < deadline:
            shown = executor_cli("watch", "--session", str(folder), "--once").stdout
            if "T-001" in shown and "running (pid" in shown:
                break
            time.sleep(0.3)
        before = sorted(p.name for p in (folder / ".executor").iterdir())
        executor_cli("watch", "--session", str(folder), "--once")
        after = sorted(p.name for p in (folder / ".executor").iterdir())
    finally:
        bridge.stop()
    assert f"running (pid {bridge.process.pid}" in shown, shown
    assert "0/2 tasks" in shown
    running = next(line for line in shown.splitlines() if line.startswith("T-001"))
    assert "worker" in running
    assert "command" in running
    assert f"{question.structured_content['id']}: Ship T-002?" in shown
    assert "task_dispatched" in shown
    assert before == after, "watch writes nothing"


def test_watch_once_on_a_finished_session(tmp_path: Path, executor_cli: Any) -> None:
    folder = copy_demo(tmp_path / "demo")
    assert executor_cli("run", "--session", str(folder), "--backend", "demo").returncode == 0
    result = executor_cli("watch", "--session", str(folder), "--once")
    assert result.returncode == 0, result.stderr
    assert "no run going on" in result.stdout
    assert "tasks (100%)" in result.stdout
    assert "run_completed" in result.stdout
    bad = executor_cli("watch", "--session", str(tmp_path), "--once")
    assert bad.returncode == 1, "a missing session exits 1, as check and validate do"
    assert "team-session.json" in bad.stdout
    assert "status: None" not in bad.stdout


def test_watch_piped_prints_plain_lines_and_json_frames(tmp_path: Path, executor_cli: Any) -> None:
    folder = copy_demo(tmp_path / "demo")
    assert executor_cli("run", "--session", str(folder), "--backend", "demo").returncode == 0
    with subprocess.Popen(
        [str(EXECUTOR), "watch", "--session", str(folder), "--interval", "0.2"],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "COLUMNS": "200"},
    ) as process:
        assert process.stdout is not None
        lines = []
        for line in process.stdout:
            lines.append(line)
            if line.startswith("5/5 tasks (100%)"):
                break
        process.terminate()
        process.wait(timeout=30)
    assert any("run_completed" in line for line in lines), lines
    assert lines[-1].startswith("5/5 tasks (100%), no run; running: -; failed: -; done: every task is complete")
    assert not any("\x1b[" in line for line in lines), "plain text when piped"
    frame = executor_cli("watch", "--session", str(folder), "--once", "--json")
    assert frame.returncode == 0
    data = json.loads(frame.stdout)
    assert data["report"]["progress"]["completed"] == 5
    assert data["events"][-1]["event"]["type"] == "shutdown_completed"
