"""The agent backends read what the real CLIs printed (recorded runs) into the right result.

Recordings live in tests/fixtures/agent_outputs/<cli>/<case>.* (stdout, stderr, and a
meta file with the exit code), captured from the real CLIs against tests/fake_llm.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from backends.agent_cli import AgentCliBackend
from backends.agent_stream import StreamState
from backends.claude import ClaudeBackend
from backends.codex import CodexBackend
from backends.gemini import GeminiBackend
from backends.process_types import ProcessOutcome
from tests.orders import RecordingHooks, make_order

FIXTURES = Path(__file__).parent / "fixtures" / "agent_outputs"
BACKENDS: dict[str, AgentCliBackend] = {
    "claude": ClaudeBackend(environ={}),
    "codex": CodexBackend(environ={}),
    "gemini": GeminiBackend(environ={}),
}


def recorded(cli: str, case: str):
    folder = FIXTURES / cli
    candidates = [folder / f"{case}{suffix}" for suffix in (".jsonl", ".json")]
    stdout = next((path for path in candidates if path.exists()), None)
    if stdout is None:
        pytest.skip(f"no recording {cli}/{case}")
    meta = json.loads((folder / f"{case}.meta.json").read_text())
    stderr = folder / f"{case}.stderr"
    return stdout.read_bytes(), stderr.read_bytes() if stderr.exists() else b"", meta


def parse(cli: str, case: str, tmp_path: Path):
    """Feed a recording through the backend exactly as a run would, and return its result."""
    backend = BACKENDS[cli]
    stdout, stderr, meta = recorded(cli, case)
    hooks = RecordingHooks()
    state = StreamState()
    for line in stdout.splitlines():
        backend._on_line(line, state, hooks)
    code = meta["exit_code"]
    killed = meta.get("killed_by_test")
    outcome = ProcessOutcome(
        pid=1,
        create_time=None,
        exit_code=None if killed else code,
        signal=9 if killed else None,
        error_kind="hang" if killed else ("crash" if code else None),
        error="no output (hang timeout)" if killed else (f"exited with code {code}" if code else None),
        stdout_tail=stdout[-4096:],
        stderr_tail=stderr[-4096:],
        stdout_bytes=len(stdout),
        stderr_bytes=len(stderr),
        duration_s=1.0,
    )
    if outcome.error_kind in (None, "crash"):
        backend._finish(outcome, state)
    folder = tmp_path / "session"
    (folder / "artifacts").mkdir(parents=True)
    order = make_order(folder, "IMPL-001", "coder", backend=cli)
    return backend._result(order, outcome, state, None, None, tmp_path), hooks


# --- Claude Code -----------------------------------------------------------------------------


def test_claude_text_turn_gives_text_usage_cost_and_session(tmp_path):
    result, hooks = parse("claude", "text", tmp_path)
    assert result.ok
    assert result.summary == "Hello from the fake model."
    assert (result.tokens_in, result.tokens_out, result.tokens_cached) == (110, 20, 10)
    assert result.cost_usd == pytest.approx(0.000603)
    assert result.cost_estimated is False
    assert result.agent_session_id
    assert result.model
    assert any("claude started" in note for _, note in hooks.progress_calls)


def test_claude_write_file_turn_succeeds_with_a_tool_progress_note(tmp_path):
    result, hooks = parse("claude", "write_file", tmp_path)
    assert result.ok, result.error
    assert any("Write" in note for _, note in hooks.progress_calls)


@pytest.mark.parametrize(
    ("case", "kind"),
    [
        ("rate_limited", "rate_limited"),
        ("overloaded", "overloaded"),
        ("overloaded_503", "overloaded"),
        ("bad_request", "crash"),
        ("prompt_too_long", "context_too_long"),
        ("max_turns", "max_turns"),
        ("permission_denied", "permission_denied"),
    ],
)
def test_claude_failures_map_to_their_error_kind(tmp_path, case, kind):
    result, _ = parse("claude", case, tmp_path)
    assert not result.ok
    assert result.error_kind == kind, result.error


def test_claude_permission_denial_with_exit_0_is_a_failure_naming_the_tool(tmp_path):
    result, _ = parse("claude", "permission_denied", tmp_path)
    assert result.exit_code == 0
    assert "Write" in (result.error or "")
    assert "the work was not done" in (result.error or "")


def test_claude_rate_limit_carries_the_retry_delay_it_was_given(tmp_path):
    result, _ = parse("claude", "rate_limited", tmp_path)
    assert result.retry_after_s is not None
    assert result.retry_after_s > 0


def test_claude_json_output_format_is_read_too(tmp_path):
    result, _ = parse("claude", "text_json", tmp_path)
    document = json.loads((FIXTURES / "claude" / "text_json.json").read_text())
    assert result.ok
    assert result.summary == document["result"]
    assert result.agent_session_id == document["session_id"]


# --- Codex -----------------------------------------------------------------------------------


def test_codex_text_turn_gives_text_usage_and_thread(tmp_path):
    result, _ = parse("codex", "text", tmp_path)
    assert result.ok, result.error
    assert result.summary
    assert result.tokens_out
    assert result.agent_session_id
    assert result.cost_usd is None or result.cost_estimated


@pytest.mark.parametrize(
    ("case", "kind"),
    [
        ("rate_limited", "rate_limited"),
        ("overloaded", "overloaded"),
        ("overloaded_503", "overloaded"),
        ("bad_request", "crash"),
    ],
)
def test_codex_failures_map_to_their_error_kind(tmp_path, case, kind):
    result, _ = parse("codex", case, tmp_path)
    assert not result.ok
    assert result.error_kind == kind, result.error


# --- Gemini ----------------------------------------------------------------------------------


def test_gemini_text_turn_gives_text_usage_and_session(tmp_path):
    result, _ = parse("gemini", "text", tmp_path)
    assert result.ok, result.error
    assert result.summary
    assert result.tokens_out
    assert result.agent_session_id


@pytest.mark.parametrize(
    ("case", "kind"),
    [
        ("rate_limited", "rate_limited"),
        ("overloaded", "overloaded"),
        ("overloaded_503", "overloaded"),
        ("bad_request", "crash"),
        ("max_turns", "max_turns"),
        ("permission_denied", "permission_denied"),
    ],
)
def test_gemini_failures_map_to_their_error_kind(tmp_path, case, kind):
    result, _ = parse("gemini", case, tmp_path)
    assert not result.ok
    assert result.error_kind == kind, result.error


def test_gemini_rate_limit_carries_the_suggested_retry_delay(tmp_path):
    result, _ = parse("gemini", "rate_limited", tmp_path)
    assert result.retry_after_s == 1.0


def test_gemini_refused_write_tool_names_the_tool(tmp_path):
    result, _ = parse("gemini", "permission_denied", tmp_path)
    assert "write_file" in (result.error or "")


def test_codex_file_writing_turn_reports_usage_and_text(tmp_path):
    result, _ = parse("codex", "write_file", tmp_path)
    assert result.ok, result.error
    assert (result.tokens_in, result.tokens_out, result.tokens_cached) == (200, 40, 20)
