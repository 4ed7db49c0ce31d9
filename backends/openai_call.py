"""One streamed chat completion over HTTP, turned into a :class:`ChatOutcome`.

The request is read on a daemon thread while the calling thread watches ``cancel``
and the clocks, so a call ends within about 50 ms of a cancel or a timeout whatever
the server does.  How each failure is classified is in :mod:`backends.openai_http`.
"""

from __future__ import annotations

import contextlib
import functools
import json
import queue
import socket
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from backends.openai_errors import (
    MAX_ERROR_CHARS,
    classify_http_error,
    error_message,
    redact,
    retry_after_body,
    retry_after_headers,
    safe_url,
)
from backends.openai_stream import ChatStream
from protocol._base import Message
from protocol.types import ErrorKind
from session.loopback import is_loopback_url

if TYPE_CHECKING:
    import ssl

    import httpx

__all__ = ["ChatOutcome", "chat_endpoint", "complete"]

_CONNECT_TIMEOUT_S = 10.0
_POLL_S = 0.05  # how often the waiting thread looks at cancel and the clocks
_ERROR_BODY_LIMIT = 64 * 1024


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


def chat_endpoint(base_url: str) -> str:
    """``{base_url}/chat/completions``: the base URL includes the version (``.../v1``), as in OpenAI's clients."""
    return base_url.rstrip("/") + "/chat/completions"


@functools.cache
def _ssl_context() -> ssl.SSLContext:
    """httpx's default verifying context, made once (building one costs tens of milliseconds)."""
    # httpx (~0.1 s to import) loads with the first call: most runs never make one.
    import httpx  # noqa: PLC0415

    return httpx.create_ssl_context()


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
    import httpx  # noqa: PLC0415 - loaded with the first call (see _ssl_context)

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


def complete(
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
    transport: httpx.BaseTransport | None = None,
) -> ChatOutcome:
    """One streamed chat completion.  Never raises, except what ``on_delta`` raises.

    ``timeout_s`` is the no-output limit: the longest silence accepted, while
    waiting for the answer to begin (then it is a ``network`` failure) and
    between two pieces of it (a ``timeout``).  ``wall_timeout_s`` bounds the
    whole call (a ``timeout``).  ``on_delta`` gets each piece of text on the
    calling thread.  ``cancel`` ends the call within about 50 ms, closing the
    connection (so the server can stop generating): ``interrupted``.  ``transport``
    replaces httpx's own (for tests).

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
        "transport": transport,
    }
    outcome = _complete_once(payload, **call, cancel=cancel, on_delta=on_delta, started=started)
    if (
        outcome.error_kind == "crash"
        and outcome.http_status == 400
        and "stream_options" in (outcome.error or "")
        and not (cancel is not None and cancel.is_set())
    ):
        del payload["stream_options"]
        outcome = _complete_once(payload, **call, cancel=cancel, on_delta=on_delta, started=started)
    return outcome


def _complete_once(
    payload: dict[str, Any],
    *,
    base_url: str,
    api_key: str | None,
    timeout_s: float,
    wall_timeout_s: float | None,
    cancel: threading.Event | None,
    on_delta: Callable[[str], None] | None,
    started: float,
    transport: httpx.BaseTransport | None,
) -> ChatOutcome:
    model = str(payload["model"])
    headers = {"Accept": "text/event-stream", "Content-Type": "application/json"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    url = chat_endpoint(base_url)
    where = safe_url(url)

    def finish(**fields: Any) -> ChatOutcome:
        fields.setdefault("model", model)
        if fields.get("error"):
            fields["error"] = redact(str(fields["error"]), api_key)[:MAX_ERROR_CHARS]
        return ChatOutcome(duration_s=round(time.monotonic() - started, 3), **fields)

    if urlsplit(url).scheme not in ("http", "https") or not urlsplit(url).hostname:
        return finish(error_kind="crash", error=f"the base URL is not an http(s) URL: {where}")

    import httpx  # noqa: PLC0415 - loaded with the first call (see _ssl_context)

    client = httpx.Client(
        timeout=httpx.Timeout(
            connect=min(_CONNECT_TIMEOUT_S, timeout_s),
            read=timeout_s + 30,  # a backstop: the waiting thread enforces timeout_s itself
            write=max(timeout_s, _CONNECT_TIMEOUT_S),
            pool=None,
        ),
        trust_env=not is_loopback_url(base_url),  # proxies from the environment, never for a local server
        transport=transport,
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
    stream = ChatStream(api_key=api_key, on_delta=on_delta)
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
                    header_retry = retry_after_headers(response.headers)
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
                    **_transport_failure(value, response, received, where),
                    text=stream.text,
                    http_status=status,
                    model=stream.model or model,
                )
    finally:
        call.abort()
        reader.join(timeout=0.5)

    if status != 200:
        body = bytes(error_body).decode("utf-8", errors="replace")
        message = error_message(body) if body.strip() else "(no body)"
        kind_ = classify_http_error(status, body)
        retry = header_retry
        if retry is None and kind_ in ("rate_limited", "overloaded"):
            retry = retry_after_body(body)
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
        return finish(**common, error_kind=stream.error_kind, error=stream.error, retry_after_s=stream.retry_after_s)
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


def _transport_failure(
    error: BaseException, response: httpx.Response | None, received: int, where: str
) -> dict[str, Any]:
    what = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
    if response is None:
        return {"error_kind": "network", "error": f"cannot reach {where}: {what}"}
    return {"error_kind": "network", "error": f"the answer from {where} was cut after {received} bytes: {what}"}
