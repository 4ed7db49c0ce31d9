"""`executor validate`, `check` and `init` through the real console script."""

from __future__ import annotations

import json
import os
from pathlib import Path

from session.store import Store, TaskRow
from tests.conftest import EXECUTOR
from tests.sessions import copy_demo, write_session

CHECK_JSON_FIELDS = {"session_id", "status", "progress", "tasks", "active_workers", "ready", "failed"}


def snapshot(folder: Path) -> dict[str, tuple[int, float]]:
    return {
        str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime)
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def test_validate_exits_0_on_the_demo(executor_cli, tmp_path):
    demo = copy_demo(tmp_path / "demo")
    result = executor_cli("validate", "--session", str(demo))
    assert result.returncode == 0, result.stderr
    assert "valid: TC-demo-slugify-2026-11-22" in result.stdout


def test_validate_exits_1_and_names_file_field_and_fix(executor_cli, tmp_path):
    folder = write_session(tmp_path / "s", {"coder": "IMPL"}, {"IMPL-001": ["IMPL-404"]})
    result = executor_cli("validate", "--session", str(folder))
    assert result.returncode == 1
    assert "task-analysis.json: $.dependency_graph.IMPL-001: task IMPL-001 depends on unknown task IMPL-404" in (
        result.stdout
    )
    assert "Fix:" in result.stdout
    assert "Traceback" not in result.stdout + result.stderr


def test_validate_json_lists_problems(executor_cli, tmp_path):
    folder = write_session(tmp_path / "s", {"coder": "IMPL"}, {"IMPL-001": []}, team_extra={"status": "x"})
    result = executor_cli("validate", "--session", str(folder), "--json")
    data = json.loads(result.stdout)
    assert result.returncode == 1
    assert data["valid"] is False
    assert data["problems"][0]["file"] == "team-session.json"
    assert data["problems"][0]["field"] == "$.status"


def test_a_usage_error_exits_2(executor_cli):
    result = executor_cli("validate")
    assert result.returncode == 2
    assert "--session" in result.stderr
    assert executor_cli("no-such-command").returncode == 2


def test_check_on_a_fresh_session_shows_the_graph_and_the_next_command(executor_cli, tmp_path):
    demo = copy_demo(tmp_path / "demo")
    result = executor_cli("check", "--session", str(demo))
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "TC-demo-slugify-2026-11-22" in out
    assert "progress: 0/5 (0%)" in out
    assert "legend: ✓ done  ▶ running  ◐ in review  · pending  ✗ failed  ○ not created" in out
    assert "L0   ○ PLAN-001" in out
    assert "ready to spawn (1): PLAN-001" in out
    assert f"next: executor run --session {demo}" in out
    assert "\x1b[" not in out, "piped output must be plain text"


def test_check_json_has_the_documented_fields(executor_cli, tmp_path):
    demo = copy_demo(tmp_path / "demo")
    data = json.loads(executor_cli("check", "--session", str(demo), "--json").stdout)
    assert set(data) >= CHECK_JSON_FIELDS
    assert data["progress"] == {"completed": 0, "total": 5, "percent": 0.0}
    first = data["tasks"][0]
    assert set(first) >= {"id", "owner", "status", "blocked_by", "priority", "attempts"}
    assert data["ready"] == ["PLAN-001"]


def seed_store(folder: Path) -> None:
    """A mid-run state written through the real store: done, running, failed, blocked."""
    store = Store.open(folder)
    store.put_tasks(
        [
            TaskRow(id="A-001", owner="worker", status="completed", attempts=1),
            TaskRow(
                id="A-002",
                owner="worker",
                status="failed",
                blocked_by=["A-001"],
                attempts=3,
                last_error="exited with code 3",
                last_error_kind="crash",
            ),
            TaskRow(id="A-003", owner="worker", status="pending", blocked_by=["A-002"]),
            TaskRow(id="A-004", owner="worker", status="pending", blocked_by=["A-003"]),
            TaskRow(id="A-005", owner="worker", status="pending", blocked_by=["A-001"], priority="P0"),
        ]
    )
    store.set_meta(run_id="R1", clean_stop="1")
    store.close()


def test_check_shows_failures_with_their_error_and_what_they_block(executor_cli, tmp_path):
    folder = write_session(
        tmp_path / "s",
        {"worker": "A"},
        {"A-001": [], "A-002": ["A-001"], "A-003": ["A-002"], "A-004": ["A-003"], "A-005": ["A-001"], "A-006": []},
    )
    seed_store(folder)
    result = executor_cli("check", "--session", str(folder), "--json")
    data = json.loads(result.stdout)
    statuses = {t["id"]: t["status"] for t in data["tasks"]}
    assert statuses == {
        "A-001": "completed",
        "A-002": "failed",
        "A-003": "pending",
        "A-004": "pending",
        "A-005": "pending",
        "A-006": "not_created",
    }
    assert data["progress"] == {"completed": 1, "total": 6, "percent": 16.7}
    assert data["ready"] == ["A-005", "A-006"]
    assert data["failed"] == [{"id": "A-002", "error_kind": "crash", "error": "exited with code 3", "attempts": 3}]
    assert {b["id"]: b["waiting_on_failed"] for b in data["blocked"]} == {"A-003": ["A-002"], "A-004": ["A-002"]}
    text = executor_cli("check", "--session", str(folder)).stdout
    assert "✗ A-002  after 3 attempt(s)  [crash] exited with code 3" in text
    assert "A-004 waits on failed A-002" in text
    assert f"executor resume --session {folder}" in text


