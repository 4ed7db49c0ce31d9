"""The ``openai`` backend: OpenAI-compatible Chat Completions over HTTP.

For local servers (llama.cpp, vLLM, Ollama) and hosted gateways.  Unlike the
agent CLIs there is no child process: the backend talks HTTP itself, so the
Router can switch keys and models between two calls of one task.

Two levels:

- :meth:`OpenAIHttpBackend.complete` — one streamed request (``POST
  {base_url}/chat/completions`` with ``stream: true`` and ``stream_options:
  {include_usage: true}``) turned into a :class:`ChatOutcome`: the text, usage,
  finish reason, and an error kind the Router and KeyPool act on.  Base URL, key
  and model are arguments, so a caller can rotate them per call.
- :meth:`OpenAIHttpBackend.run` — the Backend contract: the prompt file becomes
  the messages, the calls go where :func:`backends.openai_plan.plan_calls` says
  (the role-spec's ``model``/``base_url``, else ``OPENAI_MODEL`` /
  ``OPENAI_BASE_URL``, else the registry's ``openai`` models through the Router),
  the key is ``OPENAI_API_KEY`` or the key pool's, deltas become throttled
  progress notes, and the answer is written as the task's artifact.

How a call ends (``ChatOutcome.error_kind``):

- 429: ``rate_limited`` (with ``retry_after_s``);
- 500/502/503/504/529, or a body saying overloaded / no capacity: ``overloaded``;
- 401/403: ``auth``;
- 400/413/422 with context-length wording: ``context_too_long``;
- refused, reset, DNS or TLS failure, or silence before any byte: ``network``
  (and a stream cut after it began);
- silence longer than ``timeout_s`` after the headers, or longer than
  ``wall_timeout_s`` in all: ``timeout``;
- broken SSE, a non-JSON body, no choices, an empty answer: ``bad_output``;
- ``cancel`` set: ``interrupted``;
- anything else (404 model not found, other 4xx): ``crash``.

``Retry-After`` is read as seconds or as an HTTP date (and ``retry-after-ms``);
without it, from the error body ("Please try again in 2s", ``retryDelay``).

The API key is sent only in the ``Authorization`` header.  It is never put in a
result, an error message (a server that echoes it back is redacted to the last
four characters), a log line or a progress note.
"""

from __future__ import annotations

import contextlib
import email.utils
import functools
import json
import math
import os
import queue
import re
import socket
import ssl
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, ClassVar, TextIO, cast
from urllib.parse import urlsplit

import httpx
import msgspec

from backends.agent_cli import classify_status, retry_after_in
from backends.base import RoutingServices, WorkerHooks, failed_attempt
from backends.conventions import (
    DESCRIPTION_HEADING,
    belongs_to_task,
    default_artifact_path,
    relative_inside,
)
from backends.openai_plan import MODEL_ENV, Direct, Routed, plan_calls
from backends.pricing import estimate_cost
from protocol._base import Message
from protocol.keys import KeyLease, KeyUnavailable, KeyWait
from protocol.messages import AttemptResult, WorkOrder
from protocol.routing import NoModel
from protocol.types import ErrorKind
from session.loopback import is_loopback_url
from session.redaction import RedactingWriter, mask, register_secret
from session.redaction import redact as redact_text
from session.rolespec import RoleSpecFrontmatter
from session.routing import key_endpoint

if TYPE_CHECKING:
    from session.config_models import Config

__all__ = [
    "BASE_URL_ENV",
    "DEFAULT_BASE_URL",
    "KEY_ENV",
    "ChatOutcome",
    "OpenAIHttpBackend",
    "chat_endpoint",
    "classify_http_error",
    "expected_artifact_in",
    "key_hint",
    "parse_retry_after",
    "redact",
    "system_message",
]

BASE_URL_ENV = "OPENAI_BASE_URL"
KEY_ENV = "OPENAI_API_KEY"
DEFAULT_BASE_URL = "https://api.openai.com/v1"  # with a key and no base URL, as every OpenAI client does

DEFAULT_NO_OUTPUT_TIMEOUT_S = 300.0  # a run() without hang_timeout_s: silence this long is a stall
_CONNECT_TIMEOUT_S = 10.0
_POLL_S = 0.05  # how often the waiting thread looks at cancel and the clocks
_ERROR_BODY_LIMIT = 64 * 1024
_MAX_ERROR_CHARS = 1000
_MAX_ROUTING_STEPS = 30  # keys and models tried within one attempt before it gives up
_KEY_ASK_NOTE_S = 60.0  # while the user is asked for a key, the log says so this often (the run sees life)
_KEY_WAIT_STEP_S = 2.0  # while every key cools, look for a usable (or newly added) key this often
_OUTPUT_TAIL_CHARS = 4096
_SUMMARY_CHARS = 300


