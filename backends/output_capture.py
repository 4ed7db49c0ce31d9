"""Bounded capture of a child's output.

The last bytes of a stream, its lines, and a log file that stops growing at a limit.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Callable
from pathlib import Path

from session.redaction import LineRedactor

__all__ = [
    "LineSplitter",
    "OutputLog",
    "Tail",
]


class Tail:
    """The last ``limit`` bytes of a stream, in memory bounded by about twice that."""

    def __init__(self, limit: int) -> None:
        self.limit = max(0, limit)
        self.buf = bytearray()
        self.total = 0

    def add(self, chunk: bytes) -> None:
        self.total += len(chunk)
        if self.limit == 0:
            return
        if len(chunk) >= self.limit:
            self.buf[:] = chunk[-self.limit :]
            return
        self.buf += chunk
        if len(self.buf) > 2 * self.limit:  # trim rarely: amortised O(1) per byte
            del self.buf[: -self.limit]

    def value(self) -> bytes:
        return bytes(self.buf[-self.limit :]) if self.limit else b""


class LineSplitter:
    """Cuts stdout into lines for ``on_stdout_line``; a line keeps at most ``limit`` bytes."""

    def __init__(self, limit: int, emit: Callable[[bytes], None]) -> None:
        self.limit = max(1, limit)
        self.emit = emit
        self.partial = bytearray()

    def feed(self, chunk: bytes) -> None:
        start = 0
        while True:
            nl = chunk.find(b"\n", start)
            if nl < 0:
                break
            room = self.limit - len(self.partial)
            line = bytes(self.partial) + chunk[start : start + max(0, min(room, nl - start))]
            self.partial.clear()
            start = nl + 1
            self.emit(line)
        room = self.limit - len(self.partial)
        if room > 0 and start < len(chunk):
            self.partial += chunk[start : start + room]

    def finish(self) -> None:
        """Emit a last line that had no newline."""
        if self.partial:
            line = bytes(self.partial)
            self.partial.clear()
            self.emit(line)


class OutputLog:
    """The combined log file, capped at ``max_bytes`` (counting what it held before).

    Written redacted (:mod:`session.redaction`), a whole line at a time, so a key split
    between two reads is still seen whole.
    """

    def __init__(self, path: str, max_bytes: int) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        # Unbuffered: every chunk reaches the file at once, so the log can be tailed live.
        self.file: io.FileIO | None = open(path, "ab", buffering=0)  # noqa: SIM115 - closed in close()
        self.size = self.file.tell()
        self.max_bytes = max_bytes
        self.truncated = False
        self.lines = LineRedactor()

    def write(self, chunk: bytes) -> None:
        if self.file is not None and not self.truncated:
            self._write(self.lines.feed(chunk))

    def _write(self, chunk: bytes) -> None:
        if self.file is None or self.truncated:
            return
        try:
            room = self.max_bytes - self.size
            if len(chunk) <= room:
                self.file.write(chunk)
                self.size += len(chunk)
                return
            if room > 0:
                self.file.write(chunk[:room])
                self.size += room
            self.file.write(f"\n[team-executor: log truncated at {self.max_bytes} bytes]\n".encode())
            self.truncated = True
        except OSError:
            # A full disk must not kill the run: stop logging, keep supervising.
            self.close()

    def close(self) -> None:
        if self.file is not None and not self.truncated:
            self._write(self.lines.rest())
        if self.file is not None:
            with contextlib.suppress(OSError):
                self.file.flush()
                self.file.close()
            self.file = None
