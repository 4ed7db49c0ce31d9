"""The bridge process: the run's HTTP server (MCP, dashboard, API, event streams) in a process of its own.

Started by the run (:mod:`bridge.host`) as ``python -P -m cli.bridge_process``, it
gets two descriptors: the listening socket the run bound, and its end of a private
socketpair (:mod:`bridge.channel`) on which the tokens arrive first.  Reads go
straight to the session's store through read-only connections (WAL: safe beside
the run's writer); every ask to an actor is forwarded to the run and answered by
the same actor code as in one process (:class:`RemoteRef` stands in for the
``pykka.ActorRef``: same ``ask``/``tell``, same ``pykka.Timeout`` and
``pykka.ActorDeadError``).  So the event loop never waits for the GIL of the actor
tree.

It dies with the run: ``PR_SET_PDEATHSIG`` (SIGKILL) when the run's process ends
however it ends, and a graceful stop at the end of the socketpair or on ``stop``.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import itertools
import logging
import os
import signal
import socket
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import anyio
import pykka

from bridge.auth import Tokens
from bridge.channel import ActorHandle, Channel, ChannelClosed, RecalledWrite, RecallWrite
from bridge.context import ASK_TIMEOUT_S, BridgeContext, DuplicateTool, Recalled
from bridge.http import HttpBridge
from bridge.serve import DashboardFactory, installed_backends
from bridge.tools import build_server
from session.loopback import is_loopback
from session.redaction import RedactingFilter, register_secret

__all__ = ["RemoteRef", "RunLink", "main"]

log = logging.getLogger("executor.bridge")

_PR_SET_PDEATHSIG = 1
#: After a stop is asked for, how long the server may take before the process ends anyway.
_STOP_DEADLINE_S = 10.0


class RemoteRef:
    """An actor of the run, seen from the bridge process: ``ask`` and ``tell`` as on a pykka ref."""

    def __init__(self, link: RunLink, target: str) -> None:
        self.link = link
        self.target = target

    def ask(self, message: Any, *, block: bool = True, timeout: float | None = None) -> Any:
        future = self.link.request(self.target, message)
        return future.get(timeout=timeout) if block else future

    def tell(self, message: Any) -> None:
        self.link.tell(self.target, message)

    def ask_queued(self, message: Any, ticket: tuple[str, str, float]) -> pykka.ThreadingFuture[Any]:
        """``ask(block=False)`` for a queued write: the run also keeps its outcome under the request id."""
        return self.link.request(self.target, message, ticket)


def _dead(why: str) -> tuple[type[BaseException], BaseException, None]:
    return pykka.ActorDeadError, pykka.ActorDeadError(why), None


class RunLink:
    """The bridge process's end of the channel: sends asks, hands each reply to its future."""

    def __init__(self, channel: Channel) -> None:
        self.channel = channel
        self.attached = threading.Event()
        self.gone = threading.Event()
        self._pending: dict[int, pykka.ThreadingFuture[Any]] = {}
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._executor = RemoteRef(self, "executor")

    def executor(self) -> RemoteRef | None:
        """The Executor once the run has loaded its session (before: None, "still starting")."""
        return self._executor if self.attached.is_set() else None

    def request(
        self, target: str, message: Any, ticket: tuple[str, str, float] | None = None
    ) -> pykka.ThreadingFuture[Any]:
        future: pykka.ThreadingFuture[Any] = pykka.ThreadingFuture()
        number = next(self._ids)
        with self._lock:
            if self.gone.is_set():
                future.set_exception(_dead("the run has ended"))
                return future
            self._pending[number] = future
        try:
            self.channel.send(("ask", number, target, message, ticket))
        except ChannelClosed:
            self._settle(number, error=_dead("the run has ended"))
        return future

    def recall(self, request_id: str) -> Recalled | None:
        """The run's record of queued write ``request_id`` (taken by this process or one before it)."""
        found = self.request("run", RecallWrite(request_id)).get(timeout=ASK_TIMEOUT_S)
        if not isinstance(found, RecalledWrite):
            return None  # the run never had it (or forgot it: it keeps the newest ones)
        future: pykka.ThreadingFuture[Any] | None = None
        if found.settled:
            future = pykka.ThreadingFuture()
            if found.error is not None:
                future.set_exception((type(found.error), found.error, None))
            else:
                future.set(found.reply)
        return Recalled(tool=found.tool, message=found.message, queued_at=found.queued_at, future=future)

    def tell(self, target: str, message: Any) -> None:
        with contextlib.suppress(ChannelClosed):
            self.channel.send(("tell", target, message))

    def send(self, item: tuple[Any, ...]) -> None:
        with contextlib.suppress(ChannelClosed):
            self.channel.send(item)

    def run(self, stop: Callable[[], None]) -> None:
        """Read the run's messages until ``stop`` or the end of the channel; then ``stop()``."""
        while True:
            try:
                item = self.channel.receive()
            except Exception:
                log.exception("a message from the run cannot be read")
                item = None
            if item is None or item[0] == "stop":
                break
            kind = item[0]
            if kind == "attached":
                self.attached.set()
            elif kind == "reply":
                value = item[2]
                if isinstance(value, ActorHandle):
                    value = RemoteRef(self, value.name)
                self._settle(item[1], value=value)
            elif kind == "raise":
                error: BaseException = item[2]
                self._settle(item[1], error=(type(error), error, None))
        with self._lock:
            self.gone.set()
            pending, self._pending = self._pending, {}
        for future in pending.values():
            future.set_exception(_dead("the run has ended"))
        stop()

    def _settle(
        self,
        number: int,
        value: Any = None,
        error: tuple[type[BaseException], BaseException, None] | None = None,
    ) -> None:
        with self._lock:
            future = self._pending.pop(number, None)
        if future is None:
            return  # its caller stopped waiting long ago
        if error is not None:
            future.set_exception(error)
        else:
            future.set(value)


