"""``executor backup`` and ``executor restore``: a consistent copy of the state store, and putting one back."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import msgspec
import typer
from rich.console import Console

from cli.task_args import SessionOption, fail, session_folder
from session.backup import BackupError, backup_store, restore_store
from session.lock import SessionBusy, SessionLock

__all__ = ["backup_command", "restore_command"]


def backup_command(
    session: SessionOption,
    to: Annotated[
        Path | None, typer.Option("--to", metavar="DIR", help="Where to put it (default: .executor/backups).")
    ] = None,
    json: Annotated[bool, typer.Option("--json", help="Print one JSON object instead of text.")] = False,
) -> None:
    """Copy the session's state store, consistently, even while a run writes to it.

    Uses SQLite's online backup: the copy is the store as of one moment, checked before it is
    named. Put it back with `executor restore`.
    Example: executor backup --session work/login --to ~/backups
    """
    folder = session_folder(session)
    try:
        path = backup_store(folder, to)
    except BackupError as error:
        raise fail(str(error)) from None
    if json:
        sys.stdout.write(msgspec.json.encode({"backup": str(path), "bytes": path.stat().st_size}).decode() + "\n")
        return
    Console(highlight=False, soft_wrap=True).print(
        f"backed up the state store to {path}\nput it back with: executor restore {path} --session {folder}",
        markup=False,
    )


def restore_command(
    backup: Annotated[Path, typer.Argument(metavar="FILE", help="A file `executor backup` made.")],
    session: SessionOption,
) -> None:
    """Put a backup in place of the session's state store (refused while a run holds the session).

    The store it replaces is kept in .executor/backups first. The next `executor resume`
    reconciles the session with the restored state.
    Example: executor restore .executor/backups/login-state-20260101T120000Z.db --session work/login
    """
    folder = session_folder(session)
    lock = SessionLock(folder)
    try:
        lock.acquire("restore")
    except SessionBusy as error:
        raise fail(f"{error} A restore needs the session to itself.") from None
    try:
        kept = restore_store(folder, backup)
    except BackupError as error:
        raise fail(str(error)) from None
    finally:
        lock.release()
    Console(highlight=False, soft_wrap=True).print(
        f"restored the state store from {backup} (the one it replaced is kept at {kept})\n"
        f"next: executor resume --session {folder}",
        markup=False,
    )
