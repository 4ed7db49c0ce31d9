"""A scriptable fake LLM server for running the real agent CLIs offline.

One HTTP server on 127.0.0.1 (ephemeral port) speaks three wire protocols, chosen by path:

- Anthropic Messages: ``POST /v1/messages`` (Claude Code adds ``?beta=true``), SSE or plain JSON.
- OpenAI Responses: ``POST /v1/responses`` (codex with a custom ``model_providers`` entry), SSE.
- Gemini: ``POST /v1beta/models/MODEL:streamGenerateContent?alt=sse``, ``:generateContent`` and
  ``:countTokens``.

Tests queue turns with :meth:`FakeLLM.script`; each main model request takes the next turn. Side
requests never take a scripted turn: they get a harmless answer and are still recorded. Side
requests are Anthropic requests without ``tools`` (Claude's helper calls such as titles) and
Gemini ``generateContent`` calls in JSON mode (the model router's classifier when no ``-m`` is
given; answered with a value that fits the requested schema) or ``countTokens``. When the queue is
empty every main request is answered with ``Text("ok")`` (recorded with ``turn == "default"``).
Probes such as Claude's ``HEAD /api/hello`` get a 404, ``HEAD /`` a 200.

Usage numbers are fixed (:data:`USAGE`) so tests can assert them.
"""

from __future__ import annotations

import itertools
import json
import threading
import time
import zlib
from collections import deque
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from tests.loopback import LoopbackServer, StreamingHandler

# Fixed token counts reported for every answered model request.
INPUT_TOKENS = 100
OUTPUT_TOKENS = 20
CACHED_TOKENS = 10
USAGE = {"input": INPUT_TOKENS, "output": OUTPUT_TOKENS, "cached": CACHED_TOKENS}

_SECRET_HEADERS = frozenset({"authorization", "x-api-key", "x-goog-api-key", "api-key", "cookie"})


# --------------------------------------------------------------------------- turns


@dataclass(frozen=True)
class Text:
    """The model answers with plain text and ends its turn."""

    text: str


@dataclass(frozen=True)
class WriteFile:
    """The model calls the CLI's own file-writing tool to write ``content`` to ``path``.

    Per CLI: Claude ``Write {file_path, content}``; Gemini ``write_file {file_path, content}``;
    codex ``apply_patch`` (a freeform ``*** Add File`` patch) when offered and ``content`` ends with
    a newline (apply_patch always ends the file with one), else its shell tool (``exec_command``)
    running ``printf '%s' CONTENT > PATH``. ``codex_tool`` forces ``"apply_patch"`` or ``"shell"``.

    Claude's ``Write`` needs an absolute path: a relative one is resolved against the working
    directory announced in Claude's prompt. Codex and Gemini resolve relative paths themselves.
    """

    path: str
    content: str
    codex_tool: str | None = None


@dataclass(frozen=True)
class ReadFile:
    """The model calls the CLI's own file-reading tool on ``path``."""

    path: str


@dataclass(frozen=True)
class RateLimited:
    """HTTP 429 with a ``Retry-After`` header and the provider's error body.

    ``repeat`` is how many consecutive requests this turn answers (CLIs retry on their own).
    """

    retry_after_s: float = 1
    repeat: int = 1


@dataclass(frozen=True)
class Overloaded:
    """HTTP 529 (Anthropic's overloaded) or 503 with the provider's error body."""

    status: int = 529
    repeat: int = 1


@dataclass(frozen=True)
class BadRequest:
    """HTTP 400 with the provider's invalid-request error body."""

    message: str = "fake bad request"
    repeat: int = 1


@dataclass(frozen=True)
class Hang:
    """Accept the request and send nothing for ``seconds`` (then drop the connection).

    With ``after_headers=True`` the status line and SSE headers are sent first, so the stream
    opens and then stalls.
    """

    seconds: float = 3600
    after_headers: bool = False
    repeat: int = 1


