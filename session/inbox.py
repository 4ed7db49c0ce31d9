"""Requests from other processes to a running executor: files in ``.executor/inbox/``.

``executor answer`` in another terminal must reach the run without a network
surface of its own.  A request is one JSON file written atomically (temporary
name, then rename); the Executor reads the folder on its tick, carries the
request out, writes ``replies/<name>`` and removes the request.  The sender
waits for the reply a few seconds.  A file that cannot be read is moved to
``bad/`` so it is looked at once, not every tick.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from session.projection import write_atomic
from session.store import STATE_DIR

__all__ = ["inbox_dir", "post", "read_requests", "reply", "wait_reply"]

_SUFFIX = ".json"


def inbox_dir(folder: Path) -> Path:
    return Path(folder) / STATE_DIR / "inbox"


def _write_atomic(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    # Its temporary file starts with "." and ends in ".tmp": read_requests never takes it for a request.
    write_atomic(path, json.dumps(data).encode())


def post(folder: Path, request: dict[str, Any]) -> str:
    """Drop a request for the running executor; returns its name (to wait for the reply)."""
    name = f"{time.time_ns()}-{uuid.uuid4().hex[:8]}"
    _write_atomic(inbox_dir(folder) / f"{name}{_SUFFIX}", request)
    return name


def read_requests(folder: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    """(name, request) of each waiting request, oldest first; each is removed as it is read."""
    directory = inbox_dir(folder)
    try:
        entries = sorted(entry.name for entry in os.scandir(directory) if entry.is_file())
    except FileNotFoundError:
        return
    for file_name in entries:
        if not file_name.endswith(_SUFFIX) or file_name.startswith("."):
            continue
        path = directory / file_name
        try:
            request = json.loads(path.read_text(encoding="utf-8"))
            if not isinstance(request, dict):
                raise ValueError("not a JSON object")
        except (OSError, ValueError):
            (directory / "bad").mkdir(exist_ok=True)
            os.replace(path, directory / "bad" / file_name)
            continue
        path.unlink(missing_ok=True)
        yield file_name.removesuffix(_SUFFIX), request


def reply(folder: Path, name: str, answer: dict[str, Any]) -> None:
    _write_atomic(inbox_dir(folder) / "replies" / f"{name}{_SUFFIX}", answer)


def wait_reply(folder: Path, name: str, timeout_s: float = 10.0) -> dict[str, Any] | None:
    """The executor's reply to request ``name``, or None if none came in time."""
    path = inbox_dir(folder) / "replies" / f"{name}{_SUFFIX}"
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            answer = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            time.sleep(0.05)
            continue
        path.unlink(missing_ok=True)
        return answer if isinstance(answer, dict) else None
    return None
