"""How each agent backend invokes its CLI: argv (never a shell), environment, permissions, preflight."""

from __future__ import annotations

import json
import os
import stat

import msgspec
import pytest

from backends.agent_cli import AGENT_CLIS_ENV
from backends.claude import ClaudeBackend
from backends.codex import CodexBackend
from backends.gemini import DEFAULT_GEMINI_MODEL, GeminiBackend
from backends.pricing import estimate_cost
from session.rolespec import RoleSpecFrontmatter
from tests.orders import make_order

SPEC = RoleSpecFrontmatter(role="coder", prefix="IMPL", inner_loop=False, message_types={})
ENVIRON = {
    "ANTHROPIC_API_KEY": "sk-ant-secret",
    "OPENAI_API_KEY": "sk-openai-secret",
    "GEMINI_API_KEY": "gm-secret",
    "ANTHROPIC_BASE_URL": "http://127.0.0.1:9",
    "OPENAI_BASE_URL": "http://127.0.0.1:8/v1",
    "GOOGLE_GEMINI_BASE_URL": "http://127.0.0.1:7",
}


def order(tmp_path, **changes):
    base = make_order(tmp_path / "s", "IMPL-001", "coder", prompt="do it", backend="x")
    return msgspec.structs.replace(base, **changes)


@pytest.mark.parametrize(
    ("permission", "expected"),
    [
        ("read-only", ["--permission-mode", "default", "--allowedTools=Read,Glob,Grep,LS"]),
        ("workspace-write", ["--permission-mode", "acceptEdits"]),
        ("full", ["--dangerously-skip-permissions"]),
    ],
)
def test_claude_argv_follows_the_role_s_permission(tmp_path, permission, expected):
    argv = ClaudeBackend(environ=ENVIRON)._argv("claude", order(tmp_path, permission=permission), "do it")
    assert argv[:5] == ["claude", "-p", "--output-format", "stream-json", "--verbose"]
    joined = " ".join(argv)
    assert " ".join(expected) in joined
    assert "do it" not in argv, "the prompt goes on stdin, never into argv"


def test_claude_argv_carries_model_max_turns_and_the_session_to_resume(tmp_path):
    argv = ClaudeBackend(environ=ENVIRON)._argv(
        "claude", order(tmp_path, model="claude-sonnet-4-5", max_turns=7, resume_session="abc-123"), ""
    )
    assert argv[argv.index("--model") + 1] == "claude-sonnet-4-5"
    assert argv[argv.index("--max-turns") + 1] == "7"
    assert argv[argv.index("--resume") + 1] == "abc-123"


def test_an_agent_sees_only_its_own_key_and_base_url(tmp_path, monkeypatch):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "leak-me")
    env = ClaudeBackend(environ=ENVIRON)._environment(order(tmp_path))
    assert env["ANTHROPIC_API_KEY"] == "sk-ant-secret"
    assert env["ANTHROPIC_BASE_URL"] == "http://127.0.0.1:9"
    assert "OPENAI_API_KEY" not in env
    assert "GEMINI_API_KEY" not in env
    assert "AWS_SECRET_ACCESS_KEY" not in env
    assert env["TEAM_EXECUTOR_TASK_ID"] == "IMPL-001"
    assert env["TERM"] == "dumb"


def test_an_isolated_home_is_a_fresh_folder_in_the_session(tmp_path):
    the_order = order(tmp_path, isolate_home=True)
    env = ClaudeBackend(environ=ENVIRON)._environment(the_order)
    assert env["HOME"].startswith(the_order.session_dir)
    assert os.path.isdir(env["TMPDIR"])


def test_codex_turns_a_base_url_into_a_custom_provider_and_resumes_its_thread(tmp_path):
    backend = CodexBackend(environ=ENVIRON)
    argv = backend._argv("codex", order(tmp_path, permission="read-only", resume_session="th-1", model="gpt-5"), "")
    assert argv[:2] == ["codex", "exec"]
    assert argv[argv.index("--sandbox") + 1] == "read-only"
    assert 'model_provider="team-executor"' in argv
    provider = next(arg for arg in argv if arg.startswith("model_providers.team-executor="))
    assert 'base_url="http://127.0.0.1:8/v1"' in provider
    assert 'env_key="OPENAI_API_KEY"' in provider
    assert argv[-3:] == ["resume", "th-1", "-"]
    env = backend._environment(order(tmp_path))
    assert env["OPENAI_API_KEY"] == "sk-openai-secret"
    assert "ANTHROPIC_API_KEY" not in env


