"""Keeps ``tasks/<status>/<ID>.md`` current while a run goes on, from a thread of its own.

It reads the store (never the actor tree) and rewrites the mirror only after new
events, and never more often than every few times the last pass took, so a
10,000-task session costs a pass now and then, not a pass per event.  A pass looks
only at the tasks the new events name (and those waiting for them): its cost follows
what changed, not the session's size (a whole pass over 10,000 tasks took 0.35 s,
every 2 s for as long as the run lasted, however little changed).
A whole pass is made first, when a secret was registered since (files written before
must be masked too), and every :data:`WHOLE_PASS_S`, for what changed without an
event (a file someone removed, a task's file left in an old folder).  Edits
people make to the files are left alone here (``preserve_edits``): the next
``executor task`` command reads them back.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

from session.redaction import secrets_known
from session.store import StoreError, StoreReader
from session.task_mirror import MirrorMemo, sync_mirror

__all__ = ["MirrorKeeper"]

log = logging.getLogger("executor.mirror")

MIN_INTERVAL_S = 2.0
WHOLE_PASS_S = 60.0


class MirrorKeeper:
    def __init__(self, folder: Path, interval_s: float = MIN_INTERVAL_S) -> None:
        self.folder = Path(folder)
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="task-mirror", daemon=True)
        self._seen = -1
        self._memo: MirrorMemo = {}  # what each file was written from: unchanged tasks are not rendered again
        self._secrets = -1  # secrets_known() at the last whole pass
        self._whole_due = 0.0  # monotonic time of the next whole pass
        self.passes = 0
        self.whole_passes = 0
        self.last_was_whole = False

    def start(self) -> MirrorKeeper:
        self._thread.start()
        return self

    def stop(self, final_pass: bool = True) -> None:
        self._stop.set()
        self._thread.join(timeout=30)
        if final_pass:
            self.sync_if_changed()

    def _loop(self) -> None:
        wait = self.interval_s
        while not self._stop.wait(wait):
            took = self.sync_if_changed()
            # A big change is mirrored less often, never constantly; a whole pass (the first writes
            # every file) does not hold back the passes over what changed after it.
            wait = self.interval_s if self.last_was_whole else max(self.interval_s, 5 * took)

    def _last_event(self) -> int | None:
        try:
            reader = StoreReader.open(self.folder)
        except StoreError:
            return None
        if reader is None:
            return None
        try:
            return reader.last_event_id()
        finally:
            reader.close()

    def sync_if_changed(self, now: float | None = None) -> float:
        """One pass when the store moved since the last; returns how long it took.  ``now``: a
        test's clock, for when the next whole pass is due."""
        newest = self._last_event()
        if newest is None or newest == self._seen:
            return 0.0
        started = time.monotonic()
        at = started if now is None else now
        whole = self._seen < 0 or secrets_known() != self._secrets or at >= self._whole_due
        try:
            sync_mirror(self.folder, memo=self._memo, since=None if whole else (self._seen, newest))
        except (OSError, StoreError) as error:  # the mirror is a convenience: the run goes on
            log.warning("could not update the task mirror: %s", error)
            return time.monotonic() - started
        took = time.monotonic() - started
        if whole:
            self._secrets = secrets_known()
            # However big the session, whole passes take at most a twentieth of the thread's time.
            self._whole_due = at + max(WHOLE_PASS_S, 20 * took)
            self.whole_passes += 1
        self.last_was_whole = whole
        self._seen = newest
        self.passes += 1
        return took
