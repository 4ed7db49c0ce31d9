"""The fake LLM server, alone (plain HTTP) and driving the real agent CLIs.

CLI tests skip when a CLI is not installed (see agent_env.cli_path). With
TEAM_EXECUTOR_RECORD_AGENT_OUTPUTS=1 they (re)write tests/fixtures/agent_outputs/<cli>/<case>.*:
the CLI's stdout (.jsonl for JSONL streams, .json for one JSON document), its .stderr, and a
.meta.json with the exit code, argv, environment and the requests the fake server saw.
"""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import time
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from agent_env import CLIS, CliRun, cli_invocation, cli_path, json_events, kill_process_group, run_cli, start_cli
from fake_llm import (
    CACHED_TOKENS,
    INPUT_TOKENS,
    OUTPUT_TOKENS,
    BadRequest,
    FakeLLM,
    Hang,
    Overloaded,
    RateLimited,
    ReadFile,
    RecordedRequest,
    Text,
    Turn,
    WriteFile,
)

try:
    import httpx2 as httpx  # what the `mcp` dependency installs
except ImportError:  # pragma: no cover - depends on the environment
    httpx = pytest.importorskip("httpx")

FIXTURES = Path(__file__).parent / "fixtures" / "agent_outputs"
RECORD = os.environ.get("TEAM_EXECUTOR_RECORD_AGENT_OUTPUTS") == "1"
PROMPT = "Follow the scripted turns."

# Cases recorded per CLI; stdout is <case>.jsonl except for JSON_CASES (<case>.json).
RECORDED_CASES = {
    "claude": [
        "text",
        "text_json",
        "write_file",
        "rate_limited",
        "overloaded",
        "overloaded_503",
        "bad_request",
        "prompt_too_long",
        "permission_denied",
        "max_turns",
        "hang",
        "timeout",
    ],
    "codex": [
        "text",
        "write_file",
        "rate_limited",
        "overloaded",
        "overloaded_503",
        "bad_request",
        "permission_denied",
        "hang",
        "timeout",
    ],
    "gemini": [
        "text",
        "text_json",
        "write_file",
        "rate_limited",
        "overloaded",
        "overloaded_503",
        "bad_request",
        "bad_request_json",
        "permission_denied",
        "max_turns",
        "hang",
    ],
}
JSON_CASES = {"text_json", "bad_request_json"}


# --------------------------------------------------------------------------- plain HTTP


def sse_events(text: str) -> list[tuple[str | None, dict[str, Any]]]:
    """(event name, data) pairs of an SSE body."""
    events = []
    for block in text.replace("\r\n", "\n").split("\n\n"):
        name, data = None, []
        for line in block.splitlines():
            if line.startswith("event:"):
                name = line[6:].strip()
            elif line.startswith("data:"):
                data.append(line[5:].strip())
        if data:
            events.append((name, json.loads("\n".join(data))))
    return events


@pytest.fixture
def llm():
    with FakeLLM() as server:
        yield server


def test_anthropic_stream_text_and_tool_use(llm):
    llm.script(Text("hello there, this is longer than one chunk"), WriteFile("/tmp/x.txt", "data\n"))
    body = {"model": "claude-x", "stream": True, "max_tokens": 10, "messages": [], "tools": [{"name": "Write"}]}
    with httpx.Client(base_url=llm.url) as client:
        first = client.post("/v1/messages?beta=true", json=body)
        second = client.post("/v1/messages", json=body)
    assert first.status_code == 200
    assert first.headers["content-type"].startswith("text/event-stream")
    events = sse_events(first.text)
    kinds = [name for name, _ in events]
    assert kinds[0] == "message_start"
    assert kinds[-2:] == ["message_delta", "message_stop"]
    assert all(name == data["type"] for name, data in events)
    start = events[0][1]["message"]
    assert start["usage"]["input_tokens"] == INPUT_TOKENS
    assert start["usage"]["cache_read_input_tokens"] == CACHED_TOKENS
    text = "".join(d["delta"]["text"] for n, d in events if n == "content_block_delta")
    assert text == "hello there, this is longer than one chunk"
    delta = events[-2][1]
    assert delta["delta"]["stop_reason"] == "end_turn"
    assert delta["usage"]["output_tokens"] == OUTPUT_TOKENS

    events = sse_events(second.text)
    block = next(d["content_block"] for n, d in events if n == "content_block_start")
    assert block["type"] == "tool_use"
    assert block["name"] == "Write"
    raw = "".join(d["delta"]["partial_json"] for n, d in events if n == "content_block_delta")
    assert json.loads(raw) == {"file_path": "/tmp/x.txt", "content": "data\n"}
    assert events[-2][1]["delta"]["stop_reason"] == "tool_use"
    assert [r.turn for r in llm.model_requests()] == ["Text", "WriteFile"]
    assert llm.requests[0].query == "beta=true"