class ChatOutcome(Message, frozen=True):
    """How one chat-completions call ended.  ``error_kind`` is None on success."""

    text: str = ""
    tokens_in: int | None = None
    tokens_out: int | None = None
    tokens_cached: int | None = None
    finish_reason: str | None = None
    error_kind: ErrorKind | None = None
    error: str | None = None
    retry_after_s: float | None = None
    http_status: int | None = None
    model: str | None = None  # as the server reported it, else as requested
    duration_s: float = 0.0
    key_id: str | None = None  # the pool key the call used (an id, never the key)

    @property
    def ok(self) -> bool:
        return self.error_kind is None


# --------------------------------------------------------------------------- helpers


def key_hint(api_key: str | None) -> str:
    """How a key may be shown: :func:`session.redaction.mask` (``…abcd``), or ``(none)``."""
    return mask(api_key) if api_key else "(none)"


def redact(text: str, api_key: str | None) -> str:
    """``text`` with ``api_key`` (registered now if it was not yet) and any other secret masked."""
    register_secret(api_key)
    return redact_text(text)


def chat_endpoint(base_url: str) -> str:
    """``{base_url}/chat/completions``: the base URL includes the version (``.../v1``), as in OpenAI's clients."""
    return base_url.rstrip("/") + "/chat/completions"


@functools.cache
def _ssl_context() -> ssl.SSLContext:
    """httpx's default verifying context, made once (building one costs tens of milliseconds)."""
    return httpx.create_ssl_context()


def _note(log: TextIO | None, line: str) -> None:
    if log is not None:
        log.write(f"openai: {line}\n")
        log.flush()


def _safe_url(url: str) -> str:
    """A URL fit for a log line: scheme, host, port and path; no user info, query or fragment."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds from a ``Retry-After`` value: a number of seconds or an HTTP date (never negative)."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
        if when is None:
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    if not math.isfinite(seconds):
        return None
    return max(0.0, seconds)


def _retry_after_headers(headers: httpx.Headers) -> float | None:
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


def _retry_after_body(body: str) -> float | None:
    match = _RETRY_DELAY.search(body)
    if match:
        return float(match.group(1))
    return retry_after_in(body)


def _error_message(body: str) -> str:
    """The human part of an error body: ``error.message`` (or ``error`` as a string), else the body."""
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        return " ".join(body.split())[:_MAX_ERROR_CHARS]
    if isinstance(data, list) and data:
        data = data[0]
    if isinstance(data, dict):
        error = data.get("error", data)
        if isinstance(error, str):
            return error[:_MAX_ERROR_CHARS]
        if isinstance(error, dict):
            message = error.get("message") or error.get("detail")
            code = error.get("code") or error.get("type")
            parts = [str(message)] if message else []
            if isinstance(code, str) and code and code not in str(message):
                parts.append(f"({code})")
            if parts:
                return " ".join(parts)[:_MAX_ERROR_CHARS]
        message = data.get("message") or data.get("detail")
        if isinstance(message, str):
            return message[:_MAX_ERROR_CHARS]
    return " ".join(body.split())[:_MAX_ERROR_CHARS]


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


# --------------------------------------------------------------------------- the reader thread


@dataclass
class _Call:
    """One HTTP exchange, shared by the thread that reads it and the one that waits for it."""

    events: queue.Queue[tuple[str, Any]] = field(default_factory=queue.Queue)
    stop: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)
    sockets: list[Any] = field(default_factory=list)

    def trace(self, event: str, info: dict[str, Any]) -> None:
        """httpcore's trace hook: remember each socket as soon as it is connected."""
        if event not in ("connection.connect_tcp.complete", "connection.connect_unix_socket.complete"):
            return
        stream = info.get("return_value")
        sock = stream.get_extra_info("socket") if stream is not None else None
        if sock is None:
            return
        with self.lock:
            self.sockets.append(sock)
            stopped = self.stop.is_set()
        if stopped:
            _shutdown(sock)

    def abort(self) -> None:
        """Make the reading thread let go at once: shut its sockets down (a blocked read returns)."""
        with self.lock:
            self.stop.set()
            sockets = list(self.sockets)
        for sock in sockets:
            _shutdown(sock)


def _shutdown(sock: Any) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)


def _read(call: _Call, client: httpx.Client, url: str, headers: dict[str, str], body: bytes) -> None:
    """Run on a daemon thread: send the request and put what comes back on ``call.events``."""
    try:
        with client.stream("POST", url, content=body, headers=headers, extensions={"trace": call.trace}) as response:
            call.events.put(("open", response))
            for chunk in response.iter_bytes():
                if call.stop.is_set():
                    break
                if chunk:
                    call.events.put(("data", chunk))
        call.events.put(("end", None))
    except httpx.HTTPError as error:
        call.events.put(("error", error))
    except Exception as error:  # noqa: BLE001 - anything else is reported to the waiting thread, never lost
        call.events.put(("error", error))
    finally:
        client.close()


