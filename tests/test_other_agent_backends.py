"""The opencode, aider and qwen backends: the command, its environment, and reading the output.

Sample outputs under ``tests/fixtures/agent_outputs/`` were recorded from opencode 1.18.33,
aider 0.86.2 and qwen-code 0.24.4 talking to a local fake Anthropic server; the few that could
not be provoked offline are marked as synthesized in that folder's README.  Runs go through
``backend.run`` with a stand-in program (a small Python script named like the CLI) that records
its argv, environment and stdin, then prints a fixture and exits with a chosen code.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import msgspec
import pytest

from backends._agent_process import order_env
from backends.agent_cli import AGENT_CLIS_ENV, AgentCliBackend
from backends.agent_stream import StreamState
from backends.aider import AiderBackend, AiderOutput, parse_count
from backends.opencode import OpencodeBackend, opencode_model, retry_after_header
from backends.process_types import ProcessOutcome
from backends.qwen import DASHSCOPE_BASE_URL, QwenBackend
from protocol.messages import AttemptResult, WorkOrder
from session.rolespec import RoleSpecFrontmatter
from tests.orders import RecordingHooks, make_order

FIXTURES = Path(__file__).parent / "fixtures" / "agent_outputs"

ALL_KEYS = {
    "ANTHROPIC_API_KEY": "sk-ant-test",
    "OPENAI_API_KEY": "sk-openai-test",
    "GEMINI_API_KEY": "gemini-test",
    "OPENROUTER_API_KEY": "or-test",
    "DASHSCOPE_API_KEY": "ds-test",
    "DEEPSEEK_API_KEY": "ds2-test",
}
SECRET = "do-not-leak-this"


# --------------------------------------------------------------------------- helpers


def order(tmp_path: Path, **changes: Any) -> WorkOrder:
    workdir = tmp_path / "work"
    workdir.mkdir(exist_ok=True)
    base = make_order(tmp_path / "session", "T-001", "coder", prompt="Fix the bug in app.py.\n", workdir=workdir)
    return msgspec.structs.replace(base, **changes)


def outcome(exit_code: int | None = 0, stderr: str = "") -> ProcessOutcome:
    return ProcessOutcome(
        pid=4242,
        create_time=None,
        exit_code=exit_code,
        signal=None,
        error_kind=None if not exit_code else "crash",
        error=None if not exit_code else f"exited with code {exit_code}",
        stdout_tail=b"",
        stderr_tail=stderr.encode(),
        stdout_bytes=0,
        stderr_bytes=len(stderr),
        duration_s=0.5,
    )


def feed(
    backend: AgentCliBackend, fixture: str, *, exit_code: int = 0, stderr: str = "", model: str | None = None
) -> tuple[StreamState, RecordingHooks]:
    """Pass a recorded output through the backend's parser, as ``run`` does, and return the state."""
    state = StreamState(model=model)
    hooks = RecordingHooks()
    for line in (FIXTURES / fixture).read_bytes().splitlines(keepends=True):
        backend._on_line(line, state, hooks)
    backend._finish(outcome(exit_code, stderr), state)
    return state, hooks


def first_event(fixture: str) -> dict[str, Any]:
    return json.loads((FIXTURES / fixture).read_text().splitlines()[0])


def added(env: dict[str, str], work_order: WorkOrder) -> set[str]:
    """The variables a backend put in beyond the allowlisted ones every worker gets."""
    return set(env) - set(order_env(work_order)) - {"TERM", "HOME", "TMPDIR"}


