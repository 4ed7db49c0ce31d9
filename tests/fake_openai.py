"""A scriptable fake OpenAI-compatible server (Chat Completions) on 127.0.0.1.

``POST /v1/chat/completions`` (streamed with SSE when the body says ``"stream": true``,
else one JSON document) and ``GET /v1/models``.  Each chat request takes the next
scripted turn: from the queue of its API key (the ``Authorization: Bearer`` value)
if that queue has one, else from the queue of its model, else from the common
queue, else :data:`DEFAULT_TURN` (``Reply("ok")``).  Turns:

- :class:`Reply` — an answer, streamed in pieces (optionally with a pause between them);
- :class:`RateLimited` — 429 with ``Retry-After`` in seconds or as an HTTP date
  (or only in the body's words);
- :class:`Unavailable` — 503 (or any status) with a "no capacity" body;
- :class:`Slow` — the headers (and ``first`` text), then a stall of ``delay_s``,
  then the rest;
- :class:`Garbage` — a 200 whose body is broken (bad JSON in SSE, HTML, no choices);
- :class:`ContextTooLong` — 400 ``context_length_exceeded``;
- :class:`Unauthorized` — 401 whose message echoes the key (as some servers do);
- :class:`Drop` — close the connection without answering.

With ``keys=...`` the server knows its keys: any other (or none) gets a 401.
Every request is recorded with the key shown only as its last four characters.
Usage numbers are fixed (:data:`PROMPT_TOKENS`, ...) so tests can assert them.
"""

from __future__ import annotations

import email.utils
import itertools
import json
import select
import socket
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from tests.loopback import LoopbackServer, StreamingHandler

PROMPT_TOKENS = 100
COMPLETION_TOKENS = 20
CACHED_TOKENS = 10
USAGE = {
    "prompt_tokens": PROMPT_TOKENS,
    "completion_tokens": COMPLETION_TOKENS,
    "total_tokens": PROMPT_TOKENS + COMPLETION_TOKENS,
    "prompt_tokens_details": {"cached_tokens": CACHED_TOKENS},
}


# --------------------------------------------------------------------------- turns


@dataclass(frozen=True)
class Reply:
    """Answer ``text``: streamed in pieces of ``chunk_chars``, ``pause_s`` apart."""

    text: str = "ok"
    chunk_chars: int = 8
    pause_s: float = 0.0
    finish_reason: str = "stop"
    model: str | None = None  # the model the answer names (default: the one asked for)
    as_json: bool = False  # one JSON document even when asked to stream (as some servers do)
    repeat: int = 1


@dataclass(frozen=True)
class RateLimited:
    """429.  ``Retry-After`` in seconds, as an HTTP date (``http_date``), or absent (``header=False``).

    The body says "Please try again in {retry_after_s}s." either way, as OpenAI's does.
    """

    retry_after_s: float = 1.0
    http_date: bool = False
    header: bool = True
    repeat: int = 1


@dataclass(frozen=True)
class Unavailable:
    """``status`` (503) with ``body`` (default: an OpenAI-style "no capacity" error)."""

    status: int = 503
    body: str | None = None
    repeat: int = 1


@dataclass(frozen=True)
class Slow:
    """Stream headers and ``first``, stall ``delay_s`` (ended early by a client that hangs up), then ``text``.

    With ``headers_first=False`` the stall comes before the status line: not a byte is sent.
    """

    delay_s: float = 3600.0
    text: str = "late"
    first: str = ""
    headers_first: bool = True
    repeat: int = 1


@dataclass(frozen=True)
class Garbage:
    """A 200 with a broken body.

    ``mode``: ``"json"`` (SSE whose data is not JSON), ``"html"`` (a 200 HTML page,
    ``text/html``), ``"no_choices"`` (well-formed SSE whose chunks have empty choices),
    ``"json_body"`` (``application/json`` that is not JSON), ``"error_event"`` (a 200
    stream that carries ``{"error": {"code": 503, "message": "overloaded"}}``).
    """

    mode: str = "json"
    repeat: int = 1


@dataclass(frozen=True)
class ContextTooLong:
    """400 with OpenAI's ``context_length_exceeded``."""

    repeat: int = 1


