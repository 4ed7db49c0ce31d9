"""Manual agents: tasks of a `backend: manual` role are taken by people through `executor task`,
while a run goes on (through its inbox) or while none does (on the store, under the lock).
Real `executor` processes, a real store."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from protocol.events import TaskTransition
from session.store import StoreReader
from tests.conftest import EXECUTOR
from tests.sessions import command_role_extra, write_session
from tests.test_mcp_bridge import ENV, RunningBridge


def _session(folder: Path) -> Path:
    extra = command_role_extra(sys.executable)
    write_session(
        folder,
        {"designer": "DSN", "coder": "IMPL"},
        {"DSN-001": [], "IMPL-001": []},
        role_extra={"designer": "backend: manual\n", "coder": extra},
    )
    (folder / "behaviors.json").write_text(json.dumps({"default": {"sleep": 0.1}}))
    return folder


def _task(folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(EXECUTOR), "task", *args, "--session", str(folder)],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=60,
        check=False,
    )


def _ok(folder: Path, *args: str) -> str:
    result = _task(folder, *args)
    assert result.returncode == 0, (args, result.stdout, result.stderr)
    return result.stdout


def _statuses(folder: Path) -> dict[str, str]:
    listed = json.loads(_ok(folder, "status", "--json"))
    return {task["id"]: task["lifecycle"] for task in listed["tasks"]}


def _wait(folder: Path, check: Any, timeout_s: float = 60) -> dict[str, str]:
    deadline = time.monotonic() + timeout_s
    while True:
        statuses = _statuses(folder)
        if check(statuses) or time.monotonic() > deadline:
            return statuses
        time.sleep(0.3)


def test_a_manual_task_goes_through_its_lifecycle_while_the_automatic_task_after_it_waits(tmp_path: Path) -> None:
    folder = _session(tmp_path / "s")
    run = subprocess.Popen(
        [str(EXECUTOR), "run", "--session", str(folder)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=ENV,
    )
    try:
        statuses = _wait(folder, lambda s: s.get("IMPL-001") == "completed")
        assert statuses == {"DSN-001": "ready", "IMPL-001": "completed"}, "the manual task is never dispatched"
        assert run.poll() is None, "the run waits for the manual task"

        assert "DSN-002" in _ok(folder, "create", "Design the export API", "--role", "designer", "--priority", "P0")
        created = _ok(folder, "create", "Implement the export", "--role", "coder", "--blocked-by", "DSN-002")
        assert "IMPL-002" in created
        _ok(
            folder,
            "prep",
            "DSN-002",
            "--goal",
            "An export API the coder can build from",
            "--accept",
            "endpoints listed",
            "--accept",
            "errors specified",
            "--done",
            "reviewed by the lead",
            "--file",
            "docs/export.md",
        )
        suggestion = _ok(folder, "next", "--agent", "alice")
        assert suggestion.startswith("DSN-002: P0"), suggestion
        assert "1 task(s) wait for it" in suggestion

        wrong = _task(folder, "claim", "IMPL-002", "--agent", "alice")
        assert wrong.returncode == 1
        assert "which the executor runs itself" in wrong.stderr
        assert "claimed: in_progress, agent alice" in _ok(folder, "claim", "DSN-002", "--agent", "alice")
        taken = _task(folder, "claim", "DSN-002", "--agent", "bob")
        assert taken.returncode == 1
        assert "in_progress by alice" in taken.stderr
        assert "handed in: review" in _ok(folder, "review", "DSN-002")
        # That the automatic task is not started meanwhile is proven without waiting in
        # tests/test_runtime.py::test_a_manual_task_in_review_holds_its_dependants_until_a_person_completes_it.
        statuses = _statuses(folder)
        assert statuses["DSN-002"] == "review"
        assert statuses["IMPL-002"] == "pending", "the automatic task waits while its blocker is in review"
        checked = subprocess.run(
            [str(EXECUTOR), "check", "--session", str(folder)], capture_output=True, text=True, env=ENV, check=False
        )
        assert "Traceback" not in checked.stderr, checked.stderr
        assert "◐ DSN-002" in checked.stdout, checked.stdout
        assert not (folder / "artifacts" / "IMPL-002-out.md").exists()

        mirror = folder / "tasks" / "review" / "DSN-002.md"
        assert mirror.exists(), sorted(str(p.relative_to(folder)) for p in (folder / "tasks").rglob("*.md"))
        assert "errors specified" in mirror.read_text()

        assert "completed: completed" in _ok(folder, "complete", "DSN-002")
        statuses = _wait(folder, lambda s: s.get("IMPL-002") == "completed")
        assert statuses["IMPL-002"] == "completed", "released by the completion, the automatic task ran"
        assert (folder / "tasks" / "completed" / "DSN-002.md").exists()
        assert not mirror.exists()

        _ok(folder, "claim", "DSN-001", "--agent", "bob")
        failed = _ok(folder, "fail", "DSN-001", "--reason", "the brief contradicts itself")
        assert "failed: failed" in failed
        output, _ = run.communicate(timeout=60)
    finally:
        if run.poll() is None:
            run.kill()
            run.communicate()
    assert run.returncode == 1, output  # DSN-001 failed
    assert "DSN-002 completed by alice; unblocked IMPL-002" in output

    reader = StoreReader.open(folder)
    assert reader is not None
    try:
        moves = [
            (event.task_id, event.from_status, event.to_status)
            for _, _, event in reader.events()
            if isinstance(event, TaskTransition) and event.from_status != event.to_status
        ]
        failed_row = reader.task("DSN-001")
    finally:
        reader.close()
    assert moves == [
        ("DSN-002", "ready", "in_progress"),
        ("DSN-002", "in_progress", "review"),
        ("DSN-002", "review", "completed"),
        ("DSN-001", "ready", "in_progress"),
        ("DSN-001", "in_progress", "failed"),
    ]
    assert failed_row is not None
    assert failed_row.last_error_kind == "reported_failed"


def test_without_a_run_the_steps_land_in_the_store_and_the_next_run_goes_on(tmp_path: Path) -> None:
    folder = _session(tmp_path / "s")
    early = _task(folder, "claim", "DSN-001", "--agent", "alice")
    assert early.returncode == 1
    assert "has not run yet" in early.stderr

    run = subprocess.Popen(
        [str(EXECUTOR), "run", "--session", str(folder)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=ENV,
    )
    try:
        _wait(folder, lambda s: s.get("IMPL-001") == "completed")
        run.send_signal(signal.SIGINT)
        run.communicate(timeout=60)
    finally:
        if run.poll() is None:
            run.kill()
            run.communicate()
    # No run now: each step is written to the store under the session lock.
    (folder / "agents.yaml").write_text("agents:\n  - name: alice\n    capabilities: [python]\n")
    _ok(folder, "prep", "DSN-001", "--needs", "security")
    lacking = _task(folder, "claim", "DSN-001", "--agent", "alice")
    assert lacking.returncode == 1
    assert "DSN-001 needs security, which agents.yaml does not give alice" in lacking.stderr
    assert "need what you lack: security" in _task(folder, "next", "--agent", "alice").stdout
    _ok(folder, "prep", "DSN-001", "--needs", "python")
    assert "claimed: in_progress, agent alice" in _ok(folder, "claim", "DSN-001", "--agent", "alice")
    resumed = subprocess.Popen(
        [str(EXECUTOR), "resume", "--session", str(folder)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=ENV,
    )
    try:
        time.sleep(2.0)
        assert resumed.poll() is None, "the resumed run waits for the claimed task"
        statuses = _statuses(folder)
        assert statuses["DSN-001"] == "in_progress", "a claimed task is not an orphan to reset"
        assert "completed: completed" in _ok(folder, "complete", "DSN-001")
        output, _ = resumed.communicate(timeout=60)
    finally:
        if resumed.poll() is None:
            resumed.kill()
            resumed.communicate()
    assert resumed.returncode == 0, output
    assert "DSN-001 completed by alice" in output


def test_the_same_steps_are_mcp_tools(tmp_path: Path) -> None:
    folder = _session(tmp_path / "s")
    bridge = RunningBridge(folder)
    try:
        _wait(folder, lambda s: s.get("IMPL-001") == "completed")
        created = bridge.call("task_create", {"title": "Implement it", "role": "coder", "blocked_by": ["DSN-001"]})
        assert not created.is_error, created.content
        follow_up = created.structured_content["id"]
        suggestion = bridge.call("task_next", {"agent": "ide-agent"}).structured_content
        assert suggestion["task_id"] == "DSN-001"
        prepared = bridge.call("task_prep", {"task_id": "DSN-001", "acceptance_criteria": ["has a diagram"]})
        assert not prepared.is_error, prepared.content
        claimed = bridge.call("task_claim", {"task_id": "DSN-001", "agent": "ide-agent"})
        assert claimed.structured_content["agent"] == "ide-agent"
        refused = bridge.call("task_complete", {"task_id": follow_up})
        assert refused.is_error
        assert "only a claimed task" in " ".join(part.text for part in refused.content)
        assert bridge.call("task_review", {"task_id": "DSN-001"}).structured_content["status"] == "review"
        assert bridge.call("task_complete", {"task_id": "DSN-001"}).structured_content["status"] == "completed"
        statuses = _wait(folder, lambda s: s.get(follow_up) == "completed")
        assert statuses[follow_up] == "completed"
        assert "has a diagram" in _ok(folder, "status", "DSN-001")
    finally:
        bridge.stop()


def test_a_claim_whose_agent_goes_silent_is_released_for_someone_else(tmp_path: Path) -> None:
    folder = _session(tmp_path / "s")
    spec = folder / "role-specs" / "designer.md"
    spec.write_text(spec.read_text().replace("backend: manual\n", "backend: manual\nclaim_idle_timeout: 2\n"))
    run = subprocess.Popen(
        [str(EXECUTOR), "run", "--session", str(folder)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=ENV,
    )
    try:
        _wait(folder, lambda s: s.get("IMPL-001") == "completed")
        _ok(folder, "claim", "DSN-001", "--agent", "alice")
        statuses = _wait(folder, lambda s: s["DSN-001"] == "ready", timeout_s=30)
        assert statuses["DSN-001"] == "ready", "alice said nothing for 2 s: the task is free again"
        assert "claimed: in_progress, agent bob" in _ok(folder, "claim", "DSN-001", "--agent", "bob")
        _ok(folder, "complete", "DSN-001")
        output, _ = run.communicate(timeout=60)
    finally:
        if run.poll() is None:
            run.kill()
            run.communicate()
    assert run.returncode == 0, output
    assert "DSN-001 released: alice was silent for" in output
    assert "DSN-001 completed by bob" in output