@dataclass(frozen=True)
class McpToolCall:
    """The model calls tool ``tool`` of the MCP server the CLI knows as ``server``, with ``arguments``.

    Each CLI names MCP tools its own way (Claude ``mcp__<server>__<tool>``, Gemini
    ``mcp_<server>_<tool>``, codex ``<tool>`` inside the namespace ``mcp__<server>``), so the call
    uses the name found among the tools the request offers. Codex offers MCP tools only through its
    ``tool_search`` tool: while the tool is not offered yet, this turn answers with a search for it
    (as a real model would) and stays at the head of the queue for the next request.
    """

    server: str
    tool: str
    arguments: dict[str, Any] = field(default_factory=dict)


Turn = Text | WriteFile | ReadFile | McpToolCall | RateLimited | Overloaded | BadRequest | Hang
DEFAULT_TURN = Text("ok")


@dataclass
class RecordedRequest:
    """One request the server received (secret header values are replaced by ``<redacted>``)."""

    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: Any
    protocol: str | None  # "anthropic", "openai", "gemini", or None for probes and unknown routes
    scripted: bool = False  # a main model request (took a queued turn or the default answer)
    turn: str | None = None  # class name of the turn answered, "default" for Text("ok") on an empty queue
    received_at: float = field(default_factory=time.time)
    key_tail: str = ""  # the last 4 characters of the key the request carried (which key was used)


# --------------------------------------------------------------------------- server


class FakeLLM(LoopbackServer):
    """A scriptable fake LLM HTTP server, run in a background thread.

    Usage::

        with FakeLLM() as llm:
            llm.script(WriteFile("out.txt", "hi\n"), Text("done"))
            ...  # run a CLI against llm.url, then inspect llm.requests

    ``model_latency_s`` delays every main model answer (to look like a slow model).
    """

    def __init__(self, model_latency_s: float = 0.0, refused_keys: frozenset[str] = frozenset()) -> None:
        super().__init__()
        self.refused_keys = refused_keys  # model requests carrying one of these keys get a 401
        self._lock = threading.Lock()
        self._turns: deque[list[Any]] = deque()
        self._requests: list[RecordedRequest] = []
        self._ids = itertools.count(1)
        self._latency = model_latency_s

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._requests)

    def model_requests(self, protocol: str | None = None) -> list[RecordedRequest]:
        """Requests that took a scripted turn (or the default answer), optionally of one protocol."""
        return [r for r in self.requests if r.scripted and (protocol is None or r.protocol == protocol)]

    def script(self, *turns: Turn) -> None:
        """Queue turns; each main model request takes the next one."""
        with self._lock:
            for turn in turns:
                self._turns.append([turn, getattr(turn, "repeat", 1)])

    @property
    def pending(self) -> int:
        with self._lock:
            return len(self._turns)

    # -- used by the handler

    def _record(self, record: RecordedRequest) -> None:
        with self._lock:
            self._requests.append(record)

    def _take_turn(self) -> tuple[Turn, bool]:
        """The next scripted turn and True, or the default ``Text("ok")`` and False."""
        with self._lock:
            if not self._turns:
                return DEFAULT_TURN, False
            entry = self._turns[0]
            entry[1] -= 1
            if entry[1] <= 0:
                self._turns.popleft()
            return entry[0], True

    def _requeue(self, turn: Turn) -> None:
        """Put ``turn`` back at the head of the queue (a turn that needs one more request first)."""
        with self._lock:
            self._turns.appendleft([turn, 1])

    def _next_id(self) -> int:
        with self._lock:
            return next(self._ids)


# --------------------------------------------------------------------------- helpers


def _sse(event: str | None, data: dict[str, Any]) -> bytes:
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


def _pieces(text: str, size: int) -> list[str]:
    """``text`` cut into chunks of ``size`` characters (one empty chunk for empty text)."""
    return [text[i : i + size] for i in range(0, len(text), size)] or [""]


def _tool_names(tools: Any) -> list[str]:
    names: list[str] = []
    for tool in tools or []:
        if not isinstance(tool, dict):
            continue
        if "name" in tool:
            names.append(str(tool["name"]))
        elif isinstance(tool.get("function"), dict):
            names.append(str(tool["function"].get("name")))
        for decl in tool.get("functionDeclarations") or tool.get("function_declarations") or []:
            names.append(str(decl.get("name")))
    return names


