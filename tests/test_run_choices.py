"""A session remembers the backend a run was given (session.run_choices), through the real CLI."""

from __future__ import annotations

import json
import os
import tomllib
from pathlib import Path
from typing import Any

import anyio
from mcp import Client, StdioServerParameters

from session.run_choices import remember_backend
from tests.conftest import _EMPTY_CONFIG, EXECUTOR


def test_resume_and_http_reuse_the_backend_the_run_was_given(executor_cli, tmp_path):
    folder = tmp_path / "login"
    assert executor_cli("init", "--session", str(folder), "Add a login page").returncode == 0
    first = executor_cli("run", "--session", str(folder), "--backend", "demo")
    assert first.returncode == 0, first.stdout + first.stderr
    assert tomllib.loads((folder / "executor.toml").read_text())["remembered"] == {"backend": "demo"}
    check = executor_cli("check", "--session", str(folder))
    assert "backends: demo for every role (remembered from an earlier --backend)" in check.stdout
    data = json.loads(executor_cli("check", "--session", str(folder), "--json").stdout)
    assert {(b["role"], b["backend"], b["source"]) for b in data["backends"]} == {
        (role, "demo", "remembered") for role in ("pm", "architect", "coder", "qa")
    }
    resumed = executor_cli("resume", "--session", str(folder))
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "note: backend demo for every role, remembered from an earlier --backend" in resumed.stdout
    served = executor_cli("run", "--session", str(folder), "--http", "0", "--exit-when-done")
    assert served.returncode == 0, served.stdout + served.stderr


def test_backend_outranks_the_role_specs_and_says_so(executor_cli, tmp_path):
    folder = tmp_path / "wr"
    assert executor_cli("init", "--session", str(folder), "--playbook", "write_review", "Slugify").returncode == 0
    result = executor_cli("run", "--session", str(folder), "--backend", "demo")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "it outranks the role-specs' codex (coder), gemini (reviewer)" in result.stdout
    assert "IMPL-001 started on demo" in result.stdout
    again = executor_cli("run", "--session", str(folder), "--backend", "gpt9")
    assert again.returncode == 2
    assert "--backend: unknown backend 'gpt9'" in again.stderr
    assert tomllib.loads((folder / "executor.toml").read_text())["remembered"] == {"backend": "demo"}, (
        "a refused backend is not remembered"
    )


def test_remembering_keeps_the_rest_of_the_file_and_its_comments(tmp_path):
    path = tmp_path / "executor.toml"
    path.write_text("# my settings\n[run]\nmax_workers = 2  # two is enough\n")
    assert remember_backend(tmp_path, "demo") is True
    assert remember_backend(tmp_path, "demo") is False
    text = path.read_text()
    assert "# my settings" in text
    assert "max_workers = 2  # two is enough" in text
    assert tomllib.loads(text) == {"run": {"max_workers": 2}, "remembered": {"backend": "demo"}}


def test_a_remembered_backend_that_no_longer_exists_is_a_config_error(executor_cli, tmp_path):
    folder = tmp_path / "s"
    assert executor_cli("init", "--session", str(folder), "--backend", "demo", "Goal").returncode == 0
    (folder / "executor.toml").write_text('[remembered]\nbackend = "dmeo"\n')
    result = executor_cli("run", "--session", str(folder))
    assert result.returncode == 2
    assert "remembered.backend" in result.stderr
    assert "did you mean 'demo'" in result.stderr


def test_check_names_where_each_role_backend_comes_from(executor_cli, tmp_path):
    folder = tmp_path / "wr"
    assert executor_cli("init", "--session", str(folder), "--playbook", "write_review", "Slugify").returncode == 0
    check = executor_cli("check", "--session", str(folder))
    assert "backends: coder codex (role-spec), reviewer gemini (role-spec)" in check.stdout
    assert Path(folder / "executor.toml").exists() is False, "check writes nothing"


def test_remembered_outside_a_session_file_is_refused(executor_cli, tmp_path):
    user = tmp_path / "user"
    user.mkdir()
    (user / "config.toml").write_text('[remembered]\nbackend = "demo"\n')
    result = executor_cli("config", "check", env={"TEAM_EXECUTOR_CONFIG_DIR": str(user)})
    assert result.returncode == 1, result.stdout + result.stderr
    assert "[remembered] belongs to one session" in result.stdout + result.stderr


def test_executor_mcp_runs_on_the_remembered_backend(executor_cli, tmp_path):
    """`executor mcp` without --backend: a submitted task runs on what `run --backend demo` chose."""
    folder = tmp_path / "login"
    assert executor_cli("init", "--session", str(folder), "Add a login page").returncode == 0
    assert executor_cli("run", "--session", str(folder), "--backend", "demo").returncode == 0
    env = {**os.environ, "TEAM_EXECUTOR_CONFIG_DIR": str(_EMPTY_CONFIG), "COLUMNS": "200"}
    params = StdioServerParameters(command=str(EXECUTOR), args=["mcp", "--session", str(folder)], env=env)

    async def go() -> dict[str, Any]:
        async with Client(params) as client:
            submitted = await client.call_tool("submit_task", {"name": "Write a poem", "assigned_to": "coder"})
            assert not submitted.is_error, submitted
            task_id = submitted.structured_content["id"]
            status: dict[str, Any] = {}
            for _ in range(600):
                status = (await client.call_tool("get_task_status", {"task_id": task_id})).structured_content
                if status["task"]["status"] in ("completed", "failed"):
                    break
                await anyio.sleep(0.1)
            return status

    status = anyio.run(go)
    assert status["task"]["status"] == "completed", status
