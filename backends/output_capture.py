"""Bounded capture of a child's output.

The last bytes of a stream, its lines, and a log file that stops growing at a limit.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import time
from collections.abc import Callable

from session.redaction import LineRedactor
from session.safepath import open_new_file, write_all

__all__ = [
    "LineSplitter",
    "OutputLog",
    "Tail",
    "ends_within",
]

_TOUCH_EVERY_S = 1.0
_DENSITY_WINDOW = 4096


def ends_within(stdout: bytes, stderr: bytes, limit: int) -> tuple[bytes, bytes]:
    """The ends of a run's stdout and stderr tails that fit in ``limit`` bytes together; stderr
    (where a crash says why) keeps at least half of them when it has that much."""
    err_keep = min(len(stderr), max(limit // 2, limit - len(stdout)))
    out_keep = min(len(stdout), limit - err_keep)
    return stdout[len(stdout) - out_keep :], stderr[len(stderr) - err_keep :]


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

    With a ``prefix`` (``b"{"`` for JSON events) or a ``pattern``, only the lines whose
    first non-blank bytes are ``prefix``, or that hold a match of ``pattern``, are passed
    on: the others are never made into objects, so a flood of lines nobody reads costs a
    few scans in C per chunk, not a Python call per line.  ``pattern`` is lowercase and
    searched in the lowercased bytes (so it matches whatever the case; ``re.IGNORECASE``
    makes re's search about 15 times slower); lines that are not ASCII are passed whole,
    since a text pattern that ignores case can match there what a bytes one cannot.
    """

    def __init__(
        self,
        limit: int,
        emit: Callable[[bytes], None],
        prefix: bytes | None = None,
        pattern: re.Pattern[bytes] | None = None,
    ) -> None:
        self.limit = max(1, limit)
        self.emit = emit
        self.prefix = prefix or None
        self.pattern = pattern
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
            start = first + 1
            if self.prefix is None and self.pattern is None:
                self._all(chunk, start, last)
            elif (self.pattern is not None and not chunk[start:last].isascii()) or self._dense(chunk, start, last):
                self._all(chunk, start, last, self._wanted)
            else:
                self._matching(chunk, start, last)
        self.partial = chunk[last + 1 : last + 1 + self.limit]

    def finish(self) -> None:
        """Emit a last line that had no newline."""
        if self.partial:
            line, self.partial = self.partial, b""
            self._offer(line)

    def _dense(self, chunk: bytes, start: int, end: int) -> bool:
        """Whether the prefix is in so many lines (a JSON stream) that looking at each line is
        cheaper than searching for them."""
        if self.prefix is None or chunk.find(self.prefix, start, end) < 0:  # a memchr: a flood's usual answer
            return False
        window = min(end, start + _DENSITY_WINDOW)  # count() is no memchr: look at a sample
        return 4 * chunk.count(self.prefix, start, window) >= chunk.count(b"\n", start, window) + 1

    def _extend(self, piece: bytes) -> None:
        room = self.limit - len(self.partial)
        if room > 0 and piece:
            self.partial += piece[:room]

    def _wanted(self, line: bytes) -> bool:
        if self.prefix is None and self.pattern is None:
            return True
        if self.prefix is not None and line.lstrip().startswith(self.prefix):
            return True
        return self.pattern is not None and (not line.isascii() or self.pattern.search(line.lower()) is not None)

    def _offer(self, line: bytes) -> None:
        if self._wanted(line):
            self.emit(line)

    def _all(self, chunk: bytes, start: int, end: int, wanted: Callable[[bytes], bool] | None = None) -> None:
        """Every line of ``chunk[start:end]`` (``end`` is a newline), or those ``wanted``."""
        limit, emit = self.limit, self.emit
        for whole in chunk[start:end].split(b"\n"):
            line = whole if len(whole) <= limit else whole[:limit]
            if wanted is None or wanted(line):
                emit(line)

    def _matching(self, chunk: bytes, start: int, end: int) -> None:
        """The wanted lines of ``chunk[start:end]``, found by searching (in C) for the prefix
        and the pattern rather than by looking at every line; passed in order."""
        found: set[int] = set()  # where each wanted line starts
        prefix, limit = self.prefix, self.limit
        if prefix is not None:
            at = chunk.find(prefix, start, end)
            while at >= 0:
                line_start = chunk.rfind(b"\n", start, at) + 1 or start
                line_end = chunk.find(b"\n", at, end + 1)
                if at + len(prefix) - line_start <= limit and not chunk[line_start:at].strip():
                    found.add(line_start)
                at = chunk.find(prefix, line_end + 1, end)
        if self.pattern is not None:
            lowered = chunk.lower()  # ASCII only: the same length, the same positions
            match = self.pattern.search(lowered, start, end)
            while match is not None:
                line_start = chunk.rfind(b"\n", start, match.start()) + 1 or start
                line_end = chunk.find(b"\n", match.start(), end + 1)
                if self.pattern.search(lowered, line_start, min(line_end, line_start + limit)) is not None:
                    found.add(line_start)  # the match is within the part of the line that is kept
                match = self.pattern.search(lowered, line_end + 1, end)
        for line_start in sorted(found):
            line_end = chunk.find(b"\n", line_start, end + 1)
            self.emit(chunk[line_start : min(line_end, line_start + limit)])


class OutputLog:
    """The combined log file, capped at ``max_bytes`` (counting what it held before).

    Written redacted (:mod:`session.redaction`), a whole line at a time, so a key split
    between two reads is still seen whole.
    """

    def __init__(self, path: str, max_bytes: int) -> None:
        # Written with os.write on the descriptor: every chunk reaches the file at once (the log
        # can be tailed live), and opening it is two system calls (a FileIO adds two seeks).
        self.fd: int | None = open_new_file(path, os.O_WRONLY | os.O_APPEND)
        try:
            self.size = os.fstat(self.fd).st_size
        except OSError:
            os.close(self.fd)
            raise
        self.max_bytes = max_bytes
        self.truncated = False
        self.touched_at = -math.inf
        self.lines = LineRedactor()

    def write(self, chunk: bytes) -> None:
        if self.fd is None:
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
                os.utime(self.fd)

    def _write(self, chunk: bytes) -> None:
        if self.fd is None or self.truncated or not chunk:
            return
        try:
            room = self.max_bytes - self.size
            if len(chunk) <= room:
                write_all(self.fd, chunk)
                self.size += len(chunk)
                return
            if room > 0:
                write_all(self.fd, chunk[:room])
                self.size += room
            write_all(self.fd, f"\n[team-executor: log truncated at {self.max_bytes} bytes]\n".encode())
            self.truncated = True
        except OSError:
            # A full disk must not kill the run: stop logging, keep supervising.
            self.close()

    def close(self) -> None:
        if self.fd is not None and not self.truncated:
            self._write(self.lines.rest())
        if self.fd is not None:
            fd, self.fd = self.fd, None
            with contextlib.suppress(OSError):
                os.close(fd)
