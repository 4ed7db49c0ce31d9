"""One ASGI app for ``--http``: the dashboard, the JSON API, /healthz, /metrics, and /mcp.

``/mcp`` (and below) goes to the MCP SDK's streamable-HTTP app behind the
bridge's bearer guard (owner and worker tokens); everything else goes to the
FastAPI app behind :class:`web.auth.WebGuard` (the owner only).  The MCP app
owns the lifespan: its session manager must run while the server does.
"""

from __future__ import annotations

import threading
from importlib.resources import files
from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse, Response
from fastapi.staticfiles import StaticFiles

from bridge.auth import ASGIApp, BearerGuard, Message, Receive, Scope, Send, Tokens
from bridge.tools import BridgeContext
from web.api import build_api
from web.auth import WebGuard

__all__ = ["MCP_PATH", "WebApp", "static_dir"]

MCP_PATH = "/mcp"
_SECURITY_HEADERS = [
    (b"content-security-policy", b"default-src 'self'; style-src 'self'; img-src 'self' data:; frame-ancestors 'none'"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
]


def static_dir() -> Path:
    return Path(str(files("web") / "static"))


class _SecurityHeaders:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *_SECURITY_HEADERS]
            await send(message)

        await self.app(scope, receive, with_headers)


def _dashboard(context: BridgeContext) -> FastAPI:
    api = build_api(context)
    static = static_dir()
    api.mount("/static", StaticFiles(directory=static), name="static")

    @api.get("/", include_in_schema=False)
    def index() -> Response:
        return FileResponse(static / "index.html", headers={"cache-control": "no-store"})

    return api


class WebApp:
    """The combined app.  ``close()`` ends the event streams so the server can stop at once."""

    def __init__(self, context: BridgeContext, tokens: Tokens, mcp_app: ASGIApp, loopback_only: bool) -> None:
        self.closing = threading.Event()
        dashboard = _dashboard(context)
        dashboard.state.closing = self.closing
        self.dashboard = dashboard
        self._web = WebGuard(_SecurityHeaders(dashboard), tokens, loopback_only)
        self._mcp = BearerGuard(mcp_app, tokens)
        self._mcp_app = mcp_app

    def close(self) -> None:
        self.closing.set()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._mcp_app(scope, receive, send)
            return
        path: str = scope.get("path", "")
        if path == MCP_PATH or path.startswith(MCP_PATH + "/"):
            await self._mcp(scope, receive, send)
            return
        await self._web(scope, receive, send)
