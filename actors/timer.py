"""One timer thread for the whole process: run a quick callable at a given ``time.monotonic()``.

For work that must happen later even when nothing else happens — a worker's held-back
progress report, due once its interval is over although the agent has gone quiet.  A
thread per pending call would cost hundreds of threads with hundreds of agents; this is
one daemon thread and a heap, started on first use (nothing runs at import time).

Callables run on the timer thread, one at a time, in order of their due time: they must
be quick and thread-safe.  One that raises is logged; the thread lives on.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections.abc import Callable

__all__ = ["call_at"]

log = logging.getLogger("executor.actors.timer")


class _Timer:
    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._due: list[tuple[float, int, Callable[[], None]]] = []
        self._order = itertools.count()  # equal due times keep their order; callables never compare
        self._thread: threading.Thread | None = None

    def call_at(self, due: float, call: Callable[[], None]) -> None:
        with self._changed:
            heapq.heappush(self._due, (due, next(self._order), call))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="executor-timer", daemon=True)
                self._thread.start()
            self._changed.notify()

    def _run(self) -> None:
        while True:
            with self._changed:
                while True:
                    wait = self._due[0][0] - time.monotonic() if self._due else None
                    if wait is not None and wait <= 0:
                        break
                    self._changed.wait(wait)
                _, _, call = heapq.heappop(self._due)
            try:
                call()
            except Exception:
                log.exception("a timed call failed")


_TIMER = _Timer()


def call_at(due: float, call: Callable[[], None]) -> None:
    """Run ``call()`` on the timer thread once ``time.monotonic()`` reaches ``due`` (at once if it has)."""
    _TIMER.call_at(due, call)