def _offered_mcp_name(names: list[str], turn: McpToolCall) -> str | None:
    """The name under which the request offers ``turn``'s MCP tool (e.g. ``mcp__executor__report_progress``)."""
    return next((name for name in names if name.endswith(turn.tool) and turn.server in name), None)


def _schema_example(schema: Any) -> Any:
    """A small value that satisfies a JSON schema (for Gemini's JSON-mode side calls)."""
    if not isinstance(schema, dict):
        return "ok"
    if schema.get("enum"):
        return schema["enum"][0]
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = kind[0] if kind else "string"
    kind = str(kind or "object").lower()
    if kind == "object":
        props = schema.get("properties") or {}
        return {name: _schema_example(sub) for name, sub in props.items()}
    if kind == "array":
        return []
    if kind in {"integer", "number"}:
        low = schema.get("minimum", schema.get("exclusiveMinimum", 0))
        return low + (1 if "exclusiveMinimum" in schema and "minimum" not in schema else 0)
    if kind == "boolean":
        return False
    return "ok"


def _find_cwd(body: Any) -> str | None:
    text = json.dumps(body)
    for marker in ("Primary working directory: ", "Working directory: "):
        start = text.find(marker)
        if start >= 0:
            rest = text[start + len(marker) :]
            end = min((i for i in (rest.find("\\n"), rest.find('"')) if i >= 0), default=len(rest))
            return rest[:end].strip()
    return None


# --------------------------------------------------------------------------- handler


