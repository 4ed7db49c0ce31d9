"""One sender lane per channel: a queue, a thread, a token bucket, retries with backoff.

A lane owns its channel.  Its thread takes notices in order and tries each one
until it is delivered, refused for good, or out of attempts; a 429 waits the
time the service named — and that wait holds for the channel, not just for the
notice that got it: the next notice waits it out too, even when the first was
given up on.  A notice given up on is counted and handed to
``on_dropped(channel, notice, reason)`` — never raised.  A slow or dead channel
holds up only its own lane.  When a lane stops, every notice it did not send is
reported: what the thread cannot reach by the deadline is drained by :meth:`Lane.join`.

``put`` and ``close`` are called from one thread (the Notifier actor's); the
rest runs on the lane's thread.  Counters are read under a lock.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import msgspec

from notify.channels import Channel, SendResult
from protocol.notify import ChannelState, Notice
from session.backoff import exponential_delay
from session.redaction import redact

__all__ = ["DropCallback", "Lane", "RetryPolicy", "TokenBucket"]

log = logging.getLogger("executor.notify")

#: ``on_dropped(channel_name, notice, reason)``; runs on the lane's thread (or the
#: caller's, for a full queue or a lane that stops), must be quick, and may not raise
#: (it is logged if it does).
DropCallback = Callable[[str, Notice, str], None]

_STOP = object()
_STOPPED = "the notifier stopped before it could send this"


class TokenBucket:
    """``rate_per_minute`` sends a minute, with up to ``burst`` saved up for a quiet spell."""

    def __init__(
        self, rate_per_minute: float, burst: int | None = None, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if rate_per_minute <= 0:
            raise ValueError("rate_per_minute must be more than 0")
        self.rate_per_s = rate_per_minute / 60.0
        self.capacity = float(burst if burst is not None else max(1, min(5, int(rate_per_minute))))
        self.tokens = self.capacity
        self._clock = clock
        self._updated = clock()

    def _refill(self) -> None:
        now = self._clock()
        self.tokens = min(self.capacity, self.tokens + (now - self._updated) * self.rate_per_s)
        self._updated = now

    def wait_s(self) -> float:
        """Seconds until a send is allowed (0 when one is allowed now)."""
        self._refill()
        return 0.0 if self.tokens >= 1 else (1 - self.tokens) / self.rate_per_s

    def take(self) -> None:
        """Spend one send (call when :meth:`wait_s` said 0)."""
        self._refill()
        self.tokens -= 1


@dataclass(frozen=True)
class RetryPolicy:
    """How hard a lane tries.  Delays double from ``backoff_s`` up to ``max_backoff_s``, with
    up to ``jitter`` added (a fraction), unless a 429 names its own wait; a 429 asking for more
    than ``max_retry_after_s`` drops the notice rather than sit on it for that long."""

    max_attempts: int = 5
    backoff_s: float = 2.0
    max_backoff_s: float = 300.0
    max_retry_after_s: float = 900.0
    jitter: float = 0.2
    max_queue: int = 200

    def backoff(self, attempt: int) -> float:
        """The wait after failed attempt number ``attempt`` (1 for the first)."""
        return exponential_delay(self.backoff_s, self.max_backoff_s, attempt - 1, self.jitter)


class Lane:
    """A channel with its own queue and sender thread."""

    def __init__(self, channel: Channel, policy: RetryPolicy, on_dropped: DropCallback | None = None) -> None:
        self.channel = channel
        self.policy = policy
        self._on_dropped = on_dropped
        self._queue: queue.Queue[object] = queue.Queue()
        self._bucket = TokenBucket(channel.rate_per_minute) if channel.rate_per_minute else None
        self._abort = threading.Event()
        self._deadline: float | None = None
        self._not_before = 0.0  # time.monotonic() before which the channel asked not to be sent to
        self._closed = False
        self._lock = threading.Lock()
        self._sent = self._failed = self._dropped = 0
        self._last_error: str | None = None
        self._last_error_at: float | None = None
        self._thread = threading.Thread(target=self._run, name=f"notify-{channel.name}", daemon=True)

    @property
    def name(self) -> str:
        return self.channel.name

    def start(self) -> None:
        self._thread.start()

    def put(self, notice: Notice) -> bool:
        """Queue ``notice``; ``False`` (and the notice reported dropped) when the lane is closed or full.

        Every channel sends through a lane: its text is redacted here, once, for all of them.
        """
        notice = _redacted(notice)
        if self._closed:
            self._drop(notice, _STOPPED)
            return False
        if self._queue.qsize() >= self.policy.max_queue:
            self._drop(notice, f"{self.policy.max_queue} notices already wait on this channel")
            return False
        self._queue.put(notice)
        return True

    def close(self, deadline: float) -> None:
        """Take no more notices; send what is queued until ``deadline`` (``time.monotonic()``), then drop the rest.

        Returns at once: :meth:`join` waits.  Closing several lanes first and joining them
        after lets them all drain at the same time.
        """
        if self._closed:
            return
        self._closed = True
        self._deadline = deadline
        self._queue.put(_STOP)

    def join(self) -> None:
        """Wait for the lane's thread until the deadline given to :meth:`close`; then make it drop what is left."""
        deadline = self._deadline if self._deadline is not None else time.monotonic()
        if not self._thread.is_alive():
            return
        self._thread.join(max(0.0, deadline - time.monotonic()))
        if self._thread.is_alive():
            self._abort.set()
            # A request in flight ends within the channel's timeout; the daemon thread is not waited for.
            self._thread.join(0.5)
        self._drain()

    def _drain(self) -> None:
        """Report every notice still queued as dropped (the thread may be stuck in a request).

        Each queued notice is taken by exactly one of the thread and this drain, so none is
        reported twice; the notice in flight, if any, is the thread's to report when its request ends.
        """
        stop_seen = False
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is _STOP:
                stop_seen = True
            elif isinstance(item, Notice):
                self._drop(item, _STOPPED)
        if stop_seen:
            self._queue.put(_STOP)  # the thread still ends when its request does

    def state(self) -> ChannelState:
        with self._lock:
            return ChannelState(
                name=self.channel.name,
                kind=self.channel.kind,
                target=self.channel.target,
                sent=self._sent,
                failed=self._failed,
                dropped=self._dropped,
                queued=max(0, self._queue.qsize() - (1 if self._closed else 0)),
                last_error=self._last_error,
                last_error_at=self._last_error_at,
            )

    # --- the lane's thread -------------------------------------------------------------

    def _run(self) -> None:
        try:
            while True:
                item = self._queue.get()
                if item is _STOP:
                    return
                assert isinstance(item, Notice)  # noqa: S101 - only put() feeds the queue
                if self._abort.is_set():
                    self._drop(item, _STOPPED)
                else:
                    self._deliver(item)
        finally:
            try:
                self.channel.close()
            except Exception:
                log.exception("%s: closing the channel failed", self.channel.name)

    def _deliver(self, notice: Notice) -> None:
        attempt = 0
        while True:
            if not self._await_turn():
                self._drop(notice, _STOPPED)
                return
            attempt += 1
            result = self._attempt(notice)
            if result.ok:
                with self._lock:
                    self._sent += 1
                return
            error = result.error or "failed"
            with self._lock:
                self._failed += 1
                self._last_error, self._last_error_at = error, time.time()
            if result.permanent:
                self._drop(notice, f"refused: {error}")
                return
            if attempt >= self.policy.max_attempts:
                self._drop(notice, f"gave up after {attempt} attempts: {error}")
                return
            delay = result.retry_after_s if result.retry_after_s is not None else self.policy.backoff(attempt)
            if delay > self.policy.max_retry_after_s:
                limit = self.policy.max_retry_after_s
                self._drop(notice, f"asked to wait {delay:.0f}s, more than {limit:.0f}s: {error}")
                return
            if result.retry_after_s is not None:  # the channel's limit: it holds for the next notice too
                self._not_before = max(self._not_before, time.monotonic() + delay)
            log.debug("%s: attempt %d failed (%s); next in %.1fs", self.channel.name, attempt, error, delay)
            if not self._sleep(delay):
                self._drop(notice, _STOPPED)
                return

    def _attempt(self, notice: Notice) -> SendResult:
        try:
            return self.channel.send(notice)
        except Exception as error:  # noqa: BLE001 - send() should not raise; if it does, the lane lives on
            return SendResult.retry(f"{type(error).__name__}: {error}")

    def _await_turn(self) -> bool:
        """Wait for the rate limits to allow a send; ``False`` when the lane is stopping first."""
        if self._abort.is_set():
            return False
        cooldown = self._not_before - time.monotonic()
        if cooldown > 0 and not self._sleep(cooldown):
            return False
        if self._bucket is None:
            return True
        while (wait := self._bucket.wait_s()) > 0:
            if not self._sleep(wait):
                return False
        self._bucket.take()
        return True

    def _sleep(self, delay: float) -> bool:
        """Wait ``delay`` seconds; ``False`` when the lane is stopping (or would have stopped by then)."""
        deadline = self._deadline
        if deadline is not None and time.monotonic() + delay > deadline:
            return False
        return not self._abort.wait(delay)

    def _drop(self, notice: Notice, reason: str) -> None:
        reason = redact(reason)
        with self._lock:
            self._dropped += 1
        log.warning("%s: dropped a %s notice (%s): %s", self.channel.name, notice.kind, notice.title, reason)
        if self._on_dropped is None:
            return
        try:
            self._on_dropped(self.channel.name, notice, reason)
        except Exception:
            log.exception("%s: the on_dropped callback failed", self.channel.name)


def _redacted(notice: Notice) -> Notice:
    """``notice`` with no secret in its texts (agent errors and summaries end up in notices)."""
    return msgspec.structs.replace(
        notice,
        title=redact(notice.title),
        body=redact(notice.body),
        action=redact(notice.action) if notice.action is not None else None,
    )
