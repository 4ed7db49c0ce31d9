"""Questions for the user: only the tasks they are about wait; answered by CLI, by MCP, or by timeout."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from protocol.events import TaskStalled
from session.store import StoreReader
from tests.sessions import scripted_session
from tests.test_mcp_bridge import ENV, EXECUTOR, RunningBridge


def _statuses(bridge: RunningBridge) -> dict[str, str]:
    tasks = bridge.call("list_tasks", {}).structured_content["tasks"]
    return {task["id"]: task["status"] for task in tasks}


def _wait_for(bridge: RunningBridge, check: Any, timeout_s: float = 60) -> dict[str, str]:
    deadline = time.monotonic() + timeout_s
    while True:
        statuses = _statuses(bridge)
        if check(statuses) or time.monotonic() > deadline:
            return statuses
        time.sleep(0.2)


def _answer_cli(folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(EXECUTOR), "answer", *args, "--session", str(folder)],
        capture_output=True,
        text=True,
        env=ENV,
        check=False,
        timeout=60,
    )


def test_an_answer_by_cli_or_mcp_releases_exactly_the_waiting_tasks(tmp_path: Path) -> None:
    graph = {
        "T-001": [],
        "T-002": ["T-001"],  # asked about (CLI answers): waits, and T-004 with it
        "T-003": ["T-001"],  # asked about (MCP answers): waits
        "T-004": ["T-002"],
        "T-005": ["T-001"],  # nobody asks: runs at once
    }
    folder = scripted_session(
        tmp_path / "s", graph, {"T-001": {"sleep": 3}, "default": {"sleep": 0.1}}, python=sys.executable
    )
    bridge = RunningBridge(folder)
    try:
        first = bridge.call(
            "escalate_decision", {"issue": "Ship T-002?", "options": ["go", "stop"], "task_id": "T-002"}
        )
        second = bridge.call(
            "escalate_decision", {"issue": "And T-003?", "options": ["go", "stop"], "task_id": "T-003"}
        )
        assert not first.is_error, first.content
        assert not second.is_error, second.content
        assert first.structured_content["holds_task"] is True
        # That a held task is never dispatched is proven without waiting in
        # tests/test_runtime.py::test_a_question_holds_exactly_its_task_until_answered.
        statuses = _wait_for(bridge, lambda s: s["T-005"] == "completed")
        assert statuses["T-001"] == "completed"
        assert statuses["T-005"] == "completed"
        assert statuses["T-002"] == statuses["T-003"] == statuses["T-004"] == "pending", statuses
        listed = _answer_cli(folder)
        assert first.structured_content["id"] in listed.stdout
        assert "T-002 waits" in listed.stdout

        by_cli = _answer_cli(folder, first.structured_content["id"], "go")
        assert by_cli.returncode == 0, by_cli.stderr
        assert "answered: go" in by_cli.stdout
        statuses = _wait_for(bridge, lambda s: s["T-004"] == "completed")
        assert statuses["T-002"] == statuses["T-004"] == "completed", statuses
        assert statuses["T-003"] == "pending", "only the task the answer is about moves"

        wrong = _answer_cli(folder, second.structured_content["id"], "maybe")
        assert wrong.returncode == 1
        assert "not one of the options" in wrong.stderr
        by_mcp = bridge.call("answer_escalation", {"id": second.structured_content["id"], "choice": "go"})
        assert not by_mcp.is_error
        statuses = _wait_for(bridge, lambda s: s["T-003"] == "completed")
        assert statuses["T-003"] == "completed"
        answered = bridge.call("list_escalations", {"status": "answered"}).structured_content["escalations"]
        who = {row["id"]: row["answered_by"] for row in answered}
        assert who[first.structured_content["id"]].startswith("cli")
        assert who[second.structured_content["id"]] == "mcp"
    finally:
        bridge.stop()


def test_an_unanswered_question_takes_its_default_at_the_deadline(tmp_path: Path) -> None:
    folder = scripted_session(
        tmp_path / "s", {"T-001": [], "T-002": ["T-001"]}, {"T-001": {"sleep": 2}}, python=sys.executable
    )
    bridge = RunningBridge(folder, "--exit-when-done")
    try:
        opened = bridge.call(
            "escalate_decision",
            {"issue": "Deploy?", "options": ["yes", "no"], "task_id": "T-002", "timeout_s": 3, "default_choice": "no"},
        )
        assert not opened.is_error, opened.content
        code = bridge.process.wait(timeout=60)
    finally:
        output = bridge.stop()
    assert code == 0, output
    assert f"{opened.structured_content['id']} answered: no (by timeout)" in output


def test_a_question_answered_while_no_run_is_live_is_found_by_the_next_run(tmp_path: Path) -> None:
    folder = scripted_session(tmp_path / "s", {"T-001": [], "T-002": ["T-001"]}, {}, python=sys.executable)
    bridge = RunningBridge(folder)
    try:
        opened = bridge.call("escalate_decision", {"issue": "Go on?", "options": ["go"], "task_id": "T-002"})
        _wait_for(bridge, lambda s: s["T-001"] == "completed")
    finally:
        bridge.stop()
    answered = _answer_cli(folder, opened.structured_content["id"], "go")
    assert answered.returncode == 0, answered.stderr
    assert "the next run goes on" in answered.stdout
    resumed = subprocess.run(
        [str(EXECUTOR), "resume", "--session", str(folder)], capture_output=True, text=True, env=ENV, check=False
    )
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "T-002" in resumed.stdout


def test_a_silent_worker_is_reported_stalled_then_stopped_and_retried(tmp_path: Path, executor_cli: Any) -> None:
    folder = scripted_session(
        tmp_path / "s",
        {"T-001": []},
        {"T-001": {"hang_attempts": 1}},
        python=sys.executable,
    )
    spec = folder / "role-specs" / "worker.md"
    spec.write_text(
        spec.read_text().replace("backend: command\n", "backend: command\nstall_after: 1\nstall_stop_after: 3\n")
    )
    result = executor_cli("run", "--session", str(folder), "--retry-backoff", "0.1", timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "T-001 has shown no progress and no output" in result.stdout
    assert "T-001 stalled for" in result.stdout
    reader = StoreReader.open(folder)
    assert reader is not None
    runs = reader.runs("T-001")
    stalled = [event for _, _, event in reader.events() if isinstance(event, TaskStalled)]
    reader.close()
    assert [run.outcome for run in runs] == ["failed", "completed"]
    assert runs[0].error_kind == "hang"
    assert "stalled" in (runs[0].error or "")
    assert [event.action for event in stalled] == ["reported", "stopped"]


def test_a_capability_gap_asks_whether_to_stop_and_stops_when_told(tmp_path: Path) -> None:
    gap = {"report": {"status": "capability_gap", "summary": "done, partly", "detail": "no role knows Terraform"}}
    folder = scripted_session(
        tmp_path / "s",
        {"T-001": [], "T-002": ["T-001"]},
        {"T-001": gap, "T-002": {"sleep": 30}},
        python=sys.executable,
    )
    bridge = RunningBridge(folder)
    try:
        questions: list[dict[str, Any]] = []
        deadline = time.monotonic() + 30
        while not questions and time.monotonic() < deadline:
            questions = bridge.call("list_escalations", {"status": "open"}).structured_content["escalations"]
            time.sleep(0.2)
        (question,) = questions
        assert question["options"] == ["continue", "stop the run"]
        assert "no role knows Terraform" in question["issue"]
        stopped = bridge.call("answer_escalation", {"id": question["id"], "choice": "stop the run"})
        assert not stopped.is_error
        code = bridge.process.wait(timeout=60)
    finally:
        output = bridge.stop()
    assert code == 0, output
    assert "stop the run (capability gap)" in output or "run stopped on request" in output
    assert "T-002" in output
