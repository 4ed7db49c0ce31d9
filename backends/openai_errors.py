"""How an OpenAI-compatible server's failure is read: its error kind, retry delay and message.

Also how a key and a URL may be shown in a log line or an error: masked, and without
user info or query.  The table of statuses and kinds is in :mod:`backends.openai_http`.
"""

from __future__ import annotations

import contextlib
import json
import re
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from backends.agent_stream import classify_status, retry_after_in
from protocol.types import ErrorKind
from session.redaction import mask, register_secret
from session.redaction import redact as redact_text
from session.retry_after import parse_retry_after

if TYPE_CHECKING:
    import httpx

__all__ = [
    "MAX_ERROR_CHARS",
    "classify_http_error",
    "error_message",
    "key_hint",
    "redact",
    "retry_after_body",
    "retry_after_headers",
    "safe_url",
]

MAX_ERROR_CHARS = 1000


def key_hint(api_key: str | None) -> str:
    """How a key may be shown: :func:`session.redaction.mask` (``…abcd``), or ``(none)``."""
    return mask(api_key) if api_key else "(none)"


def redact(text: str, api_key: str | None) -> str:
    """``text`` with ``api_key`` (registered now if it was not yet) and any other secret masked."""
    register_secret(api_key)
    return redact_text(text)


def safe_url(url: str) -> str:
    """A URL fit for a log line: scheme, host, port and path; no user info, query or fragment."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


def retry_after_headers(headers: httpx.Headers) -> float | None:
    milliseconds = headers.get("retry-after-ms")
    if milliseconds:
        with contextlib.suppress(ValueError):
            value = float(milliseconds) / 1000
            if value >= 0:
                return value
    return parse_retry_after(headers.get("retry-after"))


_RETRY_DELAY = re.compile(r'"retryDelay"\s*:\s*"(\d+(?:\.\d+)?)s"')
_CONTEXT_WORDS = (
    "context_length_exceeded",
    "maximum context length",
    "context length",
    "context window",
    "context size",
    "exceed_context_size",
    "too many tokens",
    "prompt is too long",
    "input is too long",
)
_OVERLOAD_WORDS = ("no capacity", "overloaded", "over capacity", "server_is_overloaded", "capacity")


def retry_after_body(body: str) -> float | None:
    match = _RETRY_DELAY.search(body)
    if match:
        return float(match.group(1))
    return retry_after_in(body)


def error_message(body: str) -> str:
    """The human part of an error body: ``error.message`` (or ``error`` as a string), else the body."""
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        return " ".join(body.split())[:MAX_ERROR_CHARS]
    if isinstance(data, list) and data:
        data = data[0]
    if isinstance(data, dict):
        error = data.get("error", data)
        if isinstance(error, str):
            return error[:MAX_ERROR_CHARS]
        if isinstance(error, dict):
            message = error.get("message") or error.get("detail")
            code = error.get("code") or error.get("type")
            parts = [str(message)] if message else []
            if isinstance(code, str) and code and code not in str(message):
                parts.append(f"({code})")
            if parts:
                return " ".join(parts)[:MAX_ERROR_CHARS]
        message = data.get("message") or data.get("detail")
        if isinstance(message, str):
            return message[:MAX_ERROR_CHARS]
    return " ".join(body.split())[:MAX_ERROR_CHARS]


def classify_http_error(status: int | None, body: str) -> ErrorKind:
    """The error kind of a failed answer: its HTTP status and (the words of) its body."""
    text = body.lower()
    if status in (401, 403):
        return "auth"
    if status == 429:
        return "rate_limited"
    if status in (400, 404, 413, 422, None) and any(word in text for word in _CONTEXT_WORDS):
        return "context_too_long"
    if status in (500, 502, 503, 504, 529):
        return "overloaded"
    if any(word in text for word in _OVERLOAD_WORDS):
        return "overloaded"
    kind = classify_status(status, body)
    return "crash" if kind == "max_turns" else kind
