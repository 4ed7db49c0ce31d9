"""The ``openai`` backend against a fake OpenAI-compatible server on 127.0.0.1 (real HTTP)."""

from __future__ import annotations

import email.utils
import itertools
import socket
import threading
import time
from pathlib import Path

import httpx
import msgspec
import pytest

from backends.openai_call import ChatOutcome
from backends.openai_errors import classify_http_error, key_hint, redact
from backends.openai_http import DEFAULT_BASE_URL, OpenAIHttpBackend
from backends.openai_prompt import expected_artifact_in
from backends.pricing import estimate_cost
from session.retry_after import parse_retry_after
from session.rolespec import RoleSpecFrontmatter
from tests.fake_openai import (
    CACHED_TOKENS,
    COMPLETION_TOKENS,
    PROMPT_TOKENS,
    ContextTooLong,
    Drop,
    FakeOpenAI,
    Garbage,
    RateLimited,
    Reply,
    Slow,
    Unauthorized,
    Unavailable,
)
from tests.orders import RecordingHooks, make_order

KEY = "sk-test-0123456789abcdefSECRET-wxyz"
OTHER_KEY = "sk-other-9876543210fedcbaSECRET-qrst"
MODEL = "gpt-4.1-mini"
MESSAGES = [{"role": "user", "content": "Say hello."}]
SPEC = RoleSpecFrontmatter(role="architect", prefix="ARCH", inner_loop=False, message_types={}, model=MODEL)

PROMPT = """# ARCH-001: Design the thing

Task: ARCH-001
Role: architect

# Skills

An example in a skill must not be taken for this task's line:
EXPECTED: artifacts/OTHER-9-design.md

# Task description

PURPOSE: Design it | Success: a design exists
TASK:
  - Write the design
EXPECTED: artifacts/ARCH-001-design.md
CONSTRAINTS: none
---
InnerLoop: false

# Upstream artifacts

An upstream prompt, inlined, must not be taken either:
EXPECTED: artifacts/ARCH-001-not-this-one.md
"""


@pytest.fixture
def server():
    with FakeOpenAI() as fake:
        yield fake


def call(
    server: FakeOpenAI,
    *,
    key: str | None = KEY,
    timeout_s: float = 5.0,
    cancel: threading.Event | None = None,
    deltas: list[str] | None = None,
    **kwargs: object,
) -> ChatOutcome:
    return OpenAIHttpBackend(environ={}).complete(
        MESSAGES,
        model=MODEL,
        base_url=server.base_url,
        api_key=key,
        timeout_s=timeout_s,
        cancel=cancel,
        on_delta=deltas.append if deltas is not None else None,
        **kwargs,
    )


def assert_no_key(*texts: str) -> None:
    for text in texts:
        assert KEY not in text
        assert KEY[:-4] not in text  # not even most of it


# --------------------------------------------------------------------------- success


def test_streamed_answer_reaches_on_delta_with_usage(server: FakeOpenAI) -> None:
    server.script(Reply("Hello from the fake model, in pieces.", chunk_chars=5))
    deltas: list[str] = []
    outcome = call(server, deltas=deltas, max_tokens=64)
    assert outcome.ok
    assert outcome.error_kind is None
    assert outcome.text == "Hello from the fake model, in pieces."
    assert len(deltas) == 8
    assert "".join(deltas) == outcome.text
    assert (outcome.tokens_in, outcome.tokens_out, outcome.tokens_cached) == (
        PROMPT_TOKENS,
        COMPLETION_TOKENS,
        CACHED_TOKENS,
    )
    assert outcome.finish_reason == "stop"
    assert outcome.http_status == 200
    assert outcome.model == MODEL
    [request] = server.chat_requests()
    assert request.stream is True
    assert request.body["stream_options"] == {"include_usage": True}
    assert request.body["max_tokens"] == 64
    assert request.body["messages"] == MESSAGES
    assert request.key == "…wxyz"
    assert request.headers["authorization"] == "<redacted>"


def test_reported_model_is_kept(server: FakeOpenAI) -> None:
    server.script(Reply("hi", model="gpt-4.1-mini-2025-04-14"))
    assert call(server).model == "gpt-4.1-mini-2025-04-14"


