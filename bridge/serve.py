"""Starting the bridge next to a run: tokens, the tool server, HTTP, and stdio.

``executor run --mcp-http`` serves streamable HTTP on a thread; ``executor
mcp`` speaks MCP on its own stdin/stdout (the client launched it) and also
opens a loopback HTTP endpoint on a free port so that workers can report to
the same bridge.  Over stdio, stdout belongs to the protocol: everything for
people goes to stderr.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import anyio
import pykka
from mcp.server.mcpserver import MCPServer

from bridge.auth import ASGIApp, Receive, Scope, Send, Tokens, load_or_create_owner_token, token_path
from bridge.http import HttpBridge
from bridge.tools import BridgeContext, build_server
from session.loopback import is_loopback
from session.redaction import register_secret

__all__ = ["BridgeRuntime", "Dashboard", "DashboardFactory", "installed_backends", "open_bridge", "serve_stdio"]


class Dashboard(Protocol):
    """The one ASGI app the HTTP server serves (``web.app.WebApp``: web/ sits above bridge/)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None: ...

    def close(self) -> None: ...


#: (context, tokens, the MCP app, loopback only) -> the dashboard that also routes /mcp to that app.
DashboardFactory = Callable[[BridgeContext, Tokens, ASGIApp, bool], Dashboard]


class _ExecutorHolder:
    """The Executor's ref, set once it exists (the bridge starts first, to know its URL)."""

    def __init__(self) -> None:
        self.ref: pykka.ActorRef[Any] | None = None

    def __call__(self) -> pykka.ActorRef[Any] | None:
        return self.ref


@dataclass(frozen=True)
class _Line:
    """One line of the bridge's announcement and where it goes."""

    sink: Callable[[str], None]
    text: str

    def show(self) -> None:
        self.sink(self.text)


@dataclass
class BridgeRuntime:
    context: BridgeContext
    server: MCPServer
    tokens: Tokens
    http: HttpBridge
    holder: _ExecutorHolder
    web: Dashboard
    announcement: list[_Line]

    def attach(self, executor: pykka.ActorRef[Any]) -> None:
        """The run has loaded its session: tools reach ``executor``, and the address is told.

        Not earlier: a client that connects as soon as it reads the address finds every task."""
        self.holder.ref = executor
        for line in self.announcement:
            line.show()

    @property
    def worker_endpoint(self) -> tuple[str, str]:
        """(url, worker token) for the work orders of agents that speak MCP."""
        url = self.http.url
        if self.http.host in ("0.0.0.0", "::"):  # noqa: S104 - workers run here: they use loopback
            url = f"http://127.0.0.1:{self.http.port}/mcp"
        return url, self.tokens.worker

    def serve_stdio(self, outcome: Future[Any], request_stop: Callable[[str], None]) -> None:
        serve_stdio(self.server, outcome, request_stop)

    def close(self) -> None:
        self.web.close()  # event streams end first, or the server would wait out its grace period
        self.http.stop()


_installed: dict[str, bool] | None = None
_installed_lock = threading.Lock()


def installed_backends() -> dict[str, bool]:
    """Backend name -> whether it can start here (its program is on the PATH); computed once."""
    global _installed  # noqa: PLW0603 - a process-wide cache of a slow, stable fact
    with _installed_lock:
        if _installed is None:
            from backends.agent_cli import locate_program  # noqa: PLC0415 - imports every backend
            from backends.registry import backend_names, get_backend  # noqa: PLC0415

            found: dict[str, bool] = {}
            for name in backend_names():
                program = getattr(get_backend(name), "program", None)
                # Agent CLIs are looked up where the run looks (TEAM_EXECUTOR_AGENT_CLIS, then PATH).
                found[name] = program is None or locate_program(program) is not None
            _installed = found
        return dict(_installed)


def open_bridge(
    folder: Path,
    host: str,
    port: int,
    console: Callable[[str], None],
    terminal: Callable[[str], None] | None = None,
    *,
    dashboard: DashboardFactory,
) -> BridgeRuntime:
    """Tokens, tools, the dashboard and the HTTP listener; raises ``DuplicateTool`` or ``BridgeAddressError``.

    ``terminal``: where to show the owner token and the dashboard link with it, unredacted — a
    sink that reaches only a person at a terminal; None for a pipe, a log file or a CI log,
    which get the token file's path from ``console`` instead.
    ``dashboard``: ``web.app.WebApp``, passed in by the command line (web/ builds on bridge/,
    not the other way round).  Raises ``OwnerTokenError`` when the token cannot be kept outside
    the session."""
    owner, _created = load_or_create_owner_token(folder)
    tokens = Tokens(owner)
    holder = _ExecutorHolder()
    context = BridgeContext(folder=folder, executor=holder, tokens=tokens, installed_backends=installed_backends)
    server = build_server(context)
    # On a loopback host the SDK turns on DNS-rebinding protection (Host/Origin checks) itself.
    mcp_app = server.streamable_http_app(streamable_http_path="/mcp", host=host)
    web = dashboard(context, tokens, mcp_app, is_loopback(host))
    http = HttpBridge(web, host, port)
    http.start()
    where = token_path(folder)
    # The token itself only reaches a terminal (which shows it on purpose, unredacted): a pipe, a
    # log file or a CI log gets the file's name.
    if terminal is not None:
        announcement = [
            _Line(terminal, f"MCP bridge on {http.url} — owner bearer token (kept 0600 in {where}): {owner}"),
            _Line(terminal, f"dashboard on {http.base_url}/?token={owner}"),
        ]
    else:
        announcement = [
            _Line(console, f"MCP bridge on {http.url} — owner bearer token in {where}"),
            _Line(console, f"dashboard on {http.base_url}/ — sign in with the token in {where}"),
        ]
    register_secret(owner, tokens.worker)
    return BridgeRuntime(
        context=context, server=server, tokens=tokens, http=http, holder=holder, web=web, announcement=announcement
    )


def serve_stdio(server: MCPServer, outcome: Future[Any], request_stop: Callable[[str], None]) -> None:
    """Speak MCP on stdin/stdout until the client leaves (then stop the run) or the run ends."""

    async def main() -> None:
        async with anyio.create_task_group() as group:

            async def stdio() -> None:
                await server.run_stdio_async()
                request_stop("the MCP client closed stdin")

            group.start_soon(stdio)
            await anyio.to_thread.run_sync(_wait_for, outcome, abandon_on_cancel=True)
            group.cancel_scope.cancel()

    anyio.run(main)


def _wait_for(outcome: Future[Any]) -> None:
    outcome.exception()  # blocks until the run has an outcome, whatever it is
