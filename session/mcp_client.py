"""A blocking client for the MCP servers of ``[mcp_servers]``: one tool call, one health probe.

Used from worker threads (the ``mcp`` backend) and from the McpClients actor's
probe threads, never from async code.  Each call opens its own connection in
the calling thread (``anyio.run``), does its one thing and closes it: a stdio
server is started for the call and stopped after it (the SDK closes its stdin,
waits, then kills its process group), an HTTP server gets a fresh session.
Nothing is shared between threads, so nothing needs a lock, and a server that
died since the last call costs nothing but that call.

:func:`call_tool` returns a :class:`ToolCallResult` when the server answered the
call (``is_error`` set when the *tool* failed) and raises :class:`McpCallFailed`
when it could not be asked at all; ``kind`` then says why in words the executor
acts on:

- ``network``: connection refused, reset, DNS, a server that closed the
  connection or exited, or no answer to the handshake within the timeout;
- ``timeout``: connected, but the tool call itself ran past the timeout;
- ``spawn_failed``: a stdio server's program could not be started;
- ``auth``: an HTTP server answered 401 or 403 (check ``token_env``);
- ``config``: a ``${NAME}`` or ``token_env`` variable is not set;
- ``protocol``: the server answered something that is not MCP;
- ``interrupted``: ``cancel`` was set.

:func:`probe` never raises: it connects, initializes and lists the tools, and
returns a :class:`ServerHealth`.  Secrets (``${NAME}`` values, the bearer
token) are sent to the server and nowhere else: messages name variables and
show URLs with their credentials masked.
"""

from __future__ import annotations

import os
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from typing import Any, BinaryIO, Literal, TextIO, cast

import anyio
import httpx2
from mcp.client.client import Client
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from mcp_types import CallToolResult, TextContent

from session.config_fields import redact_url
from session.config_mcp import McpServerConfig, env_references
from session.redaction import register_environment, register_secret

__all__ = [
    "McpCallFailed",
    "McpFailure",
    "ServerHealth",
    "ToolCallResult",
    "call_tool",
    "probe",
]

McpFailure = Literal["network", "timeout", "spawn_failed", "auth", "config", "protocol", "interrupted"]

_CANCEL_POLL_S = 0.05
_STDERR_TAIL_CHARS = 600
_MAX_TOOL_PAGES = 20  # a server whose tool listing never ends cannot hold a probe forever


class McpCallFailed(Exception):
    """The server could not be asked (see the module docstring for ``kind``); the message names the fix."""

    def __init__(self, kind: McpFailure, message: str) -> None:
        super().__init__(message)
        self.kind: McpFailure = kind
        self.message = message


@dataclass(frozen=True)
class ToolCallResult:
    """What the server answered: the text content joined, the structured content, and whether the tool failed."""

    text: str
    structured: dict[str, Any] | None
    is_error: bool
    duration_s: float


@dataclass(frozen=True)
class ServerHealth:
    """One health check: ``ok`` with the tool names and the round trip, or the reason it failed."""

    ok: bool
    tools: tuple[str, ...] = ()
    latency_ms: float | None = None
    error: str | None = None
    kind: McpFailure | None = None


# --------------------------------------------------------------------------- the public calls


def call_tool(
    server: McpServerConfig,
    tool: str,
    arguments: Mapping[str, Any],
    timeout_s: float | None = None,
    *,
    cancel: threading.Event | None = None,
    environ: Mapping[str, str] | None = None,
    errlog: BinaryIO | None = None,
    name: str = "",
) -> ToolCallResult:
    """Call ``tool`` with ``arguments`` on ``server``; blocks the calling thread.

    ``timeout_s`` (default: the server's ``timeout_s``) covers connecting and the
    call.  ``cancel`` ends the call within about 50 ms (plus the SDK's stop of a
    stdio server).  ``environ`` (default ``os.environ``) resolves ``${NAME}`` and
    ``token_env``.  A stdio server's stderr goes to ``errlog`` (a file opened for
    binary reading and writing) when given, else to a temporary file; its tail is
    quoted when the call fails.  ``name`` (the config's name of the server) is used in messages.
    Raises :class:`McpCallFailed`.
    """
    environ = os.environ if environ is None else environ
    limit = server.timeout_s if timeout_s is None else timeout_s
    with _stderr_sink(errlog) as sink:
        started = time.monotonic()
        phase = _Phase()

        async def work() -> CallToolResult:
            async with _connected(server, environ, sink, phase) as client:
                phase.name = "call"
                return await client.call_tool(tool, dict(arguments))

        result: CallToolResult = _run(work, server, name, environ, limit, cancel, sink, phase)
    return ToolCallResult(
        text="\n".join(block.text for block in result.content if isinstance(block, TextContent)),
        structured=result.structured_content,
        is_error=bool(result.is_error),
        duration_s=round(time.monotonic() - started, 3),
    )


