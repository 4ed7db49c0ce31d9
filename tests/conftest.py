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
        "test_agent_backends", "test_agent_bridge", "test_bridge_process", "test_agent_parsers", "test_agent_pipeline",
        "test_backup", "test_cli_check", "test_cli_exit", "test_cluster", "test_cluster_git", "test_command_backend",
        "test_collector", "test_dashboard_browser", "test_spawn",
        "test_demo_backend", "test_demo_story", "test_doctor", "test_durability", "test_escalations",
        "test_fake_llm", "test_file_conflicts", "test_gates", "test_gemini_settings", "test_git_hooks",
        "test_git_safety", "test_git_state",
        "test_help_examples", "test_keys_cli", "test_lock", "test_manual_tasks", "test_mcp_backend",
        "test_mcp_bridge", "test_mcp_client", "test_mcp_inspector", "test_mcp_queued_writes", "test_mcp_standby",
        "test_models_cli",
        "test_next_hints", "test_notifier", "test_notify_channels", "test_openai_endpoints", "test_output_flood",
        "test_openai_http", "test_other_agent_backends", "test_playbook_real_clis", "test_playbooks",
        "test_descendants", "test_mirror_process", "test_shared_loop_runs", "test_probe", "test_process",
        "test_process_redaction",
        "test_progress_lines",
        "test_quickstart",
        "test_review_loop",
        "test_rollback", "test_routed_run", "test_router_actor", "test_run", "test_run_choices",
        "test_run_notifications", "test_run_redaction", "test_sandbox", "test_security",
        "test_security_clis", "test_startup_imports", "test_task_diff", "test_task_logs", "test_untrusted_exits",
        "test_watch",
        "test_web_api", "test_worktrees",
    }
)  # fmt: skip
# Modules that run in this process only (a test in them that takes `executor_cli` is still
# marked).  Every test module is in one of the two sets: a new one must be placed.
_IN_PROCESS_MODULES = frozenset(
    {
        "test_assignment", "test_cluster_relay", "test_config", "test_conventions", "test_folder_listing",
        "test_event_loop", "test_fencing", "test_fuzz_loaders", "test_session_direct",
        "test_graph",
        "test_keypool", "test_mirror_incremental", "test_repository_probe",
        "test_keystore", "test_loader", "test_loopback", "test_message_bus", "test_notify_config",
        "test_output_capture", "test_output_share", "test_pipeline", "test_progress_parse", "test_projection",
        "test_prompt", "test_queued_writes",
        "test_redaction", "test_routing",
        "test_runtime", "test_safepath", "test_scheduler", "test_skills", "test_store", "test_supervision",
        "test_session", "test_task_changes", "test_task_mirror",
    }
)  # fmt: skip


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    unplaced = set()
    for item in items:
        module = item.nodeid.split("::", 1)[0].rsplit("/", 1)[-1].removesuffix(".py")
        if module not in _PROCESS_MODULES and module not in _IN_PROCESS_MODULES:
            unplaced.add(module)
        if module in _PROCESS_MODULES or "executor_cli" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.subprocess)
    if unplaced:
        raise pytest.UsageError(
            f"tests/conftest.py: place {', '.join(sorted(unplaced))} in _PROCESS_MODULES (it starts processes "
            "or servers) or _IN_PROCESS_MODULES (it does not)"
        )
