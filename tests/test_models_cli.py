"""`executor models`: the registry, the fallback chain and key states, through the real console script."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

from cli.main import app
from cli.models_cmd import NO_KEY_POOL, KeyStateRow, models_report, render_models, set_key_state_source
from session.config_models import DEFAULT_MODELS, Config

GATEWAY = """
[[models]]
name = "team-gateway-7b"
provider = "openai-compatible"
backend = "openai"
tier = "standard"
input_per_mtok = 0.1
output_per_mtok = 0.2
context_window = 65536
base_url = "https://robot:hunter2pass@gw.example.com/v1"

[[models]]
name = "claude-sonnet-4-5"
provider = "anthropic"
backend = "claude"
tier = "PREMIUM"
input_per_mtok = 3.0
output_per_mtok = 15.0
context_window = 200000

[router]
fallback = ["premium", "standard"]
fallback_backend = "claude"
network_retries = 5
"""


@pytest.fixture
def env(tmp_path) -> dict[str, str]:
    user = tmp_path / "user-config"
    user.mkdir()
    return {"TEAM_EXECUTOR_CONFIG_DIR": str(user)}


@pytest.fixture
def session(tmp_path) -> Path:
    folder = tmp_path / "session"
    folder.mkdir()
    return folder


def test_the_built_in_registry_chain_and_no_key_pool(executor_cli, env):
    result = executor_cli("models", env=env)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    for spec in DEFAULT_MODELS:
        assert spec["name"] in out
    assert "200,000" in out
    assert "1,048,576" in out
    assert (
        "fallback chain: CRITICAL (claude-opus-4-1) -> PREMIUM (claude-sonnet-4-5, gpt-5, gemini-2.5-pro) -> "
        "STANDARD (gpt-5-mini, gemini-2.5-flash, claude-haiku-4-5) -> FREE (no model)"
    ) in out
    assert "CRITICAL needs approval: yes" in out
    assert NO_KEY_POOL in out
    # Most capable tier first.
    assert out.index("claude-opus-4-1") < out.index("claude-sonnet-4-5") < out.index("gpt-5-mini")
    assert "local-llama" not in out  # nothing built in is an endpoint that would receive a key


def test_json_has_the_registry_the_chain_and_null_keys(executor_cli, env):
    result = executor_cli("models", "--json", env=env)
    assert result.returncode == 0, result.stderr
    body = json.loads(result.stdout)
    assert body["valid"] is True
    assert [m["name"] for m in body["models"]] == [m["name"] for m in DEFAULT_MODELS]
    opus = body["models"][0]
    assert opus == {
        "type": "model_info",
        "name": "claude-opus-4-1",
        "provider": "anthropic",
        "backend": "claude",
        "tier": "CRITICAL",
        "input_per_mtok": 15.0,
        "output_per_mtok": 75.0,
        "cached_per_mtok": 1.5,
        "context_window": 200_000,
        "base_url": None,
    }
    assert body["fallback"] == ["CRITICAL", "PREMIUM", "STANDARD", "FREE"]
    assert body["chain"][1] == {"tier": "PREMIUM", "models": ["claude-sonnet-4-5", "gpt-5", "gemini-2.5-pro"]}
    assert body["network_retries"] == 3
    assert body["keys"] is None
    assert body["keys_note"] == NO_KEY_POOL
    assert body["sources"] == ["<built-in defaults>"]


def test_a_session_config_adding_a_model_shows_it_with_its_url_redacted(executor_cli, env, session):
    (session / "executor.toml").write_text(GATEWAY)
    result = executor_cli("models", "--session", str(session), env=env)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "team-gateway-7b" in out
    assert "65,536" in out
    assert "https://***@gw.example.com/v1" in out
    assert "hunter2pass" not in out + result.stderr
    assert "fallback chain: PREMIUM (claude-sonnet-4-5) -> STANDARD (team-gateway-7b)" in out
    assert "network retries before the next tier: 5" in out
    assert "hand the task to backend claude" in out

    body = json.loads(executor_cli("models", "--session", str(session), "--json", env=env).stdout)
    gateway = next(m for m in body["models"] if m["name"] == "team-gateway-7b")
    assert (gateway["tier"], gateway["provider"], gateway["backend"]) == ("STANDARD", "openai-compatible", "openai")
    assert gateway["base_url"] == "https://***@gw.example.com/v1"
    assert body["fallback_backend"] == "claude"
    assert str(session / "executor.toml") in body["sources"]


def test_models_outside_the_chain_are_listed_as_such(executor_cli, env, tmp_path):
    config = tmp_path / "only-premium.toml"
    config.write_text('[router]\nfallback = ["PREMIUM"]\n')
    result = executor_cli("models", "--config", str(config), "--json", env=env)
    body = json.loads(result.stdout)
    assert [link["tier"] for link in body["chain"]] == ["PREMIUM"]
    assert "claude-opus-4-1" in body["outside_chain"]
    assert "gpt-5-mini" in body["outside_chain"]
    text = executor_cli("models", "--config", str(config), env=env).stdout
    assert "not in the chain (used only when named): claude-opus-4-1" in text


def test_an_invalid_config_is_refused_with_its_file_key_and_fix(executor_cli, env, session):
    (session / "executor.toml").write_text('[router]\nfallback = ["PREMIUM", "LUDICROUS"]\n')
    result = executor_cli("models", "--session", str(session), env=env)
    assert result.returncode == 1
    assert "executor.toml" in result.stdout
    assert "router.fallback" in result.stdout
    assert "Fix:" in result.stdout
    body = json.loads(executor_cli("models", "--session", str(session), "--json", env=env).stdout)
    assert body["valid"] is False
    assert body["models"] == []
    assert any("router.fallback" in (problem["field"] or "") for problem in body["problems"])


def test_bad_arguments_are_usage_errors(executor_cli, env, tmp_path):
    missing = executor_cli("models", "--config", str(tmp_path / "nope.toml"), env=env)
    assert missing.returncode == 2
    assert "does not exist" in missing.stderr
    not_a_folder = executor_cli("models", "--session", str(tmp_path / "nowhere"), env=env)
    assert not_a_folder.returncode == 1, "a missing session exits 1 on every command"


def test_help_has_an_example(executor_cli, env):
    result = executor_cli("models", "--help", env=env)
    assert result.returncode == 0
    assert "Example: executor models" in result.stdout


# --------------------------------------------------------------------------- live key states (wired in-process)

ROWS = [
    KeyStateRow(provider="anthropic", key_id="anthropic…3f9a", status="ready", requests=12, cost_usd=0.4321),
    KeyStateRow(
        provider="anthropic",
        key_id="anthropic…k9P2",
        status="cooling",
        cooling_for_s=17.25,
        requests=3,
        cost_usd=0.01,
        last_error="429 rate limited",
    ),
]


def config() -> Config:
    return Config.model_validate({"models": [dict(m) for m in DEFAULT_MODELS]})


def test_key_states_are_rendered_when_given():
    console = Console(record=True, width=200)
    render_models(console, models_report(config(), ROWS))
    text = console.export_text()
    assert NO_KEY_POOL not in text
    assert "anthropic…3f9a" in text
    assert "ready" in text
    assert "cooling" in text
    assert "17.2s" in text
    assert "0.4321" in text
    assert "429 rate limited" in text


def test_an_empty_pool_says_so():
    console = Console(record=True, width=200)
    render_models(console, models_report(config(), []))
    assert "the key pool holds no key" in console.export_text()


def test_a_wired_key_state_source_reaches_the_command(env, monkeypatch):
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    seen = []

    def source(loaded: Config) -> list[KeyStateRow]:
        seen.append(loaded)
        return ROWS

    set_key_state_source(source)
    try:
        result = CliRunner().invoke(app, ["models", "--json"])
    finally:
        set_key_state_source(None)
    assert result.exit_code == 0, result.output
    body = json.loads(result.stdout)
    assert [row["key_id"] for row in body["keys"]] == ["anthropic…3f9a", "anthropic…k9P2"]
    assert body["keys"][1]["cooling_for_s"] == 17.25
    assert body["keys_note"] is None
    assert len(seen) == 1