class _Handler(StreamingHandler):
    fake: FakeLLM
    server_version = "FakeLLM/1.0"

    # -- plumbing

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().strip().split(b";")[0] or b"0", 16)
                if size == 0:
                    self.rfile.readline()
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            return self._decode(b"".join(chunks))
        length = int(self.headers.get("Content-Length") or 0)
        return self._decode(self.rfile.read(length) if length else b"")

    def _decode(self, raw: bytes) -> bytes:
        if raw and self.headers.get("Content-Encoding", "").lower() in {"gzip", "deflate"}:
            return zlib.decompress(raw, 47)  # 47: accept a gzip or a zlib header
        return raw

    def _send_json(self, status: int, payload: Any, extra: dict[str, str] | None = None) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for key, value in (extra or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)
        self.wfile.flush()

    def _stream(self, events: list[bytes]) -> None:
        self._start_stream()
        for event in events:
            self._chunk(event)
        self._end_stream()

    # -- dispatch

    def do_HEAD(self) -> None:
        self._handle()

    def do_GET(self) -> None:
        self._handle()

    def do_POST(self) -> None:
        self._handle()

    def do_PUT(self) -> None:
        self._handle()

    def do_DELETE(self) -> None:
        self._handle()

    def do_OPTIONS(self) -> None:
        self._handle()

    def _handle(self) -> None:
        raw = self._read_body()
        parts = urlsplit(self.path)
        path, query = parts.path, parts.query
        body: Any = None
        if raw:
            try:
                body = json.loads(raw)
            except ValueError:
                body = raw.decode("utf-8", "replace")
        headers = {k.lower(): ("<redacted>" if k.lower() in _SECRET_HEADERS else v) for k, v in self.headers.items()}
        protocol = None
        if self.command == "POST":
            if path.rstrip("/").endswith("/messages") and "count_tokens" not in path:
                protocol = "anthropic"
            elif path.rstrip("/").endswith("/responses"):
                protocol = "openai"
            elif ":" in path and "/models/" in path:
                protocol = "gemini"
        key = _request_key(dict(self.headers.items()), query)
        record = RecordedRequest(self.command, path, query, headers, body, protocol, key_tail=key[-4:])
        self.fake._record(record)
        try:
            if protocol is not None and key in self.fake.refused_keys:
                message = "fake: invalid api key"
                self._send_json(401, _error_body(protocol, 401, "unauthorized", message, {}))
            elif protocol == "anthropic":
                self._anthropic(record)
            elif protocol == "openai":
                self._openai(record)
            elif protocol == "gemini":
                self._gemini(record)
            elif self.command == "POST" and path.endswith("/messages/count_tokens"):
                self._send_json(200, {"input_tokens": INPUT_TOKENS})
            elif self.command in {"HEAD", "GET"} and path in {"", "/"}:
                self._send_json(200, {})
            else:
                self._send_json(404, {"error": {"message": f"fake LLM: no route for {self.command} {path}"}})
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def _take(self, record: RecordedRequest, scripted: bool) -> Turn:
        if not scripted:
            return DEFAULT_TURN
        turn, from_queue = self.fake._take_turn()
        record.scripted = True
        record.turn = type(turn).__name__ if from_queue else "default"
        if self.fake._latency:
            time.sleep(self.fake._latency)
        return turn

    def _failure(self, turn: Turn, protocol: str, stream_headers: bool) -> bool:
        """Answer a failure turn; return False if ``turn`` is not a failure."""
        if isinstance(turn, Hang):
            if turn.after_headers and stream_headers:
                self._start_stream()
            self.fake._stop.wait(turn.seconds)
            self.close_connection = True
            return True
        if isinstance(turn, RateLimited):
            status, kind = 429, "rate_limit"
            message = "fake rate limit: slow down"
            retry = turn.retry_after_s
            extra = {"Retry-After": str(int(retry)) if float(retry).is_integer() else str(retry)}
        elif isinstance(turn, Overloaded):
            status, kind, message, extra = turn.status, "overloaded", "fake overloaded", {}
        elif isinstance(turn, BadRequest):
            status, kind, message, extra = 400, "bad_request", turn.message, {}
        else:
            return False
        self._send_json(status, _error_body(protocol, status, kind, message, extra), extra)
        return True

    # -- Anthropic Messages

    def _anthropic(self, record: RecordedRequest) -> None:
        body = record.body if isinstance(record.body, dict) else {}
        scripted = bool(body.get("tools"))
        turn = self._take(record, scripted)
        stream = bool(body.get("stream"))
        if self._failure(turn, "anthropic", stream):
            return
        model = str(body.get("model") or "claude-fake")
        msg_id = f"msg_fake_{self.fake._next_id():04d}"
        blocks: list[dict[str, Any]] = []
        if isinstance(turn, Text):
            blocks.append({"type": "text", "text": turn.text})
        elif isinstance(turn, WriteFile | ReadFile):
            path = turn.path
            if not path.startswith("/"):
                cwd = _find_cwd(body)
                if cwd:
                    path = f"{cwd.rstrip('/')}/{path}"
            call_id = f"toolu_fake_{self.fake._next_id():04d}"
            if isinstance(turn, WriteFile):
                tool_input: dict[str, Any] = {"file_path": path, "content": turn.content}
                name = "Write"
            else:
                tool_input, name = {"file_path": path}, "Read"
            blocks.append({"type": "tool_use", "id": call_id, "name": name, "input": tool_input})
        elif isinstance(turn, McpToolCall):
            name = _offered_mcp_name(_tool_names(body.get("tools")), turn) or f"mcp__{turn.server}__{turn.tool}"
            call_id = f"toolu_fake_{self.fake._next_id():04d}"
            blocks.append({"type": "tool_use", "id": call_id, "name": name, "input": dict(turn.arguments)})
        stop_reason = "tool_use" if any(b["type"] == "tool_use" for b in blocks) else "end_turn"
        usage = {
            "input_tokens": INPUT_TOKENS,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": CACHED_TOKENS,
            "output_tokens": OUTPUT_TOKENS,
        }
        if not stream:
            self._send_json(
                200,
                {
                    "id": msg_id,
                    "type": "message",
                    "role": "assistant",
                    "model": model,
                    "content": blocks,
                    "stop_reason": stop_reason,
                    "stop_sequence": None,
                    "usage": usage,
                },
            )
            return
        events = [
            _sse(
                "message_start",
                {
                    "type": "message_start",
                    "message": {
                        "id": msg_id,
                        "type": "message",
                        "role": "assistant",
                        "model": model,
                        "content": [],
                        "stop_reason": None,
                        "stop_sequence": None,
                        "usage": {**usage, "output_tokens": 1},
                    },
                },
            ),
            _sse("ping", {"type": "ping"}),
        ]
        for index, block in enumerate(blocks):
            if block["type"] == "text":
                start = {"type": "text", "text": ""}
                deltas = [{"type": "text_delta", "text": piece} for piece in _pieces(block["text"], 16)]
            else:
                start = {"type": "tool_use", "id": block["id"], "name": block["name"], "input": {}}
                raw = json.dumps(block["input"])
                deltas = [{"type": "input_json_delta", "partial_json": piece} for piece in _pieces(raw, 24)]
            events.append(
                _sse("content_block_start", {"type": "content_block_start", "index": index, "content_block": start})
            )
            events.extend(
                _sse("content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta})
                for delta in deltas
            )
            events.append(_sse("content_block_stop", {"type": "content_block_stop", "index": index}))
        events.append(
            _sse(
                "message_delta",
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": stop_reason, "stop_sequence": None},
                    "usage": {"output_tokens": OUTPUT_TOKENS},
                },
            )
        )
        events.append(_sse("message_stop", {"type": "message_stop"}))
        self._stream(events)

    # -- OpenAI Responses

    def _openai(self, record: RecordedRequest) -> None:
        body = record.body if isinstance(record.body, dict) else {}
        turn = self._take(record, True)
        if self._failure(turn, "openai", True):
            return
        n = self.fake._next_id()
        base = {
            "id": f"resp_fake_{n:04d}",
            "object": "response",
            "created_at": int(time.time()),
            "model": str(body.get("model") or "gpt-fake"),
        }
        seq = itertools.count()
        events: list[bytes] = []

        def emit(kind: str, **fields: Any) -> None:
            events.append(_sse(kind, {"type": kind, "sequence_number": next(seq), **fields}))

        emit("response.created", response={**base, "status": "in_progress", "output": []})
        emit("response.in_progress", response={**base, "status": "in_progress", "output": []})
        items: list[dict[str, Any]] = []
        if isinstance(turn, Text):
            item_id = f"msg_fake_{n:04d}"
            part = {"type": "output_text", "text": turn.text, "annotations": []}
            added = {"id": item_id, "type": "message", "status": "in_progress", "role": "assistant", "content": []}
            done = {**added, "status": "completed", "content": [part]}
            loc = {"item_id": item_id, "output_index": 0, "content_index": 0}
            emit("response.output_item.added", output_index=0, item=added)
            emit("response.content_part.added", **loc, part={**part, "text": ""})
            for piece in _pieces(turn.text, 16):
                emit("response.output_text.delta", **loc, delta=piece)
            emit("response.output_text.done", **loc, text=turn.text)
            emit("response.content_part.done", **loc, part=part)
            emit("response.output_item.done", output_index=0, item=done)
            items.append(done)
        elif isinstance(turn, WriteFile | ReadFile | McpToolCall):
            if isinstance(turn, McpToolCall):
                item = _codex_mcp_call(turn, body, n)
            else:
                item = _codex_tool_call(turn, _tool_names(body.get("tools")), n)
            if item["type"] == "tool_search_call":
                self.fake._requeue(turn)  # the next request brings the search's result: that one calls
                emit("response.output_item.done", output_index=0, item=item)  # whole: no argument deltas
            else:
                key = "arguments" if item["type"] == "function_call" else "input"
                stem = "response.function_call_arguments" if key == "arguments" else "response.custom_tool_call_input"
                loc = {"item_id": item["id"], "output_index": 0}
                emit("response.output_item.added", output_index=0, item={**item, "status": "in_progress", key: ""})
                for piece in _pieces(item[key], 64):
                    emit(f"{stem}.delta", **loc, delta=piece)
                emit(f"{stem}.done", **loc, **{key: item[key]})
                emit("response.output_item.done", output_index=0, item=item)
            items.append(item)
        usage = {
            "input_tokens": INPUT_TOKENS,
            "input_tokens_details": {"cached_tokens": CACHED_TOKENS},
            "output_tokens": OUTPUT_TOKENS,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": INPUT_TOKENS + OUTPUT_TOKENS,
        }
        emit("response.completed", response={**base, "status": "completed", "output": items, "usage": usage})
        self._stream(events)

    # -- Gemini

    def _gemini(self, record: RecordedRequest) -> None:
        body = record.body if isinstance(record.body, dict) else {}
        path = record.path
        model, _, method = path.rsplit("/", 1)[-1].partition(":")
        if method == "countTokens":
            self._send_json(200, {"totalTokens": INPUT_TOKENS})
            return
        gen = body.get("generationConfig") or body.get("config") or {}
        json_mode = gen.get("responseMimeType") == "application/json"
        stream = method == "streamGenerateContent"
        scripted = stream and not json_mode
        turn = self._take(record, scripted)
        if self._failure(turn, "gemini", stream):
            return
        usage = {
            "promptTokenCount": INPUT_TOKENS,
            "candidatesTokenCount": OUTPUT_TOKENS,
            "cachedContentTokenCount": CACHED_TOKENS,
            "totalTokenCount": INPUT_TOKENS + OUTPUT_TOKENS,
        }
        response_id = f"fake-{self.fake._next_id():04d}"
        if json_mode:
            schema = gen.get("responseJsonSchema") or gen.get("responseSchema")
            text = json.dumps(_schema_example(schema)) if schema else "{}"
            parts: list[dict[str, Any]] = [{"text": text}]
        elif isinstance(turn, Text):
            parts = [{"text": turn.text}]
        elif isinstance(turn, WriteFile):
            parts = [
                {"functionCall": {"name": "write_file", "args": {"file_path": turn.path, "content": turn.content}}}
            ]
        elif isinstance(turn, ReadFile):
            parts = [{"functionCall": {"name": "read_file", "args": {"file_path": turn.path}}}]
        elif isinstance(turn, McpToolCall):
            name = _offered_mcp_name(_tool_names(body.get("tools")), turn) or f"mcp_{turn.server}_{turn.tool}"
            parts = [{"functionCall": {"name": name, "args": dict(turn.arguments)}}]
        else:
            parts = [{"text": "ok"}]
        final = {
            "candidates": [{"content": {"role": "model", "parts": parts}, "finishReason": "STOP", "index": 0}],
            "usageMetadata": usage,
            "modelVersion": model,
            "responseId": response_id,
        }
        if not stream:
            self._send_json(200, final)
            return
        self._stream([f"data: {json.dumps(final, separators=(',', ':'))}\r\n\r\n".encode()])


