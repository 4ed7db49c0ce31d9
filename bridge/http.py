"""The run's HTTP server (the MCP bridge, the dashboard, the API), served by uvicorn.

The socket is bound first (:func:`bind_listener`, in the run's process), so the
port (``:0`` picks a free one) is known at once and a port already taken is a
clear error, not a log line in a thread; the bridge process serves that socket
(:meth:`HttpBridge.serve`).  Loopback only unless the caller says otherwise; every
request needs a bearer token (:class:`bridge.auth.BearerGuard`).
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from session.loopback import is_loopback

if TYPE_CHECKING:
    import uvicorn

    from bridge.auth import ASGIApp

__all__ = ["BridgeAddressError", "HttpBridge", "base_url", "bind_listener", "parse_address"]

log = logging.getLogger("executor.bridge")

DEFAULT_HOST = "127.0.0.1"


class BridgeAddressError(ValueError):
    """``--http`` got an address that cannot be used; the message says why and the fix."""


def parse_address(text: str, allow_remote: bool = False) -> tuple[str, int]:
    """``PORT``, ``HOST:PORT`` or ``[V6]:PORT`` -> (host, port); loopback unless ``allow_remote``."""
    host, port_text = DEFAULT_HOST, text.strip()
    if port_text.startswith("["):
        host, _, rest = port_text[1:].partition("]")
        port_text = rest.removeprefix(":")
    elif ":" in port_text:
        host, _, port_text = port_text.rpartition(":")
    if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise BridgeAddressError(f"--http {text!r}: give a port (0-65535), e.g. 8765 or 127.0.0.1:8765")
    if not is_loopback(host) and not allow_remote:
        raise BridgeAddressError(
            f"--http {text!r}: {host} is not a loopback address; the server listens on 127.0.0.1 unless you "
            "also pass --allow-remote (then anyone who can reach the port and has the token can drive the run)"
        )
    return host or DEFAULT_HOST, int(port_text)


def bind_listener(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` (``0``: a free port); raises :class:`BridgeAddressError`."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP, not the default 0: asyncio turns TCP_NODELAY on only for sockets whose proto says
    # TCP, and without it every response waited out the client's delayed ACK (44 ms a request).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # Linux: accepted sockets inherit it
    try:
        sock.bind((host, port))
    except OSError as error:
        sock.close()
        raise BridgeAddressError(
            f"--http {host}:{port}: cannot listen there ({error.strerror or error}); "
            "choose another port (0 picks a free one)"
        ) from None
    sock.listen(128)
    return sock


def base_url(host: str, port: int) -> str:
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}"


def _server(app: ASGIApp) -> uvicorn.Server:
    import uvicorn  # noqa: PLC0415 - `executor run` without the bridge never loads the server stack

    config = uvicorn.Config(
        app,
        log_level="warning",
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=3,
        log_config=None,  # our logging setup (the session's log file) applies
    )
    return uvicorn.Server(config)


class HttpBridge:
    """``start()`` binds and serves; ``stop()`` ends the server and joins its thread."""

    def __init__(self, app: ASGIApp, host: str, port: int, listener: socket.socket | None = None) -> None:
        self.host = host
        self._listener = listener
        self.requested_port = port
        self.app = app
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self.port = port

    @property
    def base_url(self) -> str:
        return base_url(self.host, self.port)

    @property
    def url(self) -> str:
        return f"{self.base_url}/mcp"

    def start(self) -> None:
        """Bind (unless given a bound socket) and serve on a thread of its own."""
        sock = self._listener or bind_listener(self.host, self.requested_port)
        self.port = sock.getsockname()[1]
        self._server = _server(self.app)
        self._thread = threading.Thread(target=self._serve, args=(self._server, sock), name="http-server", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 15
        while not self._server.started and self._thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.01)

    def serve(self, on_started: Callable[[], None]) -> None:
        """Serve the given socket on this thread until :meth:`stop` (or SIGTERM/SIGINT on the main thread)."""
        sock = self._listener or bind_listener(self.host, self.requested_port)
        self.port = sock.getsockname()[1]
        server = self._server = _server(self.app)

        def tell_started() -> None:
            while not server.started and not server.should_exit:
                time.sleep(0.01)
            if server.started:
                on_started()

        threading.Thread(target=tell_started, name="http-started", daemon=True).start()
        server.run(sockets=[sock])

    @staticmethod
    def _serve(server: uvicorn.Server, sock: socket.socket) -> None:
        try:
            server.run(sockets=[sock])
        except Exception:  # the run goes on without its bridge; the log says why
            log.exception("the HTTP server stopped")

    def stop(self, timeout_s: float = 5.0) -> None:
        server, thread = self._server, self._thread
        if server is not None:
            server.should_exit = True
        if server is None or thread is None:
            return
        thread.join(timeout_s)
        if thread.is_alive():
            server.force_exit = True
            thread.join(2.0)

    def __enter__(self) -> HttpBridge:
        self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()
