"""Composing the run's bridge: the MCP server (bridge/) with the dashboard (web/) in front,
served by the bridge process (:mod:`cli.bridge_process`).

A run lives in actors/, below bridge/ and web/: it takes the opener built here
and never imports either package.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

from actors.run_request import BridgeOpener, RunBridge, RunRefused
from bridge.http import BridgeAddressError, parse_address

__all__ = ["BRIDGE_PROCESS", "bridge_opener"]

#: How a run starts its bridge process (cli/bridge_process.py).  ``-P``: the run's working
#: directory (the project, where workers write) is never put on the bridge's import path.
BRIDGE_PROCESS = (sys.executable, "-P", "-m", "cli.bridge_process")


def bridge_opener(http_address: str | None, allow_remote: bool, stdio: bool) -> BridgeOpener | None:
    """The opener for ``--http [HOST:]PORT`` (or ``executor mcp``); ``None`` when the run serves nothing.

    Raises :class:`RunRefused` (exit 2) for an address that cannot be used, before anything starts."""
    if http_address is not None:
        try:
            host, port = parse_address(http_address, allow_remote)
        except BridgeAddressError as error:
            raise RunRefused(str(error), exit_code=2) from None
    elif stdio:
        host, port = "127.0.0.1", 0  # for the workers; the client itself is on stdio
    else:
        return None

    def open_bridge(folder: Path, console: Callable[[str], None], terminal: Callable[[str], None] | None) -> RunBridge:
        # The MCP server SDK, FastAPI and uvicorn load only in runs that serve them.
        from bridge.auth import OwnerTokenError  # noqa: PLC0415
        from bridge.host import BridgeStartError  # noqa: PLC0415
        from bridge.serve import open_bridge as open_runtime  # noqa: PLC0415
        from bridge.tools import DuplicateTool  # noqa: PLC0415

        try:
            return open_runtime(folder, host, port, console, terminal, child=BRIDGE_PROCESS, stdio=stdio)
        except (BridgeAddressError, BridgeStartError, DuplicateTool, OwnerTokenError) as error:
            raise RunRefused(str(error), exit_code=2) from None

    return open_bridge
