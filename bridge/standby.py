"""``executor mcp`` for a session that cannot run: the handshake still completes.

An MCP client that launched ``executor mcp`` sees only "connection closed" when
the server exits before the handshake, while the reason goes to a stderr the
person rarely reads.  So when the run is refused before it starts (no backend
named, a CLI missing, no key, the session busy in another process, a bad config),
the bridge serves anyway, without a tree: the read tools and
``answer_escalation`` work from the store, ``get_fleet_status`` shows the
problems, and every tool that needs the run returns a tool error that carries
the refusal and its fix (:class:`bridge.tools.NotRunnable`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import anyio

from bridge.serve import installed_backends
from bridge.tools import BridgeContext, build_server

__all__ = ["serve_unusable"]


def serve_unusable(folder: Path, problem: str, console: Callable[[str], None]) -> None:
    """Speak MCP on stdin/stdout, without a run, until the client leaves.

    Raises ``DuplicateTool`` (a programming error) before serving."""
    context = BridgeContext(
        folder=folder.resolve(), executor=lambda: None, installed_backends=installed_backends, unusable=problem
    )
    server = build_server(context)
    console(
        f"executor mcp: {problem}\n"
        "Serving the MCP tools anyway: reads, answers and get_fleet_status work; the tools that need "
        "the run say why they cannot. Fix the above and restart the server."
    )
    anyio.run(server.run_stdio_async)
