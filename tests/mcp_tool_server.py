"""A small MCP server for the MCP client tests: a stand-in for an infrastructure agent.

Run as a subprocess it speaks stdio (``python tests/mcp_tool_server.py``);
:class:`HttpToolServer` serves the same tools over streamable HTTP with uvicorn on
127.0.0.1 in a thread, optionally behind a bearer token.  It uses the real SDK
(``MCPServer``), so the client under test talks the real wire protocol.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from types import TracebackType
from typing import Any, Self

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from pydantic import BaseModel

server = MCPServer("netops")


class Inventory(BaseModel):
    site: str
    devices: int
    healthy: bool


@server.tool()
def ping(host: str) -> str:
    """Pretend to ping a host."""
    return f"PING {host}: 3 packets transmitted, 3 received"


@server.tool()
def inventory(site: str, devices: int = 3) -> Inventory:
    """A structured answer: the tool's return model gives structured content."""
    return Inventory(site=site, devices=devices, healthy=True)


@server.tool()
def reboot(device: str) -> str:
    """A tool that refuses: the call comes back with is_error."""
    raise ToolError(f"device {device} is locked by change freeze")


@server.tool()
def slow(seconds: float) -> str:
    """Blocks (on the SDK's worker thread) for ``seconds``."""
    time.sleep(seconds)
    return f"slept {seconds}"


@server.tool()
def read_env(name: str) -> str:
    """The value of one of the server's environment variables (to test env passing)."""
    return os.environ.get(name, "<unset>")


class HttpToolServer:
    """:data:`server` over streamable HTTP at ``url``, run by uvicorn on a daemon thread.

    With ``token``, a request without ``Authorization: Bearer <token>`` gets a 401.
    Each start builds a fresh app (the SDK's session manager runs once per app), so a
    stopped server can be started again, on a new port.
    """

    def __init__(self, token: str | None = None) -> None:
        self.token = token
        self._uvicorn: Any = None
        self._thread: threading.Thread | None = None
        self.port = 0

    def start(self) -> Self:
        import uvicorn  # noqa: PLC0415 - only the HTTP tests need it, not the stdio subprocess

        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        app = server.streamable_http_app()
        config = uvicorn.Config(
            _guarded(app, self.token), log_level="warning", lifespan="on", timeout_graceful_shutdown=2
        )
        self._uvicorn = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._uvicorn.run, kwargs={"sockets": [sock]}, name="mcp-http-server", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._uvicorn.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("the MCP HTTP test server did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        if self._uvicorn is not None:
            self._uvicorn.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._uvicorn = self._thread = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/mcp"

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def _guarded(app: Any, token: str | None) -> Any:
    """``app`` behind a bearer-token check (none when ``token`` is None)."""
    if token is None:
        return app
    expected = f"Bearer {token}".encode()

    async def asgi(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and dict(scope["headers"]).get(b"authorization") != expected:
            await send({"type": "http.response.start", "status": 401, "headers": [(b"content-type", b"text/plain")]})
            await send({"type": "http.response.body", "body": b"unauthorized"})
            return
        await app(scope, receive, send)

    return asgi


if __name__ == "__main__":
    server.run()