def test_a_json_answer_to_a_stream_request_is_read(server: FakeOpenAI) -> None:
    server.script(Reply("whole answer", as_json=True))
    deltas: list[str] = []
    outcome = call(server, deltas=deltas)
    assert outcome.ok
    assert outcome.text == "whole answer"
    assert deltas == ["whole answer"]
    assert outcome.tokens_out == COMPLETION_TOKENS


def test_no_key_sends_no_authorization(server: FakeOpenAI) -> None:
    assert call(server, key=None).ok
    [request] = server.chat_requests()
    assert request.key is None
    assert "authorization" not in request.headers


def test_stream_options_rejected_is_asked_again_without(server: FakeOpenAI) -> None:
    server.script(
        Unavailable(status=400, body='{"error": {"message": "Unrecognized request argument supplied: stream_options"}}')
    )
    outcome = call(server)
    assert outcome.ok, outcome.error
    first, second = server.chat_requests()
    assert "stream_options" in first.body
    assert "stream_options" not in second.body
    assert outcome.tokens_in is None  # the fake sends usage only when asked


# --------------------------------------------------------------------------- error mapping


def test_429_with_retry_after_seconds(server: FakeOpenAI) -> None:
    server.script(RateLimited(retry_after_s=7))
    outcome = call(server)
    assert outcome.error_kind == "rate_limited"
    assert outcome.retry_after_s == 7
    assert outcome.http_status == 429
    assert "Rate limit reached" in (outcome.error or "")


def test_429_with_retry_after_as_an_http_date(server: FakeOpenAI) -> None:
    server.script(RateLimited(retry_after_s=30, http_date=True))
    outcome = call(server)
    assert outcome.error_kind == "rate_limited"
    assert outcome.retry_after_s is not None
    assert 27 <= outcome.retry_after_s <= 31


def test_429_without_header_reads_the_body(server: FakeOpenAI) -> None:
    server.script(RateLimited(retry_after_s=4.5, header=False))
    outcome = call(server)
    assert outcome.error_kind == "rate_limited"
    assert outcome.retry_after_s == 4.5


@pytest.mark.parametrize("status", [500, 502, 503, 529])
def test_server_errors_are_overloaded(server: FakeOpenAI, status: int) -> None:
    server.script(Unavailable(status=status))
    outcome = call(server)
    assert outcome.error_kind == "overloaded"
    assert outcome.http_status == status
    assert "no capacity" in (outcome.error or "")


@pytest.mark.parametrize(
    "body", ['{"error": {"message": "no capacity for this model"}}', '{"error": "Model is overloaded"}']
)
def test_overloaded_words_in_another_status(server: FakeOpenAI, body: str) -> None:
    server.script(Unavailable(status=409, body=body))
    assert call(server).error_kind == "overloaded"


def test_an_error_event_inside_the_stream(server: FakeOpenAI) -> None:
    server.script(Garbage("error_event"))
    outcome = call(server)
    assert outcome.error_kind == "overloaded"
    assert "overloaded" in (outcome.error or "")


@pytest.mark.parametrize("status", [401, 403])
def test_unauthorized_is_auth_and_the_echoed_key_is_redacted(server: FakeOpenAI, status: int) -> None:
    server.script(Unauthorized(status=status))
    outcome = call(server)
    assert outcome.error_kind == "auth"
    assert "Incorrect API key" in (outcome.error or "")
    assert "…wxyz" in (outcome.error or "")
    assert_no_key(msgspec.json.encode(outcome).decode())


def test_a_key_the_server_does_not_know_is_auth() -> None:
    with FakeOpenAI(keys=(OTHER_KEY,)) as fake:
        assert call(fake).error_kind == "auth"
        assert call(fake, key=OTHER_KEY).ok


def test_context_too_long(server: FakeOpenAI) -> None:
    server.script(ContextTooLong())
    outcome = call(server)
    assert outcome.error_kind == "context_too_long"
    assert outcome.http_status == 400


def test_model_not_found_is_a_crash(server: FakeOpenAI) -> None:
    server.script(Unavailable(status=404, body='{"error": {"message": "model not found"}}'))
    outcome = call(server)
    assert outcome.error_kind == "crash"
    assert "model not found" in (outcome.error or "")


