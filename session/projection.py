"""``team-session.json`` as a projection of the executor's state.

The event store is the source of truth; this file is what the coordinator skill
and people read.  :class:`SessionProjection` keeps the few fields the executor
owns in sets and dicts, and :meth:`SessionProjection.flush` writes the file
atomically (temp file, fsync, rename) only when something changed.  The caller
coalesces flushes (:meth:`SessionProjection.flush_if_due`), so a run writes the
file a bounded number of times per second, each write linear in the task count.

Owned fields (everything else in the file is kept as it was read, unknown keys
included, in their order): ``status``, ``completed_tasks``, ``active_workers``,
``pipeline.tasks_total``, ``pipeline.tasks_completed`` and ``updated_at``.
"""

from __future__ import annotations

import json
import os
import secrets
import stat
import time
from collections.abc import Callable, Iterable
from contextlib import suppress
from datetime import datetime
from pathlib import Path
from typing import Any

from session.store import utc_now

__all__ = ["SessionProjection", "write_atomic"]


def _fsync_directory(directory: Path) -> None:
    """Make a rename in ``directory`` durable; best effort (not every OS or filesystem allows it)."""
    flags = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0)
    try:
        fd = os.open(directory, flags)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_atomic(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` so that readers see the old file or the new one, never a mix.

    Writes a uniquely named temp file next to ``path``, fsyncs it, renames it onto
    ``path`` and fsyncs the directory (best effort).  An existing file's permission
    bits are kept; a new file gets the usual ``0o666`` less the umask.  On any
    failure the temp file is removed, ``path`` is left untouched, and the error is
    raised.
    """
    path = Path(path)
    directory = path.parent
    try:
        mode: int | None = stat.S_IMODE(os.stat(path).st_mode)
    except FileNotFoundError:
        mode = None
    temp = directory / f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0) | getattr(os, "O_CLOEXEC", 0)
    fd = os.open(temp, flags, 0o666)
    try:
        with os.fdopen(fd, "wb") as file:
            if mode is not None and hasattr(os, "fchmod"):
                os.fchmod(file.fileno(), mode)
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temp, path)
    except BaseException:
        with suppress(OSError):
            os.unlink(temp)
        raise
    _fsync_directory(directory)


def _unique_strings(values: Any) -> dict[str, None]:
    """The string items of a JSON list, first occurrence first (a dict used as an ordered set)."""
    if not isinstance(values, list):
        return {}
    return dict.fromkeys(value for value in values if isinstance(value, str))


class SessionProjection:
    """The executor-owned fields of ``team-session.json``, and their writer.

    Not thread-safe: it belongs to one actor (the Session), like the store.

    ``completed_tasks`` keeps completion order: ids already in the file come
    first in their order, later completions are appended, a reopened task is
    removed and goes to the end if it completes again.  Ids in the file that
    are not tasks are kept in the list (the Reconciler decides about them) but
    not counted in ``pipeline.tasks_completed``.

    ``active_workers`` starts empty: workers listed in the file belonged to an
    earlier executor process, which the Reconciler stops.  The projection is not
    dirty when built; write the reconciled file with ``flush(force=True)``.
    """

    def __init__(
        self,
        folder: Path,
        team_raw: dict[str, Any],
        task_ids: Iterable[str],
        *,
        clock: Callable[[], str] = utc_now,
    ) -> None:
        # The loader (pydantic models, yaml) for one name: write_atomic's users (the inbox, the key
        # store, `task` commands) need none of it.
        from session.loader import SESSION_FILE  # noqa: PLC0415

        self.path = Path(folder) / SESSION_FILE
        self._raw = dict(team_raw)
        self._clock = clock
        self._tasks: set[str] = set(task_ids)
        self._status: str = str(team_raw.get("status", "active"))
        self._completed = _unique_strings(team_raw.get("completed_tasks"))
        self._workers: dict[str, dict[str, Any]] = {}
        self._dirty = False
        self._last_write: float | None = None

    # --- state changes ------------------------------------------------------------

    @property
    def dirty(self) -> bool:
        """Whether the file on disk is behind the state held here."""
        return self._dirty

    @property
    def status(self) -> str:
        return self._status

    @property
    def completed_tasks(self) -> list[str]:
        return list(self._completed)

    def set_status(self, status: str) -> None:
        if status != self._status:
            self._status = status
            self._dirty = True

    def task_completed(self, task_id: str) -> None:
        if task_id not in self._completed:
            self._completed[task_id] = None
            self._dirty = True

    def task_reopened(self, task_id: str) -> None:
        if task_id in self._completed:
            del self._completed[task_id]
            self._dirty = True

    def add_task(self, task_id: str) -> None:
        if task_id not in self._tasks:
            self._tasks.add(task_id)
            self._dirty = True

    def worker_started(self, task_id: str, role: str, pid: int | None, started_at: str | datetime) -> None:
        """Record a running worker; one entry per task (a restart replaces the old entry)."""
        when = started_at.isoformat() if isinstance(started_at, datetime) else started_at
        self._workers[task_id] = {"task": task_id, "role": role, "started_at": when, "pid": pid}
        self._dirty = True

    def worker_stopped(self, task_id: str) -> None:
        if self._workers.pop(task_id, None) is not None:
            self._dirty = True

    # --- the document -------------------------------------------------------------

    def document(self) -> dict[str, Any]:
        """The file's content as it would be written now (``updated_at`` from the clock)."""
        pipeline = self._raw.get("pipeline")
        pipeline = dict(pipeline) if isinstance(pipeline, dict) else {}
        pipeline["tasks_total"] = len(self._tasks)
        pipeline["tasks_completed"] = sum(1 for task_id in self._completed if task_id in self._tasks)
        owned = {
            "status": self._status,
            "completed_tasks": list(self._completed),
            "active_workers": list(self._workers.values()),
            "pipeline": pipeline,
            "updated_at": self._clock(),
        }
        document = {key: owned.get(key, value) for key, value in self._raw.items()}
        for key, value in owned.items():
            document.setdefault(key, value)
        return document

    def render(self) -> bytes:
        return (json.dumps(self.document(), indent=2, ensure_ascii=False) + "\n").encode("utf-8")

    def flush(self, force: bool = False, now: float | None = None) -> bool:
        """Write the file if anything changed (or ``force``); return whether it wrote.

        ``now`` is a monotonic clock reading recorded as the time of this write for
        :meth:`flush_if_due`; without it ``time.monotonic()`` is used.  When the write
        fails the projection stays dirty and the error is raised.
        """
        if not (self._dirty or force):
            return False
        write_atomic(self.path, self.render())
        self._dirty = False
        self._last_write = time.monotonic() if now is None else now
        return True

    def flush_if_due(self, now: float, min_interval_s: float = 0.5) -> bool:
        """Write when dirty and ``min_interval_s`` have passed since the last write.

        ``now`` comes from a monotonic clock (``time.monotonic()``), the same clock
        for every call.  Returns whether it wrote.  The first write is always due.
        """
        if not self._dirty:
            return False
        if self._last_write is not None and now - self._last_write < min_interval_s:
            return False
        return self.flush(now=now)
