"""What a chat-completions answer said: its SSE events (or one JSON document) folded into text, usage and errors."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from backends.openai_errors import MAX_ERROR_CHARS, classify_http_error, error_message, redact, retry_after_body
from protocol.types import ErrorKind

__all__ = ["ChatStream"]


@dataclass
class ChatStream:
    """What a chat-completions answer said so far (SSE events or one JSON document)."""

    api_key: str | None
    on_delta: Callable[[str], None] | None
    texts: list[str] = field(default_factory=list)
    model: str | None = None
    finish_reason: str | None = None
    tokens_in: int | None = None
    tokens_out: int | None = None
    tokens_cached: int | None = None
    done: bool = False  # [DONE] seen
    events: int = 0
    choices_seen: bool = False
    error_kind: ErrorKind | None = None
    error: str | None = None
    retry_after_s: float | None = None
    _buffer: bytes = b""
    _data: list[str] = field(default_factory=list)

    @property
    def text(self) -> str:
        return "".join(self.texts)

    def fail(self, kind: ErrorKind, message: str, retry_after_s: float | None = None) -> None:
        if self.error_kind is None:
            self.error_kind = kind
            self.error = redact(message, self.api_key)[:MAX_ERROR_CHARS]
            self.retry_after_s = retry_after_s

    # -- SSE framing

    def feed(self, chunk: bytes) -> None:
        """Take more bytes of the event stream; complete events are handled at once."""
        self._buffer += chunk
        while self.error_kind is None and not self.done:
            newline = self._buffer.find(b"\n")
            if newline < 0:
                return
            raw, self._buffer = self._buffer[:newline], self._buffer[newline + 1 :]
            self._line(raw.rstrip(b"\r").decode("utf-8", errors="replace"))

    def close(self) -> None:
        """The stream ended: handle a last event that had no blank line after it."""
        if self._buffer.strip() and self.error_kind is None and not self.done:
            self._line(self._buffer.rstrip(b"\r").decode("utf-8", errors="replace"))
        self._buffer = b""
        if self._data and self.error_kind is None and not self.done:
            self._dispatch()

    def _line(self, line: str) -> None:
        if not line:
            if self._data:
                self._dispatch()
            return
        if line.startswith(":"):  # a comment: a keep-alive
            return
        name, _, value = line.partition(":")
        if name == "data":
            self._data.append(value[1:] if value.startswith(" ") else value)
        # event:, id:, retry: and unknown fields are ignored, as the SSE standard says

    def _dispatch(self) -> None:
        data = "\n".join(self._data)
        self._data = []
        if data.strip() == "[DONE]":
            self.done = True
            return
        self.events += 1
        try:
            event = json.loads(data)
        except (ValueError, RecursionError):
            self.fail("bad_output", f"the server sent an event that is not JSON: {data[:200]!r}")
            return
        if not isinstance(event, dict):
            self.fail("bad_output", f"the server sent an event that is not a JSON object: {data[:200]!r}")
            return
        self.chunk(event)

    # -- one chunk (or a whole non-streamed completion)

    def chunk(self, event: dict[str, Any]) -> None:
        if event.get("error"):
            self._in_band_error(event)
            return
        model = event.get("model")
        if isinstance(model, str) and model:
            self.model = model
        usage = event.get("usage")
        if isinstance(usage, dict):
            self._usage(usage)
        choices = event.get("choices")
        if choices is None:
            if not isinstance(usage, dict):
                self.fail("bad_output", "the server sent a chunk without choices")
            return
        if not isinstance(choices, list):
            self.fail("bad_output", "the server sent a chunk whose choices are not a list")
            return
        for choice in choices:
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue
            self.choices_seen = True
            part = choice.get("delta")
            if part is None:
                part = choice.get("message")  # a non-streamed completion
            content = part.get("content") if isinstance(part, dict) else None
            if isinstance(content, str) and content:
                self.texts.append(content)
                if self.on_delta is not None:
                    self.on_delta(content)
            reason = choice.get("finish_reason")
            if isinstance(reason, str) and reason:
                self.finish_reason = reason

    def _usage(self, usage: dict[str, Any]) -> None:
        def number(value: Any) -> int | None:
            return value if isinstance(value, int) and not isinstance(value, bool) else None

        self.tokens_in = number(usage.get("prompt_tokens"))
        self.tokens_out = number(usage.get("completion_tokens"))
        details = usage.get("prompt_tokens_details")
        cached = number(details.get("cached_tokens")) if isinstance(details, dict) else None
        if cached is None:
            cached = number(usage.get("prompt_cache_hit_tokens"))  # DeepSeek's name
        self.tokens_cached = cached

    def _in_band_error(self, event: dict[str, Any]) -> None:
        body = json.dumps(event)
        error = event["error"]
        status = None
        if isinstance(error, dict):
            for name in ("status", "code"):
                value = error.get(name)
                if isinstance(value, int) and not isinstance(value, bool) and 100 <= value <= 599:
                    status = value
                    break
        kind = classify_http_error(status, body)
        self.fail(kind, f"the server reported an error in the stream: {error_message(body)}", retry_after_body(body))
