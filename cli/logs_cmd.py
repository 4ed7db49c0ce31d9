"""``executor logs TASK [-f]``: an attempt's full output, and following it live from another process."""

from __future__ import annotations

import codecs
import sys
import time
from typing import Annotated

import msgspec
import typer

from cli.task_args import JsonOption, SessionOption, TaskArgument, fail, for_terminal, session_folder, task_argument
from session.store import StoreError
from session.task_logs import AttemptBegan, LogChunk, LogEnded, LogTail, LogUnavailable, read_log

__all__ = ["logs_command"]

POLL_S = 0.2


class _Printer:
    """Text as it comes, or (``--json``) one object per complete line."""

    def __init__(self, task_id: str, as_json: bool) -> None:
        self.task_id = task_id
        self.as_json = as_json
        self.partial = b""
        self.attempt = 0
        self.terminal = sys.stdout.isatty()
        self.decoder = codecs.getincrementaldecoder("utf-8")("replace")  # a character split between reads

    def header(self, attempt: int, backend: str) -> None:
        self.flush_line()
        self.attempt = attempt
        if not self.as_json:
            sys.stdout.write(f"--- {self.task_id} attempt {attempt} ({backend}) ---\n")
            sys.stdout.flush()

    def write(self, data: bytes) -> None:
        if not self.as_json:
            if self.terminal:  # never an agent's escape sequence on a person's terminal
                sys.stdout.write(for_terminal(self.decoder.decode(data)))
                sys.stdout.flush()
                return
            sys.stdout.flush()
            sys.stdout.buffer.write(data)  # to a pipe: the bytes as logged
            sys.stdout.buffer.flush()
            return
        lines = (self.partial + data).split(b"\n")
        self.partial = lines.pop()
        for line in lines:
            self._line(line)
        sys.stdout.flush()

    def _line(self, line: bytes) -> None:
        record = {"task_id": self.task_id, "attempt": self.attempt, "line": line.decode("utf-8", "replace")}
        sys.stdout.write(msgspec.json.encode(record).decode() + "\n")

    def flush_line(self) -> None:
        if self.as_json and self.partial:
            self._line(self.partial)
            self.partial = b""
            sys.stdout.flush()


def _follow(tail: LogTail, printer: _Printer) -> None:
    seen = False
    while True:
        items = tail.poll()
        for item in items:
            if isinstance(item, AttemptBegan):
                seen = True
                printer.header(item.attempt, item.backend)
            elif isinstance(item, LogChunk):
                printer.write(item.data)
            elif isinstance(item, LogEnded):
                printer.flush_line()
                if not seen:
                    raise fail(
                        f"{tail.task_id} has not run and no run is going on: nothing to follow "
                        f"(start one with `executor resume --session {tail.folder}`)"
                    )
                return
        if not any(isinstance(item, LogChunk) for item in items):
            time.sleep(POLL_S)


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
    attempt if one starts; it ends when the task is completed or failed, when no run is left to
    write more, or on Ctrl-C. Read-only.
    Example: executor logs IMPL-001 -f --session work/login
    """
    folder = session_folder(session)
    task_argument(task_id)
    printer = _Printer(task_id, json)
    try:
        if follow:
            tail = LogTail(folder, task_id, attempt)
            try:
                _follow(tail, printer)
            finally:
                tail.close()
            return
        run, data = read_log(folder, task_id, attempt)
    except LogUnavailable as error:
        raise fail(str(error), 2 if error.argument else 1) from None
    except StoreError as error:
        raise fail(str(error)) from None
    except KeyboardInterrupt:
        return
    if json:
        record = {"task_id": task_id, "attempt": run.attempt, "ended": run.ended_at is not None}
        sys.stdout.write(msgspec.json.encode({**record, "text": data.decode("utf-8", "replace")}).decode() + "\n")
        return
    printer.header(run.attempt, run.backend)
    printer.write(data)