def test_anthropic_side_requests_errors_and_probes(llm):
    llm.script(RateLimited(7), Overloaded(529), BadRequest("too long"))
    tools = {"model": "m", "stream": False, "messages": [], "tools": [{"name": "Read"}]}
    with httpx.Client(base_url=llm.url) as client:
        assert client.head("/").status_code == 200
        assert client.head("/api/hello").status_code == 404
        side = client.post("/v1/messages", json={"model": "m", "messages": []})  # no tools: not scripted
        limited = client.post("/v1/messages", json=tools)
        overloaded = client.post("/v1/messages", json=tools)
        bad = client.post("/v1/messages", json=tools)
        default = client.post("/v1/messages", json=tools)
    assert side.json()["content"] == [{"type": "text", "text": "ok"}]
    assert limited.status_code == 429
    assert limited.headers["retry-after"] == "7"
    assert limited.json()["error"]["type"] == "rate_limit_error"
    assert overloaded.status_code == 529
    assert overloaded.json()["error"]["type"] == "overloaded_error"
    assert bad.status_code == 400
    assert bad.json() == {"type": "error", "error": {"type": "invalid_request_error", "message": "too long"}}
    assert default.json()["content"][0]["text"] == "ok"
    assert default.json()["usage"]["output_tokens"] == OUTPUT_TOKENS
    assert [r.turn for r in llm.model_requests()] == ["RateLimited", "Overloaded", "BadRequest", "default"]
    assert llm.pending == 0


def test_openai_responses_stream(llm):
    llm.script(
        Text("hi"),
        WriteFile("a.txt", "x\n"),
        WriteFile("b.txt", "no newline"),
        ReadFile("c.txt"),
        Overloaded(503),
        RateLimited(2, repeat=2),
    )
    tools = [{"type": "function", "name": "exec_command"}, {"type": "custom", "name": "apply_patch"}]
    body = {"model": "gpt-x", "stream": True, "input": [], "tools": tools}
    with httpx.Client(base_url=llm.url) as client:
        replies = [client.post("/v1/responses", json=body) for _ in range(7)]
    events = sse_events(replies[0].text)
    kinds = [name for name, _ in events]
    assert kinds[0] == "response.created"
    assert "response.output_text.delta" in kinds
    assert kinds[-1] == "response.completed"
    assert [d["sequence_number"] for _, d in events] == list(range(len(events)))
    done = [d["item"] for n, d in events if n == "response.output_item.done"]
    assert done[0]["content"][0]["text"] == "hi"
    usage = events[-1][1]["response"]["usage"]
    assert usage["input_tokens"] == INPUT_TOKENS
    assert usage["output_tokens"] == OUTPUT_TOKENS
    assert usage["input_tokens_details"]["cached_tokens"] == CACHED_TOKENS

    patch = next(d["item"] for n, d in sse_events(replies[1].text) if n == "response.output_item.done")
    assert patch["type"] == "custom_tool_call"
    assert patch["name"] == "apply_patch"
    assert patch["input"].splitlines() == ["*** Begin Patch", "*** Add File: a.txt", "+x", "*** End Patch"]
    shell = next(d["item"] for n, d in sse_events(replies[2].text) if n == "response.output_item.done")
    assert shell["type"] == "function_call"
    assert shell["name"] == "exec_command"
    assert json.loads(shell["arguments"]) == {"cmd": "printf '%s' 'no newline' > 'b.txt'"}
    read = next(d["item"] for n, d in sse_events(replies[3].text) if n == "response.output_item.done")
    assert json.loads(read["arguments"]) == {"cmd": "cat 'c.txt'"}
    assert replies[4].status_code == 503
    assert replies[4].json()["error"]["code"] == "server_is_overloaded"
    assert [r.status_code for r in replies[5:]] == [429, 429]
    assert replies[5].headers["retry-after"] == "2"
    assert replies[5].json()["error"]["code"] == "rate_limit_exceeded"


