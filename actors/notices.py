"""What the Executor tells the user through the Notifier, and what it hears back.

A mixin of :class:`actors.executor.Executor`.  Notices are tells to the
Notifier service (which queues, rate-limits and retries per channel), so
telling the user never waits on a network.  The Notifier calls back from
its own threads: a dropped notice and a digest request come in as messages
here; a button press answers its question like any other answer.
"""

from __future__ import annotations

import hashlib
import time
from typing import TYPE_CHECKING, Any

import pykka

from actors.base import handles
from protocol._base import Message
from protocol.bridge import AnswerEscalation, Refused
from protocol.events import NotificationDropped
from protocol.notify import Notice, NoticeKind, Notify

__all__ = ["NOTIFIER", "BuildDigest", "NoticeDropped", "NoticeHandlers", "notifier_callbacks"]

NOTIFIER = "notifier"


class NoticeDropped(Message, frozen=True):
    """The Notifier gave up on a notice (told by its sender thread)."""

    channel: str
    kind: str
    reason: str


class BuildDigest(Message, frozen=True):
    """Ask for the periodic digest: a :class:`Notice`, or None when nothing changed since the last."""


def notifier_callbacks(executor: pykka.ActorRef[Any]) -> dict[str, Any]:
    """The Notifier's callbacks, bound to the Executor; each runs on a Notifier thread."""

    def on_dropped(channel: str, notice: Notice, reason: str) -> None:
        executor.tell(NoticeDropped(channel=channel, kind=notice.kind, reason=reason[:500]))

    def on_answer(escalation_id: str, choice: str, who: str) -> str | None:
        try:
            reply = executor.ask(
                AnswerEscalation(escalation_id=escalation_id, choice=choice, answered_by=who), timeout=5
            )
        except (pykka.Timeout, pykka.ActorDeadError):
            return "The executor did not take the answer; try `executor answer` on the machine."
        return reply.reason if isinstance(reply, Refused) else None

    def digest() -> Notice | None:
        try:
            return executor.ask(BuildDigest(), timeout=5)
        except (pykka.Timeout, pykka.ActorDeadError):
            return None

    return {"on_dropped": on_dropped, "on_answer": on_answer, "digest": digest}


class NoticeHandlers:
    """``_notify`` and the Notifier's messages; mixed into the Executor."""

    supervisor: Any
    session: Any
    folder: Any
    slots: dict[str, Any]
    scheduler: Any
    session_spent: float
    open_questions: set[str]
    last_digest: str
    started_at: float

    if TYPE_CHECKING:  # the Executor's own; a stub here would shadow it

        def _record(self, *events: Any, **kwargs: Any) -> None: ...
        def _after_commit(self, action: Any) -> None: ...

    def _notify(
        self,
        kind: NoticeKind,
        title: str,
        body: str = "",
        action: str | None = None,
        escalation_id: str | None = None,
        options: tuple[str, ...] = (),
    ) -> None:
        notifier = self.supervisor.ref(NOTIFIER)
        if notifier is None or notifier.actor_stopped.is_set():
            return
        notice = Notice(
            kind=kind,
            title=title[:200],
            body=body[:3000],
            action=action,
            escalation_id=escalation_id,
            options=options,
            session_id=self.session.session_id,
        )
        # Sent once the turn's records are committed: a notice never announces what a crash could lose.
        self._after_commit(lambda: notifier.tell(Notify(notice=notice)))

    def _command(self, verb: str) -> str:
        return f"executor {verb} --session {self.folder}"

    @handles(NoticeDropped)
    def notice_dropped(self, message: NoticeDropped) -> None:
        self._record(NotificationDropped(channel=message.channel, kind=message.kind, reason=message.reason))

    @handles(BuildDigest)
    def build_digest(self, message: BuildDigest) -> Notice | None:
        if self.scheduler is None:
            return None
        counts = self.scheduler.counts()
        done, total = counts.get("completed", 0), self.scheduler.total()
        now = time.monotonic()
        slots = list(self.slots.values())
        running = sorted(f"{slot.task_id} ({slot.role}, {(now - slot.started) / 60:.0f} min)" for slot in slots)
        stuck = sorted(slot.task_id for slot in slots if slot.stall_reported)
        failed = self.scheduler.failed()
        state = f"{counts}|{sorted(self.open_questions)}|{self.session_spent:.2f}|{sorted(s.task_id for s in slots)}"
        fingerprint = hashlib.sha256(state.encode()).hexdigest()
        if fingerprint == self.last_digest:
            return None  # nothing changed: no message
        self.last_digest = fingerprint
        lines = [
            f"Progress: {done}/{total} tasks done" + (f", {len(failed)} failed" if failed else ""),
            f"Spent: ${self.session_spent:.2f}",
            f"Running: {', '.join(running[:10]) if running else 'nothing'}",
        ]
        if stuck:
            lines.append(f"Stuck (no progress, no output): {', '.join(stuck)}")
        if self.open_questions:
            lines.append(f"Open questions: {', '.join(sorted(self.open_questions))}")
        hours = (now - self.started_at) / 3600
        return Notice(
            kind="digest",
            title=f"{self.session.session_id}: {done}/{total} after {hours:.1f} h",
            body="\n".join(lines),
            action=self._command("check"),
            session_id=self.session.session_id,
        )