def test_codex_without_a_base_url_uses_its_own_provider(tmp_path):
    argv = CodexBackend(environ={"OPENAI_API_KEY": "k"})._argv("codex", order(tmp_path), "")
    assert not any(arg.startswith("model_provider") for arg in argv)
    assert argv[argv.index("--sandbox") + 1] == "workspace-write"


def test_gemini_always_names_a_model_and_writes_its_settings_into_an_isolated_home(tmp_path):
    backend = GeminiBackend(environ=ENVIRON)
    argv = backend._argv("gemini", order(tmp_path, permission="read-only"), "")
    assert argv[argv.index("-m") + 1] == DEFAULT_GEMINI_MODEL
    assert argv[argv.index("--approval-mode") + 1] == "default"
    assert "--skip-trust" in argv
    env = backend._environment(order(tmp_path, isolate_home=True))
    settings = json.loads(
        (tmp_path / "s" / ".executor" / "homes" / "IMPL-001" / ".gemini" / "settings.json").read_text()
    )
    assert settings["security"]["auth"]["selectedType"] == "gemini-api-key"
    assert env["GOOGLE_GEMINI_BASE_URL"] == "http://127.0.0.1:7"
    assert env["GEMINI_CLI_TRUST_WORKSPACE"] == "true"


def test_preflight_names_a_missing_program_and_how_to_install_it(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setenv(AGENT_CLIS_ENV, str(tmp_path))
    message = CodexBackend(environ=ENVIRON).preflight("coder", SPEC)
    assert message is not None
    assert "`codex` is not installed" in message
    assert "npm install -g @openai/codex" in message


def test_preflight_names_the_missing_key_without_showing_any_key(tmp_path, monkeypatch):
    program = tmp_path / "gemini"
    program.write_text("#!/bin/sh\n")
    program.chmod(program.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv(AGENT_CLIS_ENV, str(tmp_path))
    message = GeminiBackend(environ={"HOME": str(tmp_path), "OPENAI_API_KEY": "sk-other"}).preflight("coder", SPEC)
    assert message is not None
    assert "set GEMINI_API_KEY or GOOGLE_API_KEY" in message
    assert "sk-other" not in message
    assert GeminiBackend(environ={"GEMINI_API_KEY": "x"}).preflight("coder", SPEC) is None


def test_cost_is_estimated_from_the_price_table_only_for_known_models():
    assert estimate_cost("gpt-5", 1_000_000, 100_000, 200_000) == pytest.approx(1.0 + 0.025 + 1.0)
    assert estimate_cost("openai/gpt-5-mini-2026", 1_000_000, 0) == pytest.approx(0.25)
    assert estimate_cost("my-local-llama", 1000, 1000) is None


@pytest.mark.parametrize("permission", ["read-only", "workspace-write"])
def test_an_agent_working_outside_the_session_may_still_use_its_artifacts_folder(tmp_path, permission):
    # A task's worktree (or a --workdir elsewhere): the CLI's sandbox keeps to the working directory,
    # so artifacts/ is named as an extra directory -- never .executor/.
    away = order(tmp_path, workdir=str(tmp_path / "worktree"), permission=permission)
    artifacts = str((tmp_path / "s" / "artifacts").resolve())
    claude = ClaudeBackend(environ=ENVIRON)._argv("claude", away, "")
    assert f"--add-dir={artifacts}" in claude
    codex = CodexBackend(environ=ENVIRON)._argv("codex", away, "")
    # Codex's read-only sandbox reads everywhere already; a writer needs the folder as a writable root.
    writable = [codex[i + 1] for i, arg in enumerate(codex) if arg == "--add-dir"]
    assert writable == ([] if permission == "read-only" else [artifacts])
    gemini = GeminiBackend(environ=ENVIRON)._argv("gemini", away, "")
    assert gemini[gemini.index("--include-directories") + 1] == artifacts
    extra = [*claude, *writable, gemini[gemini.index("--include-directories") + 1]]
    assert not any(arg.startswith("--add-dir") and ".executor" in arg for arg in extra)


def test_an_agent_working_in_the_session_s_own_tree_gets_no_extra_directory(tmp_path):
    here = order(tmp_path)  # the work directory holds the session
    assert not any(arg.startswith("--add-dir") for arg in ClaudeBackend(environ=ENVIRON)._argv("claude", here, ""))
    assert "--add-dir" not in CodexBackend(environ=ENVIRON)._argv("codex", here, "")
    assert "--include-directories" not in GeminiBackend(environ=ENVIRON)._argv("gemini", here, "")