def test_gemini_stream_side_calls_and_errors(llm):
    llm.script(Text("hello"), WriteFile("out.txt", "x"), BadRequest("nope"))
    base = "/v1beta/models/gemini-x"
    body = {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}
    schema = {
        "type": "object",
        "properties": {
            "reasoning": {"type": "string"},
            "complexity_score": {"type": "integer", "minimum": 1, "maximum": 100},
            "next_speaker": {"type": "string", "enum": ["user", "model"]},
        },
    }
    classifier = {**body, "generationConfig": {"responseMimeType": "application/json", "responseJsonSchema": schema}}
    with httpx.Client(base_url=llm.url) as client:
        text = client.post(f"{base}:streamGenerateContent?alt=sse", json=body)
        routed = client.post(f"{base}:generateContent", json=classifier)  # side call: not scripted
        counted = client.post(f"{base}:countTokens", json=body)
        call = client.post(f"{base}:streamGenerateContent?alt=sse", json=body)
        bad = client.post(f"{base}:streamGenerateContent?alt=sse", json=body)
    (_, chunk), *_ = sse_events(text.text)
    candidate = chunk["candidates"][0]
    assert candidate["content"]["parts"] == [{"text": "hello"}]
    assert candidate["finishReason"] == "STOP"
    assert chunk["usageMetadata"]["promptTokenCount"] == INPUT_TOKENS
    assert chunk["usageMetadata"]["candidatesTokenCount"] == OUTPUT_TOKENS
    assert chunk["usageMetadata"]["cachedContentTokenCount"] == CACHED_TOKENS
    answer = json.loads(routed.json()["candidates"][0]["content"]["parts"][0]["text"])
    assert answer == {"reasoning": "ok", "complexity_score": 1, "next_speaker": "user"}
    assert counted.json() == {"totalTokens": INPUT_TOKENS}
    (_, chunk), *_ = sse_events(call.text)
    function_call = chunk["candidates"][0]["content"]["parts"][0]["functionCall"]
    assert function_call == {"name": "write_file", "args": {"file_path": "out.txt", "content": "x"}}
    assert bad.status_code == 400
    assert bad.json()["error"] == {"code": 400, "message": "nope", "status": "INVALID_ARGUMENT"}
    assert [r.turn for r in llm.model_requests("gemini")] == ["Text", "WriteFile", "BadRequest"]


def test_hang_sends_nothing_then_stalls_after_headers(llm):
    llm.script(Hang(30), Hang(30, after_headers=True))
    body = {"model": "gpt-x", "stream": True, "input": []}
    started = time.monotonic()
    with httpx.Client(base_url=llm.url, timeout=httpx.Timeout(5.0, read=0.5)) as client:
        with pytest.raises(httpx.ReadTimeout):
            client.post("/v1/responses", json=body)
        with client.stream("POST", "/v1/responses", json=body) as reply:
            assert reply.status_code == 200
            with pytest.raises(httpx.ReadTimeout):
                reply.read()
    assert time.monotonic() - started < 5
    assert [r.turn for r in llm.requests] == ["Hang", "Hang"]


def test_recorded_requests_hide_keys_and_decode_bodies(llm):
    gzipped = gzip.compress(json.dumps({"input": []}).encode())
    with httpx.Client(base_url=llm.url) as client:
        client.post(
            "/v1/responses",
            content=gzipped,
            headers={
                "Authorization": "Bearer sk-secret",
                "Content-Encoding": "gzip",
                "Content-Type": "application/json",
            },
        )
        client.get("/v1/models")
    first, second = llm.requests
    assert first.headers["authorization"] == "<redacted>"
    assert first.body == {"input": []}
    assert first.protocol == "openai"
    assert (second.method, second.path, second.protocol, second.scripted) == ("GET", "/v1/models", None, False)


# --------------------------------------------------------------------------- real CLIs