def probe(
    server: McpServerConfig,
    timeout_s: float | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    cancel: threading.Event | None = None,
    name: str = "",
) -> ServerHealth:
    """Connect to ``server``, initialize and list its tools.  Never raises.

    ``latency_ms`` is the whole round trip (for a stdio server, starting it included).
    """
    environ = os.environ if environ is None else environ
    limit = server.timeout_s if timeout_s is None else timeout_s
    with _stderr_sink(None) as sink:
        started = time.monotonic()
        phase = _Phase()

        async def work() -> list[str]:
            async with _connected(server, environ, sink, phase) as client:
                phase.name = "list"
                names: list[str] = []
                cursor: str | None = None
                for _ in range(_MAX_TOOL_PAGES):
                    page = await client.list_tools(cursor=cursor)
                    names.extend(tool.name for tool in page.tools)
                    cursor = page.next_cursor
                    if cursor is None:
                        break
                return names

        try:
            tools: list[str] = _run(work, server, name, environ, limit, cancel, sink, phase)
        except McpCallFailed as failure:
            return ServerHealth(ok=False, error=failure.message, kind=failure.kind)
    return ServerHealth(ok=True, tools=tuple(tools), latency_ms=round((time.monotonic() - started) * 1000, 1))


# --------------------------------------------------------------------------- connecting


class _Phase:
    """How far a call got: a timeout while connecting is the network's, one during the call the tool's."""

    def __init__(self) -> None:
        self.name: Literal["connect", "call", "list"] = "connect"
        self.http_status: int | None = None  # the last HTTP error status the server answered


def _expand(value: str, environ: Mapping[str, str]) -> str:
    for name in env_references(value):
        register_environment({name: environ.get(name, "")})  # ${NETOPS_TOKEN}: masked wherever it shows
        value = value.replace("${" + name + "}", environ.get(name, ""))
    return value


@asynccontextmanager
async def _connected(
    server: McpServerConfig, environ: Mapping[str, str], errlog: BinaryIO, phase: _Phase
) -> AsyncIterator[Client]:
    """An initialized client of ``server``, its response cache off (every call must reach the server)."""
    if server.command is not None:
        params = StdioServerParameters(
            command=server.command[0],
            args=list(server.command[1:]),
            env={name: _expand(value, environ) for name, value in server.env.items()} or None,
        )
        # stdio_client hands errlog to the subprocess as its stderr: only the file descriptor matters.
        async with Client(stdio_client(params, errlog=cast(TextIO, errlog)), cache=None) as client:
            yield client
        return
    headers = {name: _expand(value, environ) for name, value in server.headers.items()}
    if server.token_env is not None:
        register_secret(environ[server.token_env])
        headers["Authorization"] = f"Bearer {environ[server.token_env].strip()}"

    async def remember_status(response: httpx2.Response) -> None:
        # The SDK reports a refused request as a bare "error response": keep the status to say why.
        if response.status_code >= 400:
            phase.http_status = response.status_code

    async with (
        httpx2.AsyncClient(
            headers=headers, timeout=httpx2.Timeout(server.timeout_s), event_hooks={"response": [remember_status]}
        ) as http,
        Client(streamable_http_client(server.url or "", http_client=http), cache=None) as client,
    ):
        yield client


# --------------------------------------------------------------------------- running and classifying