def test_connection_refused_is_network() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    outcome = OpenAIHttpBackend(environ={}).complete(
        MESSAGES,
        model=MODEL,
        base_url=f"http://127.0.0.1:{port}/v1",
        api_key=KEY,
        timeout_s=5,
        cancel=None,
        on_delta=None,
    )
    assert outcome.error_kind == "network"
    assert "cannot reach" in (outcome.error or "")


def test_dropped_connection_is_network(server: FakeOpenAI) -> None:
    server.script(Drop())
    assert call(server).error_kind == "network"


def test_silence_before_any_byte_is_network(server: FakeOpenAI) -> None:
    server.script(Slow(delay_s=30, headers_first=False))
    began = time.monotonic()
    outcome = call(server, timeout_s=0.5)
    assert outcome.error_kind == "network"
    assert time.monotonic() - began < 2


def test_a_stalled_stream_is_timeout_and_is_closed(server: FakeOpenAI) -> None:
    server.script(Slow(delay_s=30, first="partial answer"))
    began = time.monotonic()
    deltas: list[str] = []
    outcome = call(server, timeout_s=0.5, deltas=deltas)
    assert outcome.error_kind == "timeout"
    assert "stalled" in (outcome.error or "")
    assert outcome.text == "partial answer"
    assert "".join(deltas) == "partial answer"
    assert time.monotonic() - began < 2
    deadline = time.monotonic() + 2
    while server.chat_requests()[0].disconnected_at is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.chat_requests()[0].disconnected_at is not None  # the server saw us hang up


def test_the_wall_clock_limit_is_timeout(server: FakeOpenAI) -> None:
    server.script(Reply("x" * 40, chunk_chars=1, pause_s=0.05))  # two seconds, never silent for long
    began = time.monotonic()
    outcome = call(server, timeout_s=5, wall_timeout_s=0.5)
    assert outcome.error_kind == "timeout"
    assert time.monotonic() - began < 1.5
    assert 0 < len(outcome.text) < 40


def test_cancel_stops_a_slow_stream_within_a_second(server: FakeOpenAI) -> None:
    server.script(Slow(delay_s=60, first="thinking"))
    cancel = threading.Event()
    timer = threading.Timer(0.3, cancel.set)
    timer.start()
    try:
        outcome = call(server, timeout_s=30, cancel=cancel)
        returned = time.monotonic()
    finally:
        timer.cancel()
    assert outcome.error_kind == "interrupted"
    assert outcome.duration_s < 1.3
    deadline = returned + 1
    record = server.chat_requests()[0]
    while record.disconnected_at is None and time.monotonic() < deadline:
        time.sleep(0.02)
        record = server.chat_requests()[0]
    assert record.disconnected_at is not None
    assert record.disconnected_at - returned < 1


def test_cancel_already_set_sends_nothing_useful(server: FakeOpenAI) -> None:
    cancel = threading.Event()
    cancel.set()
    assert call(server, cancel=cancel).error_kind == "interrupted"


@pytest.mark.parametrize("mode", ["json", "html", "no_choices", "json_body"])
def test_garbage_is_bad_output(server: FakeOpenAI, mode: str) -> None:
    server.script(Garbage(mode))
    outcome = call(server)
    assert outcome.error_kind == "bad_output", outcome.error
    assert outcome.http_status == 200


def test_an_empty_answer_is_bad_output(server: FakeOpenAI) -> None:
    server.script(Reply(""))
    outcome = call(server)
    assert outcome.error_kind == "bad_output"
    assert "empty answer" in (outcome.error or "")


def test_on_delta_raising_propagates(server: FakeOpenAI) -> None:
    server.script(Reply("boom"))

    def explode(_: str) -> None:
        raise RuntimeError("hook failed")

    with pytest.raises(RuntimeError, match="hook failed"):
        OpenAIHttpBackend(environ={}).complete(
            MESSAGES, model=MODEL, base_url=server.base_url, api_key=KEY, timeout_s=5, cancel=None, on_delta=explode
        )


# --------------------------------------------------------------------------- the fake itself


