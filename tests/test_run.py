"""`executor run` / `resume` end to end: real executor processes, real worker processes.

Scheduling decisions that need no real process (retries and their prompts, inner loops,
consensus, capability gaps, budgets) are tested in process: tests/test_runtime.py."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from session.store import StoreReader
from tests.conftest import EXECUTOR
from tests.sessions import copy_demo, scripted_session, write_session

PY = sys.executable
FAST = ["--retry-backoff", "0.05"]


def tasks_of(folder: Path) -> dict[str, dict]:
    reader = StoreReader.open(folder)
    assert reader is not None
    try:
        return {
            t.id: {"status": t.status, "attempts": t.attempts, "kind": t.last_error_kind, "error": t.last_error}
            for t in reader.tasks()
        }
    finally:
        reader.close()


def completed_events(folder: Path) -> dict[str, int]:
    reader = StoreReader.open(folder)
    assert reader is not None
    try:
        counts: dict[str, int] = {}
        for row in reader.conn.execute("SELECT task_id FROM events WHERE type = 'task_completed'"):
            counts[row[0]] = counts.get(row[0], 0) + 1
        return counts
    finally:
        reader.close()


def runs_of(folder: Path) -> list:
    reader = StoreReader.open(folder)
    if reader is None:  # polled before the executor created the schema
        return []
    try:
        return reader.runs()
    finally:
        reader.close()


def check_json(executor_cli, folder: Path) -> dict:
    return json.loads(executor_cli("check", "--session", str(folder), "--json").stdout)


def test_the_demo_runs_to_completion_and_check_shows_100_percent(executor_cli, tmp_path):
    demo = copy_demo(tmp_path / "demo")
    result = executor_cli("run", "--session", str(demo))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "pipeline complete" in result.stdout
    assert "artifacts/QA-001-test-report.md  (qa, QA-001)" in result.stdout
    data = check_json(executor_cli, demo)
    assert data["progress"] == {"completed": 5, "total": 5, "percent": 100.0}
    for name in (
        "PLAN-001-plan.md",
        "ARCH-001-design.md",
        "IMPL-001-impl.md",
        "IMPL-002-impl.md",
        "QA-001-test-report.md",
    ):
        assert (demo / "artifacts" / name).stat().st_size > 100
    assert "PLAN-001" in (demo / "artifacts" / "ARCH-001-design.md").read_text(), "upstream context travels"
    session_file = json.loads((demo / "team-session.json").read_text())
    assert session_file["completed_tasks"] == ["PLAN-001", "ARCH-001", "IMPL-001", "IMPL-002", "QA-001"]
    assert session_file["active_workers"] == []
    assert session_file["status"] == "paused"  # the demo's completion_action is auto_keep
    messages = [json.loads(line) for line in (demo / ".msg" / "messages.jsonl").read_text().splitlines()]
    assert [m["id"] for m in messages[:3]] == ["MSG-001", "MSG-002", "MSG-003"]
    completes = [m for m in messages if m["type"] == "task_complete"]
    assert len(completes) == 5
    assert completes[0]["summary"].startswith("[pm]")
    assert completes[-1]["summary"].endswith("All my tasks done. Pipeline may be complete.")
    assert completed_events(demo) == dict.fromkeys(["PLAN-001", "ARCH-001", "IMPL-001", "IMPL-002", "QA-001"], 1)


def test_executor_demo_copies_and_runs_the_built_in_session(executor_cli, tmp_path):
    result = executor_cli("demo", "--into", str(tmp_path / "d"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "progress: 3/3 (100%)" in result.stdout  # the story; tests/test_demo_story.py follows it closely


def test_a_role_without_a_backend_is_refused_with_the_choices(executor_cli, tmp_path):
    folder = write_session(tmp_path / "s", {"coder": "IMPL"}, {"IMPL-001": []})
    result = executor_cli("run", "--session", str(folder))
    assert result.returncode == 2
    assert "no backend for role(s) coder: pass --backend NAME" in result.stderr
    choices = "backends: aider, claude, codex, command, demo, gemini, manual, mcp, openai, opencode, qwen"
    assert result.stderr.count(choices) == 1, "the choices are listed once"
    assert not (folder / ".executor" / "lock").exists() or "Traceback" not in result.stderr


def test_an_unknown_backend_is_refused_naming_the_role_spec(executor_cli, tmp_path):
    folder = write_session(tmp_path / "s", {"coder": "IMPL"}, {"IMPL-001": []}, role_extra={"coder": "backend: gpt9\n"})
    result = executor_cli("run", "--session", str(folder))
    assert result.returncode == 2
    choices = "aider, claude, codex, command, demo, gemini, manual, mcp, openai, opencode, qwen"
    assert "role-specs/coder.md: unknown backend 'gpt9' (role coder)" in result.stderr
    assert f"backends: {choices}" in result.stderr


def test_a_crashing_worker_is_retried_then_failed_and_its_dependants_blocked(executor_cli, tmp_path):
    folder = scripted_session(
        tmp_path / "s",
        {"A-001": [], "A-002": ["A-001"], "A-003": [], "A-004": ["A-002"]},
        {"A-001": {"exit": 3}},
        python=PY,
    )
    result = executor_cli("run", "--session", str(folder), "--max-attempts", "2", *FAST)
    assert result.returncode == 1, result.stdout + result.stderr
    tasks = tasks_of(folder)
    assert tasks["A-001"]["status"] == "failed"
    assert tasks["A-001"]["attempts"] == 2
    assert tasks["A-001"]["kind"] == "crash"
    assert "exited with code 3" in tasks["A-001"]["error"]
    assert tasks["A-003"]["status"] == "completed"
    assert tasks["A-002"]["status"] == tasks["A-004"]["status"] == "pending"
    assert "failed: A-001" in result.stdout
    data = check_json(executor_cli, folder)
    assert data["failed"][0]["id"] == "A-001"
    assert {b["id"] for b in data["blocked"]} == {"A-002", "A-004"}
    log_tail = (folder / ".executor" / "logs" / "A-001-a2.log").read_text()
    assert "exiting with 3" in log_tail


def test_a_silent_worker_is_stopped_as_hung_and_leaves_no_process(executor_cli, tmp_path):
    folder = scripted_session(tmp_path / "s", {"A-001": []}, {"A-001": {"hang": True}}, python=PY)
    result = executor_cli("run", "--session", str(folder), "--hang-timeout", "0.5", "--max-attempts", "1")
    assert result.returncode == 1, result.stdout + result.stderr
    assert tasks_of(folder)["A-001"]["kind"] == "hang"
    (run,) = runs_of(folder)
    assert run.pid is not None
    assert not psutil.pid_exists(run.pid) or psutil.Process(run.pid).status() == psutil.STATUS_ZOMBIE


def test_a_worker_past_its_time_is_stopped_as_timed_out(executor_cli, tmp_path):
    folder = scripted_session(tmp_path / "s", {"A-001": []}, {"A-001": {"chatter": True}}, python=PY)
    result = executor_cli(
        "run", "--session", str(folder), "--task-timeout", "1", "--hang-timeout", "30", "--max-attempts", "1"
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert tasks_of(folder)["A-001"]["kind"] == "timeout"


def test_a_worker_killed_by_a_signal_is_a_crash(executor_cli, tmp_path):
    folder = scripted_session(tmp_path / "s", {"A-001": []}, {"A-001": {"signal": 9}}, python=PY)
    result = executor_cli("run", "--session", str(folder), "--max-attempts", "1")
    assert result.returncode == 1
    task = tasks_of(folder)["A-001"]
    assert (task["kind"], task["error"]) == ("crash", "killed by signal SIGKILL")


def test_megabytes_of_output_go_to_the_log_in_the_session_folder(executor_cli, tmp_path):
    folder = scripted_session(tmp_path / "s", {"A-001": [], "A-002": ["A-001"]}, {"A-001": {"spam_mb": 20}}, python=PY)
    result = executor_cli("run", "--session", str(folder))
    assert result.returncode == 0, result.stdout + result.stderr
    assert (folder / ".executor" / "logs" / "A-001-a1.log").stat().st_size >= 20 * 1024 * 1024
    assert tasks_of(folder)["A-002"]["status"] == "completed"


def test_json_events_stream_one_event_per_line(executor_cli, tmp_path):
    demo = copy_demo(tmp_path / "demo")
    result = executor_cli("run", "--session", str(demo), "--json-events")
    assert result.returncode == 0, result.stderr
    events = [json.loads(line) for line in result.stdout.splitlines()]
    types = [e["type"] for e in events]
    assert types[0] == "run_started"
    assert types.count("task_completed") == 5
    assert types[-1] == "shutdown_completed"
    assert all("occurred_at" in e for e in events)
    assert "pipeline complete" in result.stderr


def test_auto_archive_completes_the_session_and_export_copies_artifacts(executor_cli, tmp_path):
    demo = copy_demo(tmp_path / "demo")
    result = executor_cli("run", "--session", str(demo), "--export", str(tmp_path / "out"))
    assert result.returncode == 0, result.stderr
    assert json.loads((demo / "team-session.json").read_text())["status"] == "completed"
    assert (tmp_path / "out" / "QA-001-test-report.md").is_file()


def test_consensus_blocked_high_creates_one_revision_then_waits_for_the_user(executor_cli, tmp_path):
    high = {
        "report": {
            "status": "consensus_blocked",
            "severity": "HIGH",
            "summary": "no agreement",
            "detail": "reviewers disagree on the API",
        }
    }
    folder = scripted_session(
        tmp_path / "s",
        {"A-001": [], "A-002": ["A-001"], "B-001": []},
        {"A-001": high, "A-003": high},
        python=PY,
        roles={"writer": "A", "other": "B"},
    )
    result = executor_cli("run", "--session", str(folder), *FAST)
    tasks = tasks_of(folder)
    assert "created revision task A-003" in result.stdout
    assert tasks["A-001"]["status"] == "completed"
    assert tasks["A-003"]["status"] == "failed"
    assert tasks["A-003"]["kind"] == "needs_decision"
    assert tasks["A-002"]["status"] == "pending", "A-002 waits for the revision's decision"
    assert tasks["B-001"]["status"] == "completed", "unrelated work goes on"
    assert result.returncode == 1
    # The decision is a question for the user; answered while no run is live, the next run acts on it.
    listed = executor_cli("answer", "--session", str(folder), "--json")
    (question,) = json.loads(listed.stdout)
    assert question["task_id"] == "A-003"
    assert question["options"] == ["retry", "accept", "leave failed"]
    answered = executor_cli("answer", question["id"], "accept", "--session", str(folder))
    assert answered.returncode == 0, answered.stderr
    resumed = executor_cli("resume", "--session", str(folder), *FAST)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "A-003 accepted as done" in resumed.stdout
    tasks = tasks_of(folder)
    assert tasks["A-003"]["status"] == "completed"
    assert tasks["A-002"]["status"] == "completed", "what waited on the decision goes on"


# --- signals, locks and kill -9 ---------------------------------------------------------------


_STARTED: list[subprocess.Popen] = []


@pytest.fixture(autouse=True)
def _no_executor_left_behind():
    """A test that fails half way must not leave its executor running (nor its pipes open)."""
    yield
    while _STARTED:
        process = _STARTED.pop()
        if process.poll() is None:
            process.kill()
        process.communicate()


def start_executor(*args: str) -> subprocess.Popen:
    process = subprocess.Popen(
        [str(EXECUTOR), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "COLUMNS": "200"},
    )
    _STARTED.append(process)
    return process


def wait_until(predicate, timeout: float = 60, interval: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise AssertionError("condition not reached in time")


def count_status(folder: Path, status: str) -> int:
    if not (folder / ".executor" / "state.db").exists():
        return 0
    try:
        return sum(1 for t in tasks_of(folder).values() if t["status"] == status)
    except AssertionError:
        return 0


def marked_processes(folder: Path) -> list[int]:
    from actors.reconciler import find_marked_processes  # noqa: PLC0415
    from actors.run import _session_marker  # noqa: PLC0415

    return [p.pid for p in find_marked_processes(_session_marker(folder))]


def finish(process: subprocess.Popen, timeout: float = 120) -> tuple[int, str, str]:
    out, err = process.communicate(timeout=timeout)
    return process.returncode, out, err


def test_sigterm_mid_run_exits_0_with_clean_state_and_resume_finishes(executor_cli, tmp_path):
    graph = {f"A-{i:03d}": ([f"A-{i - 1:03d}"] if i > 1 else []) for i in range(1, 7)}
    folder = scripted_session(tmp_path / "s", graph, {"default": {"sleep": 0.4}}, python=PY)
    process = start_executor("run", "--session", str(folder), "--shutdown-grace", "5")
    wait_until(lambda: count_status(folder, "completed") >= 2)
    process.send_signal(signal.SIGTERM)
    code, out, err = finish(process)
    assert code == 0, out + err
    tasks = tasks_of(folder)
    assert not [t for t, v in tasks.items() if v["status"] == "in_progress"]
    reader = StoreReader.open(folder)
    assert reader is not None
    assert reader.meta()["clean_stop"] == "1"
    assert reader.open_runs() == []
    reader.close()
    assert json.loads((folder / "team-session.json").read_text())["status"] == "paused"
    result = executor_cli("resume", "--session", str(folder))
    assert result.returncode == 0, result.stdout + result.stderr
    assert set(completed_events(folder).values()) == {1}
    assert len(completed_events(folder)) == 6


def test_a_storm_of_sigterms_still_stops_cleanly_with_exit_0(executor_cli, tmp_path):
    """One SIGTERM every 50 ms until the process is gone: the first stops the run, the second
    stops the workers at once, the rest must not cut the closing short (exit 143)."""
    graph = {f"A-{i:03d}": ([f"A-{i - 1:03d}"] if i > 1 else []) for i in range(1, 7)}
    folder = scripted_session(tmp_path / "s", graph, {"default": {"sleep": 0.4}}, python=PY)
    process = start_executor("run", "--session", str(folder), "--shutdown-grace", "5")
    wait_until(lambda: count_status(folder, "completed") >= 1)
    sent = 0
    while process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)
            sent += 1
        time.sleep(0.05)
    code, out, err = finish(process)
    assert sent >= 3, "the storm reached the closing phase"
    assert code == 0, f"exit {code} after {sent} SIGTERMs\n{out}{err}"
    assert "run stopped on request; state saved" in out
    assert not [t for t, v in tasks_of(folder).items() if v["status"] == "in_progress"]
    assert marked_processes(folder) == []
    result = executor_cli("resume", "--session", str(folder))
    assert result.returncode == 0, result.stdout + result.stderr
    assert len(completed_events(folder)) == 6


def test_a_second_ctrl_c_stops_running_workers_at_once_without_losing_state(executor_cli, tmp_path):
    folder = scripted_session(tmp_path / "s", {"A-001": [], "A-002": []}, {"default": {"hang": True}}, python=PY)
    process = start_executor("run", "--session", str(folder), "--shutdown-grace", "600", "--hang-timeout", "600")
    wait_until(lambda: len([r for r in runs_of(folder) if r.pid]) == 2)
    process.send_signal(signal.SIGINT)
    time.sleep(0.5)
    process.send_signal(signal.SIGINT)
    code, out, err = finish(process, timeout=60)
    assert code == 0, out + err
    assert {t["status"] for t in tasks_of(folder).values()} == {"pending"}
    assert all(r.outcome == "interrupted" for r in runs_of(folder))
    assert marked_processes(folder) == []


def test_a_second_executor_refuses_while_one_runs_then_starts_after_kill_9(executor_cli, tmp_path):
    # A-001 outlives the checks below whatever the machine's load; the resume after the kill runs it quickly.
    folder = scripted_session(tmp_path / "s", {"A-001": [], "A-002": ["A-001"]}, {"A-001": {"sleep": 60}}, python=PY)
    first = start_executor("run", "--session", str(folder))
    wait_until(lambda: any(r.pid for r in runs_of(folder)))
    live = check_json(executor_cli, folder)
    assert live["executor"]["running"] is True
    assert live["executor"]["pid"] == first.pid
    (worker,) = live["active_workers"]
    assert (worker["task_id"], worker["role"], worker["backend"]) == ("A-001", "worker", "command")
    assert worker["pid"]
    assert worker["elapsed_s"] >= 0
    assert live["tasks"][0]["status"] == "in_progress"
    second = executor_cli("resume", "--session", str(folder))
    assert second.returncode == 1
    assert f"already being run by pid {first.pid}" in second.stderr
    first.kill()
    first.communicate()
    (folder / "behaviors.json").write_text('{"A-001": {"sleep": 0.1}}')
    third = executor_cli("resume", "--session", str(folder))
    assert third.returncode == 0, third.stdout + third.stderr
    assert "recovered from an unclean stop" in third.stdout
    assert set(completed_events(folder).values()) == {1}


PIPELINE = {
    "A-001": [],
    "A-002": [],
    "A-003": ["A-001"],
    "A-004": ["A-001", "A-002"],
    "A-005": ["A-003"],
    "A-006": ["A-004"],
    "A-007": ["A-005", "A-006"],
    "A-008": ["A-006"],
    "A-009": ["A-007"],
    "A-010": ["A-008"],
}


@pytest.mark.parametrize("kill_after_completed", [0, 3, 6])
def test_kill_9_mid_pipeline_then_resume_runs_each_task_to_completion_exactly_once(
    executor_cli, tmp_path, kill_after_completed
):
    behaviors = {"default": {"sleep": 0.3}, "A-004": {"sleep": 0.6, "grandchild": True}}
    folder = scripted_session(tmp_path / "s", PIPELINE, behaviors, python=PY)
    process = start_executor("run", "--session", str(folder), "--max-workers", "3")
    wait_until(
        lambda: count_status(folder, "completed") >= kill_after_completed and count_status(folder, "in_progress") >= 1
    )
    process.kill()
    process.communicate()
    killed_run_pids = [r.pid for r in runs_of(folder) if r.pid and r.ended_at is None]

    result = executor_cli("resume", "--session", str(folder), "--max-workers", "3")
    assert result.returncode == 0, result.stdout + result.stderr
    counts = completed_events(folder)
    assert sorted(counts) == sorted(PIPELINE)
    assert set(counts.values()) == {1}, f"a task completed twice: {counts}"
    for pid in killed_run_pids:
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    assert marked_processes(folder) == [], "no process of the killed run (or its grandchildren) is left"
    reports = list((folder / ".executor" / "recovery").glob("*.md"))
    assert len(reports) == 1
    text = reports[0].read_text()
    assert "did not stop cleanly" in text
    assert "## What was reset" in text


def _crash_first_prompt(folder: Path) -> None:
    """The first attempt's prompt path is a folder: writing the prompt raises inside the
    executor (our code, not the agent)."""
    (folder / ".executor" / "prompts" / "A-001-a1.md").mkdir(parents=True)


def _event_types(folder: Path) -> list[str]:
    reader = StoreReader.open(folder)
    assert reader is not None
    types = [event.__struct_config__.tag for _, _, event in reader.events()]
    reader.close()
    return types


def test_a_worker_actor_that_crashes_is_replaced_and_its_task_retried(executor_cli, tmp_path):
    # A role with a quality gate runs on a worker actor (a plain command attempt would run on
    # the Executor's own thread): the failure crashes that actor.
    folder = scripted_session(tmp_path / "s", {"A-001": [], "A-002": []}, {}, python=PY)
    spec = folder / "role-specs" / "worker.md"
    spec.write_text(spec.read_text().replace("backend: command\n", 'backend: command\nverify: ["true"]\n', 1))
    _crash_first_prompt(folder)
    result = executor_cli("run", "--session", str(folder), *FAST)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "A-001 attempt 1 failed (worker_crashed" in result.stdout
    tasks = tasks_of(folder)
    assert tasks["A-001"] == {"status": "completed", "attempts": 2, "kind": None, "error": None}
    assert tasks["A-002"]["status"] == "completed"
    types = _event_types(folder)
    assert "worker_crashed" in types
    assert "worker_restarted" in types
    assert "Traceback" not in result.stdout + result.stderr


def test_a_failure_of_ours_in_an_attempt_on_the_executor_s_thread_fails_that_attempt_alone(executor_cli, tmp_path):
    folder = scripted_session(tmp_path / "s", {"A-001": [], "A-002": []}, {}, python=PY)
    _crash_first_prompt(folder)
    result = executor_cli("run", "--session", str(folder), *FAST)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "A-001 attempt 1 failed (worker_crashed" in result.stdout
    assert "IsADirectoryError" in result.stdout  # what went wrong, named
    tasks = tasks_of(folder)
    assert tasks["A-001"] == {"status": "completed", "attempts": 2, "kind": None, "error": None}
    assert tasks["A-002"]["status"] == "completed"
    types = _event_types(folder)
    assert "worker_crashed" in types
    assert "worker_restarted" not in types  # no actor died: nothing to restart
    assert "Traceback" not in result.stdout + result.stderr


def test_a_workdir_outside_the_project_is_refused(executor_cli, tmp_path):
    folder = scripted_session(tmp_path / "project" / "s", {"A-001": []}, {}, python=PY)
    result = executor_cli("run", "--session", str(folder), "--workdir", str(tmp_path))
    assert result.returncode == 2
    assert "--workdir" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_session_whose_message_bus_cannot_be_opened_is_refused_clearly(executor_cli, tmp_path):
    folder = scripted_session(tmp_path / "s", {"A-001": []}, {}, python=PY)
    (folder / ".msg" / "messages.jsonl").mkdir()
    result = executor_cli("run", "--session", str(folder))
    assert result.returncode == 1
    assert "messages.jsonl" in result.stderr
    assert "Traceback" not in result.stderr


def test_the_session_config_supplies_backends_and_run_settings_and_flags_still_win(executor_cli, tmp_path):
    demo = copy_demo(tmp_path / "demo")
    for spec in (demo / "role-specs").glob("*.md"):
        spec.write_text(spec.read_text().replace("backend: demo\n", ""))
    (demo / "executor.toml").write_text('[run]\nmax_workers = 1\n\n[roles.pm]\nbackend = "demo"\n')
    refused = executor_cli("run", "--session", str(demo), env={"TEAM_EXECUTOR_CONFIG_DIR": str(tmp_path / "u")})
    assert refused.returncode == 2
    assert "no backend for role(s) architect, coder, qa:" in refused.stderr, "[roles.pm] gave pm its backend"
    (demo / "executor.toml").write_text('[run]\nmax_workers = 1\ndefault_backend = "demo"\n')
    result = executor_cli(
        "run", "--session", str(demo), "--json-events", env={"TEAM_EXECUTOR_CONFIG_DIR": str(tmp_path / "u")}
    )
    assert result.returncode == 0, result.stderr
    started = json.loads(result.stdout.splitlines()[0])
    assert (started["type"], started["max_workers"]) == ("run_started", 1)
    again = copy_demo(tmp_path / "again")
    (again / "executor.toml").write_text("[run]\nmax_workers = 1\n")
    result = executor_cli(
        "run",
        "--session",
        str(again),
        "--json-events",
        "--max-workers",
        "3",
        env={"TEAM_EXECUTOR_CONFIG_DIR": str(tmp_path / "u")},
    )
    assert json.loads(result.stdout.splitlines()[0])["max_workers"] == 3


def test_a_bad_config_refuses_to_start_naming_the_file_and_the_key(executor_cli, tmp_path):
    demo = copy_demo(tmp_path / "demo")
    (demo / "executor.toml").write_text("[run]\nmax_workerz = 2\n")
    result = executor_cli("run", "--session", str(demo), env={"TEAM_EXECUTOR_CONFIG_DIR": str(tmp_path / "u")})
    assert result.returncode == 2
    assert "executor.toml" in result.stderr
    assert "run.max_workerz" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (demo / ".executor").exists(), "nothing half-started"


def costly(cost: float, **extra) -> dict:
    return {"report": {"status": "completed", "cost_usd": cost, "tokens_in": 1000, "tokens_out": 100}, **extra}


def test_the_session_budget_warns_then_stops_dispatch_cleanly_and_resume_respects_it(executor_cli, tmp_path):
    graph = {f"A-{i:03d}": [] for i in range(1, 7)}
    folder = scripted_session(tmp_path / "s", graph, {"default": costly(0.30)}, python=PY)
    (folder / "executor.toml").write_text("[budget]\nsession_usd = 1.0\n")
    result = executor_cli("run", "--session", str(folder), "--max-workers", "1")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "80% of the session budget spent" in result.stdout or "90% of the session budget spent" in result.stdout
    assert "session budget spent ($1.20 of $1.00): no new tasks" in result.stdout
    assert "run stopped: the session budget is spent" in result.stdout
    statuses = [t["status"] for t in tasks_of(folder).values()]
    assert statuses.count("completed") == 4
    assert statuses.count("pending") == 2
    data = check_json(executor_cli, folder)
    assert data["budget"] == {"spent_usd": 1.2, "session_limit_usd": 1.0, "task_limit_usd": None, "state": "exceeded"}
    text = executor_cli("check", "--session", str(folder)).stdout
    assert "spent: $1.2000 of $1.00 — budget spent: no new tasks" in text
    assert "raise [budget].session_usd" in text
    again = executor_cli("resume", "--session", str(folder))
    assert again.returncode == 1
    assert statuses.count("pending") == sum(1 for t in tasks_of(folder).values() if t["status"] == "pending")
    (folder / "executor.toml").write_text("[budget]\nsession_usd = 5.0\n")
    assert executor_cli("resume", "--session", str(folder)).returncode == 0
    assert all(t["status"] == "completed" for t in tasks_of(folder).values())
