"""A task's agent output: read whole, or followed as it grows (``executor logs -f``, the log stream).

Read-only, from any process: the store through :class:`StoreReader` (re-opened
on every poll, so a run writing in another process is seen), the log file by
reading.  A log path from the store is read only inside ``.executor/logs``.
Following goes on to the task's next attempt when one starts and ends when the
task is completed or failed and its last attempt ended, or, with no run
holding the session, when nothing more can come.
"""

from __future__ import annotations

from pathlib import Path
from typing import BinaryIO

import msgspec

from protocol.records import RunRow, TaskRow
from session.lock import read_holder
from session.safepath import UnsafePath, within
from session.store import STATE_DIR, StoreReader

__all__ = ["AttemptBegan", "LogChunk", "LogEnded", "LogTail", "LogUnavailable", "read_log"]

_CHUNK = 64 * 1024


class LogUnavailable(Exception):
    """No log to show; the message says why (``argument``: the argument at fault, if any)."""

    def __init__(self, message: str, argument: str | None = None) -> None:
        super().__init__(message)
        self.argument = argument


class AttemptBegan(msgspec.Struct, frozen=True, kw_only=True):
    task_id: str
    attempt: int
    backend: str


class LogChunk(msgspec.Struct, frozen=True, kw_only=True):
    attempt: int
    offset: int  # the byte offset in the attempt's log just after this chunk
    data: bytes


class LogEnded(msgspec.Struct, frozen=True, kw_only=True):
    status: str  # the task's status when following ended


def _read(folder: Path, task_id: str) -> tuple[TaskRow | None, list[RunRow]]:
    reader = StoreReader.open(folder)
    if reader is None:
        return None, []
    try:
        return reader.task(task_id), reader.runs(task_id)
    finally:
        reader.close()


def _no_task(folder: Path, task_id: str) -> LogUnavailable:
    return LogUnavailable(f"no task {task_id!r} in this session (`executor check --session {folder}` lists them)")


def _pick(runs: list[RunRow], attempt: int | None, task_id: str) -> RunRow | None:
    if attempt is None:
        return runs[-1] if runs else None
    chosen = [run for run in runs if run.attempt == attempt]
    if not chosen:
        known = ", ".join(str(run.attempt) for run in runs) or "none yet"
        raise LogUnavailable(f"--attempt {attempt}: {task_id} has attempts {known}", "attempt")
    return chosen[-1]


def log_file(folder: Path, run: RunRow) -> Path:
    logs = Path(folder) / STATE_DIR / "logs"
    try:
        path = within(logs, run.log_path) if run.log_path else None
    except UnsafePath:
        path = None
    if path is None:
        raise LogUnavailable(f"{run.task_id} attempt {run.attempt}: its recorded log is not inside {logs}; not read")
    return path


def read_log(folder: Path, task_id: str, attempt: int | None = None) -> tuple[RunRow, bytes]:
    """The attempt (default: the newest) and its whole log.  Raises :class:`LogUnavailable`."""
    row, runs = _read(folder, task_id)
    if row is None:
        raise _no_task(folder, task_id)
    run = _pick(runs, attempt, task_id)
    if run is None:
        raise LogUnavailable(f"{task_id} has not run yet: no log (follow it with `executor logs {task_id} -f`)")
    try:
        return run, log_file(folder, run).read_bytes()
    except FileNotFoundError:
        return run, b""
    except OSError as error:
        raise LogUnavailable(f"cannot read {run.log_path}: {error.strerror or error}") from None


class LogTail:
    """Follows one task's log; call :meth:`poll` every fraction of a second, :meth:`close` at the end.

    ``attempt`` pins one attempt; ``resume`` (attempt, byte offset) skips what a reconnecting
    client already has, when that attempt is the one followed."""

    def __init__(
        self, folder: Path, task_id: str, attempt: int | None = None, resume: tuple[int, int] | None = None
    ) -> None:
        self.folder = Path(folder)
        self.task_id = task_id
        self.attempt = attempt
        self.current: RunRow | None = None
        self.offset = 0
        self._resume = resume  # (attempt, offset) a client already has
        self.ended = False
        self._handle: BinaryIO | None = None

    def _drain(self) -> list[LogChunk]:
        chunks = []
        while self._handle is not None and self.current is not None:
            data = self._handle.read(_CHUNK)
            if not data:
                break
            self.offset += len(data)
            chunks.append(LogChunk(attempt=self.current.attempt, offset=self.offset, data=data))
        return chunks

    def _switch(self, run: RunRow) -> AttemptBegan:
        if self._handle is not None:
            self._handle.close()
            self._handle = None
        self.offset = 0
        if self._resume is not None and self._resume[0] == run.attempt:
            self.offset = max(0, self._resume[1])
        self._resume = None
        self.current = run
        return AttemptBegan(task_id=run.task_id, attempt=run.attempt, backend=run.backend)

    def poll(self) -> list[AttemptBegan | LogChunk | LogEnded]:
        """What happened since the last call (empty: nothing yet).  Raises :class:`LogUnavailable`."""
        if self.ended:
            return []
        row, runs = _read(self.folder, self.task_id)
        live = read_holder(self.folder) is not None
        if row is None:
            if live:  # a run that is starting creates its tasks first
                return []
            raise _no_task(self.folder, self.task_id)
        out: list[AttemptBegan | LogChunk | LogEnded] = []
        newest = _pick(runs, self.attempt, self.task_id) if runs else None
        if newest is not None and (self.current is None or newest.id != self.current.id):
            out.extend(self._drain())
            out.append(self._switch(newest))
        elif newest is not None:
            self.current = newest  # the same attempt read again: has it ended?
        if self.current is not None and self._handle is None:
            try:
                self._handle = log_file(self.folder, self.current).open("rb")
                self._handle.seek(self.offset)
            except FileNotFoundError:
                self._handle = None  # its first output creates the file
        out.extend(self._drain())
        attempt_over = self.current is None or self.current.ended_at is not None
        settled = row.status in ("completed", "failed") or (self.attempt is not None and attempt_over)
        if attempt_over and (settled or not live) and not any(isinstance(item, LogChunk) for item in out):
            out.append(LogEnded(status=row.status))
            self.ended = True
        return out

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None
