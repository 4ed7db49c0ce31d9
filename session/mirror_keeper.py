"""Keeps ``tasks/<status>/<ID>.md`` current while a run goes on, from a thread of its own.

It reads the store (never the actor tree) and rewrites the mirror only after new
events, and never more often than every few times the last pass took, so a
10,000-task session costs a pass now and then, not a pass per event.  Edits
people make to the files are left alone here (``preserve_edits``): the next
``executor task`` command reads them back.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

from session.store import StoreError, StoreReader
from session.task_mirror import MirrorMemo, sync_mirror

__all__ = ["MirrorKeeper"]

log = logging.getLogger("executor.mirror")

MIN_INTERVAL_S = 2.0


class MirrorKeeper:
    def __init__(self, folder: Path, interval_s: float = MIN_INTERVAL_S) -> None:
        self.folder = Path(folder)
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="task-mirror", daemon=True)
        self._seen = -1
        self._memo: MirrorMemo = {}  # what each file was written from: unchanged tasks are not rendered again
        self.passes = 0

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
            wait = max(self.interval_s, 5 * took)  # a big session is mirrored less often, never constantly

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

    def sync_if_changed(self) -> float:
        """One pass when the store moved since the last; returns how long it took."""
        newest = self._last_event()
        if newest is None or newest == self._seen:
            return 0.0
        started = time.monotonic()
        try:
            sync_mirror(self.folder, memo=self._memo)
        except (OSError, StoreError) as error:  # the mirror is a convenience: the run goes on
            log.warning("could not update the task mirror: %s", error)
            return time.monotonic() - started
        self._seen = newest
        self.passes += 1
        return time.monotonic() - started