def test_fake_scripts_per_key_then_per_model_then_common(server: FakeOpenAI) -> None:
    server.script(RateLimited(3), key=KEY)
    server.script(Reply("for the model"), model=MODEL)
    server.script(Reply("common"))
    assert call(server).error_kind == "rate_limited"  # the key's queue first
    assert call(server).text == "for the model"  # then the model's
    assert call(server, key=OTHER_KEY).text == "common"
    assert call(server, key=OTHER_KEY).text == "ok"  # the default
    assert [r.queue for r in server.chat_requests()] == ["key", "model", "common", None]
    assert [r.turn for r in server.chat_requests()] == ["RateLimited", "Reply", "Reply", "default"]
    assert len(server.chat_requests(key=OTHER_KEY)) == 2
    assert server.pending(key=KEY) == 0


def test_fake_repeat_and_models_listing(server: FakeOpenAI) -> None:
    server.script(Unavailable(repeat=2))
    assert call(server).error_kind == "overloaded"
    assert call(server).error_kind == "overloaded"
    assert call(server).ok
    listing = httpx.get(server.base_url + "/models", timeout=5).json()
    assert [model["id"] for model in listing["data"]] == ["fake-model"]


# --------------------------------------------------------------------------- helpers


def test_parse_retry_after() -> None:
    assert parse_retry_after("120") == 120
    assert parse_retry_after("1.5") == 1.5
    assert parse_retry_after("-3") == 0
    now = time.time()
    assert parse_retry_after(email.utils.formatdate(now + 60, usegmt=True), now=now) == pytest.approx(60, abs=1)
    assert parse_retry_after(email.utils.formatdate(now - 60, usegmt=True), now=now) == 0
    assert parse_retry_after("soon") is None
    assert parse_retry_after("") is None
    assert parse_retry_after(None) is None
    assert parse_retry_after("nan") is None


@pytest.mark.parametrize(
    ("status", "body", "kind"),
    [
        (429, "", "rate_limited"),
        (401, "", "auth"),
        (403, "", "auth"),
        (400, '{"error": {"code": "context_length_exceeded"}}', "context_too_long"),
        (400, "the request exceeds the available context size", "context_too_long"),
        (413, "prompt is too long", "context_too_long"),
        (400, "bad temperature", "crash"),
        (503, "", "overloaded"),
        (504, "", "overloaded"),
        (200, "overloaded", "overloaded"),
    ],
)
def test_classify_http_error(status: int, body: str, kind: str) -> None:
    assert classify_http_error(status, body) == kind


def test_redact_and_key_hint() -> None:
    assert key_hint(KEY) == "…wxyz"
    assert key_hint(None) == "(none)"
    assert key_hint("short") == "…"
    assert redact(f"bad key {KEY}!", KEY) == "bad key …wxyz!"
    assert redact("nothing here", KEY) == "nothing here"


def test_expected_artifact_from_the_task_description(tmp_path: Path) -> None:
    order = make_order(tmp_path, "ARCH-001", "architect", prompt=PROMPT, backend="openai")
    assert expected_artifact_in(PROMPT, order) == "artifacts/ARCH-001-design.md"


@pytest.mark.parametrize(
    "line",
    [
        "EXPECTED: /etc/passwd",
        "EXPECTED: artifacts/../../escape-ARCH-001.md",
        "EXPECTED: artifacts/OTHER-1-design.md",
        "EXPECTED: src/ARCH-001.md",
        "",
    ],
)
def test_expected_artifact_falls_back_to_the_convention(tmp_path: Path, line: str) -> None:
    prompt = f"# Task description\n\nPURPOSE: x\n{line}\n"
    order = make_order(tmp_path, "ARCH-001", "architect", prompt=prompt, backend="openai")
    assert expected_artifact_in(prompt, order) == "artifacts/ARCH-001-design.md"
    other = make_order(tmp_path, "T-1", "someone", prompt=prompt, backend="openai")
    assert expected_artifact_in(prompt, other) == "artifacts/T-1-output.md"


# --------------------------------------------------------------------------- preflight


