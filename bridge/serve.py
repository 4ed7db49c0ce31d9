"""Starting the bridge next to a run: tokens, the listening socket, the bridge process, and stdio.

``executor run --mcp-http`` serves streamable HTTP (MCP, the dashboard, the API)
from a process of its own (:mod:`bridge.host`, :mod:`bridge.remote`), so the
run's actor tree never stalls the server; ``executor mcp`` speaks MCP on its
stdin/stdout (the client launched it) from that same process too, which is handed
the run's stdin and stdout, and opens a loopback HTTP endpoint on a free port so
that workers can report to the same bridge.  Over stdio, stdout belongs to the
protocol: everything for people goes to stderr.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import pykka

from bridge.auth import ASGIApp, Receive, Scope, Send, Tokens, load_or_create_owner_token, token_path
from bridge.host import BridgeProcess
from bridge.http import base_url, bind_listener
from session.redaction import register_secret

if TYPE_CHECKING:
    from bridge.context import BridgeContext

__all__ = ["BridgeRuntime", "Dashboard", "DashboardFactory", "installed_backends", "open_bridge"]


class Dashboard(Protocol):
    """The one ASGI app the HTTP server serves (``web.app.WebApp``: web/ sits above bridge/)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None: ...

    def close(self) -> None: ...


#: (context, tokens, the MCP app, loopback only) -> the dashboard that also routes /mcp to that app.
DashboardFactory = Callable[["BridgeContext", Tokens, ASGIApp, bool], Dashboard]


@dataclass(frozen=True)
class _Line:
    """One line of the bridge's announcement and where it goes."""

    sink: Callable[[str], None]
    text: str

    def show(self) -> None:
        self.sink(self.text)


@dataclass
class BridgeRuntime:
    """The run's bridge: HTTP served by a process of its own (:class:`bridge.host.BridgeProcess`),
    which for ``executor mcp`` also speaks MCP on the run's stdin/stdout."""

    tokens: Tokens
    process: BridgeProcess
    host: str
    port: int
    announcement: list[_Line]

    def attach(self, executor: pykka.ActorRef[Any], session: Callable[[], pykka.ActorRef[Any] | None]) -> None:
        """The run has loaded its session: tools reach ``executor``, and the address is told once served.
        ``session`` finds the run's Session actor (restarted, it is another), which keeps queued writes.

        Not earlier: a client that connects as soon as it reads the address finds every task."""
        self.process.attach(executor, session)
        for line in self.announcement:
            line.show()

    @property
    def worker_endpoint(self) -> tuple[str, str]:
        """(url, worker token) for the work orders of agents that speak MCP."""
        host = self.host
        if host in ("0.0.0.0", "::"):  # noqa: S104 - workers run here: they use loopback
            host = "127.0.0.1"
        return f"{base_url(host, self.port)}/mcp", self.tokens.worker

    def serve_stdio(self, outcome: Future[Any], request_stop: Callable[[str], None]) -> None:
        """``request_stop(why)`` once the stdio client is gone; returns at once (the bridge
        process serves it, from the run's attach on)."""
        if not self.process.stdio:
            raise RuntimeError("this bridge was opened without stdio")
        self.process.on_client_gone(request_stop)

    def close(self) -> None:
        self.process.close()


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
    child: Sequence[str],
    stdio: bool = False,
) -> BridgeRuntime:
    """Tokens, the listening socket and the bridge process, serving; raises ``BridgeAddressError``
    or ``BridgeStartError``.

    ``terminal``: where to show the owner token and the dashboard link with it, unredacted — a
    sink that reaches only a person at a terminal; None for a pipe, a log file or a CI log,
    which get the token file's path from ``console`` instead.
    ``child``: the command that starts the bridge process (``python -P -m cli.bridge_process``:
    it serves web/'s dashboard, which sits above bridge/).  ``stdio``: the bridge process also
    serves MCP on this process's stdin/stdout (``executor mcp``), which it is handed.
    Raises ``OwnerTokenError`` when the token cannot be kept outside the session."""
    owner, _created = load_or_create_owner_token(folder)
    tokens = Tokens(owner)
    register_secret(owner, tokens.worker)
    listener = bind_listener(host, port)
    port = listener.getsockname()[1]
    url = f"{base_url(host, port)}/mcp"
    process = BridgeProcess(folder, listener, host, tokens, child, console, url, stdio=stdio)
    process.start()
    where = token_path(folder)
    # The token itself only reaches a terminal (which shows it on purpose, unredacted): a pipe, a
    # log file or a CI log gets the file's name.
    if terminal is not None:
        announcement = [
            _Line(terminal, f"MCP bridge on {url} — owner bearer token (kept 0600 in {where}): {owner}"),
            _Line(terminal, f"dashboard on {base_url(host, port)}/?token={owner}"),
        ]
    else:
        announcement = [
            _Line(console, f"MCP bridge on {url} — owner bearer token in {where}"),
            _Line(console, f"dashboard on {base_url(host, port)}/ — sign in with the token in {where}"),
        ]
    return BridgeRuntime(
        tokens=tokens,
        process=process,
        host=host,
        port=port,
        announcement=announcement,
    )
