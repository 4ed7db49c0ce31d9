"""The review feedback loop: a reviewer's changes_requested sends the work back with its feedback
(in the next prompt and in feedback/<ID>.md), the review runs again, and past the role's
review_rounds the user decides.  Real `executor run` processes with scripted agents."""

from __future__ import annotations

import json
import re
import signal
import sys
import time
from pathlib import Path
from typing import Any

import psutil

from protocol.events import ChangesRequested
from session.store import StoreReader
from tests.sessions import command_role_extra, write_session
from tests.test_mcp_bridge import RunningBridge
from tests.test_run import finish, start_executor, tasks_of, wait_until

GRAPH = {"IMPL-001": [], "REV-001": ["IMPL-001"], "DOC-001": ["REV-001"]}
FEEDBACK = [
    "slugify drops non-ASCII letters: transliterate them",
    {"file": "textkit.py", "line": 12, "issue": "no test"},
]


def _session(folder: Path, behaviors: dict[str, Any], reviewer_extra: str = "") -> Path:
    extra = command_role_extra(sys.executable)
    write_session(
        folder,
        {"coder": "IMPL", "reviewer": "REV", "writer": "DOC"},
        GRAPH,
        role_extra={"coder": extra, "reviewer": extra + reviewer_extra, "writer": extra},
    )
    (folder / "behaviors.json").write_text(json.dumps(behaviors))
    return folder


def _attempts(folder: Path, task_id: str) -> list[str]:
    return (folder / "artifacts" / f"{task_id}-out.md").read_text().splitlines()


def test_changes_requested_reach_the_writers_next_prompt_and_the_review_runs_again(
    tmp_path: Path, executor_cli: Any
) -> None:
    verdict = {"status": "changes_requested", "summary": "two problems", "feedback": FEEDBACK}
    folder = _session(
        tmp_path / "s",
        {
            "IMPL-001": {"save_prompt": True},
            "REV-001": {"report": verdict, "report_attempts": 1},  # asks once, then passes
        },
    )
    result = executor_cli("run", "--session", str(folder))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "REV-001 requested changes on IMPL-001 (round 1 of 3)" in result.stdout

    assert len(_attempts(folder, "IMPL-001")) == 2, "the writer went again"
    assert len(_attempts(folder, "REV-001")) == 2, "the review ran again after it"
    assert len(_attempts(folder, "DOC-001")) == 1, "what waits on the review ran once, after it passed"
    first = (folder / "artifacts" / "IMPL-001-prompt-1.md").read_text()
    second = (folder / "artifacts" / "IMPL-001-prompt-2.md").read_text()
    assert "transliterate" not in first
    assert "slugify drops non-ASCII letters: transliterate them" in second
    assert "textkit.py:12: no test" in second
    feedback = (folder / "feedback" / "IMPL-001.md").read_text()
    assert "## Round 1 — changes requested by REV-001" in feedback
    assert "- [ ] textkit.py:12: no test" in feedback

    reader = StoreReader.open(folder)
    assert reader is not None
    try:
        sent_back = [event for _, _, event in reader.events() if isinstance(event, ChangesRequested)]
        statuses = {row.id: row.status for row in reader.tasks()}
        review_runs = [run.outcome for run in reader.runs("REV-001")]
    finally:
        reader.close()
    assert [(event.task_id, event.review_task, event.round) for event in sent_back] == [("IMPL-001", "REV-001", 1)]
    assert statuses == dict.fromkeys(GRAPH, "completed")
    assert review_runs == ["changes_requested", "completed"]


def test_past_its_review_rounds_the_user_decides(tmp_path: Path, executor_cli: Any) -> None:
    verdict = {"status": "changes_requested", "feedback": ["still wrong"], "reviewed_task": "IMPL-001"}
    folder = _session(tmp_path / "s", {"REV-001": {"report": verdict}}, reviewer_extra="review_rounds: 2\n")
    result = executor_cli("run", "--session", str(folder))
    assert result.returncode == 1, result.stdout + result.stderr
    assert len(_attempts(folder, "IMPL-001")) == 3, "the first attempt and two rounds"
    assert "still not accepted after 2 round(s) on IMPL-001" in result.stdout
    assert not (folder / "artifacts" / "DOC-001-out.md").exists(), "nothing after an unaccepted review runs"
    listed = executor_cli("answer", "--session", str(folder))
    assert "REV-001 still requests changes on IMPL-001 after 2 review round(s)" in listed.stdout
    assert "accept" in listed.stdout
    assert (folder / "feedback" / "IMPL-001.md").read_text().count("## Round") == 2
    escalation = re.search(r"ESC-\d+", listed.stdout).group(0)
    accepted = executor_cli("answer", escalation, "accept", "--session", str(folder))
    assert accepted.returncode == 0, accepted.stdout + accepted.stderr
    resumed = executor_cli("resume", "--session", str(folder))
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert len(_attempts(folder, "DOC-001")) == 1, "accepting the work lets what waited on the review go on"
    assert len(_attempts(folder, "IMPL-001")) == 3, "accepting sends nothing back"