def _die_with_parent(parent: int) -> None:
    """SIGKILL when the run's process ends, however it ends (Linux); gone already: leave now."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:
        os._exit(0)


def _configure_logging() -> None:
    """Log lines (redacted) to stderr, which the run pointed at ``.executor/bridge.log``."""
    logging.raiseExceptions = False
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s bridge[%(process)d] %(name)s: %(message)s"))
    handler.addFilter(RedactingFilter())
    for name in ("executor", "mcp", "uvicorn", "uvicorn.error", "sse_starlette", "pykka"):
        logger = logging.getLogger(name)
        logger.setLevel(logging.WARNING)
        logger.addHandler(handler)
        logger.propagate = False


def main(argv: Sequence[str], dashboard: DashboardFactory) -> int:
    parser = argparse.ArgumentParser(prog="bridge_process", description="started by `executor run --http`")
    parser.add_argument("--session", type=Path, required=True)
    parser.add_argument("--channel", type=int, required=True)
    parser.add_argument("--listener", type=int, required=True)
    parser.add_argument("--parent", type=int, required=True)
    parser.add_argument("--stdio-in", type=int, help="the MCP client's end to read (executor mcp)")
    parser.add_argument("--stdio-out", type=int, help="the MCP client's end to write (executor mcp)")
    args = parser.parse_args(argv)
    _die_with_parent(args.parent)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the run decides when its server stops
    _configure_logging()
    channel = Channel.from_fd(args.channel)
    listener = socket.socket(fileno=args.listener)
    setup = channel.receive()
    if setup is None or setup[0] != "setup":
        return 2
    settings: dict[str, str] = setup[1]
    host = settings["host"]
    tokens = Tokens(settings["owner"], settings["worker"])
    register_secret(tokens.owner, tokens.worker)
    link = RunLink(channel)
    context = BridgeContext(
        folder=args.session,
        executor=link.executor,
        tokens=tokens,
        installed_backends=installed_backends,
        recall=link.recall,
    )
    try:
        server = build_server(context)
    except DuplicateTool as error:
        link.send(("fatal", str(error)))
        return 3
    # On a loopback host the SDK turns on DNS-rebinding protection (Host/Origin checks) itself.
    mcp_app = server.streamable_http_app(streamable_http_path="/mcp", host=host)
    web = dashboard(context, tokens, mcp_app, is_loopback(host))
    http = HttpBridge(web, host, listener.getsockname()[1], listener=listener)

    def stop() -> None:
        web.close()  # event streams end first, or the server would wait out its grace period
        http.stop()
        # The server has a grace period for open requests; past the deadline the process ends anyway.
        timer = threading.Timer(_STOP_DEADLINE_S, os._exit, args=(0,))
        timer.daemon = True
        timer.start()

    threading.Thread(target=link.run, args=(stop,), name="run-link", daemon=True).start()
    if args.stdio_in is not None and args.stdio_out is not None:
        _serve_stdio(args.stdio_in, args.stdio_out, args.session, link, tokens)
    http.serve(on_started=lambda: link.send(("ready",)))
    return 0


def _serve_stdio(stdio_in: int, stdio_out: int, folder: Path, link: RunLink, tokens: Tokens) -> None:
    """``executor mcp``: the client that started the run speaks MCP on the run's stdin and stdout,
    handed to this process, so its calls never wait on the run's own threads.  It is the owner
    (stdio carries no token: :func:`bridge.auth.caller_from_headers`).  Served once the run has
    loaded its session, as the HTTP tools are; when the client closes its end, the run is told,
    and stops."""
    os.dup2(stdio_in, 0)  # stdio_server() serves fds 0 and 1, and keeps stray output off them
    os.dup2(stdio_out, 1)
    os.close(stdio_in)
    os.close(stdio_out)
    context = BridgeContext(
        folder=folder, executor=link.executor, tokens=tokens, installed_backends=installed_backends, recall=link.recall
    )
    server = build_server(context)

    def serve() -> None:
        link.attached.wait()
        try:
            anyio.run(server.run_stdio_async)
        except Exception:
            log.exception("the stdio MCP server failed")
        link.send(("stdio-closed",))

    threading.Thread(target=serve, name="mcp-stdio", daemon=True).start()