def install_fake_cli(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, fixture: str, exit_code: int = 0, script: str = ""
) -> Path:
    """A stand-in ``name`` program: records argv/env/stdin/cwd, runs ``script``, prints ``fixture``."""
    folder = tmp_path / "bin"
    folder.mkdir(exist_ok=True)
    record = folder / f"{name}.record.json"
    program = folder / name
    program.write_text(
        f"#!{sys.executable}\n"
        "import json, os, sys\n"
        "stdin = '' if sys.stdin is None or sys.stdin.closed else sys.stdin.read()\n"
        f"json.dump({{'argv': sys.argv, 'env': dict(os.environ), 'stdin': stdin, 'cwd': os.getcwd()}},"
        f" open({str(record)!r}, 'w'))\n"
        f"{script}\n"
        f"sys.stdout.write(open({str(FIXTURES / fixture)!r}).read())\n"
        f"sys.exit({exit_code})\n",
        encoding="utf-8",
    )
    program.chmod(program.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv(AGENT_CLIS_ENV, str(folder))
    monkeypatch.setenv("SOME_PARENT_SECRET", SECRET)
    return record


def run(backend: AgentCliBackend, work_order: WorkOrder) -> tuple[AttemptResult, RecordingHooks]:
    hooks = RecordingHooks()
    return backend.run(work_order, hooks, threading.Event()), hooks


# =========================================================================== opencode


@pytest.mark.parametrize(
    ("model", "provider", "flag"),
    [
        ("claude-sonnet-4-5", "anthropic", "anthropic/claude-sonnet-4-5"),
        ("gpt-5", "openai", "openai/gpt-5"),
        ("gemini-2.5-pro", "google", "google/gemini-2.5-pro"),
        ("openrouter/qwen/qwen3-coder", "openrouter", "openrouter/qwen/qwen3-coder"),
        ("my-local-model", None, "my-local-model"),
        (None, None, None),
    ],
)
def test_opencode_model_names_get_their_provider(model, provider, flag):
    assert opencode_model(model) == (provider, flag)


@pytest.mark.parametrize(
    ("permission", "auto", "rules"),
    [
        ("read-only", False, {"edit": "deny", "bash": "deny", "webfetch": "deny", "external_directory": "deny"}),
        (
            "workspace-write",
            False,
            {"edit": "allow", "bash": "allow", "webfetch": "allow", "external_directory": "deny"},
        ),
        ("full", True, None),
    ],
)
def test_opencode_permissions_become_rules_and_auto_only_for_full(tmp_path, permission, auto, rules):
    backend = OpencodeBackend(environ={"ANTHROPIC_API_KEY": "k"})
    work_order = order(tmp_path, permission=permission, model="claude-sonnet-4-5")
    argv = backend._argv("/bin/opencode", work_order, "the prompt")
    assert argv[:6] == ["/bin/opencode", "run", "--format", "json", "--agent", "build"]
    assert argv[argv.index("--model") + 1] == "anthropic/claude-sonnet-4-5"
    assert ("--auto" in argv) is auto
    assert "the prompt" not in argv  # the prompt goes on stdin
    env = backend._extra_env(work_order)
    assert (json.loads(env["OPENCODE_PERMISSION"]) if "OPENCODE_PERMISSION" in env else None) == rules
    config = json.loads(env["OPENCODE_CONFIG_CONTENT"])
    assert config["share"] == "disabled"


def test_opencode_turn_limit_base_url_and_resume(tmp_path):
    backend = OpencodeBackend(environ={"ANTHROPIC_API_KEY": "k", "ANTHROPIC_BASE_URL": "http://127.0.0.1:9/"})
    work_order = order(tmp_path, model="claude-sonnet-4-5", max_turns=4, resume_session="ses_abc")
    config = json.loads(backend._extra_env(work_order)["OPENCODE_CONFIG_CONTENT"])
    assert config["agent"] == {"build": {"steps": 5}}  # one more step to say where it stopped
    assert config["provider"] == {"anthropic": {"options": {"baseURL": "http://127.0.0.1:9/v1"}}}
    argv = backend._argv("opencode", msgspec.structs.replace(work_order, isolate_home=True), "")
    assert argv[argv.index("--session") + 1] == "ses_abc"  # an isolated HOME is kept across attempts


def test_opencode_environment_has_only_the_providers_key_and_allowlisted_variables(tmp_path, monkeypatch):
    monkeypatch.setenv("SOME_PARENT_SECRET", SECRET)
    backend = OpencodeBackend(environ={**ALL_KEYS, "GOOGLE_GEMINI_BASE_URL": "http://127.0.0.1:9"})
    work_order = order(tmp_path, model="claude-opus-4-1")
    env = backend._environment(work_order)
    assert env["ANTHROPIC_API_KEY"] == "sk-ant-test"
    assert not set(ALL_KEYS) - {"ANTHROPIC_API_KEY"} & set(env)
    assert SECRET not in json.dumps(env)
    assert "google" not in env["OPENCODE_CONFIG_CONTENT"]  # another provider's base URL stays out
    extra = {"OPENCODE_CONFIG_CONTENT", "OPENCODE_PERMISSION", "OPENCODE_DISABLE_AUTOUPDATE", "NO_COLOR"}
    assert added(env, work_order) == {"ANTHROPIC_API_KEY", *extra}

    env = backend._environment(order(tmp_path, model="openrouter/qwen/qwen3-coder"))
    assert {name for name in env if name in ALL_KEYS} == {"OPENROUTER_API_KEY"}
    env = backend._environment(order(tmp_path, model=None))  # opencode picks its default model
    assert {name for name in env if name in ALL_KEYS} == set(ALL_KEYS)


def test_opencode_preflight_wants_the_key_of_the_roles_provider(tmp_path, monkeypatch):
    install_fake_cli(tmp_path, monkeypatch, "opencode", "opencode/text.jsonl")
    role = RoleSpecFrontmatter(role="coder", prefix="C", inner_loop=False, message_types={}, model="gpt-5")
    backend = OpencodeBackend(environ={"ANTHROPIC_API_KEY": "k", "HOME": str(tmp_path)})
    problem = backend.preflight("coder", role)
    assert problem is not None
    assert "OPENAI_API_KEY" in problem
    assert OpencodeBackend(environ={"OPENAI_API_KEY": "k", "HOME": str(tmp_path)}).preflight("coder", role) is None


def test_opencode_run_sends_the_prompt_on_stdin_without_a_shell(tmp_path, monkeypatch):
    record = install_fake_cli(tmp_path, monkeypatch, "opencode", "opencode/tool_write.jsonl")
    backend = OpencodeBackend(environ={**ALL_KEYS, "PATH": os.environ["PATH"]})
    work_order = order(tmp_path, model="claude-sonnet-4-5", isolate_home=True)
    result, hooks = run(backend, work_order)
    seen = json.loads(record.read_text())
    assert seen["argv"][1:] == backend._argv("x", work_order, "")[1:]
    assert seen["stdin"] == "Fix the bug in app.py.\n"
    assert seen["cwd"] == work_order.workdir
    assert seen["env"]["HOME"].startswith(work_order.session_dir)  # the isolated HOME
    assert seen["env"]["ANTHROPIC_API_KEY"] == "sk-ant-test"
    assert not set(ALL_KEYS) - {"ANTHROPIC_API_KEY"} & set(seen["env"])
    assert SECRET not in json.dumps(seen["env"])
    assert result.ok, result.error
    assert result.summary == "done writing"
    assert (result.tokens_in, result.tokens_out, result.tokens_cached) == (220, 40, 20)
    assert result.cost_usd == pytest.approx(0.001206)
    assert result.cost_estimated is False
    assert result.agent_session_id == first_event("opencode/tool_write.jsonl")["sessionID"]
    assert (None, "step 1: write out.txt") in hooks.progress_calls


def test_opencode_steps_beyond_max_turns_are_a_max_turns_failure(tmp_path, monkeypatch):
    install_fake_cli(tmp_path, monkeypatch, "opencode", "opencode/tool_write.jsonl")
    result, _ = run(OpencodeBackend(environ=ALL_KEYS), order(tmp_path, model="claude-sonnet-4-5", max_turns=1))
    assert not result.ok
    assert result.error_kind == "max_turns"
    assert "2 steps" in (result.error or "")


def test_opencode_text_turn(tmp_path):
    state, hooks = feed(OpencodeBackend(), "opencode/text.jsonl", model="claude-sonnet-4-5")
    assert state.final_text == "Hello from fake"
    assert state.session_id == first_event("opencode/text.jsonl")["sessionID"]
    # input 100 (cache excluded by opencode) + 10 read from the cache; output 20
    assert (state.tokens_in, state.tokens_out, state.tokens_cached) == (110, 20, 10)
    assert state.cost_usd == pytest.approx(0.000603)
    assert state.error_kind is None
    assert state.finished
    assert hooks.progress_calls[0] == (None, "opencode started")


def test_opencode_rejected_permission_is_a_denial_even_with_exit_0():
    state, _ = feed(OpencodeBackend(), "opencode/permission_rejected.jsonl")
    assert state.permission_denials == ["write"]
    assert state.error_kind is None  # the base class turns denials into permission_denied


@pytest.mark.parametrize(
    ("fixture", "kind", "retry_after", "words"),
    [
        ("opencode/rate_limited.jsonl", "rate_limited", 2.0, "fake rate limit"),
        ("opencode/overloaded.jsonl", "overloaded", None, "API status 529"),
        ("opencode/context_overflow.jsonl", "context_too_long", None, "prompt is too long"),
        ("opencode/auth_missing.jsonl", "auth", None, "API key is missing"),
        ("opencode/auth_401.jsonl", "auth", None, "invalid x-api-key"),
    ],
)
def test_opencode_errors_map_to_kinds(fixture, kind, retry_after, words):
    state, _ = feed(OpencodeBackend(), fixture, exit_code=1)
    assert state.error_kind == kind
    assert state.retry_after_s == retry_after
    assert words in (state.error or "")


def test_opencode_exit_1_without_events_is_a_crash_naming_stderr():
    state = StreamState()
    OpencodeBackend()._finish(outcome(1, "Error: Session not found\n"), state)
    assert state.error_kind == "crash"
    assert state.error == "Error: Session not found"


def test_opencode_retry_after_header_forms():
    assert retry_after_header({"retry-after": "7"}) == 7.0
    assert retry_after_header({"Retry-After-Ms": "1500"}) == 1.5
    assert retry_after_header({"retry-after": "Thu, 01 Jan 1970 00:00:00 GMT"}) == 0.0
    assert retry_after_header({"content-type": "application/json"}) is None
    assert retry_after_header(None) is None


def test_opencode_unknown_lines_are_ignored():
    state = StreamState()
    backend = OpencodeBackend()
    for line in (b"not json\n", b'{"type":"reasoning","part":{"text":"hm"}}\n', b"[1,2]\n"):
        backend._on_line(line, state, RecordingHooks())
    assert state == StreamState()


# =========================================================================== aider


def git_init(folder: Path) -> None:
    subprocess.run(["git", "init", "-q", str(folder)], check=True)


@pytest.mark.parametrize(("permission", "dry_run"), [("read-only", True), ("workspace-write", False), ("full", False)])
def test_aider_argv(tmp_path, permission, dry_run):
    work_order = order(tmp_path, permission=permission, model="anthropic/claude-sonnet-4-5")
    git_init(Path(work_order.workdir))
    argv = AiderBackend(environ={})._argv("/opt/aider", work_order, "the prompt")
    assert argv[0] == "/opt/aider"
    assert argv[argv.index("--message-file") + 1] == work_order.prompt_file
    for flag in ("--yes-always", "--no-stream", "--no-pretty", "--no-auto-commits", "--no-check-update"):
        assert flag in argv
    assert "--no-show-model-warnings" in argv
    assert "--no-analytics" in argv  # --yes-always would otherwise opt in to analytics
    assert argv[argv.index("--model") + 1] == "anthropic/claude-sonnet-4-5"
    assert ("--dry-run" in argv) is dry_run
    assert "--no-git" not in argv
    assert "the prompt" not in argv
    history = Path(argv[argv.index("--chat-history-file") + 1])
    assert history.parent == Path(work_order.log_path).parent  # not in the project
    assert AiderBackend.prompt_on_stdin is False


def test_aider_outside_a_git_repo_does_not_create_one(tmp_path):
    work_order = order(tmp_path)
    assert "--no-git" in AiderBackend(environ={})._argv("aider", work_order, "")


@pytest.mark.parametrize(
    ("model", "key"),
    [
        ("anthropic/claude-sonnet-4-5", "ANTHROPIC_API_KEY"),
        ("claude-sonnet-4-5", "ANTHROPIC_API_KEY"),
        ("gpt-4.1", "OPENAI_API_KEY"),
        ("openrouter/qwen/qwen3-coder", "OPENROUTER_API_KEY"),
        ("gemini/gemini-2.5-pro", "GEMINI_API_KEY"),
        ("deepseek/deepseek-chat", "DEEPSEEK_API_KEY"),
    ],
)
def test_aider_environment_has_only_the_models_key(tmp_path, monkeypatch, model, key):
    monkeypatch.setenv("SOME_PARENT_SECRET", SECRET)
    work_order = order(tmp_path, model=model)
    env = AiderBackend(environ={**ALL_KEYS, "ANTHROPIC_API_BASE": "http://127.0.0.1:9"})._environment(work_order)
    assert {name for name in env if name in ALL_KEYS} == {key}
    assert SECRET not in json.dumps(env)
    assert env["COLUMNS"] == "4096"
    assert env["BROWSER"] == "true"
    extra = {"COLUMNS", "NO_COLOR", "LITELLM_LOCAL_MODEL_COST_MAP", "BROWSER", "ANTHROPIC_API_BASE"}
    assert added(env, work_order) == {key, *extra}


def test_aider_run_reads_the_message_file_not_stdin_and_drops_its_cache_from_files_modified(tmp_path, monkeypatch):
    work_order = order(tmp_path, model="anthropic/claude-sonnet-4-5")
    workdir = Path(work_order.workdir)
    git_init(workdir)
    script = (
        "os.makedirs('.aider.tags.cache.v4', exist_ok=True)\n"
        "open('.aider.tags.cache.v4/cache.db', 'w').write('x')\n"
        "open('out.txt', 'w').write('written\\n')"
    )
    record = install_fake_cli(tmp_path, monkeypatch, "aider", "aider/edit.txt", script=script)
    result, hooks = run(AiderBackend(environ=ALL_KEYS), work_order)
    seen = json.loads(record.read_text())
    assert seen["stdin"] == ""
    assert seen["argv"][seen["argv"].index("--message-file") + 1] == work_order.prompt_file
    assert {name for name in seen["env"] if name in ALL_KEYS} == {"ANTHROPIC_API_KEY"}
    assert result.ok, result.error
    assert result.files_modified == ("out.txt",)
    assert result.summary == "I will create the file."
    assert (result.tokens_in, result.tokens_out, result.tokens_cached) == (110, 20, 10)
    assert result.cost_usd == pytest.approx(0.0006)
    assert result.agent_session_id is None
    assert (None, "applied edit to out.txt") in hooks.progress_calls


def test_aider_reply_usage_and_cost():
    state, hooks = feed(AiderBackend(), "aider/edit.txt")
    assert state.final_text is not None
    assert state.final_text.startswith("I will create the file.\n\nout.txt\n```\n<<<<<<< SEARCH")
    assert state.final_text.endswith("Done: the file is there.")
    assert "Repo-map" not in state.final_text
    assert "Applied edit" not in state.final_text
    assert state.model == "anthropic/claude-sonnet-4-5"  # from the banner
    assert (state.tokens_in, state.tokens_out, state.tokens_cached) == (110, 20, 10)
    assert state.cost_usd == pytest.approx(0.0006)
    assert state.error_kind is None
    assert hooks.progress_calls[0] == (None, "aider started (anthropic/claude-sonnet-4-5)")


def test_aider_cost_on_its_own_line_and_rounded_counts():
    state, _ = feed(AiderBackend(), "aider/cache_write_and_hit.txt")
    assert state.final_text == "The change is in place."
    assert (state.tokens_in, state.tokens_out, state.tokens_cached) == (12_000, 1_200, 8_100)
    assert state.cost_usd == pytest.approx(0.10)  # the session total, not the last message


@pytest.mark.parametrize(
    ("text", "count"), [("987", 987), ("1.2k", 1_200), ("12k", 12_000), ("1.5M", 1_500_000), ("2,345", 2_345)]
)
def test_aider_token_counts(text, count):
    assert parse_count(text) == count


def test_aider_retried_rate_limit_followed_by_a_reply_is_a_success():
    state, _ = feed(AiderBackend(), "aider/retry_then_success.txt")
    assert state.error_kind is None
    assert state.final_text == "Recovered answer."


@pytest.mark.parametrize(
    ("fixture", "kind", "retry_after", "words"),
    [
        ("aider/rate_limited.txt", "rate_limited", None, "RateLimitError"),
        ("aider/rate_limited_openai.txt", "rate_limited", 3.8, "Rate limit reached"),
        ("aider/overloaded.txt", "overloaded", None, "overloaded_error"),
        ("aider/context_window.txt", "context_too_long", None, "has hit a token limit"),
        ("aider/auth.txt", "auth", None, "invalid x-api-key"),
    ],
)
def test_aider_errors_with_exit_0_map_to_kinds(fixture, kind, retry_after, words):
    state, _ = feed(AiderBackend(), fixture)
    assert state.error_kind == kind
    assert state.retry_after_s == retry_after
    assert words in (state.error or "")


def test_aider_non_zero_exit_is_a_crash_with_stderr():
    state, _ = feed(AiderBackend(), "aider/auth.txt", exit_code=1, stderr="Traceback ...\nKeyError: 'x'\n")
    assert state.error_kind == "auth"  # what the output said wins
    state = StreamState()
    backend = AiderBackend()
    backend._finish(outcome(2, "aider: error: unrecognized arguments: --bogus\n"), state)
    assert state.error_kind == "crash"
    assert "unrecognized arguments" in (state.error or "")


def test_aider_output_parser_ignores_the_banner_and_keeps_text_without_usage():
    parser = AiderOutput()
    state = StreamState()
    hooks = RecordingHooks()
    for line in ("Aider v0.86.2", "Model: gpt-4.1 with diff edit format", "", "An answer", "on two lines"):
        parser.feed(line, state, hooks)
    parser.close(state)
    assert state.final_text == "An answer\non two lines"
    assert state.model == "gpt-4.1"


# =========================================================================== qwen


@pytest.mark.parametrize(
    ("permission", "mode", "shell"),
    [("read-only", "default", False), ("workspace-write", "auto-edit", True), ("full", "yolo", False)],
)
def test_qwen_argv(tmp_path, permission, mode, shell):
    backend = QwenBackend(environ={"OPENAI_API_KEY": "k"})
    work_order = order(tmp_path, permission=permission, model="qwen3-coder-plus", max_turns=7)
    argv = backend._argv("/bin/qwen", work_order, "the prompt")
    assert argv[:4] == ["/bin/qwen", "Carry out the task given above.", "--output-format", "stream-json"]
    assert argv[argv.index("--approval-mode") + 1] == mode
    assert ("--allowed-tools" in argv) is shell
    assert argv[argv.index("--auth-type") + 1] == "openai"
    assert argv[argv.index("--model") + 1] == "qwen3-coder-plus"
    assert argv[argv.index("--max-session-turns") + 1] == "7"
    assert "the prompt" not in argv


def test_qwen_resumes_its_session(tmp_path):
    backend = QwenBackend(environ={"OPENAI_API_KEY": "k"})
    argv = backend._argv("qwen", order(tmp_path, resume_session="27d1ce56", isolate_home=True), "")
    assert argv[argv.index("--resume") + 1] == "27d1ce56"


@pytest.mark.parametrize(
    ("keys", "model", "auth", "passed"),
    [
        (ALL_KEYS, "qwen3-coder-plus", "openai", {"OPENAI_API_KEY": "sk-openai-test"}),
        (ALL_KEYS, "claude-sonnet-4-5", "anthropic", {"ANTHROPIC_API_KEY": "sk-ant-test"}),
        (ALL_KEYS, "gemini-2.5-pro", "gemini", {"GEMINI_API_KEY": "gemini-test"}),
        ({"DASHSCOPE_API_KEY": "ds-test"}, "qwen3-coder-plus", "openai", {"OPENAI_API_KEY": "ds-test"}),
        ({"ANTHROPIC_API_KEY": "sk-ant-test"}, None, "anthropic", {"ANTHROPIC_API_KEY": "sk-ant-test"}),
    ],
)
def test_qwen_chooses_one_auth_and_passes_one_key(tmp_path, monkeypatch, keys, model, auth, passed):
    monkeypatch.setenv("SOME_PARENT_SECRET", SECRET)
    backend = QwenBackend(environ=keys)
    assert backend.auth_for(model)[0] == auth
    work_order = order(tmp_path, model=model)
    env = backend._environment(work_order)
    assert {name: env[name] for name in env if name in ALL_KEYS} == passed
    assert SECRET not in json.dumps(env)
    assert env["QWEN_USAGE_STATISTICS_ENABLED"] == "false"
    if keys == {"DASHSCOPE_API_KEY": "ds-test"}:
        assert env["OPENAI_BASE_URL"] == DASHSCOPE_BASE_URL
    if auth == "anthropic":
        assert env["ANTHROPIC_BASE_URL"] == "https://api.anthropic.com"  # this version refuses to start without
    base_urls = {"OPENAI_BASE_URL", "ANTHROPIC_BASE_URL"}
    extra = {"QWEN_USAGE_STATISTICS_ENABLED", "NO_COLOR"}
    assert added(env, work_order) - base_urls == {*passed, *extra}


def test_qwen_keeps_the_users_base_url_and_model_variables_for_its_auth_only(tmp_path):
    environ = {
        "OPENAI_API_KEY": "k",
        "OPENAI_BASE_URL": "http://127.0.0.1:9/v1",
        "OPENAI_MODEL": "qwen3-coder-plus",
        "ANTHROPIC_BASE_URL": "http://127.0.0.1:8",
    }
    env = QwenBackend(environ=environ)._environment(order(tmp_path))
    assert env["OPENAI_BASE_URL"] == "http://127.0.0.1:9/v1"
    assert env["OPENAI_MODEL"] == "qwen3-coder-plus"
    assert "ANTHROPIC_BASE_URL" not in env


def test_qwen_isolated_home_gets_settings(tmp_path):
    work_order = order(tmp_path, isolate_home=True, model="claude-sonnet-4-5")
    env = QwenBackend(environ={"ANTHROPIC_API_KEY": "k"})._environment(work_order)
    settings = json.loads((Path(env["HOME"]) / ".qwen" / "settings.json").read_text())
    assert settings["security"]["auth"]["selectedType"] == "anthropic"
    assert settings["privacy"]["usageStatisticsEnabled"] is False
    assert settings["telemetry"]["enabled"] is False


def test_qwen_run_sends_the_prompt_on_stdin(tmp_path, monkeypatch):
    record = install_fake_cli(tmp_path, monkeypatch, "qwen", "qwen/tool_write.jsonl")
    work_order = order(tmp_path, model="claude-sonnet-4-5")
    result, hooks = run(QwenBackend(environ=ALL_KEYS), work_order)
    seen = json.loads(record.read_text())
    assert seen["stdin"] == "Fix the bug in app.py.\n"
    assert seen["argv"][1:] == QwenBackend(environ=ALL_KEYS)._argv("x", work_order, "")[1:]
    assert {name for name in seen["env"] if name in ALL_KEYS} == {"ANTHROPIC_API_KEY"}
    assert result.ok, result.error
    assert result.summary == "done writing"
    assert (result.tokens_in, result.tokens_out, result.tokens_cached) == (220, 40, 20)
    assert result.cost_estimated is True  # qwen reports no cost
    assert result.agent_session_id is not None
    assert (None, "turn 1: write_file") in hooks.progress_calls


def test_qwen_text_turn():
    state, hooks = feed(QwenBackend(), "qwen/text.jsonl")
    assert state.final_text == "Hello from fake"
    assert state.texts == ["Hello from fake"]
    assert state.session_id == first_event("qwen/text.jsonl")["session_id"]
    assert state.model == "claude-sonnet-4-5"
    assert (state.tokens_in, state.tokens_out, state.tokens_cached) == (220, 40, 20)
    assert state.cost_usd is None
    assert state.error_kind is None
    assert hooks.progress_calls[0] == (None, "qwen started (claude-sonnet-4-5)")


def test_qwen_refused_tool_is_a_denial():
    state, _ = feed(QwenBackend(), "qwen/permission_denied.jsonl")
    assert state.permission_denials == ["Write"]
    assert state.final_text == "done writing"


def test_qwen_retries_are_progress_and_the_run_can_still_succeed():
    state, hooks = feed(QwenBackend(), "qwen/retry_then_success.jsonl")
    assert state.error_kind is None
    assert state.final_text == "ok"
    assert (None, "API error: retry 1 of 10, waiting 60s") in hooks.progress_calls


@pytest.mark.parametrize(
    ("fixture", "exit_code", "stderr", "kind", "words"),
    [
        ("qwen/context_too_long.jsonl", 1, "", "context_too_long", "prompt is too long"),
        ("qwen/rate_limited.jsonl", 1, "", "rate_limited", "429"),
        ("qwen/overloaded.jsonl", 1, "", "overloaded", "529"),
        ("qwen/auth_401.jsonl", 1, "", "auth", "401"),
        ("qwen/no_auth.jsonl", 1, "", "auth", "No auth type is selected"),
        ("qwen/max_turns.jsonl", 53, (FIXTURES / "qwen/max_turns.stderr").read_text(), "max_turns", "max session"),
    ],
)
def test_qwen_errors_map_to_kinds(fixture, exit_code, stderr, kind, words):
    state, _ = feed(QwenBackend(), fixture, exit_code=exit_code, stderr=stderr)
    assert state.error_kind == kind
    assert words in (state.error or "")
    assert not any(text.startswith("[API Error") for text in state.texts)  # the error is not the answer


def test_qwen_rate_limit_with_a_wait_in_the_message():
    state = StreamState()
    line = {
        "type": "result",
        "subtype": "error_during_execution",
        "is_error": True,
        "error": {"message": "[API Error: 429 Rate limit reached for qwen3-coder-plus. Please try again in 20s.]"},
    }
    QwenBackend()._on_line(json.dumps(line).encode(), state, RecordingHooks())
    assert state.error_kind == "rate_limited"
    assert state.retry_after_s == 20.0


def test_qwen_unknown_exit_code_names_stderr():
    state = StreamState()
    QwenBackend()._finish(outcome(1, "Ripgrep not available\nError: something broke\n"), state)
    assert state.error_kind == "crash"
    assert state.error == "qwen exited with code 1: Error: something broke"


# =========================================================================== all three


@pytest.mark.parametrize("backend", [OpencodeBackend(), AiderBackend(), QwenBackend()], ids=lambda b: b.name)
def test_the_flags_we_pass_are_in_the_installed_versions_help(backend):
    help_text = (FIXTURES / backend.name / "help.txt").read_text()
    assert backend.probe_flags
    for flag in backend.probe_flags:
        assert flag in help_text, flag
    assert backend.install_hint
    assert backend.key_variables


@pytest.mark.parametrize("backend_class", [OpencodeBackend, AiderBackend, QwenBackend])
def test_a_missing_program_is_spawn_failed(tmp_path, monkeypatch, backend_class):
    monkeypatch.setenv(AGENT_CLIS_ENV, str(tmp_path / "nothing-here"))
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    result, _ = run(backend_class(environ=ALL_KEYS), order(tmp_path))
    assert result.error_kind == "spawn_failed"
