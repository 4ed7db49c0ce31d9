"""What an agent's output and working tree prove about an attempt, beyond its exit code.

The agent-CLI backends use these to tell a dead model endpoint (``network``) from a crash,
and to find the files an attempt changed outside the executor's own session folder
(``no_work`` when there are none, no artifact and no model traffic).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

__all__ = [
    "NETWORK_ERROR",
    "NETWORK_ERRORS_TO_STOP",
    "NETWORK_ERROR_BYTES",
    "REPORT_PATH",
    "event_text",
    "outside_session",
]

#: What the CLIs print when the model endpoint cannot be reached: codex "Reconnecting... waiting
#: for network (Connection failed: error sending request)", Claude Code "API Error: Connection
#: refused ... (ECONNREFUSED)", Gemini CLI "fetch failed sending request", Node's errno names.
NETWORK_ERROR = re.compile(
    r"ECONNREFUSED|ECONNRESET|ENOTFOUND|EHOSTUNREACH|ENETUNREACH|EAI_AGAIN|ETIMEDOUT|fetch failed"
    r"|connection refused|connection failed|error sending request|waiting for network|getaddrinfo"
    r"|failed to connect|could not resolve host|dns error",
    re.IGNORECASE,
)
#: :data:`NETWORK_ERROR` in lowercase, for raw output lowercased: it finds the same lines where
#: they are ASCII (a line splitter's ``pattern``), and many times faster than with IGNORECASE.
NETWORK_ERROR_BYTES = re.compile(NETWORK_ERROR.pattern.lower().encode())
#: Network errors seen with no model traffic before the attempt is stopped as ``network``.
NETWORK_ERRORS_TO_STOP = 2
REPORT_PATH = re.compile(r"Full report available at: \S+\s*")  # Gemini CLI: a temp file, noise here


def event_text(event: dict[str, Any]) -> str | None:
    """The human words of a CLI's JSON event: its message, result or error (or their text blocks)."""
    for key in ("message", "result", "error"):
        value = event.get(key)
        if isinstance(value, str) and value.strip():
            return value
        if isinstance(value, dict):
            if isinstance(value.get("message"), str):
                return str(value["message"])
            content = value.get("content")
            blocks: list[Any] = content if isinstance(content, list) else []
            texts = [b["text"] for b in blocks if isinstance(b, dict) and isinstance(b.get("text"), str)]
            if texts:
                return " ".join(texts)
    return None


def outside_session(session: Path, workdir: Path, files: tuple[str, ...]) -> tuple[str, ...]:
    """``files`` (relative to the repository) without those in the session folder: the executor
    writes there (logs, messages, the projection) whatever the agent does."""
    try:
        inside = session.resolve().relative_to(workdir.resolve()).as_posix()
    except ValueError:
        return files  # the session is not under the working directory
    if inside == ".":
        return ()
    return tuple(path for path in files if f"/{inside}/" not in f"/{path}/")