@dataclass
class Outcome:
    run: CliRun
    requests: list[RecordedRequest]
    workdir: Path

    @property
    def events(self) -> list[dict[str, Any]]:
        return self.run.events()

    @property
    def model_requests(self) -> list[RecordedRequest]:
        return [r for r in self.requests if r.scripted]


def require(cli: str) -> Path:
    exe = cli_path(cli)
    if exe is None:
        pytest.skip(f"{cli} CLI not installed (set TEAM_EXECUTOR_AGENT_CLIS or npm install it under .agent-clis)")
    return exe


@cache
def cli_version(cli: str) -> str:
    exe = cli_path(cli)
    done = subprocess.run([str(exe), "--version"], capture_output=True, text=True, timeout=60, check=False)
    return done.stdout.strip()


def record(cli: str, case: str, outcome: Outcome, env: dict[str, str], note: str = "") -> None:
    """Write the fixture files of one run (only with TEAM_EXECUTOR_RECORD_AGENT_OUTPUTS=1)."""
    if not RECORD:
        return
    folder = FIXTURES / cli
    folder.mkdir(parents=True, exist_ok=True)
    run = outcome.run
    stdout_name = f"{case}.json" if case in JSON_CASES else f"{case}.jsonl"
    (folder / stdout_name).write_text(run.stdout)
    (folder / f"{case}.stderr").write_text(run.stderr)
    meta = {
        "cli": cli,
        "version": cli_version(cli),
        "case": case,
        "exit_code": run.returncode,
        "killed_by_test": run.timed_out,
        "note": note,
        "stdout": stdout_name,
        "argv": [cli, *run.argv[1:]],
        "env": {key: value for key, value in env.items() if key != "PATH"},
        "requests": [{"method": r.method, "path": r.path, "query": r.query, "turn": r.turn} for r in outcome.requests],
    }
    (folder / f"{case}.meta.json").write_text(json.dumps(meta, indent=2) + "\n")


def drive(
    cli: str,
    tmp_path: Path,
    *turns: Turn,
    case: str | None = None,
    timeout_s: float = 60,
    note: str = "",
    setup: dict[str, str] | None = None,
    **options: Any,
) -> Outcome:
    """Run ``cli`` against a fresh FakeLLM scripted with ``turns``; record it as ``case``."""
    exe = require(cli)
    workdir = tmp_path / "work"
    workdir.mkdir(exist_ok=True)
    for name, content in (setup or {}).items():
        (workdir / name).write_text(content)
    with FakeLLM() as server:
        server.script(*turns)
        argv, env = cli_invocation(cli, server.url, workdir, tmp_path / "home", PROMPT, executable=exe, **options)
        run = run_cli(argv, env, workdir, timeout_s)
        requests = server.requests
    outcome = Outcome(run, requests, workdir)
    if case:
        record(cli, case, outcome, env, note)
    return outcome


def final_text(cli: str, events: list[dict[str, Any]]) -> str:
    if cli == "claude":
        return next(e for e in events if e.get("type") == "result")["result"] or ""
    if cli == "codex":
        items = [e["item"] for e in events if e.get("type") == "item.completed"]
        return "".join(i["text"] for i in items if i.get("type") == "agent_message")
    if events and "response" in events[-1] and "type" not in events[-1]:  # gemini -o json
        return events[-1]["response"]
    return "".join(e["content"] for e in events if e.get("type") == "message" and e.get("role") == "assistant")


def failure_text(cli: str, events: list[dict[str, Any]]) -> str:
    """The error the CLI reported on stdout ('' when it reported none)."""
    if cli == "claude":
        result = next(e for e in events if e.get("type") == "result")
        return result["result"] if result["is_error"] else ""
    if cli == "codex":
        failed = [e for e in events if e.get("type") == "turn.failed"]
        return failed[-1]["error"]["message"] if failed else ""
    results = [e for e in events if e.get("type") == "result" and e.get("status") == "error"]
    return results[-1]["error"]["message"] if results else ""


params = pytest.mark.parametrize("cli", CLIS)


