"""Arguments and errors shared by the commands that look at one task's work: diff, logs, rollback, backup."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from session.own_paths import valid_task_id

__all__ = ["JsonOption", "SessionOption", "TaskArgument", "fail", "session_folder", "task_argument"]

SessionOption = Annotated[Path, typer.Option("--session", "-s", help="The team session folder.", show_default=False)]
TaskArgument = Annotated[str, typer.Argument(metavar="TASK", help="The task, e.g. IMPL-001.")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print one JSON object instead of text.")]


def fail(message: str, code: int = 1) -> typer.Exit:
    """Print one error line on stderr; raise the returned Exit (1: state, 2: usage)."""
    Console(stderr=True, highlight=False, soft_wrap=True).print(f"[red]error:[/] {escape(message)}", markup=True)
    return typer.Exit(code)


def session_folder(session: Path) -> Path:
    if not (session / "team-session.json").is_file():
        raise fail(f"--session {session} is not a session folder (no team-session.json); give the folder of one", 2)
    return session


def task_argument(task_id: str) -> str:
    """``task_id`` when it is a task id (it is then safe in a query, never a path); else a usage error."""
    if not valid_task_id(task_id):
        raise fail(f"TASK {task_id[:80]!r} is not a task id (letters, digits, '-', '_', '.'), e.g. IMPL-001", 2)
    return task_id
