"""Bounded capture of a child's output.

The last bytes of a stream, its lines, and a log file that stops growing at a limit.
"""

from __future__ import annotations

import contextlib
import io
import math
import os
import time
from collections.abc import Callable
from pathlib import Path

from session.redaction import LineRedactor

__all__ = [
    "LineSplitter",
    "OutputLog",
    "Tail",
]

_TOUCH_EVERY_S = 1.0


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
    """Cuts a stream into lines for a callback; a line keeps at most ``limit`` bytes.

    With a ``prefix`` (``b"{"`` for JSON events), only the lines whose first non-blank
    bytes are ``prefix`` are passed on: the others are never made into objects, so a
    flood of lines nobody reads costs a few scans in C per chunk, not a Python call per line.
    """

    def __init__(self, limit: int, emit: Callable[[bytes], None], prefix: bytes | None = None) -> None:
        self.limit = max(1, limit)
        self.emit = emit
        self.prefix = prefix or None
        self.partial = b""  # the line read so far, at most ``limit`` bytes

    def feed(self, chunk: bytes) -> None:
        first = chunk.find(b"\n")
        if first < 0:
            self._extend(chunk)
            return
        self._extend(chunk[:first])
        line, self.partial = self.partial, b""
        self._offer(line)
        last = chunk.rfind(b"\n")
        if last > first:
            if self.prefix is None:
                self._all(chunk, first + 1, last)
            else:
                self._matching(chunk, first + 1, last, self.prefix)
        self.partial = chunk[last + 1 : last + 1 + self.limit]

    def finish(self) -> None:
        """Emit a last line that had no newline."""
        if self.partial:
            line, self.partial = self.partial, b""
            self._offer(line)

    def _extend(self, piece: bytes) -> None:
        room = self.limit - len(self.partial)
        if room > 0 and piece:
            self.partial += piece[:room]

    def _offer(self, line: bytes) -> None:
        if self.prefix is None or line.lstrip().startswith(self.prefix):
            self.emit(line)

    def _all(self, chunk: bytes, start: int, end: int) -> None:
        """Every line of ``chunk[start:end]`` (``end`` is a newline)."""
        limit, emit = self.limit, self.emit
        for line in chunk[start:end].split(b"\n"):
            emit(line if len(line) <= limit else line[:limit])

    def _matching(self, chunk: bytes, start: int, end: int, prefix: bytes) -> None:
        """The lines of ``chunk[start:end]`` that start with ``prefix`` after blanks, found by
        searching for ``prefix`` (in C) rather than by looking at every line."""
        at = chunk.find(prefix, start, end)
        while at >= 0:
            line_start = chunk.rfind(b"\n", start, at) + 1 or start
            line_end = chunk.find(b"\n", at, end + 1)
            if at + len(prefix) - line_start <= self.limit and not chunk[line_start:at].strip():
                self.emit(chunk[line_start : min(line_end, line_start + self.limit)])
            at = chunk.find(prefix, line_end + 1, end)


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
        self.touched_at = -math.inf
        self.lines = LineRedactor()

    def write(self, chunk: bytes) -> None:
        if self.file is None:
            return
        if not self.truncated:
            self._write(self.lines.feed(chunk))
            return
        # Past the cap, nothing more is written, but the file's time still moves (at most
        # once a second): the Executor takes a log that changes as a sign of life.
        now = time.monotonic()
        if now - self.touched_at >= _TOUCH_EVERY_S:
            self.touched_at = now
            with contextlib.suppress(OSError):
                os.utime(self.file.fileno())

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
