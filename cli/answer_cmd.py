"""``executor answer``: list the open questions of a session, or answer one.

With a run going on, the answer goes through the session's inbox (the run
carries it out on its next tick and replies); with none, it is written to the
store under the session lock, so a run starting meanwhile cannot miss it.
"""

from __future__ import annotations

import getpass
import sys
from pathlib import Path

import msgspec
from rich.console import Console
from rich.markup import escape

from protocol.records import EscalationRow
from session.escalations import REPLY_WAIT_S, answer_from_outside
from session.store import StoreError, StoreReader

__all__ = ["REPLY_WAIT_S", "answer_question", "list_questions"]


def _who() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):  # no user name (a container without passwd entry)
        return "cli"


def list_questions(folder: Path, as_json: bool, console: Console) -> int:
    try:
        reader = StoreReader.open(folder)
    except StoreError as error:
        console.print(f"error: {escape(str(error))}")
        return 1
    rows: list[EscalationRow] = []
    if reader is not None:
        try:
            rows = reader.escalations("open")
        finally:
            reader.close()
    if as_json:
        sys.stdout.write(msgspec.json.encode(rows).decode() + "\n")
        return 0
    if not rows:
        console.print("no open question")
        return 0
    for row in rows:
        about = f" [{row.task_id} waits]" if row.holds_task and row.task_id else ""
        options = " / ".join(row.options) if row.options else "any text"
        console.print(f"{row.id}{escape(about)}: {escape(row.issue)}", markup=True)
        console.print(f"    options: {escape(options)}    answer: executor answer {row.id} CHOICE --session {folder}")
    return 0


def answer_question(folder: Path, escalation_id: str, choice: str) -> tuple[int, str]:
    """(exit code, message)."""
    recorded, message = answer_from_outside(folder, escalation_id, choice, _who(), REPLY_WAIT_S)
    return (0 if recorded else 1), message
