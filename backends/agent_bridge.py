"""How an agent CLI reaches the executor's MCP bridge: the endpoint checked, its token kept private.

The bearer token reaches a CLI through the environment or a 0600 file under
:func:`bridge_path`, deleted when the attempt ends; never through argv, which anyone
can read (``ps``).
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

from protocol.messages import BridgeEndpoint, WorkOrder
from session.safepath import task_file

__all__ = [
    "bridge_path",
    "bridge_problem",
    "forget_bridge",
    "write_private",
]


# --- the executor's MCP bridge (order.bridge) --------------------------------------------
# Its bearer token reaches a CLI through the environment (order_env) or a 0600 file under
# bridge_path(), deleted when the attempt ends; never through argv, which anyone can read (`ps`).

# Letters, digits and '-' only: the name becomes a TOML key (codex), part of tool names
# (claude mcp__<name>__*, gemini mcp_<name>_*, where gemini splits at the first '_').
_SERVER_NAME = re.compile(r"[A-Za-z0-9-]{1,64}")
# RFC 6750 b64token: nothing a shell, a header or gemini's $VAR expansion would read specially.
_BEARER_TOKEN = re.compile(r"[A-Za-z0-9._~+/-]+=*")


def bridge_problem(bridge: BridgeEndpoint) -> str | None:
    """Why ``bridge`` cannot be handed to an agent CLI as it is, or None."""
    if not _SERVER_NAME.fullmatch(bridge.server_name):
        return f"bridge server name {bridge.server_name!r}: use 1-64 letters, digits or '-'"
    if not bridge.url.startswith(("http://", "https://")):
        return f"bridge url {bridge.url!r} is not an http(s) URL"
    if not _BEARER_TOKEN.fullmatch(bridge.token):
        return "the bridge token is empty or has characters a bearer token cannot have"
    return None


def bridge_path(order: WorkOrder, suffix: str) -> Path:
    """Where this attempt's bridge configuration lives: ``<session>/.executor/mcp/<task>-a<attempt><suffix>``.

    ``suffix`` starts with a dot (``.json``): :func:`forget_bridge` deletes what it names.
    """
    return task_file(Path(order.session_dir), order.task_id, f"-a{order.attempt}{suffix}", ".executor", "mcp")


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path``, readable by its owner only (the file may hold a bearer token)."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        os.fchmod(handle.fileno(), 0o600)  # O_CREAT's mode does not apply to a file that already existed
        handle.write(text)


def forget_bridge(order: WorkOrder) -> None:
    """Delete this attempt's bridge files: the token stays on disk no longer than the agent runs."""
    folder = bridge_path(order, "").parent
    prefix = bridge_path(order, "").name
    if not folder.is_dir():
        return
    for entry in folder.iterdir():
        if not entry.name.startswith(f"{prefix}."):  # IMPL-1-a1 must not take IMPL-1-a10's files
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)  # unlinks symlinks inside, never follows them
        else:
            entry.unlink(missing_ok=True)