def _codex_tool_call(turn: WriteFile | ReadFile, tools: list[str], n: int) -> dict[str, Any]:
    """A Responses output item that makes codex write or read a file with one of its offered tools."""
    call_id = f"call_fake_{n:04d}"
    item_id = f"fc_fake_{n:04d}"
    via = turn.codex_tool if isinstance(turn, WriteFile) else "shell"
    if via is None:
        via = "apply_patch" if "apply_patch" in tools and turn.content.endswith("\n") else "shell"
    if isinstance(turn, WriteFile) and via == "apply_patch":
        lines = turn.content.split("\n")
        if lines and lines[-1] == "":
            lines.pop()
        patch = "\n".join(
            ["*** Begin Patch", f"*** Add File: {turn.path}", *(f"+{line}" for line in lines), "*** End Patch"]
        )
        return {
            "id": f"ctc_fake_{n:04d}",
            "type": "custom_tool_call",
            "status": "completed",
            "call_id": call_id,
            "name": "apply_patch",
            "input": patch,
        }
    if isinstance(turn, WriteFile):
        script = f"printf '%s' {_shell_quote(turn.content)} > {_shell_quote(turn.path)}"
    else:
        script = f"cat {_shell_quote(turn.path)}"
    if "exec_command" in tools:
        args: dict[str, Any] = {"cmd": script}
        name = "exec_command"
    elif "shell_command" in tools:
        args, name = {"command": script}, "shell_command"
    else:
        args, name = {"command": ["bash", "-lc", script]}, "shell"
    return {
        "id": item_id,
        "type": "function_call",
        "status": "completed",
        "call_id": call_id,
        "name": name,
        "arguments": json.dumps(args),
    }


