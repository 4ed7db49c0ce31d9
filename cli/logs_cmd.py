"""``executor logs TASK [-f]``: an attempt's full output, and following it live from another process.

Read-only: the store through :class:`StoreReader`, the log file by reading.  A
log path recorded in the store is read only when it lies inside the session's
``.executor/logs`` folder.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Annotated, BinaryIO

import msgspec
import typer

from cli.diff_cmd import JsonOption, SessionOption, TaskArgument, fail, session_folder, task_argument
from protocol.records import RunRow, TaskRow
from session.lock import read_holder
from session.own_paths import contained
from session.store import STATE_DIR, StoreError, StoreReader

__all__ = ["logs_command"]

POLL_S = 0.2
_CHUNK = 64 * 1024


class _Watch:
    """The task's row and attempts, re-read from the store on each call (a run may be writing)."""

    def __init__(self, folder: Path, task_id: str) -> None:
        self.folder = folder
        self.task_id = task_id

    def read(self) -> tuple[TaskRow | None, list[RunRow]]:
        reader = StoreReader.open(self.folder)
        if reader is None:
            return None, []
        try:
            return reader.task(self.task_id), reader.runs(self.task_id)
        finally:
            reader.close()


def _log_file(folder: Path, run: RunRow) -> Path:
    logs = folder / STATE_DIR / "logs"
    path = contained(logs, run.log_path) if run.log_path else None
    if path is None:
        raise fail(f"{run.task_id} attempt {run.attempt}: its recorded log path is not inside {logs}; it is not read")
    return path


def _pick(runs: list[RunRow], attempt: int | None, task_id: str) -> RunRow | None:
    if attempt is None:
        return runs[-1] if runs else None
    chosen = [run for run in runs if run.attempt == attempt]
    if not chosen:
        known = ", ".join(str(run.attempt) for run in runs) or "none yet"
        raise fail(f"--attempt {attempt}: {task_id} has attempts {known}", 2)
    return chosen[-1]


class _Printer:
    def __init__(self, task_id: str, as_json: bool) -> None:
        self.task_id = task_id
        self.as_json = as_json
        self.partial = b""

    def header(self, run: RunRow) -> None:
        if not self.as_json:
            sys.stdout.write(f"--- {run.task_id} attempt {run.attempt} ({run.backend}) ---\n")
            sys.stdout.flush()

    def write(self, attempt: int, data: bytes, final: bool = False) -> None:
        if not self.as_json:
            sys.stdout.write(data.decode("utf-8", "replace"))
            sys.stdout.flush()
            return
        lines = (self.partial + data).split(b"\n")
        self.partial = b"" if final else lines.pop()
        for line in lines:
            if line or not final:
                record = {"task_id": self.task_id, "attempt": attempt, "line": line.decode("utf-8", "replace")}
                sys.stdout.write(msgspec.json.encode(record).decode() + "\n")
        sys.stdout.flush()


def _drain(handle: BinaryIO, printer: _Printer, attempt: int) -> bool:
    data = handle.read(_CHUNK)
    if data:
        printer.write(attempt, data)
    return bool(data)


def _follow(folder: Path, task_id: str, attempt: int | None, printer: _Printer) -> None:
    watch = _Watch(folder, task_id)
    current: RunRow | None = None
    handle: BinaryIO | None = None
    try:
        while True:
            row, runs = watch.read()
            if row is None:
                if read_holder(folder) is not None:  # a run that is starting creates its tasks first
                    time.sleep(POLL_S)
                    continue
                raise fail(f"no task {task_id!r} in this session (`executor check --session {folder}` lists them)")
            newest = _pick(runs, attempt, task_id) if runs else None
            if newest is not None and (current is None or newest.id != current.id):
                if handle is not None:
                    while _drain(handle, printer, current.attempt if current else 0):
                        pass
                    handle.close()
                    handle = None
                current = newest
                printer.header(current)
            elif newest is not None:
                current = newest  # the same attempt, read again: has it ended?
            if current is not None and handle is None:
                try:
                    handle = _log_file(folder, current).open("rb")
                except FileNotFoundError:
                    handle = None  # the attempt has started; its first output makes the file
            moved = handle is not None and current is not None and _drain(handle, printer, current.attempt)
            ended = current is not None and current.ended_at is not None
            settled = row.status in ("completed", "failed") or (attempt is not None and ended)
            if ended and settled and not moved:
                if current is not None:
                    printer.write(current.attempt, b"", final=True)
                return
            if not moved:
                time.sleep(POLL_S)
    finally:
        if handle is not None:
            handle.close()


def logs_command(
    task_id: TaskArgument,
    session: SessionOption,
    follow: Annotated[
        bool,
        typer.Option(
            "--follow", "-f", help="Keep printing new output as it comes (and the next attempts'), like tail -f."
        ),
    ] = False,
    attempt: Annotated[int | None, typer.Option("--attempt", min=1, help="One attempt (default: the newest).")] = None,
    json: JsonOption = False,
) -> None:
    """Print a task's agent output: its newest attempt's log (or one --attempt's).

    With -f, follow it live from another terminal while `executor run` works, on to the next
    attempt if one starts; it ends when the task is completed or failed (or Ctrl-C). Read-only.
    Example: executor logs IMPL-001 -f --session work/login
    """
    folder = session_folder(session)
    task_argument(task_id)
    printer = _Printer(task_id, json)
    try:
        if follow:
            _follow(folder, task_id, attempt, printer)
            return
        row, runs = _Watch(folder, task_id).read()
    except StoreError as error:
        raise fail(str(error)) from None
    except KeyboardInterrupt:
        return
    if row is None:
        raise fail(f"no task {task_id!r} in this session (`executor check --session {folder}` lists them)")
    run = _pick(runs, attempt, task_id)
    if run is None:
        raise fail(f"{task_id} has not run yet: no log (follow it with `executor logs {task_id} -f`)")
    path = _log_file(folder, run)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        data = b""
    except OSError as error:
        raise fail(f"cannot read {path}: {error.strerror or error}") from None
    if json:
        record = {"task_id": task_id, "attempt": run.attempt, "ended": run.ended_at is not None}
        sys.stdout.write(msgspec.json.encode({**record, "text": data.decode("utf-8", "replace")}).decode() + "\n")
        return
    printer.header(run)
    printer.write(run.attempt, data)
