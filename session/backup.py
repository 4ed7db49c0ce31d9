"""Copies of the state store: taken while a run writes, put back when none does.

A backup uses SQLite's online backup API over a read-only connection: one read
transaction, so the copy is the store as of one commit even while the run goes
on writing (WAL mode lets both proceed).  The copy is checked (integrity check,
a schema this executor reads) before it gets its final name.  A restore checks
the backup the same way, keeps a copy of the store it replaces, and writes
through SQLite too (never a file copy over a database that has a write-ahead
log); the caller holds the session lock, so no run is writing.
"""

from __future__ import annotations

import os
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

from session.store import DB_NAME, STATE_DIR
from session.store_schema import SCHEMA_VERSION

__all__ = ["BackupError", "backup_store", "backups_dir", "check_backup", "restore_store"]


class BackupError(Exception):
    """The backup or restore cannot be done; the message says why and what to do."""


def backups_dir(folder: Path) -> Path:
    return Path(folder) / STATE_DIR / "backups"


def _stamp() -> str:
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")


def _read_only(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    conn.execute("PRAGMA busy_timeout=5000")
    return conn


def check_backup(path: Path) -> int:
    """The schema version of a sound store file at ``path``.  Raises :class:`BackupError`."""
    if not path.is_file():
        raise BackupError(f"{path}: no such file; give a backup made by `executor backup`")
    try:
        conn = _read_only(path)
        try:
            verdict = conn.execute("PRAGMA integrity_check").fetchone()[0]
            version = int(conn.execute("PRAGMA user_version").fetchone()[0])
            tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        finally:
            conn.close()
    except sqlite3.DatabaseError as error:
        raise BackupError(f"{path} is not a state store ({error})") from None
    if verdict != "ok":
        raise BackupError(f"{path} is damaged (integrity check: {verdict})")
    if version == 0 or not {"events", "tasks", "runs"} <= tables:
        raise BackupError(f"{path} is not an executor state store (no tasks, runs and events tables)")
    if version > SCHEMA_VERSION:
        raise BackupError(f"{path} has schema version {version}, newer than this executor's {SCHEMA_VERSION}")
    return version


def _copy(source: Path, target: Path) -> None:
    """``source`` (read-only) into a new file ``target``, through SQLite, checked before it is named."""
    partial = target.with_name(f".{target.name}.partial")
    partial.unlink(missing_ok=True)
    try:
        src = _read_only(source)
        dst = sqlite3.connect(partial)
        try:
            src.backup(dst)  # all pages in one step: one consistent snapshot
            # A backup is one self-contained file: out of WAL mode, so reading it later
            # leaves no -wal/-shm beside it (the store turns WAL on again when it opens it).
            dst.execute("PRAGMA journal_mode=DELETE")
        finally:
            dst.close()
            src.close()
        check_backup(partial)
        os.replace(partial, target)
    except sqlite3.DatabaseError as error:
        raise BackupError(f"cannot copy {source} ({error})") from None
    finally:
        partial.unlink(missing_ok=True)


def backup_store(folder: Path, to: Path | None = None, label: str = "state") -> Path:
    """Copy the session's store into ``to`` (default ``.executor/backups``); returns the new file."""
    source = Path(folder) / STATE_DIR / DB_NAME
    if not source.is_file():
        raise BackupError(f"{folder} has no state store yet (it has never run): nothing to back up")
    target_dir = Path(to) if to is not None else backups_dir(folder)
    try:
        target_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise BackupError(f"--to {target_dir}: cannot create it ({error.strerror or error})") from None
    target = target_dir / f"{Path(folder).resolve().name}-{label}-{_stamp()}.db"
    _copy(source, target)
    return target


def restore_store(folder: Path, backup: Path) -> Path:
    """Put ``backup`` in place of the session's store; returns where the replaced store was kept.

    The caller holds the session lock.  Raises :class:`BackupError`."""
    check_backup(backup)
    live = Path(folder) / STATE_DIR / DB_NAME
    kept = backup_store(folder, label="before-restore") if live.is_file() else live
    try:
        src = _read_only(backup)
        dst = sqlite3.connect(live)
        try:
            src.backup(dst)
        finally:
            dst.close()
            src.close()
    except sqlite3.DatabaseError as error:
        raise BackupError(f"cannot restore into {live} ({error}); the store before is kept at {kept}") from None
    return kept
