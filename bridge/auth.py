"""Who is calling: the owner (the person's MCP client) or a worker.

Two bearer tokens guard the HTTP transport:

- the *owner* token, generated once per session and kept in the user's config
  folder (:func:`token_path`: ``<config>/tokens/<hash of the session path>.token``,
  file 0600, folders 0700), never inside the session folder or the project the
  agents work in, where any worker could read it: every tool;
- the *worker* token, new for every run and held in memory: only the tools a
  worker needs (:data:`WORKER_TOOLS`), and each of those checks the agent id
  against the task it names.

Over stdio the client started the process: it is the owner.  Tokens are
compared in constant time and never logged; the owner token is printed only to
a terminal (see ``bridge.serve.open_bridge``).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from pathlib import Path
from typing import Any, Literal

from session.skills import CONFIG_DIR_ENV, user_config_dir
from session.store import STATE_DIR

__all__ = [
    "WORKER_TOOLS",
    "BearerGuard",
    "Caller",
    "OwnerTokenError",
    "Tokens",
    "caller_from_headers",
    "load_or_create_owner_token",
    "token_path",
]

Caller = Literal["owner", "worker"]

#: What a worker's token opens.  Reporting on its own task, reading, asking the user.
WORKER_TOOLS = frozenset(
    {"report_progress", "report_blocker", "get_task_status", "list_tasks", "escalate_decision", "check_session"}
)

#: Where older versions kept the owner token: inside the session, readable by every worker.
_OLD_TOKEN_FILE = "mcp-token"  # noqa: S105 - a file name, not a secret
_TOKENS_DIR = "tokens"

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class OwnerTokenError(Exception):
    """The owner token cannot be kept safely (the config folder is inside the session, or unwritable)."""


def token_path(folder: Path) -> Path:
    """The owner token file of the session at ``folder``: in the user's config folder,
    named by a hash of the session's resolved path (one token per session)."""
    digest = hashlib.sha256(str(Path(folder).resolve()).encode()).hexdigest()[:32]
    return user_config_dir() / _TOKENS_DIR / f"{digest}.token"


def _check_outside(folder: Path, path: Path) -> None:
    session = Path(folder).resolve()
    where = path.parent.resolve()
    if where == session or where.is_relative_to(session):
        raise OwnerTokenError(
            f"the owner token would be kept in {where}, inside the session folder where workers read: "
            f"point {CONFIG_DIR_ENV} at a folder outside the session (e.g. ~/.config/team-executor)"
        )


def _private_dir(path: Path) -> None:
    """``path`` and its missing parents made 0700; an existing one is narrowed to 0700."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    if path.stat().st_mode & 0o077:
        os.chmod(path, 0o700)


def load_or_create_owner_token(folder: Path) -> tuple[str, bool]:
    """The session's owner token, and whether it was created just now.

    A token left inside the session by an older version (``.executor/mcp-token``) is
    deleted, not moved: any worker could have read it, so a new one replaces it.
    Raises :class:`OwnerTokenError` when it cannot be kept outside the session."""
    path = token_path(folder)
    _check_outside(folder, path)
    old = Path(folder) / STATE_DIR / _OLD_TOKEN_FILE
    old.unlink(missing_ok=True)
    try:
        token = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        token = ""
    except OSError as error:
        raise OwnerTokenError(f"cannot read the owner token {path}: {error.strerror}") from None
    if token:
        _private_dir(path.parent)
        if path.stat().st_mode & 0o077:
            os.chmod(path, 0o600)  # someone loosened it: the token must stay the owner's
        return token, False
    token = secrets.token_urlsafe(32)
    try:
        _private_dir(path.parent)
        path.unlink(missing_ok=True)  # an empty file left by a crash
        # O_EXCL|0600: the file never exists with wider permissions, not even for a moment.
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            handle.write(token + "\n")
    except OSError as error:
        raise OwnerTokenError(
            f"cannot write the owner token to {path}: {error.strerror}; "
            f"point {CONFIG_DIR_ENV} at a writable folder of yours"
        ) from None
    return token, True


class Tokens:
    def __init__(self, owner: str, worker: str | None = None) -> None:
        self.owner = owner
        self.worker = worker or secrets.token_urlsafe(32)

    def caller(self, presented: str | None) -> Caller | None:
        if not presented:
            return None
        if hmac.compare_digest(presented.encode(), self.owner.encode()):
            return "owner"
        if hmac.compare_digest(presented.encode(), self.worker.encode()):
            return "worker"
        return None


def _bearer(value: str | None) -> str | None:
    if not value:
        return None
    scheme, _, credentials = value.partition(" ")
    return credentials.strip() if scheme.lower() == "bearer" else None


def caller_from_headers(headers: Mapping[str, str] | None, tokens: Tokens | None) -> Caller | None:
    """The caller of a tool: stdio (no headers) is the owner; over HTTP, the token decides."""
    if headers is None or tokens is None:
        return "owner"
    return tokens.caller(_bearer(headers.get("authorization")))


class BearerGuard:
    """ASGI middleware: no valid bearer token, no entry (401 with a JSON reason)."""

    def __init__(self, app: ASGIApp, tokens: Tokens) -> None:
        self.app = app
        self.tokens = tokens

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {key.decode("latin-1").lower(): value.decode("latin-1") for key, value in scope["headers"]}
        if self.tokens.caller(_bearer(headers.get("authorization"))) is None:
            body = json.dumps(
                {
                    "error": "unauthorized",
                    "detail": "send 'Authorization: Bearer <token>' (the owner token file is named at the run's start)",
                }
            ).encode()
            await send(
                {
                    "type": "http.response.start",
                    "status": 401,
                    "headers": [
                        (b"content-type", b"application/json"),
                        (b"www-authenticate", b'Bearer realm="team-executor"'),
                        (b"content-length", str(len(body)).encode()),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": body})
            return
        await self.app(scope, receive, send)