def test_check_is_read_only(executor_cli, tmp_path):
    folder = write_session(tmp_path / "s", {"worker": "A"}, {"A-001": [], "A-002": ["A-001"]})
    seed_store(folder)
    before = snapshot(folder)
    assert executor_cli("check", "--session", str(folder)).returncode == 0
    assert executor_cli("check", "--session", str(folder), "--json").returncode == 0
    assert snapshot(folder) == before


def test_check_on_an_invalid_session_lists_problems_and_exits_1(executor_cli, tmp_path):
    folder = write_session(tmp_path / "s", {"coder": "IMPL"}, {"IMPL-001": ["IMPL-001"]})
    result = executor_cli("check", "--session", str(folder))
    assert result.returncode == 1
    assert "dependency cycle: IMPL-001 -> IMPL-001" in result.stdout


def test_check_on_a_corrupt_database_is_one_clear_error(executor_cli, tmp_path):
    demo = copy_demo(tmp_path / "demo")
    (demo / ".executor").mkdir()
    (demo / ".executor" / "state.db").write_bytes(b"garbage" * 1000)
    result = executor_cli("check", "--session", str(demo))
    assert result.returncode == 1
    assert "state.db" in result.stderr
    assert "Traceback" not in result.stderr


def test_check_truncates_huge_layers_unless_full(executor_cli, tmp_path):
    graph = {f"A-{i:03d}": [] for i in range(1, 41)}
    folder = write_session(tmp_path / "s", {"worker": "A"}, graph)
    short = executor_cli("check", "--session", str(folder)).stdout
    assert "… 28 more (28 not created)" in short
    full = executor_cli("check", "--session", str(folder), "--full").stdout
    assert "A-040" in full
    assert "more (" not in full


def test_init_writes_a_session_that_validates_and_checks(executor_cli, tmp_path):
    target = tmp_path / "new"
    result = executor_cli("init", "--session", str(target), "--template", "pm-architect-coder-qa", "Add a login page")
    assert result.returncode == 0, result.stderr
    assert "created TC-add-a-login-page-" in result.stdout
    assert executor_cli("validate", "--session", str(target)).returncode == 0
    data = json.loads(executor_cli("check", "--session", str(target), "--json").stdout)
    assert [t["id"] for t in data["tasks"]] == ["PLAN-001", "ARCH-001", "IMPL-001", "QA-001"]
    assert data["tasks"][0]["priority"] == "P0"
    assert "Add a login page" in (target / "task-analysis.json").read_text()


def test_init_with_a_backend_writes_it_into_each_role_spec(executor_cli, tmp_path):
    target = tmp_path / "new"
    assert executor_cli("init", "--session", str(target), "--backend", "demo", "goal").returncode == 0
    assert "backend: demo" in (target / "role-specs" / "coder.md").read_text()
    assert executor_cli("validate", "--session", str(target)).returncode == 0


def test_init_refuses_an_existing_folder_and_an_unknown_template(executor_cli, tmp_path):
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "x").write_text("mine")
    result = executor_cli("init", "--session", str(tmp_path / "taken"), "goal")
    assert result.returncode == 2
    assert "already exists and is not empty" in result.stderr
    result = executor_cli("init", "--session", str(tmp_path / "n"), "--template", "nope", "goal")
    assert result.returncode == 2
    assert "unknown template 'nope'; choose one of: pm-architect-coder-qa" in result.stderr


def test_every_command_has_help_with_an_example(executor_cli):
    top = executor_cli("--help")
    assert top.returncode == 0
    commands = [line.split()[0] for line in top.stdout.split("Commands:")[1].splitlines() if line.strip()[:1].isalpha()]
    assert {"validate", "check", "init"} <= set(commands)
    for command in commands:
        result = executor_cli(command, "--help")
        assert result.returncode == 0, command
        assert "Example" in result.stdout or "example" in result.stdout, f"{command} --help has no example"


def test_the_console_script_is_installed_next_to_the_interpreter(executor_cli):
    assert os.access(EXECUTOR, os.X_OK)


def test_task_status_uses_checks_words_and_the_pipeline_order(executor_cli, tmp_path):
    folder = tmp_path / "s"
    assert executor_cli("init", "--session", str(folder), "--backend", "demo", "Goal").returncode == 0
    assert executor_cli("run", "--session", str(folder)).returncode == 0
    data = json.loads(executor_cli("task", "status", "--session", str(folder), "--json").stdout)
    assert [task["id"] for task in data["tasks"]] == ["PLAN-001", "ARCH-001", "IMPL-001", "QA-001"]
    assert {task["lifecycle"] for task in data["tasks"]} == {"completed"}
    check = json.loads(executor_cli("check", "--session", str(folder), "--json").stdout)
    assert {task["status"] for task in check["tasks"]} == {"completed"}


def test_version_and_a_misspelt_playbook(executor_cli, tmp_path):
    version = executor_cli("--version")
    assert version.returncode == 0
    assert version.stdout.startswith("executor (team-executor) ")
    result = executor_cli("init", "--session", str(tmp_path / "s"), "--playbook", "write_reveiw", "Goal")
    assert result.returncode == 2
    assert "did you mean 'write_review'?" in result.stderr


def test_a_missing_session_exits_1_on_every_command_that_takes_one(executor_cli, tmp_path):
    missing = str(tmp_path / "nowhere")
    for command in (
        ["validate"],
        ["check"],
        ["watch", "--once"],
        ["answer"],
        ["task", "status"],
        ["task", "next", "--agent", "a"],
        ["config", "check"],
        ["panic", "on"],
        ["run"],
        ["resume"],
    ):
        result = executor_cli(*command, "--session", missing)
        assert result.returncode == 1, (command, result.stdout, result.stderr)
        assert "nowhere" in result.stdout + result.stderr
        assert "Traceback" not in result.stdout + result.stderr