@pytest.mark.slow
@params
def test_cli_text_turn(cli, tmp_path):
    outcome = drive(cli, tmp_path, Text("Hello from the fake model."), case="text")
    assert outcome.run.returncode == 0, outcome.run.stderr
    assert final_text(cli, outcome.events) == "Hello from the fake model."
    assert [r.turn for r in outcome.model_requests] == ["Text"]
    if cli == "claude":
        result = outcome.events[-1]
        assert result["usage"]["input_tokens"] == INPUT_TOKENS
        assert result["usage"]["cache_read_input_tokens"] == CACHED_TOKENS
        assert result["usage"]["output_tokens"] == OUTPUT_TOKENS
        assert result["total_cost_usd"] > 0
    elif cli == "codex":
        usage = outcome.events[-1]["usage"]
        assert (usage["input_tokens"], usage["cached_input_tokens"], usage["output_tokens"]) == (100, 10, 20)
    else:
        stats = outcome.events[-1]["stats"]
        assert (stats["input_tokens"], stats["cached"], stats["output_tokens"]) == (100, 10, 20)


@pytest.mark.slow
@pytest.mark.parametrize("cli", ["claude", "gemini"])
def test_cli_json_output_text_turn(cli, tmp_path):
    outcome = drive(cli, tmp_path, Text("One JSON document."), case="text_json", output_format="json")
    assert outcome.run.returncode == 0, outcome.run.stderr
    document = json.loads(outcome.run.stdout)
    if cli == "claude":
        assert document["type"] == "result"
        assert document["result"] == "One JSON document."
        assert document["is_error"] is False
    else:
        assert document["response"] == "One JSON document."
        assert document["stats"]["models"]["gemini-2.5-flash"]["tokens"]["prompt"] == INPUT_TOKENS


@pytest.mark.slow
@params
def test_cli_writes_a_file_then_answers(cli, tmp_path):
    outcome = drive(
        cli,
        tmp_path,
        WriteFile("hello.txt", "Hello, file!\nsecond line\n"),
        Text("Wrote hello.txt."),
        case="write_file",
    )
    assert outcome.run.returncode == 0, outcome.run.stderr
    assert (outcome.workdir / "hello.txt").read_text() == "Hello, file!\nsecond line\n"
    assert final_text(cli, outcome.events) == "Wrote hello.txt."
    assert [r.turn for r in outcome.model_requests] == ["WriteFile", "Text"]


@pytest.mark.slow
@params
def test_cli_write_without_trailing_newline(cli, tmp_path):
    outcome = drive(cli, tmp_path, WriteFile("exact.txt", "no newline at end"), Text("done"))
    assert outcome.run.returncode == 0, outcome.run.stderr
    assert (outcome.workdir / "exact.txt").read_text() == "no newline at end"


@pytest.mark.slow
@params
def test_cli_reads_a_file_and_sends_it_back(cli, tmp_path):
    secret = "The magic word is xylophone-42."
    outcome = drive(cli, tmp_path, ReadFile("notes.txt"), Text("Read it."), setup={"notes.txt": secret + "\n"})
    assert outcome.run.returncode == 0, outcome.run.stderr
    first, second = outcome.model_requests
    assert secret not in json.dumps(first.body)
    assert secret in json.dumps(second.body)  # the tool result went back to the model


@pytest.mark.slow
@params
def test_cli_rate_limited(cli, tmp_path):
    # One retry allowed, so each CLI shows how it reports a retry; then the error it gives up with.
    outcome = drive(cli, tmp_path, RateLimited(1, repeat=10), case="rate_limited", retries=1)
    run, events = outcome.run, outcome.events
    assert len(outcome.model_requests) == 2
    if cli == "claude":
        assert run.returncode == 1
        retry = next(e for e in events if e.get("subtype") == "api_retry")
        assert (retry["error_status"], retry["error"]) == (429, "rate_limit")
        result = events[-1]
        assert (result["is_error"], result["api_error_status"], result["terminal_reason"]) == (True, 429, "api_error")
        assert result["result"] == "API Error: Request rejected (429) · fake rate limit: slow down"
    elif cli == "codex":
        assert run.returncode == 1
        assert {
            "type": "error",
            "message": "Reconnecting... 1/1 (exceeded retry limit, last status: 429 Too Many Requests)",
        } in events
        assert failure_text(cli, events) == "exceeded retry limit, last status: 429 Too Many Requests"
    else:
        assert run.returncode == 429 % 256  # gemini exits with the HTTP status (mod 256)
        assert "fake rate limit: slow down" in failure_text(cli, events)
        assert "Attempt 1 failed" in run.stderr
        assert "RetryableQuotaError" in run.stderr