def test_preflight() -> None:
    loopback = {"OPENAI_BASE_URL": "http://127.0.0.1:8080/v1"}
    remote = {"OPENAI_BASE_URL": "https://gateway.example/v1"}
    no_model = SPEC.model_copy(update={"model": None})
    assert "model:" in (OpenAIHttpBackend(environ=loopback).preflight("architect", no_model) or "")
    missing = OpenAIHttpBackend(environ={}).preflight("architect", SPEC) or ""
    assert "OPENAI_BASE_URL" in missing
    assert "OPENAI_API_KEY" in missing
    assert "OPENAI_API_KEY" in (OpenAIHttpBackend(environ=remote).preflight("architect", SPEC) or "")
    assert OpenAIHttpBackend(environ={**remote, "OPENAI_API_KEY": KEY}).preflight("architect", SPEC) is None
    assert OpenAIHttpBackend(environ=loopback).preflight("architect", SPEC) is None  # a local server needs no key
    key_only = OpenAIHttpBackend(environ={"OPENAI_API_KEY": KEY})
    assert key_only.preflight("architect", SPEC) is None
    assert key_only.endpoint_config() == (DEFAULT_BASE_URL, KEY)
    bad = OpenAIHttpBackend(environ={"OPENAI_BASE_URL": "ftp://host/v1", "OPENAI_API_KEY": KEY})
    assert "http://" in (bad.preflight("architect", SPEC) or "")
    passed = OpenAIHttpBackend(environ={}, base_url="https://gateway.example/v1", api_key=KEY)
    assert passed.preflight("architect", SPEC) is None
    for backend in (OpenAIHttpBackend(environ={**remote, "OPENAI_API_KEY": KEY}), passed):
        assert KEY not in str(backend.preflight("architect", no_model))


# --------------------------------------------------------------------------- run()


class TimedHooks(RecordingHooks):
    def __init__(self) -> None:
        super().__init__()
        self.times: list[float] = []

    def progress(self, percent: int | None, note: str) -> None:
        self.times.append(time.monotonic())
        super().progress(percent, note)


def _backend(server: FakeOpenAI, **kwargs: object) -> OpenAIHttpBackend:
    return OpenAIHttpBackend(environ={"OPENAI_BASE_URL": server.base_url, "OPENAI_API_KEY": KEY}, **kwargs)


def _order(tmp_path: Path, prompt: str = PROMPT, **kwargs: object):
    order = make_order(tmp_path, "ARCH-001", "architect", prompt=prompt, backend="openai", **kwargs)
    return msgspec.structs.replace(order, model=MODEL)


def _session_text(folder: Path) -> str:
    return "\n".join(
        path.read_text(encoding="utf-8", errors="replace") for path in sorted(folder.rglob("*")) if path.is_file()
    )


def test_run_writes_the_artifact_and_reports_usage_and_cost(server: FakeOpenAI, tmp_path: Path) -> None:
    answer = "# Design\n\nThe design.\n\n[architect] ARCH-001 complete: designed the thing\nArtifact: x\n"
    server.script(Reply(answer, chunk_chars=2, pause_s=0.05))  # about 2 s of streaming
    hooks = TimedHooks()
    result = _backend(server).run(_order(tmp_path), hooks, threading.Event())
    assert result.ok, result.error
    assert result.error_kind is None
    assert result.artifacts == ("artifacts/ARCH-001-design.md",)
    assert (tmp_path / "artifacts" / "ARCH-001-design.md").read_text() == answer
    assert not (tmp_path / "artifacts" / "OTHER-9-design.md").exists()
    assert result.summary == "[architect] ARCH-001 complete: designed the thing"
    assert (result.tokens_in, result.tokens_out, result.tokens_cached) == (
        PROMPT_TOKENS,
        COMPLETION_TOKENS,
        CACHED_TOKENS,
    )
    assert result.cost_usd == estimate_cost(MODEL, PROMPT_TOKENS, COMPLETION_TOKENS, CACHED_TOKENS)
    assert result.cost_usd is not None
    assert result.cost_usd > 0
    assert result.cost_estimated is True
    assert result.model == MODEL
    assert hooks.started_calls == []  # no child process: nothing for the orphan reaper
    assert 1 <= len(hooks.progress_calls) <= result.duration_s + 1  # throttled to one a second
    assert all(later - earlier >= 0.99 for earlier, later in itertools.pairwise(hooks.times))
    assert all("characters received" in note for _, note in hooks.progress_calls)
    [request] = server.chat_requests()
    system, user = request.body["messages"]
    assert system["role"] == "system"
    assert "artifacts/ARCH-001-design.md" in system["content"]
    assert user == {"role": "user", "content": PROMPT}
    log = Path(_order(tmp_path).log_path).read_text()
    assert "The design." in log
    assert "key=…wxyz" in log
    assert_no_key(
        msgspec.json.encode(result).decode(),
        log,
        _session_text(tmp_path),
        repr(hooks.progress_calls),
        server.log_text(),
    )