def _codex_mcp_call(turn: McpToolCall, body: dict[str, Any], n: int) -> dict[str, Any]:
    """A Responses output item that calls ``turn``'s MCP tool, or first searches for it.

    Codex lists MCP tools either directly or, deferred, only in the ``tool_search_output`` items it
    sends back after a ``tool_search_call``, grouped in a ``namespace`` tool named ``mcp__<server>``.
    """
    offered: list[dict[str, Any]] = [tool for tool in body.get("tools") or [] if isinstance(tool, dict)]
    for item in body.get("input") or []:
        if isinstance(item, dict) and item.get("type") == "tool_search_output":
            offered.extend(tool for tool in item.get("tools") or [] if isinstance(tool, dict))
    call: dict[str, Any] | None = None
    for tool in offered:
        if tool.get("type") == "namespace" and turn.server in str(tool.get("name")):
            if any(isinstance(sub, dict) and sub.get("name") == turn.tool for sub in tool.get("tools") or []):
                call = {"name": turn.tool, "namespace": tool["name"]}
        elif _offered_mcp_name([str(tool.get("name"))], turn):
            call = {"name": tool["name"]}
    if call is None and any(tool.get("type") == "tool_search" for tool in offered):
        return {
            "id": f"ts_fake_{n:04d}",
            "type": "tool_search_call",
            "status": "completed",
            "call_id": f"call_fake_{n:04d}",
            "execution": "client",
            "arguments": {"query": f"{turn.server} {turn.tool}", "limit": 8},
        }
    return {
        "id": f"fc_fake_{n:04d}",
        "type": "function_call",
        "status": "completed",
        "call_id": f"call_fake_{n:04d}",
        **(call or {"name": f"mcp__{turn.server}__{turn.tool}"}),
        "arguments": json.dumps(turn.arguments),
    }