def _run(
    work: Callable[[], Awaitable[Any]],
    server: McpServerConfig,
    name: str,
    environ: Mapping[str, str],
    limit: float,
    cancel: threading.Event | None,
    sink: BinaryIO,
    phase: _Phase,
) -> Any:
    """Run ``work`` on a fresh event loop in this thread, under ``limit`` and ``cancel``; classify failures."""
    missing = server.missing_variables(environ)
    if missing:
        raise McpCallFailed(
            "config",
            f"environment variable {', '.join(missing)} is not set "
            f"(the settings of MCP server {name or server.endpoint!r} read it): "
            "set it in the environment the executor runs in",
        )
    cancelled = False

    async def main() -> Any:
        nonlocal cancelled
        outcome = None
        async with anyio.create_task_group() as group:
            if cancel is not None:

                async def watch() -> None:
                    nonlocal cancelled
                    while not cancel.is_set():
                        await anyio.sleep(_CANCEL_POLL_S)
                    cancelled = True
                    group.cancel_scope.cancel()

                group.start_soon(watch)
            with anyio.fail_after(limit):
                outcome = await work()
            group.cancel_scope.cancel()  # the watcher's job is done
        return outcome

    try:
        outcome = anyio.run(main)
    except Exception as error:  # noqa: BLE001 - every failure of the SDK becomes one classified McpCallFailed
        if cancelled:
            raise McpCallFailed("interrupted", "cancelled: the executor is stopping") from None
        where = f"MCP server '{name}' ({server.endpoint})" if name else f"MCP server {server.endpoint}"
        raise _classify(error, where, limit, phase, _tail(sink)) from None
    if cancelled:
        raise McpCallFailed("interrupted", "cancelled: the executor is stopping")
    return outcome


def _leaves(error: BaseException) -> list[BaseException]:
    """The exceptions inside (nested) exception groups: task groups wrap what the transport raised."""
    if isinstance(error, BaseExceptionGroup):
        return [leaf for inner in error.exceptions for leaf in _leaves(inner)]
    return [error]


def _classify(error: Exception, where: str, limit: float, phase: _Phase, stderr: str) -> McpCallFailed:
    leaves = _leaves(error)
    said = f"; its stderr ends: {stderr}" if stderr else ""
    if phase.http_status in (401, 403):
        return McpCallFailed(
            "auth",
            f"{where} refused the request (HTTP {phase.http_status}): check the token (token_env) and headers",
        )
    if any(isinstance(leaf, TimeoutError) for leaf in leaves):
        if phase.name == "connect":
            return McpCallFailed("network", f"{where} did not complete the MCP handshake within {limit:g}s{said}")
        what = "the tool call" if phase.name == "call" else "listing the tools"
        return McpCallFailed("timeout", f"{what} on {where} took longer than {limit:g}s (timeout_s)")
    for leaf in leaves:
        if isinstance(leaf, httpx2.TransportError):
            return McpCallFailed("network", f"cannot reach {where}: {type(leaf).__name__}: {_safe(str(leaf))}")
        if isinstance(leaf, OSError) and phase.name == "connect":
            reason = leaf.strerror or type(leaf).__name__
            return McpCallFailed("spawn_failed", f"cannot start {where}: {reason}")
        if isinstance(leaf, MCPError) and leaf.message == "Connection closed":
            return McpCallFailed("network", f"{where} closed the connection{said}")
    if phase.http_status is not None:
        return McpCallFailed("network", f"{where} answered HTTP {phase.http_status}")
    leaf = leaves[0]
    detail = leaf.message if isinstance(leaf, MCPError) else f"{type(leaf).__name__}: {_safe(str(leaf))}"
    return McpCallFailed("protocol", f"the MCP conversation with {where} failed: {detail}{said}")


def _safe(text: str) -> str:
    """An error text without URL credentials (httpx names the URL it failed on), kept short."""
    return " ".join(redact_url(word) if "://" in word else word for word in text.split(" "))[:300]


@contextmanager
def _stderr_sink(errlog: BinaryIO | None) -> Iterator[BinaryIO]:
    """``errlog`` when given, else a temporary file (a real file: the server process writes to it)."""
    if errlog is not None:
        yield errlog
        return
    with tempfile.TemporaryFile("w+b") as own:
        yield own


def _tail(sink: BinaryIO) -> str:
    """The last lines a stdio server wrote to stderr, on one line; ``""`` when they cannot be read back."""
    try:
        sink.flush()
        size = sink.seek(0, os.SEEK_END)
        sink.seek(max(0, size - _STDERR_TAIL_CHARS * 4))
        text = sink.read().decode("utf-8", errors="replace")
    except (OSError, ValueError):  # not seekable, not readable, or closed: nothing to quote
        return ""
    return " | ".join(line.strip() for line in text.splitlines() if line.strip())[-_STDERR_TAIL_CHARS:]
