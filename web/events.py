"""``/api/events``: the event log as server-sent events, tailed from the state database.

Each stream has its own read-only connection and asks for the events after
the last one it sent, a few times a second: the store is the truth, so a
stream never misses an event the run recorded, and a client that reconnects
with ``Last-Event-ID`` (EventSource does) carries on where it was.  A
comment line every few seconds keeps proxies and idle timeouts from closing
a quiet stream.  Streams end when the server begins to stop (``closing``).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import msgspec
from starlette.responses import StreamingResponse

from session.store import StoreError, StoreReader

__all__ = ["POLL_S", "event_stream", "format_event"]

POLL_S = 0.25
HEARTBEAT_S = 10.0
_BATCH = 500


def format_event(event_id: int, at: str, event: msgspec.Struct) -> str:
    fields = msgspec.to_builtins(event)
    data = {"id": event_id, "at": at, "task_id": None, **fields}
    kind = str(fields.get("type", "event"))
    return f"id: {event_id}\nevent: {kind}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


class _Tail:
    """A read-only connection opened on first use (the session may not have run yet)."""

    def __init__(self, folder: Path, after: int) -> None:
        self.folder = folder
        self.after = after
        self.reader: StoreReader | None = None

    def next_chunk(self) -> str:
        if self.reader is not None and self.reader.stale:
            self.reader.close()
            self.reader = None
        if self.reader is None:
            try:
                self.reader = StoreReader.open(self.folder)
            except StoreError:
                return ""
            if self.reader is None:
                return ""
        chunk = []
        for event_id, at, event in self.reader.events(after_id=self.after, limit=_BATCH):
            chunk.append(format_event(event_id, at, event))
            self.after = event_id
        return "".join(chunk)

    def close(self) -> None:
        if self.reader is not None:
            self.reader.close()


def event_stream(folder: Path, after: int, closing: threading.Event) -> StreamingResponse:
    async def body() -> AsyncIterator[str]:
        tail = _Tail(folder, after)
        last_sent = time.monotonic()
        try:
            yield "retry: 2000\n\n"  # reconnect after 2 s when the stream drops
            while not closing.is_set():
                chunk = await anyio.to_thread.run_sync(tail.next_chunk)
                if chunk:
                    yield chunk
                    last_sent = time.monotonic()
                    continue  # more may be waiting: read again at once
                if time.monotonic() - last_sent > HEARTBEAT_S:
                    yield ": keep-alive\n\n"
                    last_sent = time.monotonic()
                await anyio.sleep(POLL_S)
        finally:
            await anyio.to_thread.run_sync(tail.close)

    return StreamingResponse(
        body(),
        media_type="text/event-stream",
        headers={"cache-control": "no-store", "x-accel-buffering": "no"},
    )