@pytest.mark.slow
@params
@pytest.mark.parametrize("status", [529, 503])
def test_cli_overloaded(cli, status, tmp_path):
    outcome = drive(
        cli, tmp_path, Overloaded(status, repeat=10), case="overloaded" if status == 529 else "overloaded_503"
    )
    run, events = outcome.run, outcome.events
    assert len(outcome.model_requests) == 1
    text = failure_text(cli, events)
    if cli == "claude":
        assert run.returncode == 1
        assert events[-1]["api_error_status"] == status
        assert events[-1]["api_error_type"] == "overloaded_error"
        assert text.startswith(f"API Error: {status} fake overloaded.")
    elif cli == "codex":
        assert run.returncode == 1
        if status == 503:
            assert text == "Selected model is at capacity. Please try a different model."
        else:
            assert text.startswith("unexpected status 529 <unknown status code>: fake overloaded")
    else:
        assert run.returncode == status % 256
        assert "fake overloaded" in text


@pytest.mark.slow
@params
def test_cli_bad_request(cli, tmp_path):
    message = "fake bad request: field 'foo' is invalid"
    outcome = drive(cli, tmp_path, BadRequest(message, repeat=20), case="bad_request")
    run, events = outcome.run, outcome.events
    assert message in failure_text(cli, events)
    if cli == "claude":
        assert run.returncode == 1
        assert (events[-1]["api_error_status"], events[-1]["api_error_type"]) == (400, "invalid_request_error")
        # Claude re-sends a rejected request with beta features stripped, a few times.
        assert len(outcome.model_requests) > 1
    elif cli == "codex":
        assert run.returncode == 1
        assert len(outcome.model_requests) == 1
    else:
        assert run.returncode == 400 % 256
        assert len(outcome.model_requests) == 1


@pytest.mark.slow
def test_claude_prompt_too_long(tmp_path):
    # A 400 whose message starts with "prompt is too long" is a context overflow to Claude Code:
    # no re-sends, its own result text and terminal_reason "prompt_too_long".
    message = "prompt is too long: 250000 tokens > 200000 maximum"
    outcome = drive("claude", tmp_path, BadRequest(message, repeat=20), case="prompt_too_long")
    assert outcome.run.returncode == 1
    result = outcome.events[-1]
    assert (result["is_error"], result["api_error_status"], result["terminal_reason"]) == (True, 400, "prompt_too_long")
    assert result["result"].startswith("Prompt is too long")
    assert len(outcome.model_requests) == 1


@pytest.mark.slow
def test_gemini_json_output_bad_request(tmp_path):
    outcome = drive("gemini", tmp_path, BadRequest("fake bad request"), case="bad_request_json", output_format="json")
    # With -o json a failure leaves stdout empty; the JSON error document closes stderr, after a stack trace.
    assert outcome.run.returncode == 144
    assert outcome.run.stdout == ""
    stderr = outcome.run.stderr
    document = json.loads(stderr[stderr.rindex("\n{\n") + 1 :])
    assert document["error"]["code"] == 400
    assert "fake bad request" in document["error"]["message"]


@pytest.mark.slow
@params
def test_cli_hang_does_not_end_by_itself(cli, tmp_path):
    exe = require(cli)
    workdir = tmp_path / "work"
    workdir.mkdir()
    with FakeLLM() as server:
        server.script(Hang(300))
        argv, env = cli_invocation(cli, server.url, workdir, tmp_path / "home", PROMPT, executable=exe)
        started = time.monotonic()
        proc = start_cli(argv, env, workdir)
        try:
            while not server.model_requests() and proc.poll() is None and time.monotonic() - started < 45:
                time.sleep(0.1)
            assert server.model_requests(), "the CLI never sent its request"
            time.sleep(3)
            still_running = proc.poll() is None
        finally:
            kill_process_group(proc)
        stdout, stderr = proc.communicate(timeout=10)
        requests = server.requests
    run = CliRun(
        argv, proc.returncode if not still_running else None, stdout, stderr, time.monotonic() - started, still_running
    )
    record(cli, "hang", Outcome(run, requests, workdir), env, note="killed by the test 3 s after the request arrived")
    assert still_running, f"{cli} gave up on a silent server within 3 s: {stdout} {stderr}"
    assert not [e for e in json_events(stdout) if e.get("type") in {"result", "turn.completed", "turn.failed"}]


