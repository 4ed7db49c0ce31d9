"""The Executor's side of the Notifier: callbacks from its threads, and the digest.

Notices themselves are :class:`pipeline.effects.NotifyUser` effects, sent by the Executor
once its turn is committed.  The Notifier calls back from its own threads: a dropped
notice and a digest request come in as messages; a button press answers its question
like any other answer.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

import pykka

from pipeline.core import Pipeline
from protocol.bridge import AnswerEscalation, Refused
from protocol.messages import BuildDigest, NoticeDropped
from protocol.notify import Notice

if TYPE_CHECKING:  # types only: the Telegram poller (asyncio, httpx) loads only when it polls
    from notify.sender import DropCallback
    from notify.telegram_poll import AnswerCallback

__all__ = ["NOTIFIER", "NotifierCallbacks", "build_digest", "notifier_callbacks"]

NOTIFIER = "notifier"


@dataclass(frozen=True)
class NotifierCallbacks:
    on_dropped: DropCallback
    on_answer: AnswerCallback
    digest: Callable[[], Notice | None]


def notifier_callbacks(executor: pykka.ActorRef[Any]) -> NotifierCallbacks:
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
            notice = cast("Notice | None", executor.ask(BuildDigest(), timeout=5))
        except (pykka.Timeout, pykka.ActorDeadError):
            return None
        return notice

    return NotifierCallbacks(on_dropped=on_dropped, on_answer=on_answer, digest=digest)


def build_digest(core: Pipeline, session_id: str, now: float, last: str) -> tuple[Notice | None, str]:
    """The periodic digest and its fingerprint; no notice when nothing changed since ``last``."""
    table = core.table
    counts = table.counts()
    done, total = counts.get("completed", 0), table.total()
    attempts = list(core.attempts.values())
    running = sorted(f"{a.task_id} ({a.role}, {(now - a.started) / 60:.0f} min)" for a in attempts)
    stuck = sorted(a.task_id for a in attempts if a.stall_reported)
    failed = table.failed()
    questions = sorted(core.questions.open)
    spent = core.ledger.session_spent
    state = f"{counts}|{questions}|{spent:.2f}|{sorted(a.task_id for a in attempts)}"
    fingerprint = hashlib.sha256(state.encode()).hexdigest()
    if fingerprint == last:
        return None, last  # nothing changed: no message
    lines = [
        f"Progress: {done}/{total} tasks done" + (f", {len(failed)} failed" if failed else ""),
        f"Spent: ${spent:.2f}",
        f"Running: {', '.join(running[:10]) if running else 'nothing'}",
    ]
    if stuck:
        lines.append(f"Stuck (no progress, no output): {', '.join(stuck)}")
    if questions:
        lines.append(f"Open questions: {', '.join(questions)}")
    hours = (now - core.started_at) / 3600
    notice = Notice(
        kind="digest",
        title=f"{session_id}: {done}/{total} after {hours:.1f} h",
        body="\n".join(lines),
        action=core.config.command("check"),
        session_id=session_id,
    )
    return notice, fingerprint
