"""``/api/tasks/{id}/log``: a task's agent output as server-sent events, followed as it grows.

Events: ``attempt`` (``{"task_id", "attempt", "backend"}``) when an attempt's log
begins, ``log`` (``{"attempt", "offset", "text"}``, id ``ATTEMPT:OFFSET``) for
each piece of output, ``end`` (``{"status"}``) when the task is settled and its
last attempt ended, or no run is left to write more.  A client that reconnects
with ``Last-Event-ID`` gets only what it lacks.  The reading is
:class:`session.task_logs.LogTail`, the same as ``executor logs -f``.
"""

from __future__ import annotations

import codecs
import json
import re
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
from starlette.responses import StreamingResponse

from session.task_logs import AttemptBegan, LogChunk, LogEnded, LogTail, LogUnavailable

__all__ = ["log_stream", "resume_point"]

POLL_S = 0.25
HEARTBEAT_S = 10.0
_RESUME = re.compile(r"^(\d{1,9}):(\d{1,15})$")


def resume_point(last_event_id: str) -> tuple[int, int] | None:
    """``ATTEMPT:OFFSET`` from a ``Last-Event-ID`` header, or None."""
    found = _RESUME.match(last_event_id.strip())
    return (int(found.group(1)), int(found.group(2))) if found else None


def _event(kind: str, data: dict[str, Any], event_id: str | None = None) -> str:
    head = f"id: {event_id}\n" if event_id else ""
    return f"{head}event: {kind}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


class _Stream:
    def __init__(self, tail: LogTail) -> None:
        self.tail = tail
        self.decoder = codecs.getincrementaldecoder("utf-8")("replace")
        self.done = False

    def next_chunk(self) -> str:
        """What to send now ("" for nothing yet); runs on a worker thread (it reads files and the store)."""
        try:
            items = self.tail.poll()
        except LogUnavailable as error:
            self.done = True
            return _event("end", {"status": "unavailable", "detail": str(error)})
        out = []
        for item in items:
            if isinstance(item, AttemptBegan):
                self.decoder.reset()
                out.append(
                    _event("attempt", {"task_id": item.task_id, "attempt": item.attempt, "backend": item.backend})
                )
            elif isinstance(item, LogChunk):
                text = self.decoder.decode(item.data)
                data = {"attempt": item.attempt, "offset": item.offset, "text": text}
                out.append(_event("log", data, f"{item.attempt}:{item.offset}"))
            elif isinstance(item, LogEnded):
                self.done = True
                out.append(_event("end", {"status": item.status}))
        return "".join(out)


def log_stream(
    folder: Path, task_id: str, attempt: int | None, resume: tuple[int, int] | None, closing: threading.Event
) -> StreamingResponse:
    async def body() -> AsyncIterator[str]:
        stream = _Stream(LogTail(folder, task_id, attempt, resume))
        last_sent = time.monotonic()
        try:
            yield "retry: 2000\n\n"
            while not closing.is_set() and not stream.done:
                chunk = await anyio.to_thread.run_sync(stream.next_chunk)
                if chunk:
                    yield chunk
                    last_sent = time.monotonic()
                    continue
                if time.monotonic() - last_sent > HEARTBEAT_S:
                    yield ": keep-alive\n\n"
                    last_sent = time.monotonic()
                await anyio.sleep(POLL_S)
        finally:
            await anyio.to_thread.run_sync(stream.tail.close)

    return StreamingResponse(
        body(),
        media_type="text/event-stream",
        headers={"cache-control": "no-store", "x-accel-buffering": "no"},
    )
