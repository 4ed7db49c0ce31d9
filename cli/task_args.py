"""Arguments and errors shared by the commands that look at one task's work: diff, logs, rollback, backup."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from protocol.ids import TASK_ID_RULE, is_task_id

__all__ = [
    "JsonOption",
    "SessionOption",
    "TaskArgument",
    "fail",
    "for_terminal",
    "session_folder",
    "task_argument",
]

# Control characters but tab and newline: agents write logs and files, and escape sequences from
# them must not reach a person's terminal (titles, cursor moves, hyperlinks, old terminal bugs).
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")

SessionOption = Annotated[Path, typer.Option("--session", "-s", help="The team session folder.", show_default=False)]
TaskArgument = Annotated[str, typer.Argument(metavar="TASK", help="The task, e.g. IMPL-001.")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print one JSON object instead of text.")]


def fail(message: str, code: int = 1) -> typer.Exit:
    """Print one error line on stderr; raise the returned Exit (1: state, 2: usage)."""
    Console(stderr=True, highlight=False, soft_wrap=True).print(f"[red]error:[/] {escape(message)}", markup=True)
    return typer.Exit(code)


def session_folder(session: Path) -> Path:
    if not (session / "team-session.json").is_file():
        raise fail(f"--session {session} is not a session folder (no team-session.json); give the folder of one", 1)
    return session


def task_argument(task_id: str) -> str:
    """``task_id`` when it is a task id (it is then safe in a query, never a path); else a usage error."""
    if not is_task_id(task_id):
        raise fail(f"TASK {task_id[:80]!r} is not a task id: {TASK_ID_RULE}", 2)
    return task_id


def for_terminal(text: str) -> str:
    """``text`` with control characters shown as ``^X`` / ``\\xNN`` instead of acted on by the terminal."""

    def show(found: re.Match[str]) -> str:
        code = ord(found.group())
        return f"^{chr(code + 64)}" if code < 32 else f"\\x{code:02x}"

    return _CONTROL.sub(show, text)
