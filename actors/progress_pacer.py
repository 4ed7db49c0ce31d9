"""At most one progress report per attempt per interval, the latest of each interval kept."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable

__all__ = ["PROGRESS_INTERVAL_S", "ProgressPacer"]

#: At most one progress message per attempt in this many seconds.
PROGRESS_INTERVAL_S = 0.25


class ProgressPacer:
    """Hands ``send(percent, note)`` at most one report per :data:`PROGRESS_INTERVAL_S`: a worker
    printing progress lines by the thousand must not flood the Executor's inbox and the event
    log.  Within the interval only the latest is kept; it goes when the interval is over (a
    callback ``call_at(due, fn)`` arranges, should the agent have gone quiet by then), or at
    :meth:`flush` (the attempt's end), whichever comes first.  Safe from several threads (the
    backend's and a timer's)."""

    def __init__(
        self,
        send: Callable[[int | None, str], None],
        call_at: Callable[[float, Callable[[], None]], None],
        interval_s: float = PROGRESS_INTERVAL_S,
    ) -> None:
        self._send = send
        self._call_at = call_at
        self._interval_s = interval_s
        self._pending: tuple[int | None, str] | None = None
        self._sent_at = -math.inf
        self._lock = threading.Lock()
        self._flush_timed = False

    def offer(self, percent: int | None, note: str) -> None:
        with self._lock:
            self._pending = (percent, note)
            self._send_when_due()

    def flush(self) -> None:
        """Send the report held back, if any."""
        with self._lock:
            self._send_now()

    def _send_when_due(self) -> None:
        due = self._sent_at + self._interval_s
        if time.monotonic() >= due:
            self._send_now()
        elif not self._flush_timed:
            self._flush_timed = True
            self._call_at(due, self._timed_flush)

    def _timed_flush(self) -> None:
        with self._lock:
            self._flush_timed = False
            if self._pending is not None:  # another report may have gone since: then wait again
                self._send_when_due()

    def _send_now(self) -> None:
        if self._pending is None:
            return
        (percent, note), self._pending = self._pending, None
        self._sent_at = time.monotonic()
        self._send(percent, note)