def _request_key(headers: dict[str, str], query: str) -> str:
    """The API key a request carries, in whichever header (or query parameter) its protocol uses."""
    lowered = {name.lower(): value for name, value in headers.items()}
    for name in ("x-api-key", "x-goog-api-key", "api-key"):
        if lowered.get(name):
            return lowered[name]
    bearer = lowered.get("authorization", "")
    if bearer.lower().startswith("bearer "):
        return bearer[7:].strip()
    return next((part[4:] for part in query.split("&") if part.startswith("key=")), "")


def _shell_quote(text: str) -> str:
    return "'" + text.replace("'", "'\"'\"'") + "'"


def _error_body(protocol: str, status: int, kind: str, message: str, extra: dict[str, str]) -> dict[str, Any]:
    if protocol == "anthropic":
        anthropic_type = {
            "rate_limit": "rate_limit_error",
            "overloaded": "overloaded_error",
            "bad_request": "invalid_request_error",
            "unauthorized": "authentication_error",
        }[kind]
        return {"type": "error", "error": {"type": anthropic_type, "message": message}}
    if protocol == "openai":
        openai = {
            "rate_limit": ("rate_limit_exceeded", "requests"),
            "overloaded": ("server_is_overloaded", "server_error"),
            "bad_request": ("invalid_request_error", "invalid_request_error"),
            "unauthorized": ("invalid_api_key", "invalid_request_error"),
        }[kind]
        return {"error": {"message": message, "type": openai[1], "param": None, "code": openai[0]}}
    google_status = {
        "rate_limit": "RESOURCE_EXHAUSTED",
        "overloaded": "UNAVAILABLE",
        "bad_request": "INVALID_ARGUMENT",
        "unauthorized": "UNAUTHENTICATED",
    }[kind]
    error: dict[str, Any] = {"code": status, "message": message, "status": google_status}
    if kind == "rate_limit":
        error["details"] = [
            {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": f"{extra.get('Retry-After', '1')}s"}
        ]
    return {"error": error}


FakeLLM.handler = _Handler
FakeLLM.thread_name = "fake-llm"
