from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

EXECUTOR = Path(sys.executable).with_name("executor")
_EMPTY_CONFIG = Path(tempfile.mkdtemp(prefix="executor-test-config-"))


def run_executor(*args: str, timeout: float = 120, env: dict[str, str] | None = None, **kwargs: object):
    """Run the real installed `executor` console script in a subprocess."""
    # An empty user config folder unless a test brings its own: a developer's real
    # ~/.config/team-executor must never change what a test sees.
    full_env = {**os.environ, "COLUMNS": "200", "TEAM_EXECUTOR_CONFIG_DIR": str(_EMPTY_CONFIG), **(env or {})}
    full_env.pop("EXECUTOR_DEBUG", None)
    return subprocess.run(
        [str(EXECUTOR), *args], capture_output=True, text=True, timeout=timeout, env=full_env, check=False, **kwargs
    )


@pytest.fixture
def executor_cli():
    assert EXECUTOR.exists(), f"{EXECUTOR} missing: install the project with pip install -e '.[test]'"
    return run_executor


# Modules whose tests drive real processes or servers (the executor CLI, agent CLIs, signals,
# kill -9, HTTP, the browser).  They carry the `subprocess` marker, so `-m "not subprocess"`
# runs the in-process suite (the pipeline core and the actor tree on tests/harness.py).
_PROCESS_MODULES = frozenset(
    {
        "test_agent_backends", "test_agent_bridge", "test_agent_parsers", "test_agent_pipeline",
        "test_cli_check", "test_command_backend", "test_dashboard_browser", "test_demo_backend",
        "test_durability", "test_escalations", "test_fake_llm", "test_file_conflicts", "test_git_hooks",
        "test_git_state", "test_keys_cli", "test_lock", "test_manual_tasks", "test_mcp_backend",
        "test_mcp_bridge", "test_mcp_client", "test_models_cli", "test_notifier", "test_notify_channels",
        "test_openai_http", "test_other_agent_backends", "test_playbook_real_clis", "test_playbooks",
        "test_probe", "test_process", "test_review_loop", "test_routed_run", "test_router_actor",
        "test_run", "test_run_notifications", "test_sandbox", "test_watch", "test_web_api", "test_worktrees",
    }
)  # fmt: skip


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        module = item.nodeid.split("::", 1)[0].rsplit("/", 1)[-1].removesuffix(".py")
        if module in _PROCESS_MODULES or "executor_cli" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.subprocess)