# --------------------------------------------------------------------------- SSE


@dataclass
class _Stream:
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
            self.error = redact(message, self.api_key)[:_MAX_ERROR_CHARS]
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
        self.fail(kind, f"the server reported an error in the stream: {_error_message(body)}", _retry_after_body(body))


# --------------------------------------------------------------------------- prompts and artifacts


def system_message(artifact: str) -> str:
    """The system message of a run(): the answer itself is the deliverable."""
    return (
        "You are a worker in a team of agents. You cannot run tools or write files: "
        f"your whole answer is saved as the task's deliverable, {artifact}. "
        "Answer with the complete deliverable in Markdown, then end with the final report the task asks for."
    )


def expected_artifact_in(prompt: str, order: WorkOrder) -> str:
    """The artifact the prompt's ``EXPECTED:`` line names, relative to the session folder.

    The line is read from the ``# Task description`` section when there is one (skills
    and upstream artifacts elsewhere in the prompt may hold lines of their own), else
    from the whole prompt.  It
    is used when it names a file under ``artifacts/`` inside the session folder that
    belongs to the task; else ``artifacts/<TASK-ID>-<slug>.md`` by the role's slug
    (``-output.md`` for a role without one).
    """
    lines = prompt.splitlines()
    if DESCRIPTION_HEADING in lines:
        section: list[str] = []
        for line in lines[lines.index(DESCRIPTION_HEADING) + 1 :]:
            if line.startswith("# "):
                break
            section.append(line)
        lines = section
    candidates = [line for line in lines if line.startswith("EXPECTED:")]
    session = Path(order.session_dir)
    for line in candidates:
        value = line[len("EXPECTED:") :].strip()
        path = PurePosixPath(value)
        if (
            value
            and not path.is_absolute()
            and len(path.parts) >= 2
            and path.parts[0] == "artifacts"
            and ".." not in path.parts
            and belongs_to_task(path.parts[1], order.task_id)
            and relative_inside(session, Path(value)) is not None
        ):
            return path.as_posix()
    return default_artifact_path(order.task_id, order.role)


_REPORT_LINE = re.compile(r"^\[[^\]\n]{1,60}\]\s+(?P<task>\S+)\s+(?P<how>complete|error):\s*(?P<rest>.*)$")


def _report_line(text: str, task_id: str) -> tuple[str, bool] | None:
    """``(line, failed)`` for the answer's last ``[tag] TASK complete|error: ...`` line, if any."""
    found = None
    for line in text.splitlines():
        match = _REPORT_LINE.match(line.strip())
        if match and match.group("task") == task_id:
            found = (line.strip(), match.group("how") == "error")
    return found


class _Progress:
    """Deltas to progress notes and the log, at most one note per ``interval_s``."""

    def __init__(self, hooks: WorkerHooks, log: TextIO | None, model: str, interval_s: float) -> None:
        self.hooks = hooks
        self.log = log
        self.model = model
        self.interval_s = interval_s
        self.chars = 0
        self.last = time.monotonic()  # the first note comes a full interval in: no note for a quick answer

    def __call__(self, delta: str) -> None:
        self.chars += len(delta)
        if self.log is not None:
            self.log.write(delta)
        now = time.monotonic()
        if now - self.last >= self.interval_s:
            self.last = now
            if self.log is not None:
                self.log.flush()
            self.hooks.progress(None, f"{self.model}: {self.chars} characters received")


# --------------------------------------------------------------------------- the backend