@dataclass(frozen=True)
class Unauthorized:
    """401 (or 403) whose message repeats the key it was given, as some servers do."""

    status: int = 401
    repeat: int = 1


@dataclass(frozen=True)
class Drop:
    """Read the request and close the connection without a byte of answer."""

    repeat: int = 1


Turn = Reply | RateLimited | Unavailable | Slow | Garbage | ContextTooLong | Unauthorized | Drop
DEFAULT_TURN = Reply("ok")


def key_hint(key: str | None) -> str | None:
    """``…abcd``: how a key may appear in a record."""
    return None if not key else "…" + key[-4:]


@dataclass
class RecordedRequest:
    """One request as the server saw it; the key only as :func:`key_hint`."""

    method: str
    path: str
    key: str | None  # last four characters, "…abcd"
    model: str | None
    stream: bool
    body: Any
    headers: dict[str, str]  # authorization redacted
    turn: str | None = None  # the class name of the turn that answered, "default" for the default
    queue: str | None = None  # "key", "model", "common" or None (default / not a chat request)
    received_at: float = field(default_factory=time.monotonic)
    disconnected_at: float | None = None  # a Slow turn saw the client hang up at this time


# --------------------------------------------------------------------------- server


class FakeOpenAI(LoopbackServer):
    """The fake server, run on a background thread.

    Usage::

        with FakeOpenAI() as server:
            server.script(RateLimited(2), Reply("hello"))
            server.script(Unavailable(), key="sk-second")
            ... # POST server.base_url + "/chat/completions"
    """

    def __init__(self, *, keys: tuple[str, ...] | None = None, models: tuple[str, ...] = ("fake-model",)) -> None:
        super().__init__()
        self._lock = threading.Lock()
        self._common: deque[list[Any]] = deque()
        self._by_key: dict[str, deque[list[Any]]] = {}
        self._by_model: dict[str, deque[list[Any]]] = {}
        self._requests: list[RecordedRequest] = []
        self._ids = itertools.count(1)
        self.keys = keys
        self.models = models

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT/v1``: what ``OPENAI_BASE_URL`` is set to."""
        return self.url + "/v1"

    def script(self, *turns: Turn, key: str | None = None, model: str | None = None) -> None:
        """Queue turns: for requests with API key ``key``, or for model ``model``, or (neither) for all."""
        if key is not None and model is not None:
            raise ValueError("script turns for a key or for a model, not both")
        with self._lock:
            if key is not None:
                target = self._by_key.setdefault(key, deque())
            elif model is not None:
                target = self._by_model.setdefault(model, deque())
            else:
                target = self._common
            for turn in turns:
                target.append([turn, max(1, turn.repeat)])

    def pending(self, *, key: str | None = None, model: str | None = None) -> int:
        """How many turns are still queued (for ``key``, for ``model``, or in the common queue)."""
        with self._lock:
            if key is not None:
                return len(self._by_key.get(key, ()))
            if model is not None:
                return len(self._by_model.get(model, ()))
            return len(self._common)

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._requests)

    def chat_requests(self, *, key: str | None = None) -> list[RecordedRequest]:
        """The chat-completion requests (made with ``key``, when given)."""
        hint = key_hint(key) if key is not None else None
        return [r for r in self.requests if r.path.endswith("/chat/completions") and (key is None or r.key == hint)]

    def log_text(self) -> str:
        """Every recorded request as text (what a test greps for secrets)."""
        return "\n".join(json.dumps(r.__dict__, default=str) for r in self.requests)

    # -- used by the handler

    def _record(self, record: RecordedRequest) -> None:
        with self._lock:
            self._requests.append(record)

    def _take(self, key: str | None, model: str | None) -> tuple[Turn, str | None]:
        with self._lock:
            for name, found in (
                ("key", self._by_key.get(key) if key is not None else None),
                ("model", self._by_model.get(model) if model is not None else None),
                ("common", self._common),
            ):
                if found:
                    entry = found[0]
                    entry[1] -= 1
                    if entry[1] <= 0:
                        found.popleft()
                    return entry[0], name
            return DEFAULT_TURN, None

    def _next_id(self) -> int:
        with self._lock:
            return next(self._ids)


# --------------------------------------------------------------------------- handler


def _sse(data: Any) -> bytes:
    text = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
    return f"data: {text}\n\n".encode()


class _Handler(StreamingHandler):
    fake: FakeOpenAI
    server_version = "FakeOpenAI/1.0"

    # -- plumbing

    def _send_json(self, status: int, payload: Any, extra: dict[str, str] | None = None) -> None:
        self._send_raw(status, json.dumps(payload).encode(), "application/json", extra)

    def _send_raw(self, status: int, data: bytes, content_type: str, extra: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        for name, value in (extra or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)
        self.wfile.flush()

    def _client_gone(self, timeout: float) -> bool:
        """Wait up to ``timeout`` for the client to hang up; True if it did."""
        readable, _, _ = select.select([self.connection], [], [], timeout)
        if not readable:
            return False
        try:
            return self.connection.recv(1, socket.MSG_PEEK) == b""
        except OSError:
            return True

    # -- dispatch

    def do_GET(self) -> None:
        self._handle()

    def do_POST(self) -> None:
        self._handle()

    def _handle(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        body: Any = None
        if raw:
            try:
                body = json.loads(raw)
            except ValueError:
                body = raw.decode("utf-8", "replace")
        auth = self.headers.get("Authorization") or ""
        key = auth[len("Bearer ") :] if auth.startswith("Bearer ") else None
        headers = {k.lower(): ("<redacted>" if k.lower() == "authorization" else v) for k, v in self.headers.items()}
        path = self.path.split("?", 1)[0].rstrip("/")
        is_dict = isinstance(body, dict)
        record = RecordedRequest(
            method=self.command,
            path=path,
            key=key_hint(key),
            model=str(body.get("model")) if is_dict and body.get("model") is not None else None,
            stream=bool(body.get("stream")) if is_dict else False,
            body=body,
            headers=headers,
        )
        self.fake._record(record)
        try:
            if self.command == "GET" and path == "/v1/models":
                self._send_json(
                    200,
                    {
                        "object": "list",
                        "data": [{"id": m, "object": "model", "owned_by": "fake"} for m in self.fake.models],
                    },
                )
            elif self.command == "POST" and path == "/v1/chat/completions":
                self._chat(record, key, body if is_dict else {})
            else:
                self._send_json(404, {"error": {"message": f"fake: no route for {self.command} {path}"}})
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    # -- chat completions

    def _chat(self, record: RecordedRequest, key: str | None, body: dict[str, Any]) -> None:
        if self.fake.keys is not None and key not in self.fake.keys:
            record.turn = "Unauthorized"
            self._error(401, "invalid_api_key", f"Incorrect API key provided: {key}.", "invalid_request_error")
            return
        turn, queue = self.fake._take(key, record.model)
        record.turn = type(turn).__name__ if queue is not None else "default"
        record.queue = queue
        model = record.model or "fake-model"
        if isinstance(turn, Drop):
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        if isinstance(turn, RateLimited):
            extra: dict[str, str] = {}
            if turn.header:
                seconds = turn.retry_after_s
                if turn.http_date:
                    extra["Retry-After"] = email.utils.formatdate(time.time() + seconds, usegmt=True)
                else:
                    extra["Retry-After"] = str(int(seconds)) if float(seconds).is_integer() else str(seconds)
            self._error(
                429,
                "rate_limit_exceeded",
                f"Rate limit reached for {model}. Please try again in {turn.retry_after_s:g}s.",
                "requests",
                extra,
            )
            return
        if isinstance(turn, Unavailable):
            if turn.body is not None:
                self._send_raw(turn.status, turn.body.encode(), "application/json")
            else:
                self._error(
                    turn.status,
                    "overloaded",
                    "There is no capacity available for this model right now.",
                    "server_error",
                )
            return
        if isinstance(turn, ContextTooLong):
            self._error(
                400,
                "context_length_exceeded",
                "This model's maximum context length is 8192 tokens. However, your messages resulted in 9000 tokens.",
                "invalid_request_error",
            )
            return
        if isinstance(turn, Unauthorized):
            self._error(turn.status, "invalid_api_key", f"Incorrect API key provided: {key}.", "invalid_request_error")
            return
        if isinstance(turn, Garbage):
            self._garbage(turn, model)
            return
        stream = bool(body.get("stream"))
        usage = bool((body.get("stream_options") or {}).get("include_usage"))
        if isinstance(turn, Slow):
            self._slow(record, turn, model, usage)
            return
        reply = turn if isinstance(turn, Reply) else DEFAULT_TURN
        if stream and not reply.as_json:
            self._stream_reply(reply, model, usage)
        else:
            self._send_json(200, self._completion(reply, model))

    def _error(self, status: int, code: str, message: str, kind: str, extra: dict[str, str] | None = None) -> None:
        self._send_json(status, {"error": {"message": message, "type": kind, "param": None, "code": code}}, extra)

    def _base(self, model: str) -> dict[str, Any]:
        return {
            "id": f"chatcmpl-fake-{self.fake._next_id():04d}",
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": model,
        }

    def _completion(self, reply: Reply, model: str) -> dict[str, Any]:
        return {
            **self._base(reply.model or model),
            "object": "chat.completion",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": reply.text},
                    "finish_reason": reply.finish_reason,
                }
            ],
            "usage": USAGE,
        }

    def _pieces(self, base: dict[str, Any], text: str, size: int) -> list[bytes]:
        pieces = [text[i : i + size] for i in range(0, len(text), max(1, size))]
        return [
            _sse({**base, "choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": None}]})
            for piece in pieces
        ]

    def _ending(self, base: dict[str, Any], finish_reason: str, usage: bool) -> list[bytes]:
        events = [_sse({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": finish_reason}]})]
        if usage:
            events.append(_sse({**base, "choices": [], "usage": USAGE}))
        events.append(_sse("[DONE]"))
        return events

    def _opening(self, base: dict[str, Any]) -> bytes:
        return _sse(
            {**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]}
        )

    def _stream_reply(self, reply: Reply, model: str, usage: bool) -> None:
        base = self._base(reply.model or model)
        self._start_stream()
        self._chunk(self._opening(base))
        for event in self._pieces(base, reply.text, reply.chunk_chars):
            if reply.pause_s and self.fake._stop.wait(reply.pause_s):
                return
            self._chunk(event)
        for event in self._ending(base, reply.finish_reason, usage):
            self._chunk(event)
        self._end_stream()

    def _slow(self, record: RecordedRequest, turn: Slow, model: str, usage: bool) -> None:
        base = self._base(model)
        if turn.headers_first:
            self._start_stream()
            self._chunk(self._opening(base))
            for event in self._pieces(base, turn.first, 8):
                self._chunk(event)
        deadline = time.monotonic() + turn.delay_s
        while not self.fake._stop.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                break
            if self._client_gone(min(0.05, left)):
                record.disconnected_at = time.monotonic()
                self.close_connection = True
                return
        if self.fake._stop.is_set():
            self.close_connection = True
            return
        if not turn.headers_first:
            self._start_stream()
            self._chunk(self._opening(base))
        for event in [*self._pieces(base, turn.text, 8), *self._ending(base, "stop", usage)]:
            self._chunk(event)
        self._end_stream()

    def _garbage(self, turn: Garbage, model: str) -> None:
        base = self._base(model)
        if turn.mode == "html":
            self._send_raw(200, b"<html><body>502 Bad Gateway (not really)</body></html>", "text/html")
            return
        if turn.mode == "json_body":
            self._send_raw(200, b'{"choices": [{"message": {"content": "trunc', "application/json")
            return
        self._start_stream()
        if turn.mode == "no_choices":
            for event in (_sse({**base, "choices": []}), _sse({**base, "choices": []}), _sse("[DONE]")):
                self._chunk(event)
        elif turn.mode == "error_event":
            self._chunk(self._opening(base))
            self._chunk(_sse({"error": {"code": 503, "message": "The model is overloaded. Please try again later."}}))
        else:
            self._chunk(self._opening(base))
            self._chunk(b'data: {"choices": [{"index": 0, "delta": {"content": "hel\n\n')
            self._chunk(b"data: \x00\xff garbage }}}\n\n")
        self._end_stream()


FakeOpenAI.handler = _Handler
FakeOpenAI.thread_name = "fake-openai"
