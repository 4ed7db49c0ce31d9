"""Gemini on a machine where it never ran: the API key alone is enough.

Without an auth type in its settings the CLI exits 41 ("Invalid auth method selected")
although GEMINI_API_KEY is set; the backend gives such an attempt its own GEMINI_CLI_HOME
whose settings choose the API key (and turn telemetry off), and keeps a user's own choice.
The end-to-end test runs the real Gemini CLI against tests/fake_llm.py with a fresh HOME."""

from __future__ import annotations

import json
import stat
import subprocess
from pathlib import Path

import pytest

from backends.gemini import GeminiBackend
from tests.agent_env import cli_path
from tests.fake_llm import FakeLLM, Text
from tests.orders import make_order
from tests.sessions import write_session

KEY = {"GEMINI_API_KEY": "gm-fake-key"}


def _order(tmp_path: Path):
    return make_order(tmp_path / "s", "IMPL-001", "coder", prompt="do it", backend="gemini")


def test_a_fresh_home_gets_settings_that_choose_the_api_key(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    (tmp_path / "home").mkdir()
    env = GeminiBackend(environ=KEY)._environment(_order(tmp_path))
    settings_file = Path(env["GEMINI_CLI_HOME"]) / ".gemini" / "settings.json"
    settings = json.loads(settings_file.read_text())
    assert settings["security"]["auth"]["selectedType"] == "gemini-api-key"
    assert settings["telemetry"] == {"enabled": False}
    assert settings["privacy"] == {"usageStatisticsEnabled": False}
    assert stat.S_IMODE(settings_file.stat().st_mode) == 0o600
    assert not (tmp_path / "home" / ".gemini").exists()  # the user's HOME is left alone
    assert "gm-fake-key" not in settings_file.read_text()


def test_the_users_own_settings_are_kept_and_completed(tmp_path, monkeypatch):
    home = tmp_path / "home"
    (home / ".gemini").mkdir(parents=True)
    (home / ".gemini" / "settings.json").write_text(
        '{"ui": {"theme": "dark"}, // a comment\n "telemetry": {"enabled": true}}'
    )
    monkeypatch.setenv("HOME", str(home))
    env = GeminiBackend(environ=KEY)._environment(_order(tmp_path))
    settings = json.loads((Path(env["GEMINI_CLI_HOME"]) / ".gemini" / "settings.json").read_text())
    assert settings["ui"] == {"theme": "dark"}
    assert settings["telemetry"] == {"enabled": True}  # the user said so
    assert settings["security"]["auth"]["selectedType"] == "gemini-api-key"


@pytest.mark.parametrize(
    "settings", ['{"security": {"auth": {"selectedType": "oauth-personal"}}}', '{"selectedAuthType": "vertex-ai"}']
)
def test_a_home_that_chose_how_to_sign_in_is_used_as_it_is(tmp_path, monkeypatch, settings):
    home = tmp_path / "home"
    (home / ".gemini").mkdir(parents=True)
    (home / ".gemini" / "settings.json").write_text(settings)
    monkeypatch.setenv("HOME", str(home))
    assert "GEMINI_CLI_HOME" not in GeminiBackend(environ=KEY)._environment(_order(tmp_path))


def test_without_a_key_nothing_is_chosen_for_the_user(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    assert "GEMINI_CLI_HOME" not in GeminiBackend(environ={})._environment(_order(tmp_path))


@pytest.mark.slow
def test_gemini_runs_with_a_fresh_home_and_only_the_key_and_base_url(executor_cli, tmp_path):
    path = cli_path("gemini")
    if path is None:
        pytest.skip("the gemini CLI is not installed (CI installs it with npm; see .ci/run)")
    project = tmp_path / "project"
    project.mkdir()
    subprocess.run(["git", "init", "-q", str(project)], check=True)
    home = tmp_path / "fresh-home"
    home.mkdir()
    folder = write_session(
        project / ".workflow" / ".team" / "TC-gemini",
        {"writer": "WRITE"},
        {"WRITE-001": []},
        role_extra={"writer": "backend: gemini\nmodel: gemini-2.5-flash\ntimeout: 120\n"},  # no isolate_home
    )
    with FakeLLM() as fake:
        fake.script(Text("[writer] WRITE-001 done: hello from gemini."))
        env = {
            "HOME": str(home),
            "GEMINI_API_KEY": "gm-fake-key",
            "GOOGLE_GEMINI_BASE_URL": fake.url,
            "GOOGLE_API_KEY": "",
            "TEAM_EXECUTOR_AGENT_CLIS": str(path.parent),
            "NO_PROXY": "127.0.0.1,localhost",
        }
        result = executor_cli("run", "--session", str(folder), "--max-attempts", "1", env=env, timeout=300)
        assert result.returncode == 0, result.stdout + result.stderr
        assert fake.model_requests(), "gemini reached the fake model server"
    assert (
        not list((folder / ".executor" / "mcp").glob("*.gemini-home"))
        if (folder / ".executor" / "mcp").exists()
        else True
    )