@pytest.mark.slow
@pytest.mark.parametrize("cli", ["claude", "codex"])
def test_cli_own_request_timeout(cli, tmp_path):
    # Claude: API_TIMEOUT_MS covers a server that sends nothing. Codex: stream_idle_timeout_ms only
    # applies once headers arrived (with no headers at all it waits indefinitely). Gemini: no setting.
    hang = Hang(300, after_headers=cli == "codex")
    outcome = drive(cli, tmp_path, hang, case="timeout", request_timeout_s=2, timeout_s=30)
    run, events = outcome.run, outcome.events
    assert run.returncode == 1
    assert run.duration_s < 20
    if cli == "claude":
        assert failure_text(cli, events).startswith("Request timed out.")
        assert events[-1]["api_error_status"] is None
    else:
        assert failure_text(cli, events) == "stream disconnected before completion: idle timeout waiting for SSE"


@pytest.mark.slow
@params
def test_cli_permission_denied(cli, tmp_path):
    # Read-only permission and a tool call that writes: every CLI refuses the write but exits 0.
    outcome = drive(
        cli,
        tmp_path,
        WriteFile("denied.txt", "x\n"),
        Text("Could not write."),
        case="permission_denied",
        permission="read",
    )
    run, events = outcome.run, outcome.events
    assert run.returncode == 0
    assert not (outcome.workdir / "denied.txt").exists()
    assert final_text(cli, events) == "Could not write."
    if cli == "claude":
        denials = events[-1]["permission_denials"]
        assert [d["tool_name"] for d in denials] == ["Write"]
        assert any(e.get("subtype") == "permission_denied" for e in events)
    elif cli == "codex":
        # No item at all on stdout for the rejected patch: only a log line on stderr.
        assert not [e for e in events if e.get("item", {}).get("type") == "file_change"]
        assert "patch rejected" in run.stderr
    else:
        tool_result = next(e for e in events if e.get("type") == "tool_result")
        assert tool_result["status"] == "error"
        assert tool_result["error"]["type"] == "tool_not_registered"


@pytest.mark.slow
@pytest.mark.parametrize("cli", ["claude", "gemini"])
def test_cli_max_turns(cli, tmp_path):
    outcome = drive(cli, tmp_path, WriteFile("turn.txt", "1\n"), Text("never reached"), case="max_turns", max_turns=1)
    run, events = outcome.run, outcome.events
    assert [r.turn for r in outcome.model_requests] == ["WriteFile"]
    assert (outcome.workdir / "turn.txt").exists()  # the tool of the last allowed turn still ran
    if cli == "claude":
        assert run.returncode == 1
        result = events[-1]
        assert (result["subtype"], result["is_error"], result["terminal_reason"]) == (
            "error_max_turns",
            True,
            "max_turns",
        )
    else:
        assert run.returncode == 53
        assert events[-1]["error"]["type"] == "FatalTurnLimitedError"


# --------------------------------------------------------------------------- recorded fixtures


@pytest.mark.parametrize(("cli", "case"), [(cli, case) for cli, cases in RECORDED_CASES.items() for case in cases])
def test_recorded_fixture_is_complete(cli, case):
    folder = FIXTURES / cli
    meta = json.loads((folder / f"{case}.meta.json").read_text())
    assert meta["cli"] == cli
    assert meta["case"] == case
    assert meta["version"]
    assert (folder / f"{case}.stderr").exists()
    stdout = (folder / meta["stdout"]).read_text()
    if case in JSON_CASES:
        assert meta["stdout"] == f"{case}.json"
        if stdout.strip():
            json.loads(stdout)
    else:
        assert meta["stdout"] == f"{case}.jsonl"
        lines = [line for line in stdout.splitlines() if line.strip()]
        assert [json.loads(line) for line in lines]
    if case == "hang":
        assert meta["exit_code"] is None
        assert meta["killed_by_test"] is True
    elif case in {"text", "text_json", "write_file", "permission_denied"}:
        assert meta["exit_code"] == 0
    else:
        assert meta["exit_code"] not in {0, None}
