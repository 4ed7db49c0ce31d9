"""The Notifier service actor: tells the user what happened, on every configured channel.

``tell(Notify(notice))`` returns at once.  The actor only filters (``[notify]
events``) and queues: each channel has its own sender lane (:mod:`notify.sender`)
with a queue, a thread, a rate limit and retries, so a slow or dead channel
delays nothing else and sending can neither block nor crash the pipeline.  A
notice a channel gives up on is handed to ``on_dropped(channel, notice, reason)``.

When Telegram is configured with ``poll_answers`` and an ``on_answer`` callback is
given, escalation messages carry one button per option and a poller
(:mod:`notify.telegram_poll`) hands each press from a listed chat to
``on_answer(escalation_id, choice, who)``.

With ``digest`` given and ``[notify] digest_interval_s`` above 0, ``digest()`` is
called every interval on a timer thread and the notice it returns (if any) is sent.

Every incarnation builds fresh channels from the same :class:`~notify.setup.NotifySetup`;
nothing is lost on a restart but what was queued (each such notice is reported dropped).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TextIO

import pykka

from actors.base import TreeActor, handles
from notify.sender import DropCallback, Lane
from notify.setup import NotifySetup
from protocol.notify import GetNotifierState, Notice, NotifierState, Notify

if TYPE_CHECKING:
    from notify.telegram_poll import AnswerCallback, TelegramPoller

__all__ = ["NotifierActor"]

log = logging.getLogger("executor.actors.notifier")

#: Called every ``digest_interval_s`` on the digest thread: the digest to send, or None to skip one.
DigestSource = Callable[[], Notice | None]


class NotifierActor(TreeActor):
    """A permanent service.  Handlers never raise for what a channel does."""

    def __init__(
        self,
        name: str,
        parent: Any,
        incarnation: int,
        setup: NotifySetup,
        on_dropped: DropCallback | None = None,
        on_answer: AnswerCallback | None = None,
        digest: DigestSource | None = None,
        console_stream: TextIO | None = None,
        grace_s: float = 5.0,
    ) -> None:
        super().__init__(name, parent, incarnation)
        self.setup = setup
        self.on_dropped = on_dropped
        self.on_answer = on_answer
        self.digest = digest
        self.console_stream = console_stream
        self.grace_s = grace_s  # how long queued notices may still go out when the actor stops
        self.lanes: list[Lane] = []
        self.poller: TelegramPoller | None = None
        self.warnings: list[str] = list(setup.warnings)
        self.skipped = 0
        self._digest_stop = threading.Event()
        self._digest_thread: threading.Thread | None = None

    def started(self) -> None:
        telegram = self.setup.telegram
        polling = telegram is not None and telegram.poll_answers and self.on_answer is not None
        channels, problems = self.setup.build_channels(buttons=polling, console_stream=self.console_stream)
        self.warnings.extend(problems)
        for warning in self.warnings:
            log.warning("%s: %s", self.name, warning)
        self.lanes = [Lane(channel, self.setup.policy, self.on_dropped) for channel in channels]
        for lane in self.lanes:
            lane.start()
        if polling and telegram is not None and self.on_answer is not None:
            # The poller's asyncio and httpx load only when Telegram answers are polled.
            from notify.telegram_poll import TelegramPoller  # noqa: PLC0415

            self.poller = TelegramPoller(
                telegram.token,
                telegram.chat_ids,
                self.on_answer,
                api_base=telegram.api_base,
                poll_timeout_s=telegram.poll_timeout_s,
                timeout_s=self.setup.timeout_s,
                retry_backoff_s=self.setup.policy.backoff_s,
            )
            self.poller.start()
        if self.digest is not None and self.setup.digest_interval_s > 0:
            self._digest_thread = threading.Thread(target=self._digest_loop, name=f"{self.name}-digest", daemon=True)
            self._digest_thread.start()
        log.info("%s: sending on %s", self.name, ", ".join(lane.name for lane in self.lanes) or "no channel")

    @handles(Notify)
    def notify(self, message: Notify) -> None:
        notice = message.notice
        if notice.kind not in self.setup.events:
            self.skipped += 1
            return
        for lane in self.lanes:
            lane.put(notice)

    @handles(GetNotifierState)
    def state(self, message: GetNotifierState) -> NotifierState:
        poller = self.poller
        return NotifierState(
            channels=tuple(lane.state() for lane in self.lanes),
            skipped=self.skipped,
            polling=poller is not None and poller.running,
            answers=poller.answers if poller is not None else 0,
            warnings=tuple(self.warnings),
        )

    def stopping(self) -> None:
        self._digest_stop.set()
        if self.poller is not None:
            self.poller.stop()
        deadline = time.monotonic() + self.grace_s
        for lane in self.lanes:  # all lanes drain at once, within one grace period
            lane.close(deadline)
        for lane in self.lanes:
            lane.join()

    def _digest_loop(self) -> None:
        interval = self.setup.digest_interval_s
        while not self._digest_stop.wait(interval):
            try:
                notice = self.digest() if self.digest is not None else None
            except Exception:
                log.exception("%s: building the digest failed", self.name)
                continue
            if notice is None:
                continue
            try:
                self.actor_ref.tell(Notify(notice=notice))
            except pykka.ActorDeadError:
                return