GATE = (
    "import pathlib, sys\n"
    "lines = pathlib.Path(sys.argv[1]).read_text().splitlines()\n"
    "print(f'checked {len(lines)} attempt(s): the tests need the second one')\n"
    "sys.exit(0 if len(lines) >= 2 else 1)\n"
)


def test_a_failing_gate_writes_its_feedback_file_and_sends_the_task_back(tmp_path: Path, executor_cli: Any) -> None:
    folder = tmp_path / "s"
    artifact = folder / "artifacts" / "IMPL-001-out.md"
    verify = json.dumps([[sys.executable, "-c", GATE, str(artifact)]])
    extra = command_role_extra(sys.executable)
    write_session(
        folder,
        {"coder": "IMPL", "writer": "DOC"},
        {"IMPL-001": [], "DOC-001": ["IMPL-001"]},
        role_extra={"coder": extra + f"verify: {verify}\n", "writer": extra},
    )
    (folder / "behaviors.json").write_text(json.dumps({"IMPL-001": {"save_prompt": True}}))
    result = executor_cli("run", "--session", str(folder), "--retry-backoff", "0")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "gate_failed" in result.stdout
    assert len(_attempts(folder, "IMPL-001")) == 2
    feedback = (folder / "feedback" / "IMPL-001.md").read_text()
    assert "## Gate failed" in feedback
    assert "checked 1 attempt(s): the tests need the second one" in feedback
    second_prompt = (folder / "artifacts" / "IMPL-001-prompt-2.md").read_text()
    assert "checked 1 attempt(s)" in second_prompt, "the failing output reaches the implementer"
    assert len(_attempts(folder, "DOC-001")) == 1, "what depends on it ran once the gate passed"


SLOW_GATE = "import os, pathlib, sys, time\npathlib.Path(sys.argv[1]).write_text(str(os.getpid()))\ntime.sleep(300)\n"


def test_a_run_stopped_during_a_gate_stops_the_gate_and_blames_no_one(tmp_path: Path) -> None:
    # A test suite takes minutes; Ctrl-C meanwhile must stop it with the run (it ran on for up to
    # its 600 s timeout, orphaned), and the attempt is interrupted, not failed by its gate.
    folder = tmp_path / "s"
    pid_file = tmp_path / "gate.pid"
    verify = json.dumps([[sys.executable, "-c", SLOW_GATE, str(pid_file)]])
    extra = command_role_extra(sys.executable)
    write_session(folder, {"coder": "IMPL"}, {"IMPL-001": []}, role_extra={"coder": extra + f"verify: {verify}\n"})
    (folder / "behaviors.json").write_text("{}")
    process = start_executor("run", "--session", str(folder), "--shutdown-grace", "5")
    wait_until(lambda: pid_file.exists() and pid_file.read_text() != "")
    gate = psutil.Process(int(pid_file.read_text()))
    process.send_signal(signal.SIGTERM)
    code, out, err = finish(process, timeout=90)
    assert code == 0, out + err
    try:
        assert gate.wait(timeout=10) is not None or not gate.is_running()
    except psutil.TimeoutExpired:
        gate.kill()
        raise AssertionError("the gate ran on after the run stopped") from None
    assert not (folder / "feedback" / "IMPL-001.md").exists(), "a stopped gate is not a failed one"
    assert tasks_of(folder)["IMPL-001"]["status"] == "pending"  # runs again, gates included, on resume
    reader = StoreReader.open(folder)
    assert reader is not None
    try:
        (run,) = reader.runs("IMPL-001")
    finally:
        reader.close()
    assert (run.outcome, run.error_kind) == ("interrupted", "interrupted")
    assert run.error == "stopped during its quality gates"


def test_accepting_during_the_run_lets_what_waits_on_the_review_go_on(tmp_path: Path) -> None:
    verdict = {"status": "changes_requested", "feedback": ["still wrong"]}
    folder = _session(tmp_path / "s", {"REV-001": {"report": verdict}}, reviewer_extra="review_rounds: 1\n")
    bridge = RunningBridge(folder)
    try:
        deadline = time.monotonic() + 60
        questions: list[dict[str, Any]] = []
        while not questions and time.monotonic() < deadline:
            questions = bridge.call("list_escalations", {"status": "open"}).structured_content["escalations"]
            time.sleep(0.3)
        assert questions, "the second unaccepted review asks the user"
        answered = bridge.call("answer_escalation", {"id": questions[0]["id"], "choice": "accept"})
        assert not answered.is_error, answered.content
        status = bridge.wait_status("DOC-001", {"completed"})
        assert status["task"]["status"] == "completed", "accepted during the run, the rest went on at once"
    finally:
        bridge.stop()
