"""`executor probe` through the real console script."""

from __future__ import annotations

import json

import pytest

from tests.agent_env import cli_path


def test_probe_reports_installed_clis_with_versions_and_flag_support(executor_cli, tmp_path):
    claude = cli_path("claude")
    if claude is None:
        pytest.skip("the claude CLI is not installed")
    env = {
        "TEAM_EXECUTOR_AGENT_CLIS": str(claude.parent),
        "ANTHROPIC_API_KEY": "sk-ant-very-secret-1234",
        "HOME": str(tmp_path),
    }
    result = executor_cli("probe", "--json", env=env, timeout=180)
    assert result.returncode == 0, result.stderr
    assert "sk-ant-very-secret-1234" not in result.stdout, "a key is never printed"
    rows = {row["backend"]: row for row in json.loads(result.stdout)}
    row = rows["claude"]
    assert row["installed"] is True
    assert row["version"]
    assert row["credentials"] is True
    assert row["credential_sources"] == ["ANTHROPIC_API_KEY"]
    assert all(row["flags"].values()), row["flags"]
    assert row["problem"] is None
    text = executor_cli("probe", env=env, timeout=180).stdout
    assert "claude" in text
    assert "sk-ant" not in text


def test_probe_says_what_is_missing_and_how_to_install_it(executor_cli, tmp_path):
    env = {
        "TEAM_EXECUTOR_AGENT_CLIS": str(tmp_path),
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path),
        "GEMINI_API_KEY": "",
    }
    rows = {row["backend"]: row for row in json.loads(executor_cli("probe", "--json", env=env).stdout)}
    gemini = rows["gemini"]
    assert gemini["installed"] is False
    assert gemini["problem"] == "not installed: npm install -g @google/gemini-cli"
