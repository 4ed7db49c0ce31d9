"""The Executor's inbox, which is also its thread's event loop (the one-thread core's reactor).

pykka's actor loop asks its inbox for the next message; this inbox, while none is waiting,
runs an :class:`~backends.event_loop.EventLoop` turn instead of sleeping on a queue: the
pipes and pidfds of the attempts the Executor watches itself (:mod:`actors.inline_attempts`)
and their timers are served on the Executor's thread, between its messages, and a message
from another thread wakes it through the loop's eventfd.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from typing import Any

from backends.event_loop import EventLoop

__all__ = ["ReactorInbox"]

log = logging.getLogger("executor.root")

#: At most this many threads for the waits of attempts watched on the Executor's thread (git
#: captures, grace periods).  Started only when every one is busy: a clean run uses none, a
#: run in a repository one or two; but a graceful stop of 200 agents that ignore SIGTERM
#: waits out 200 grace periods at once, as 200 worker threads did.
HELPERS = 256
#: While messages keep coming, the loop is still served (without waiting) at least this often:
#: a stream of messages must not leave the attempts' output unread and their exits unseen.
SERVE_LOOP_EVERY_S = 0.01


class ReactorInbox(EventLoop):
    """pykka's ``ActorInbox`` (put, get, empty) over an event loop run by the actor's thread."""

    def __init__(self) -> None:
        super().__init__(helpers=HELPERS)
        self._envelopes: collections.deque[Any] = collections.deque()
        self._envelopes_lock = threading.Lock()
        self._served_at = time.monotonic()

    def put(self, envelope: Any, /) -> None:
        """From any thread."""
        with self._envelopes_lock:
            self._envelopes.append(envelope)
        self.wake()

    def get(self) -> Any:
        """The next message; until there is one, serve the loop.  An exception of one of the
        loop's callbacks is logged and the loop goes on: the actor's thread must not die of it
        (pykka calls ``get`` outside its error handling)."""
        if time.monotonic() - self._served_at >= SERVE_LOOP_EVERY_S:
            self._serve(0.0)
        while True:
            with self._envelopes_lock:
                if self._envelopes:
                    return self._envelopes.popleft()
            self._serve(None)

    def _serve(self, timeout_s: float | None) -> None:
        self._served_at = time.monotonic()
        try:
            self.run_once(timeout_s)
        except Exception:
            log.exception("a callback on the Executor's loop failed")

    def empty(self) -> bool:
        with self._envelopes_lock:
            return not self._envelopes

    def has_soon(self) -> bool:
        # A message waiting counts as work due: the loop's turn must not sleep past it.
        return super().has_soon() or not self.empty()
