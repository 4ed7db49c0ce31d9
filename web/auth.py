"""Who may use the dashboard and the HTTP API: the session's owner, and nobody else.

Three ways to present the owner token (kept outside the session, in the file
``bridge.auth.token_path`` names; the run prints that path):

- ``Authorization: Bearer <token>`` — scripts, curl, Prometheus;
- ``?token=<token>`` on any GET — the link ``executor run --http`` prints.  It is
  swapped at once for a cookie and a redirect to the same URL without it, so the
  token does not linger in the address bar or the history;
- the ``te_session`` cookie — the browser afterwards.  It holds an HMAC of the
  token, not the token, is ``HttpOnly`` and ``SameSite=Strict``; a request that
  changes something with only the cookie must also carry ``X-Requested-With``
  (a header a cross-site form cannot send), so a page elsewhere cannot act for
  the user.

The worker token opens nothing here: workers have the MCP tools.  On a loopback
address the ``Host`` header must name loopback too, which defeats DNS
rebinding.  ``/healthz`` is open (it says only whether the tree is up), as a
liveness probe needs.  Tokens are compared in constant time and never logged.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from http.cookies import SimpleCookie
from urllib.parse import parse_qsl, urlencode

from bridge.auth import ASGIApp, Receive, Scope, Send, Tokens
from session.loopback import is_loopback

__all__ = ["COOKIE", "CSRF_HEADER", "OPEN_PATHS", "WebGuard", "cookie_value"]

COOKIE = "te_session"
CSRF_HEADER = "x-requested-with"
OPEN_PATHS = frozenset({"/healthz"})
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def cookie_value(owner_token: str) -> str:
    """What the browser keeps: proof of the token that is useless as a bearer token."""
    return hmac.new(owner_token.encode(), b"team-executor dashboard", hashlib.sha256).hexdigest()


def _host_name(host_header: str) -> str:
    if host_header.startswith("["):
        return host_header[1:].partition("]")[0]
    return host_header.rpartition(":")[0] if host_header.count(":") == 1 else host_header


class WebGuard:
    """ASGI middleware in front of the dashboard and the API (not ``/mcp``: it has its own)."""

    def __init__(self, app: ASGIApp, tokens: Tokens, loopback_only: bool) -> None:
        self.app = app
        self.tokens = tokens
        self.loopback_only = loopback_only
        self._cookie = cookie_value(tokens.owner)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {key.decode("latin-1").lower(): value.decode("latin-1") for key, value in scope["headers"]}
        if self.loopback_only and not is_loopback(_host_name(headers.get("host", ""))):
            await _refuse(send, 421, "misdirected", "only a loopback Host (127.0.0.1, localhost) is served")
            return
        if scope["path"] in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        query = parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
        presented = dict(query).get("token")
        if presented is not None and scope["method"] == "GET":
            if self.tokens.caller(presented) == "owner":
                await self._set_cookie_and_redirect(scope, send, [(k, v) for k, v in query if k != "token"])
                return
            await _refuse(send, 401, "unauthorized", "the token in the link is not this session's owner token")
            return
        bearer = _bearer(headers.get("authorization"))
        if bearer is not None:
            if self.tokens.caller(bearer) != "owner":
                await _refuse(send, 401, "unauthorized", "the bearer token is not this session's owner token")
                return
            await self.app(scope, receive, send)
            return
        if not self._has_cookie(headers.get("cookie", "")):
            await _refuse(
                send,
                401,
                "unauthorized",
                "send 'Authorization: Bearer <token>' (the owner token file `executor run --http` named), "
                "or open the link it printed at a terminal",
                html=scope["path"] == "/",
            )
            return
        if scope["method"] not in _SAFE_METHODS and CSRF_HEADER not in headers:
            detail = f"a change made with the session cookie needs the {CSRF_HEADER} header"
            await _refuse(send, 403, "forbidden", detail)
            return
        await self.app(scope, receive, send)

    def _has_cookie(self, header: str) -> bool:
        if not header:
            return False
        try:
            jar = SimpleCookie(header)
        except Exception:  # noqa: BLE001 - a malformed Cookie header is simply no cookie
            return False
        morsel = jar.get(COOKIE)
        return morsel is not None and hmac.compare_digest(morsel.value.encode(), self._cookie.encode())

    async def _set_cookie_and_redirect(self, scope: Scope, send: Send, query: list[tuple[str, str]]) -> None:
        location = scope["path"] + (f"?{urlencode(query)}" if query else "")
        cookie = f"{COOKIE}={self._cookie}; Path=/; HttpOnly; SameSite=Strict"
        await send(
            {
                "type": "http.response.start",
                "status": 303,
                "headers": [
                    (b"location", location.encode("latin-1")),
                    (b"set-cookie", cookie.encode("latin-1")),
                    (b"cache-control", b"no-store"),
                    (b"content-length", b"0"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": b""})


def _bearer(value: str | None) -> str | None:
    if not value:
        return None
    scheme, _, credentials = value.partition(" ")
    return credentials.strip() if scheme.lower() == "bearer" else ""


_SIGN_IN_PAGE = """<!doctype html><meta charset="utf-8"><title>team-executor: sign in</title>
<body style="font-family:sans-serif;max-width:40em;margin:4em auto">
<h1>Not signed in</h1><p>Open the link <code>executor run --http</code> printed (it ends in
<code>?token=…</code>), or paste the owner token from the file it named:</p>
<form method="get" action="/"><input name="token" type="password" size="50" autofocus>
<button>Open the dashboard</button></form></body>"""


async def _refuse(send: Send, status: int, error: str, detail: str, html: bool = False) -> None:
    if html:
        body, kind = _SIGN_IN_PAGE.encode(), b"text/html; charset=utf-8"
    else:
        body, kind = json.dumps({"error": error, "detail": detail}).encode(), b"application/json"
    headers = [(b"content-type", kind), (b"content-length", str(len(body)).encode()), (b"cache-control", b"no-store")]
    if status == 401:
        headers.append((b"www-authenticate", b'Bearer realm="team-executor"'))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