def test_run_refuses_an_artifact_link_that_leads_out(server: FakeOpenAI, tmp_path: Path) -> None:
    session = tmp_path / "session"
    outside = tmp_path / "outside.md"
    (session / "artifacts").mkdir(parents=True)
    (session / "artifacts" / "ARCH-001-design.md").symlink_to(outside)
    result = _backend(server).run(_order(session), RecordingHooks(), threading.Event())
    assert not result.ok
    assert "outside the session folder" in (result.error or "")
    assert not outside.exists()


def test_run_with_an_unknown_model_has_no_cost(server: FakeOpenAI, tmp_path: Path) -> None:
    order = msgspec.structs.replace(_order(tmp_path), model="llama-3.2-3b-instruct")
    result = _backend(server).run(order, RecordingHooks(), threading.Event())
    assert result.ok
    assert result.tokens_in == PROMPT_TOKENS
    assert result.cost_usd is None
    assert result.cost_estimated is False


def test_run_rate_limited_writes_no_artifact(server: FakeOpenAI, tmp_path: Path) -> None:
    server.script(RateLimited(retry_after_s=12))
    result = _backend(server).run(_order(tmp_path), RecordingHooks(), threading.Event())
    assert not result.ok
    assert result.error_kind == "rate_limited"
    assert result.retry_after_s == 12
    assert result.outcome == "failed"
    assert result.artifacts == ()
    assert not (tmp_path / "artifacts").exists()


def test_run_never_leaks_the_key_on_failure(server: FakeOpenAI, tmp_path: Path) -> None:
    server.script(Unauthorized())
    hooks = RecordingHooks()
    order = _order(tmp_path)
    result = _backend(server).run(order, hooks, threading.Event())
    assert result.error_kind == "auth"
    log = Path(order.log_path).read_text()
    assert "Incorrect API key" in log
    assert_no_key(msgspec.json.encode(result).decode(), log, _session_text(tmp_path), server.log_text())


def test_run_a_reported_error_line_fails_the_attempt(server: FakeOpenAI, tmp_path: Path) -> None:
    server.script(Reply("Could not do it.\n[architect] ARCH-001 error: the inputs are missing\n"))
    result = _backend(server).run(_order(tmp_path), RecordingHooks(), threading.Event())
    assert not result.ok
    assert result.error_kind == "crash"
    assert result.error == "[architect] ARCH-001 error: the inputs are missing"


def test_run_uses_the_orders_limits(server: FakeOpenAI, tmp_path: Path) -> None:
    server.script(Slow(delay_s=30, first="half"))
    order = _order(tmp_path, hang_timeout_s=0.5)
    result = _backend(server).run(order, RecordingHooks(), threading.Event())
    assert result.error_kind == "timeout"
    assert result.output_tail == "half"
    assert not (tmp_path / "artifacts").exists()


def test_run_cancelled(server: FakeOpenAI, tmp_path: Path) -> None:
    server.script(Slow(delay_s=60))
    cancel = threading.Event()
    timer = threading.Timer(0.2, cancel.set)
    timer.start()
    try:
        result = _backend(server).run(_order(tmp_path), RecordingHooks(), cancel)
    finally:
        timer.cancel()
    assert result.error_kind == "interrupted"
    assert result.duration_s < 1.5


def test_run_without_configuration_fails_fast(tmp_path: Path) -> None:
    result = OpenAIHttpBackend(environ={}).run(_order(tmp_path), RecordingHooks(), threading.Event())
    assert result.error_kind == "spawn_failed"
    assert "OPENAI_BASE_URL" in (result.error or "")
    no_model = msgspec.structs.replace(_order(tmp_path), model=None)
    result = OpenAIHttpBackend(environ={"OPENAI_API_KEY": KEY}).run(no_model, RecordingHooks(), threading.Event())
    assert result.error_kind == "spawn_failed"
    assert "model" in (result.error or "")
