"""One executor per session: an OS file lock on ``.executor/lock``.

``flock`` is released by the kernel when its holder dies, so a ``kill -9``
never leaves a stale lock.  The file also names the holder (pid, create time,
command) so a refused second executor can say who is running, and
``executor check`` can tell a live run without taking the lock.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
from pathlib import Path

import msgspec

from session.processes import create_time_of, is_alive
from session.store import STATE_DIR, utc_now

__all__ = ["LockHolder", "SessionBusy", "SessionLock", "read_holder"]

LOCK_NAME = "lock"


class LockHolder(msgspec.Struct, frozen=True, kw_only=True):
    pid: int
    create_time: float | None = None
    command: str = ""
    started_at: str = ""
    host: str = ""


class SessionBusy(Exception):
    """Another live executor holds the session."""

    def __init__(self, folder: Path, holder: LockHolder | None) -> None:
        self.folder = folder
        self.holder = holder
        who = (
            f"pid {holder.pid} (`executor {holder.command}` since {holder.started_at})" if holder else "another process"
        )
        super().__init__(
            f"session {folder} is already being run by {who}. "
            f"Watch it with `executor check --session {folder}`, or stop that process first."
        )


def _read(path: Path) -> LockHolder | None:
    try:
        return msgspec.json.decode(path.read_bytes(), type=LockHolder)
    except (OSError, msgspec.DecodeError):
        return None


def read_holder(folder: Path) -> LockHolder | None:
    """The live executor holding ``folder``, if any.  Reads only; takes no lock."""
    holder = _read(Path(folder) / STATE_DIR / LOCK_NAME)
    if holder is None or not is_alive(holder.pid, holder.create_time):
        return None
    return holder


class SessionLock:
    """Held for the whole life of ``executor run``/``resume``/``mcp``."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self.path = self.folder / STATE_DIR / LOCK_NAME
        self._fd: int | None = None

    def acquire(self, command: str) -> None:
        """Take the lock or raise :class:`SessionBusy` at once (never waits)."""
        self.path.parent.mkdir(exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise SessionBusy(self.folder, _read(self.path)) from None
        holder = LockHolder(
            pid=os.getpid(),
            create_time=create_time_of(os.getpid()),
            command=command,
            started_at=utc_now(),
            host=socket.gethostname(),
        )
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps(msgspec.to_builtins(holder)).encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            os.ftruncate(self._fd, 0)
        finally:
            os.close(self._fd)  # closing drops the flock
            self._fd = None

    def __enter__(self) -> SessionLock:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()
