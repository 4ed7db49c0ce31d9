"""Bounded output capture, fed the way the process runner feeds it: chunk by chunk."""

from __future__ import annotations

import os
import random
import re
from pathlib import Path

import pytest

from backends.output_capture import LineSplitter, OutputLog, Tail
from session.redaction import register_secret

SECRET = "straddle-secret-0123456789abcdef"


NETWORK = re.compile(rb"connection refused|econnreset")


def expected_lines(
    data: bytes, limit: int, prefix: bytes | None = None, pattern: re.Pattern[bytes] | None = None
) -> list[bytes]:
    """What a line-at-a-time reader would pass on: every line cut to ``limit``, the last too,
    then only those that start with ``prefix``, hold ``pattern`` in any case, or are not ASCII (with a pattern)."""
    parts = data.split(b"\n")
    if parts[-1] == b"":
        parts.pop()
    lines = [part[:limit] for part in parts]
    if prefix is None and pattern is None:
        return lines
    return [
        line
        for line in lines
        if (prefix is not None and line.lstrip().startswith(prefix))
        or (pattern is not None and (not line.isascii() or pattern.search(line.lower()) is not None))
    ]


def split_in_chunks(data: bytes, sizes: list[int]) -> list[bytes]:
    chunks, at = [], 0
    for size in sizes:
        if at >= len(data):
            break
        chunks.append(data[at : at + size])
        at += size
    if at < len(data):
        chunks.append(data[at:])
    return chunks


def run_splitter(
    chunks: list[bytes], limit: int, prefix: bytes | None = None, pattern: re.Pattern[bytes] | None = None
) -> list[bytes]:
    got: list[bytes] = []
    splitter = LineSplitter(limit, got.append, prefix, pattern)
    for chunk in chunks:
        splitter.feed(chunk)
    splitter.finish()
    return got


SAMPLE = (
    b"first\n\n"
    + b"y\n" * 50
    + b'{"type": "progress", "percent": 5}\n'
    + b"  \t{indented json}\r\n"
    + b"text with a { brace inside\n"
    + b"L" * 5000
    + b"\n"
    + b"{"
    + b"J" * 3000
    + b"\n"
    + b"\r\n"
    + b"retrying: Connection refused (os error 111)\n"
    + b"x" * 200
    + b" ECONNRESET far into a long line\n"
    + "non-ASCII: café, ſ\n".encode()
    + b"y\n" * 20
    + b"last line without a newline {"
)


@pytest.mark.parametrize(("prefix", "pattern"), [(None, None), (b"{", None), (None, NETWORK), (b"{", NETWORK)])
@pytest.mark.parametrize("limit", [1, 7, 100, 4096, 1 << 20])
def test_lines_are_split_exactly_whatever_the_chunk_boundaries(
    limit: int, prefix: bytes | None, pattern: re.Pattern[bytes] | None
) -> None:
    rng = random.Random(limit)
    want = expected_lines(SAMPLE, limit, prefix, pattern)
    for sizes in ([len(SAMPLE)], [1] * len(SAMPLE), [3, 4096, 2, 1]):
        assert run_splitter(split_in_chunks(SAMPLE, sizes), limit, prefix, pattern) == want
    for _ in range(50):
        sizes = [rng.choice([1, 2, 5, 64, 1000, 6000]) for _ in range(len(SAMPLE))]
        assert run_splitter(split_in_chunks(SAMPLE, sizes), limit, prefix, pattern) == want


def test_with_a_pattern_the_lines_that_hold_it_come_in_order_among_the_prefixed_ones() -> None:
    data = b'{"a": 1}\n' + b"y\n" * 1000 + b"error: connection REFUSED\n" + b"y\n" * 1000 + b'{"b": 2}\n'
    assert run_splitter([data[:5], data[5:]], 4096, b"{", NETWORK) == [
        b'{"a": 1}',
        b"error: connection REFUSED",
        b'{"b": 2}',
    ]


def test_a_line_longer_than_the_chunk_is_cut_at_the_limit_and_the_next_line_is_whole() -> None:
    chunks = [b"A" * 1000, b"A" * 1000, b"A" * 1000 + b"\nnext\n"]
    assert run_splitter(chunks, 1500) == [b"A" * 1500, b"next"]
    assert run_splitter(chunks, 1 << 20) == [b"A" * 3000, b"next"]


def test_a_final_line_without_a_newline_is_passed_at_the_end_and_only_once() -> None:
    got: list[bytes] = []
    splitter = LineSplitter(100, got.append)
    splitter.feed(b"one\ntw")
    splitter.feed(b"o")
    assert got == [b"one"]
    splitter.finish()
    splitter.finish()
    assert got == [b"one", b"two"]


def test_with_a_prefix_only_the_lines_that_start_with_it_after_blanks_are_passed() -> None:
    data = b'y\n{"a": 1}\n   {"b": 2}\nx{"c": 3}\n{\n' + b"y\n" * 10000 + b'{"d": 4}'
    assert run_splitter(split_in_chunks(data, [7] * 20 + [65536] * 5), 64, b"{") == [
        b'{"a": 1}',
        b'   {"b": 2}',
        b"{",
        b'{"d": 4}',
    ]


def test_the_tail_keeps_the_last_bytes_within_twice_its_limit() -> None:
    tail = Tail(1000)
    data = bytes(range(256)) * 4000
    for chunk in split_in_chunks(data, [1, 999, 3000, 7, 256 * 1024] * 10):
        tail.add(chunk)
        assert len(tail.buf) <= 2000
    assert tail.value() == data[-1000:]
    assert tail.total == len(data)


def test_the_log_is_capped_and_ends_with_the_cap_note(tmp_path: Path) -> None:
    path = tmp_path / "logs" / "run.log"
    log = OutputLog(str(path), max_bytes=10_000)
    for _ in range(100):
        log.write(b"y\n" * 2048)
    log.close()
    data = path.read_bytes()
    note = b"\n[team-executor: log truncated at 10000 bytes]\n"
    assert data.endswith(note)
    assert len(data) == 10_000 + len(note)
    assert data[:10_000] == (b"y\n" * 5000)


def test_a_secret_cut_by_a_chunk_boundary_never_reaches_the_log(tmp_path: Path) -> None:
    register_secret(SECRET)
    path = tmp_path / "run.log"
    log = OutputLog(str(path), max_bytes=1 << 30)
    filler = b"y\n" * 100_000
    data = filler + b"token in the middle " + SECRET.encode() + b" of a line\n" + filler + SECRET.encode()
    cut = len(filler) + 25  # inside the secret
    for chunk in (data[:cut], data[cut : cut + 3], data[cut + 3 :]):
        log.write(chunk)
    log.close()
    written = path.read_bytes()
    assert SECRET.encode() not in written
    assert written.count(b"\xe2\x80\xa6cdef") == 2  # both masked to their hint
    assert written.startswith(filler)
    assert written.count(b"y\n") == 200_000


def test_past_the_cap_the_log_still_shows_life_by_its_time(tmp_path: Path) -> None:
    path = tmp_path / "run.log"
    log = OutputLog(str(path), max_bytes=100)
    log.write(b"y\n" * 100)
    size = path.stat().st_size
    os.utime(path, (1, 1))
    log.write(b"y\n" * 100)
    assert path.stat().st_mtime > 1
    assert path.stat().st_size == size
    log.close()
