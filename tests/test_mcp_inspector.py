"""The MCP Inspector's CLI (a second, independent MCP client, pinned in .ci/run) drives
`executor mcp` the way a desktop client does: from a config file with an env block.

On a fresh `executor init` session with no backend named it lists the tools and gets
submit_task's refusal with the fix; on a session of several roles, submit_task with
only name, description and priority is accepted and assigned by capability.
Skipped, with the reason, when Node or the Inspector is not installed."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import _EMPTY_CONFIG, EXECUTOR, run_executor

REPO = Path(__file__).resolve().parents[1]
PINNED = REPO / ".mcp-inspector" / "node_modules" / ".bin" / "mcp-inspector"


@pytest.fixture
def inspector() -> Path:
    configured = os.environ.get("TEAM_EXECUTOR_MCP_INSPECTOR")
    path = Path(configured) if configured else PINNED
    if shutil.which("node") is None:
        pytest.skip("node is not installed (CI installs it and the MCP Inspector; see .ci/run)")
    if not path.is_file():
        pytest.skip(f"the MCP Inspector is not installed at {path} (.ci/run installs it with npm)")
    return path


def _client_config(tmp_path: Path, folder: Path) -> Path:
    """What a user writes into a desktop client's config: the command, its args, and an env block
    (stdio clients start servers without the shell's environment)."""
    config = {
        "mcpServers": {
            "executor": {
                "command": str(EXECUTOR),
                "args": ["mcp", "--session", str(folder)],
                "env": {"TEAM_EXECUTOR_CONFIG_DIR": str(_EMPTY_CONFIG)},
            }
        }
    }
    path = tmp_path / "mcp.json"
    path.write_text(json.dumps(config))
    return path


def _inspect(inspector: Path, config: Path, *args: str) -> tuple[int, dict[str, Any], str]:
    home = config.parent / "inspector-home"
    home.mkdir(exist_ok=True)
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "MCP_INSPECTOR_SECRET_STORE": "memory",
    }
    completed = subprocess.run(
        [str(inspector), "--cli", "--config", str(config), "--server", "executor", *args],
        capture_output=True,
        text=True,
        timeout=180,
        env=env,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    try:
        body = json.loads(completed.stdout)
    except ValueError:
        pytest.fail(f"the Inspector printed no JSON (exit {completed.returncode}): {completed.stderr[-2000:]}")
    return completed.returncode, body, completed.stderr


def _init(folder: Path, *options: str) -> Path:
    made = run_executor("init", "--session", str(folder), *options, "Add a login page")
    assert made.returncode == 0, made.stderr
    return folder


SEED = ("--tool-arg", "name=Write regression tests for the login form")
SEED_REST = ("--tool-arg", "description=cover empty and wrong passwords", "--tool-arg", "priority=high")


def test_the_inspector_lists_tools_and_gets_the_fix_on_a_fresh_session(inspector, tmp_path):
    config = _client_config(tmp_path, _init(tmp_path / "fresh"))
    code, listed, stderr = _inspect(inspector, config, "--method", "tools/list")
    assert code == 0, stderr
    names = {tool["name"] for tool in listed["tools"]}
    assert {"submit_task", "get_fleet_status", "answer_escalation"} <= names
    _, called, _ = _inspect(
        inspector, config, "--method", "tools/call", "--tool-name", "submit_task", *SEED, *SEED_REST
    )
    assert called["isError"] is True
    text = called["content"][0]["text"]
    assert "no backend for role(s) pm," in text
    assert "pass --backend NAME" in text  # the fix


def test_the_inspector_submits_a_task_by_name_description_and_priority(inspector, tmp_path):
    config = _client_config(tmp_path, _init(tmp_path / "team", "--backend", "demo"))
    code, called, stderr = _inspect(
        inspector, config, "--method", "tools/call", "--tool-name", "submit_task", *SEED, *SEED_REST
    )
    assert code == 0, stderr
    assert called.get("isError") is not True, called
    task = called["structuredContent"]
    assert task["owner"] == "qa"
    assert task["priority"] == "P0"
    assert task["assignment"].startswith("qa: ")
