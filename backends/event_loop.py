"""One thread's event loop: an ``epoll`` over file descriptors, timers, and callbacks from
other threads.

A process run (:mod:`backends.process`) is written against it, so one run and a thousand
are watched the same way: by the thread that asked for one run (``run_process`` drives a
loop of its own until the run is over), or by one thread for all of them (the Executor's
inbox, :mod:`actors.reactor_inbox`, is such a loop).  Work that must wait — a grace period
between SIGTERM and SIGKILL — goes through :meth:`EventLoop.run_blocking`: inline on a
loop of its own, on a helper thread where the loop serves many (its thread must never sleep).

Deliberately small: no futures or coroutines, a callback per event, the same shape as
asyncio's ``add_reader``/``call_later``/``call_soon_threadsafe`` without its cost per turn.
"""

from __future__ import annotations

import collections
import contextlib
import heapq
import itertools
import logging
import os
import select
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

__all__ = ["EventLoop", "Timer"]

log = logging.getLogger("executor.loop")

_T = TypeVar("_T")
Callback = Callable[[], None]


class Timer:
    """A callback due at a monotonic time; :meth:`cancel` before it is due and it never runs."""

    __slots__ = ("callback", "cancelled", "when")

    def __init__(self, when: float, callback: Callback) -> None:
        self.when = when
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class EventLoop:
    """File descriptors, timers and a thread-safe queue of callbacks, run by one thread.

    Every method but :meth:`call_soon_threadsafe` is for the loop's own thread.
    ``helpers``: threads for :meth:`run_blocking` (0: it runs the work inline, for a loop
    whose thread may wait, such as the one a single ``run_process`` drives).
    """

    def __init__(self, helpers: int = 0) -> None:
        self._epoll = select.epoll()
        self._wake = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self._epoll.register(self._wake, select.EPOLLIN)
        self._handlers: dict[int, Callback] = {}
        self._timers: list[tuple[float, int, Timer]] = []
        self._order = itertools.count()  # equal deadlines run in the order they were set
        self._soon: collections.deque[Callback] = collections.deque()
        self._lock = threading.Lock()
        self._helpers = helpers
        self._pool: ThreadPoolExecutor | None = None
        self._closed = False

    # --- file descriptors --------------------------------------------------------------

    def add_reader(self, fd: int, callback: Callback) -> None:
        """Call ``callback`` whenever ``fd`` is readable or closed at the other end."""
        self._add(fd, callback, select.EPOLLIN)

    def add_writer(self, fd: int, callback: Callback) -> None:
        """Call ``callback`` whenever ``fd`` can be written to (or the reader is gone)."""
        self._add(fd, callback, select.EPOLLOUT)

    def _add(self, fd: int, callback: Callback, mask: int) -> None:
        if fd in self._handlers:
            self._epoll.modify(fd, mask)
        else:
            self._epoll.register(fd, mask)
        self._handlers[fd] = callback

    def remove(self, fd: int) -> None:
        """Stop watching ``fd`` (before closing it); watching nothing there is no error."""
        if self._handlers.pop(fd, None) is not None:
            with contextlib.suppress(OSError, ValueError):
                self._epoll.unregister(fd)

    def watching(self, fd: int) -> bool:
        return fd in self._handlers

    # --- time and other threads --------------------------------------------------------

    def call_later(self, delay_s: float, callback: Callback) -> Timer:
        """Run ``callback`` on the loop's thread in ``delay_s`` seconds (or later)."""
        timer = Timer(time.monotonic() + max(0.0, delay_s), callback)
        heapq.heappush(self._timers, (timer.when, next(self._order), timer))
        return timer

    def call_soon_threadsafe(self, callback: Callback) -> None:
        """From any thread: run ``callback`` on the loop's thread at its next turn."""
        with self._lock:
            if self._closed:
                return
            self._soon.append(callback)
        self.wake()

    def wake(self) -> None:
        """From any thread: end the loop's current wait (its owner has something to do)."""
        with self._lock:  # never after close(): the descriptor's number may be another file's by then
            if not self._closed:
                os.eventfd_write(self._wake, 1)

    def run_blocking(self, work: Callable[[], _T], then: Callable[[_T], None]) -> None:
        """Do ``work``, which may wait, then ``then(result)`` on the loop's thread.  Inline
        for a loop without helpers; otherwise on a helper thread, so this one goes on.
        An exception of ``work`` is raised on the loop's thread, as if ``then`` raised it."""
        if self._helpers <= 0:
            then(work())
            return
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self._helpers, thread_name_prefix="loop-helper")

        def on_helper() -> None:
            try:
                result = work()
            except BaseException as error:  # noqa: BLE001 - handed to the loop's thread, raised there
                failure = error

                def reraise() -> None:
                    raise failure

                self.call_soon_threadsafe(reraise)
                return
            self.call_soon_threadsafe(lambda: then(result))

        self._pool.submit(on_helper)

    @property
    def helpers_used(self) -> bool:
        """Whether any work has gone to a helper thread (they start on first use)."""
        return self._pool is not None

    # --- running -----------------------------------------------------------------------

    def has_soon(self) -> bool:
        with self._lock:
            return bool(self._soon)

    def run_once(self, timeout_s: float | None = None) -> None:
        """Wait at most ``timeout_s`` (None: until something happens) for an event, then
        run everything that is due: ready descriptors, due timers, queued callbacks.
        An exception from a callback leaves this method; the rest of the turn is not lost
        (what was due stays due, the queue keeps what was not run)."""
        if self._closed:
            return
        wait = -1.0 if timeout_s is None else max(0.0, timeout_s)
        if self._timers:
            until_next = max(0.0, self._timers[0][0] - time.monotonic())
            wait = until_next if wait < 0 else min(wait, until_next)
        if self.has_soon():
            wait = 0.0
        for fd, _events in self._epoll.poll(wait):
            if fd == self._wake:
                with contextlib.suppress(BlockingIOError):
                    os.eventfd_read(self._wake)
                continue
            handler = self._handlers.get(fd)
            if handler is not None:  # an earlier handler of this turn may have removed it
                handler()
        self._run_due_timers()
        self._run_soon()

    def _run_due_timers(self) -> None:
        now = time.monotonic()
        while self._timers and self._timers[0][0] <= now:
            _, _, timer = heapq.heappop(self._timers)
            if not timer.cancelled:
                timer.cancelled = True  # it ran: a later cancel() is harmless
                timer.callback()

    def _run_soon(self) -> None:
        with self._lock:
            count = len(self._soon)
        for _ in range(count):  # what these callbacks queue runs at the next turn
            with self._lock:
                callback = self._soon.popleft()
            callback()

    def close(self) -> None:
        """Release the loop's descriptors and helpers (work already on a helper finishes there,
        its result dropped); every call after this does nothing."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._soon.clear()
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
        self._handlers.clear()
        self._epoll.close()
        with contextlib.suppress(OSError):
            os.close(self._wake)