class OpenAIHttpBackend:
    """OpenAI-compatible chat completions.  See the module docstring.

    ``environ`` is read for ``OPENAI_BASE_URL`` and ``OPENAI_API_KEY`` (default:
    ``os.environ``); ``base_url`` and ``api_key`` override them.  With a key and no
    base URL, ``https://api.openai.com/v1`` is used; a base URL on a loopback
    address (a local llama.cpp, vLLM or Ollama) needs no key.

    ``run`` never calls ``hooks.started``: there is no child process, and the pid it
    would report (the executor's own) is what the Session records for reaping
    orphans after a crash — the executor must never be told to kill itself, nor a
    later process that reuses its pid.
    """

    name: ClassVar[str] = "openai"

    def __init__(
        self,
        environ: Mapping[str, str] | None = None,
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        progress_interval_s: float = 1.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self._environ = environ
        self._base_url = base_url
        self._api_key = api_key
        self.progress_interval_s = progress_interval_s
        self._transport = transport  # for tests; the default is httpx's own

    @property
    def environ(self) -> Mapping[str, str]:
        return os.environ if self._environ is None else self._environ

    def endpoint_config(self) -> tuple[str | None, str | None]:
        """``(base_url, api_key)`` from the constructor, else the environment."""
        key = self._api_key or self.environ.get(KEY_ENV) or None
        base = self._base_url or self.environ.get(BASE_URL_ENV) or None
        if base is None and key is not None:
            base = DEFAULT_BASE_URL
        return base, key

    def config_problem(self, base_url: str | None = None) -> str | None:
        """Why no request can be made with the configured base URL (or ``base_url``) and key, or None."""
        base, key = self.endpoint_config()
        base = base_url or base
        if base is None:
            return (
                f"set {BASE_URL_ENV} (e.g. http://127.0.0.1:8080/v1 for a local server) "
                f"and {KEY_ENV} in the environment"
            )
        scheme = urlsplit(base).scheme
        if scheme not in ("http", "https") or not urlsplit(base).hostname:
            return f"{BASE_URL_ENV} must be an http:// or https:// URL (got {_safe_url(base)!r})"
        if key is None and not is_loopback_url(base):
            return f"no key for {_safe_url(base)}: set {KEY_ENV} in the environment"
        return None

    # --- preflight ---------------------------------------------------------------------------

    def role_endpoint(self, spec_model: str | None, spec_base_url: str | None) -> tuple[str | None, str | None]:
        """(model, base URL) a role names: its role-spec's, else ``OPENAI_MODEL`` / ``OPENAI_BASE_URL``."""
        model = spec_model or self.environ.get(MODEL_ENV) or None
        base = spec_base_url or self._base_url or self.environ.get(BASE_URL_ENV) or None
        return model, base

    def preflight(self, role: str, spec: RoleSpecFrontmatter) -> str | None:
        model, base = self.role_endpoint(spec.model, spec.base_url)
        if not model:
            return (
                f"role '{role}' uses backend '{self.name}', which needs a model: set `model:` in its role-spec "
                f"(or {MODEL_ENV})"
            )
        problem = self.config_problem(base)
        if problem is not None:
            return f"role '{role}' uses backend '{self.name}', but {problem}"
        return None

    def preflight_routed(self, role: str, spec: RoleSpecFrontmatter, config: Config | None = None) -> str | None:
        """Preflight for a run with a Router and a KeyPool (``config``: its model registry).

        The role's calls are planned by :func:`backends.openai_plan.plan_calls`: a model the
        registry lacks needs a base URL, and no call goes to an endpoint nobody configured."""
        model, base = self.role_endpoint(spec.model, spec.base_url)
        if config is None:  # no registry to plan with: only a malformed base URL can be caught
            if base and (urlsplit(base).scheme not in ("http", "https") or not urlsplit(base).hostname):
                return f"role '{role}' uses backend '{self.name}', but its base URL must be an http:// or https:// URL"
            return None
        has_models = any(entry.backend == self.name for entry in config.models)
        plan = plan_calls(role, model, base, config.find_model, has_models, self.name)
        if isinstance(plan, str):
            return plan
        if isinstance(plan, Direct):
            problem = self.config_problem(plan.base_url)
            if problem is not None:
                return f"role '{role}' uses backend '{self.name}', but {problem}"
        return None

    # --- one call ---------------------------------------------------------------------------

    def complete(
        self,
        messages: Sequence[Mapping[str, Any]],
        *,
        model: str,
        base_url: str,
        api_key: str | None,
        timeout_s: float,
        cancel: threading.Event | None,
        on_delta: Callable[[str], None] | None,
        max_tokens: int | None = None,
        wall_timeout_s: float | None = None,
    ) -> ChatOutcome:
        """One streamed chat completion.  Never raises, except what ``on_delta`` raises.

        ``timeout_s`` is the no-output limit: the longest silence accepted, while
        waiting for the answer to begin (then it is a ``network`` failure) and
        between two pieces of it (a ``timeout``).  ``wall_timeout_s`` bounds the
        whole call (a ``timeout``).  ``on_delta`` gets each piece of text on the
        calling thread.  ``cancel`` ends the call within about 50 ms, closing the
        connection (so the server can stop generating): ``interrupted``.

        A server that rejects ``stream_options`` (a 400 naming it) is asked once more
        without it; usage is then whatever the server sends unasked.
        """
        started = time.monotonic()
        payload: dict[str, Any] = {
            "model": model,
            "messages": [dict(message) for message in messages],
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        if max_tokens is not None:
            payload["max_tokens"] = max_tokens
        call: dict[str, Any] = {
            "base_url": base_url,
            "api_key": api_key,
            "timeout_s": timeout_s,
            "wall_timeout_s": wall_timeout_s,
        }
        outcome = self._complete_once(payload, **call, cancel=cancel, on_delta=on_delta, started=started)
        if (
            outcome.error_kind == "crash"
            and outcome.http_status == 400
            and "stream_options" in (outcome.error or "")
            and not (cancel is not None and cancel.is_set())
        ):
            del payload["stream_options"]
            outcome = self._complete_once(payload, **call, cancel=cancel, on_delta=on_delta, started=started)
        return outcome

    def _complete_once(
        self,
        payload: dict[str, Any],
        *,
        base_url: str,
        api_key: str | None,
        timeout_s: float,
        wall_timeout_s: float | None,
        cancel: threading.Event | None,
        on_delta: Callable[[str], None] | None,
        started: float,
    ) -> ChatOutcome:
        model = str(payload["model"])
        headers = {"Accept": "text/event-stream", "Content-Type": "application/json"}
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        url = chat_endpoint(base_url)
        where = _safe_url(url)

        def finish(**fields: Any) -> ChatOutcome:
            fields.setdefault("model", model)
            if fields.get("error"):
                fields["error"] = redact(str(fields["error"]), api_key)[:_MAX_ERROR_CHARS]
            return ChatOutcome(duration_s=round(time.monotonic() - started, 3), **fields)

        if urlsplit(url).scheme not in ("http", "https") or not urlsplit(url).hostname:
            return finish(error_kind="crash", error=f"the base URL is not an http(s) URL: {where}")

        client = httpx.Client(
            timeout=httpx.Timeout(
                connect=min(_CONNECT_TIMEOUT_S, timeout_s),
                read=timeout_s + 30,  # a backstop: the waiting thread enforces timeout_s itself
                write=max(timeout_s, _CONNECT_TIMEOUT_S),
                pool=None,
            ),
            trust_env=not is_loopback_url(base_url),  # proxies from the environment, never for a local server
            transport=self._transport,
            verify=_ssl_context(),
            follow_redirects=False,
        )
        call = _Call()
        reader = threading.Thread(
            target=_read,
            args=(call, client, url, headers, json.dumps(payload).encode()),
            name="openai-http",
            daemon=True,
        )
        reader.start()
        stream = _Stream(api_key=api_key, on_delta=on_delta)
        response: httpx.Response | None = None
        status: int | None = None
        header_retry: float | None = None
        error_body = bytearray()
        json_body = bytearray()
        preview = bytearray()  # the first bytes of the body, to show in an error
        streaming = False
        received = 0
        last_activity = time.monotonic()
        deadline = started + wall_timeout_s if wall_timeout_s is not None else None
        try:
            while True:
                if cancel is not None and cancel.is_set():
                    return finish(
                        text=stream.text,
                        error_kind="interrupted",
                        error="cancelled: the executor is stopping",
                        http_status=status,
                        model=stream.model or model,
                    )
                now = time.monotonic()
                if deadline is not None and now >= deadline:
                    return finish(
                        text=stream.text,
                        error_kind="timeout",
                        error=f"no complete answer from {where} within {wall_timeout_s:g}s",
                        http_status=status,
                        model=stream.model or model,
                    )
                if now - last_activity >= timeout_s:
                    if response is None:
                        return finish(error_kind="network", error=f"{where} sent nothing for {timeout_s:g}s")
                    return finish(
                        text=stream.text,
                        error_kind="timeout",
                        error=f"the answer from {where} stalled: nothing for {timeout_s:g}s after {received} bytes",
                        http_status=status,
                        model=stream.model or model,
                    )
                try:
                    kind, value = call.events.get(timeout=_POLL_S)
                except queue.Empty:
                    continue
                last_activity = time.monotonic()
                if kind == "open":
                    response = value
                    status = response.status_code
                    content_type = response.headers.get("content-type", "").lower()
                    streaming = status == 200 and "json" not in content_type
                    if status != 200:
                        header_retry = _retry_after_headers(response.headers)
                elif kind == "data":
                    received += len(value)
                    if len(preview) < 200:
                        preview += value[:200]
                    if status != 200:
                        if len(error_body) < _ERROR_BODY_LIMIT:
                            error_body += value
                            continue
                        break  # enough of an error page: classify it
                    if streaming:
                        stream.feed(value)
                        if stream.error_kind is not None or stream.done:
                            break
                    else:
                        json_body += value
                elif kind == "end" or (response is not None and status != 200):
                    break  # the end, or the error body broke off: classify what came
                else:  # "error"
                    return finish(
                        **self._transport_failure(value, response, received, where),
                        text=stream.text,
                        http_status=status,
                        model=stream.model or model,
                    )
        finally:
            call.abort()
            reader.join(timeout=0.5)

        if status != 200:
            body = bytes(error_body).decode("utf-8", errors="replace")
            message = _error_message(body) if body.strip() else "(no body)"
            kind_ = classify_http_error(status, body)
            retry = header_retry
            if retry is None and kind_ in ("rate_limited", "overloaded"):
                retry = _retry_after_body(body)
            return finish(
                error_kind=kind_,
                error=f"HTTP {status} from {where}: {message}",
                retry_after_s=retry,
                http_status=status,
            )
        if not streaming:
            body = bytes(json_body).decode("utf-8", errors="replace")
            try:
                document = json.loads(body)
            except (ValueError, RecursionError):
                return finish(
                    error_kind="bad_output",
                    error=f"{where} answered 200 with a body that is not JSON: {body[:200]!r}",
                    http_status=status,
                )
            if not isinstance(document, dict):
                return finish(
                    error_kind="bad_output", error=f"{where} answered 200 with {body[:200]!r}", http_status=status
                )
            stream.chunk(document)
        else:
            stream.close()
        common: dict[str, Any] = {
            "text": stream.text,
            "tokens_in": stream.tokens_in,
            "tokens_out": stream.tokens_out,
            "tokens_cached": stream.tokens_cached,
            "finish_reason": stream.finish_reason,
            "http_status": status,
            "model": stream.model or model,
        }
        if stream.error_kind is not None:
            return finish(
                **common, error_kind=stream.error_kind, error=stream.error, retry_after_s=stream.retry_after_s
            )
        if not stream.choices_seen:
            if received == 0:
                what = "an empty body"
            elif streaming and stream.events == 0:
                ctype = response.headers.get("content-type", "no content-type") if response is not None else "?"
                what = f"no server-sent event ({ctype}): {bytes(preview)[:200]!r}"
            else:
                what = "no choices"
            return finish(**common, error_kind="bad_output", error=f"{where} answered 200 with {what}")
        if not stream.text.strip():
            reason = f" (finish_reason {stream.finish_reason})" if stream.finish_reason else ""
            return finish(**common, error_kind="bad_output", error=f"the model returned an empty answer{reason}")
        return finish(**common)

    @staticmethod
    def _transport_failure(
        error: BaseException, response: httpx.Response | None, received: int, where: str
    ) -> dict[str, Any]:
        what = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
        if response is None:
            return {"error_kind": "network", "error": f"cannot reach {where}: {what}"}
        return {"error_kind": "network", "error": f"the answer from {where} was cut after {received} bytes: {what}"}

    # --- the Backend contract -------------------------------------------------------------------

    def run(self, order: WorkOrder, hooks: WorkerHooks, cancel: threading.Event) -> AttemptResult:
        started = time.monotonic()
        failed = functools.partial(failed_attempt, started)

        try:
            prompt = Path(order.prompt_file).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as error:
            return failed("spawn_failed", f"cannot read the prompt file {order.prompt_file}: {error}")
        routing: RoutingServices | None = getattr(hooks, "routing", None)  # the Router and KeyPool choose
        model, user_base = self.role_endpoint(order.model, order.base_url)
        plan: Direct | Routed
        if routing is not None:
            planned = plan_calls(order.role, model, user_base, routing.model_spec, True, self.name)
            if isinstance(planned, str):
                return failed("spawn_failed", f"the openai backend cannot start: {planned}")
            plan = planned
        else:
            if not model:
                return failed(
                    "spawn_failed", f"the openai backend needs a model: set `model:` in the role-spec (or {MODEL_ENV})"
                )
            problem = self.config_problem(user_base)
            if problem is not None:
                return failed("spawn_failed", f"the openai backend cannot start: {problem}")
            base = user_base or self.endpoint_config()[0]
            if base is None:  # config_problem() said there is one; this keeps the type checker sure
                return failed("spawn_failed", f"the openai backend cannot start: set {BASE_URL_ENV}")
            plan = Direct(model=model, base_url=base)
        api_key = self.endpoint_config()[1]
        artifact = expected_artifact_in(prompt, order)
        messages = [
            {"role": "system", "content": system_message(artifact)},
            {"role": "user", "content": prompt},
        ]
        log = self._open_log(order)
        try:
            if log is not None and isinstance(plan, Direct):
                log.write(
                    f"openai: POST {_safe_url(chat_endpoint(plan.base_url))} model={plan.model} "
                    f"key={key_hint(api_key)} prompt={len(prompt)} chars; writing {artifact}\n"
                )
                log.flush()
            shown = plan.model if isinstance(plan, Direct) else plan.force_model or "the routed model"
            progress = _Progress(hooks, log, shown, self.progress_interval_s)
            if isinstance(plan, Routed) and routing is not None:
                outcome = self._complete_routed(
                    order, routing, messages, cancel, progress, log, plan.force_model, user_base
                )
            else:
                assert isinstance(plan, Direct)  # noqa: S101 - a Routed plan is made only with routing
                outcome = self.complete(
                    messages,
                    model=plan.model,
                    base_url=plan.base_url,
                    api_key=api_key,
                    timeout_s=order.hang_timeout_s or DEFAULT_NO_OUTPUT_TIMEOUT_S,
                    wall_timeout_s=order.timeout_s,
                    cancel=cancel,
                    on_delta=progress,
                )
            if log is not None:
                log.write(
                    f"\nopenai: {'ok' if outcome.ok else outcome.error_kind} "
                    f"(HTTP {outcome.http_status}, finish {outcome.finish_reason}, "
                    f"tokens {outcome.tokens_in}/{outcome.tokens_out}, {outcome.duration_s:.1f}s)"
                    + (f": {outcome.error}" if outcome.error else "")
                    + "\n"
                )
        finally:
            if log is not None:
                log.close()
        return self._result(order, outcome, artifact, started)

    def _complete_routed(
        self,
        order: WorkOrder,
        routing: RoutingServices,
        messages: list[dict[str, str]],
        cancel: threading.Event,
        progress: Callable[[str], None],
        log: TextIO | None,
        force_model: str | None,
        user_base: str | None,
    ) -> ChatOutcome:
        """One attempt that may move across keys and models (the Router and the KeyPool decide).

        A 429 reports the key (it cools down) and takes the next one at once; when every
        key is cooling it waits for the first to recover.  Any other failure asks the
        Router for the next model (503 down the chain, network with backoff, a larger
        window for context_too_long); with no next model the failure is the result.
        Only models this backend runs are chosen, and a call goes only to the endpoint
        :func:`session.routing.key_endpoint` allows for the model's key.
        """
        fallback_key = self.endpoint_config()[1]
        choice = routing.select_model(order.task_id, order.complexity, force_model, self.name)
        if isinstance(choice, NoModel):
            return ChatOutcome(
                text="", error_kind="crash", error=f"no model to run: {choice.reason}", model=force_model
            )
        model, provider = choice.model, choice.provider
        deadline = time.monotonic() + (order.timeout_s or 3600.0)
        outcome = ChatOutcome(text="", error_kind="crash", error="no call was made", model=model)
        for _ in range(_MAX_ROUTING_STEPS):
            if cancel.is_set() or time.monotonic() >= deadline:
                break
            lease = routing.acquire_key(provider)
            if isinstance(lease, KeyWait):  # every key of the provider is cooling: wait, do not fail
                _note(log, f"all {provider} keys are cooling; waiting {lease.wait_s:.1f}s for {lease.key_id}")
            while isinstance(lease, KeyWait) and not cancel.is_set() and time.monotonic() < deadline:
                # In short steps: a key added meanwhile (`executor keys add`) is used at once.
                cancel.wait(max(0.0, min(lease.wait_s, _KEY_WAIT_STEP_S, deadline - time.monotonic())))
                lease = routing.acquire_key(provider)
            if isinstance(lease, KeyWait):
                break
            entry = routing.model_spec(model)
            base_url = key_endpoint(entry, user_base) if entry is not None else None
            if base_url is None:  # the registry has no endpoint the user configured for this model's key
                return ChatOutcome(
                    text="",
                    error_kind="crash",
                    error=f"{model} has no endpoint its {provider} key may be sent to: give its [[models]] "
                    "entry a base_url",
                    model=model,
                )
            # OPENAI_API_KEY is OpenAI's key, or the key of the server the user named in OPENAI_BASE_URL:
            # it goes nowhere else.
            spare = fallback_key if provider == "openai" or base_url == user_base else None
            # Every pooled key is disabled, or the provider refused the call without one (the
            # environment's key is no stand-in): ask the user for a key and wait for it.  With no key
            # configured and no refusal the call goes out without one (a local server may need none).
            if isinstance(lease, KeyUnavailable) and (outcome.error_kind == "auth" or lease.disabled):
                found = _wait_for_added_key(order.task_id, provider, lease, routing, cancel, deadline, log)
                if isinstance(found, ChatOutcome):
                    return found
                if found is None:
                    break
                lease = found
            secret = getattr(lease, "secret_ref", None)
            key_id = getattr(lease, "key_id", None) if secret is not None else None
            api_key = secret.reveal() if secret is not None else spare
            _note(log, f"calling {model} at {_safe_url(base_url)} with key {key_hint(api_key)}")
            outcome = self.complete(
                messages,
                model=model,
                base_url=base_url,
                api_key=api_key,
                timeout_s=order.hang_timeout_s or DEFAULT_NO_OUTPUT_TIMEOUT_S,
                wall_timeout_s=max(1.0, deadline - time.monotonic()),
                cancel=cancel,
                on_delta=progress,
            )
            if key_id is not None:
                cost = estimate_cost(model, outcome.tokens_in or 0, outcome.tokens_out or 0, outcome.tokens_cached or 0)
                routing.report_key(
                    key_id,
                    outcome.error_kind,
                    outcome.retry_after_s,
                    outcome.tokens_in or 0,
                    outcome.tokens_out or 0,
                    cost or 0.0,
                    redact(outcome.error or "", api_key) or None,
                )
            _note(log, f"{model}: {'ok' if outcome.ok else outcome.error_kind}")
            if key_id is not None:
                outcome = msgspec.structs.replace(outcome, key_id=key_id)
            if outcome.ok or outcome.error_kind == "interrupted":
                return outcome
            if outcome.error_kind in ("rate_limited", "auth") and key_id is not None:
                continue  # the key cools down or is disabled; the pool hands out the next one (or says to wait)
            if outcome.error_kind == "auth" and api_key is None:
                continue  # refused for want of a key: the pool has none, so the next turn asks for one
            following = routing.next_model(order.task_id, model, outcome.error_kind or "crash")
            if isinstance(following, NoModel):
                return outcome
            if following.delay_s and cancel.wait(following.delay_s):
                break
            model, provider = following.model, following.provider
        if cancel.is_set():
            return ChatOutcome(text="", error_kind="interrupted", error="stopped by the executor", model=model)
        return outcome

    @staticmethod
    def _open_log(order: WorkOrder) -> TextIO | None:
        try:
            path = Path(order.log_path)
            path.parent.mkdir(parents=True, exist_ok=True)
            # Redacted a line at a time: the reply streams in pieces, and a key may be cut between two.
            return cast(TextIO, RedactingWriter(path.open("a", encoding="utf-8")))
        except OSError:
            return None

    def _result(self, order: WorkOrder, outcome: ChatOutcome, artifact: str, started: float) -> AttemptResult:
        cost = None
        if outcome.tokens_in is not None or outcome.tokens_out is not None:
            cost = estimate_cost(
                outcome.model or order.model or "",
                outcome.tokens_in or 0,
                outcome.tokens_out or 0,
                outcome.tokens_cached or 0,
            )
        text = redact_text(outcome.text)  # it becomes the artifact, the summary and the output tail
        fields: dict[str, Any] = {
            "tokens_in": outcome.tokens_in,
            "tokens_out": outcome.tokens_out,
            "tokens_cached": outcome.tokens_cached,
            "cost_usd": cost,
            "cost_estimated": cost is not None,
            "model": outcome.model or order.model,
            "key_id": outcome.key_id,
            "output_tail": text[-_OUTPUT_TAIL_CHARS:],
        }
        if not outcome.ok:
            return AttemptResult(
                ok=False,
                error_kind=outcome.error_kind,
                error=outcome.error,
                outcome="failed",
                retry_after_s=outcome.retry_after_s,
                summary=f"{order.model}: {outcome.error_kind}",
                duration_s=round(time.monotonic() - started, 3),
                **fields,
            )
        target = Path(order.session_dir) / artifact
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            if relative_inside(Path(order.session_dir), target) is None:  # a link planted to lead out
                raise OSError(f"{artifact} leads outside the session folder")
            target.write_text(text if text.endswith("\n") else text + "\n", encoding="utf-8")
        except OSError as error:
            return AttemptResult(
                ok=False,
                error_kind="crash",
                error=f"cannot write the artifact {artifact}: {error.strerror or error}",
                outcome="failed",
                duration_s=round(time.monotonic() - started, 3),
                **fields,
            )
        report = _report_line(text, order.task_id)
        first = next((line.strip() for line in text.splitlines() if line.strip()), "")
        summary = (report[0] if report else first)[:_SUMMARY_CHARS]
        detail = ""
        if outcome.finish_reason == "length":
            detail = "the answer was cut at the model's output limit (finish_reason length)"
        duration = round(time.monotonic() - started, 3)
        if report is not None and report[1]:
            return AttemptResult(
                ok=False,
                error_kind="crash",
                error=summary,
                outcome="failed",
                summary=summary,
                artifacts=(artifact,),
                detail=detail,
                duration_s=duration,
                **fields,
            )
        return AttemptResult(
            ok=True, summary=summary, artifacts=(artifact,), detail=detail, duration_s=duration, **fields
        )


def _wait_for_added_key(
    task_id: str,
    provider: str,
    missing: KeyUnavailable,
    routing: RoutingServices,
    cancel: threading.Event,
    deadline: float,
    log: TextIO | None,
) -> KeyLease | ChatOutcome | None:
    """No usable key of ``provider``: ask the user (one question per provider) and wait,
    within the attempt's deadline, for a key to join the pool.  The lease of the new key;
    a failed outcome when the user answered ``fail``; None when the time ran out or the
    attempt was stopped."""
    _note(log, f"no usable {provider} key ({missing.reason}); asking the user for one and waiting")
    seen = routing.ask_for_key(task_id, provider, missing.reason)
    noted = time.monotonic()
    while not cancel.is_set() and time.monotonic() < deadline:
        cancel.wait(max(0.0, min(_KEY_WAIT_STEP_S, deadline - time.monotonic())))
        if time.monotonic() - noted >= _KEY_ASK_NOTE_S:  # a line now and then: waiting on a person is no stall
            _note(log, f"still waiting for a {provider} key (`executor keys add {provider}`)")
            noted = time.monotonic()
        lease = routing.acquire_key(provider)
        if isinstance(lease, KeyLease):
            _note(log, f"a {provider} key was added: {lease.key_id}")
            routing.key_found(provider)
            return lease
        given_up = routing.key_given_up(provider, seen)
        if given_up is not None:
            return ChatOutcome(text="", error_kind="auth", error=given_up)
    return None
