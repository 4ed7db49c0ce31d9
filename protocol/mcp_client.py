"""Messages of the McpClients actor: the health of the MCP servers the executor calls tools on.

Nothing here holds a secret: a server is shown by its name, its transport and
its endpoint (the program of a stdio server, the URL of an HTTP one with any
credentials masked).

Depends on nothing else in the project.
"""

from __future__ import annotations

from typing import Literal, get_args

from protocol._base import Message

__all__ = [
    "MCP_SERVER_STATUSES",
    "CheckMcpServers",
    "GetMcpServers",
    "McpProbeDone",
    "McpServerState",
    "McpServerStatus",
    "McpServers",
    "McpTransport",
]

#: ``online``: the last check connected, initialized and listed the tools;
#: ``offline``: it failed (``last_error`` says why); ``unknown``: not checked yet.
McpServerStatus = Literal["online", "offline", "unknown"]
MCP_SERVER_STATUSES: tuple[str, ...] = get_args(McpServerStatus)
McpTransport = Literal["stdio", "http"]


class McpServerState(Message, frozen=True):
    """What is known of one configured MCP server."""

    name: str
    transport: McpTransport
    endpoint: str  # the program (stdio) or the URL, credentials masked (http)
    status: McpServerStatus = "unknown"
    tools: tuple[str, ...] = ()  # from the last successful check
    last_error: str | None = None  # why the last check failed; None after a success
    last_checked: float | None = None  # wall-clock time (epoch seconds) the last check ended
    latency_ms: float | None = None  # the last successful check's round trip
    failures: int = 0  # checks failed in a row


class GetMcpServers(Message, frozen=True):
    """Ask for the state of every configured server (or of those named).  Answered with :class:`McpServers`."""

    names: tuple[str, ...] = ()


class McpServers(Message, frozen=True):
    items: tuple[McpServerState, ...] = ()


class CheckMcpServers(Message, frozen=True):
    """Check these servers (all when empty) now rather than at their next interval.

    Answered with :class:`McpServers` as they are before the checks, which run in the background.
    """

    names: tuple[str, ...] = ()


class McpProbeDone(Message, frozen=True):
    """A probe thread's result (sent by the actor's own probe threads, to the actor)."""

    name: str
    ok: bool
    tools: tuple[str, ...] = ()
    latency_ms: float | None = None
    error: str | None = None
    checked_at: float = 0.0  # wall clock
