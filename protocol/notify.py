"""Messages of the Notifier actor: what to tell the user, and what the Notifier can show of itself.

A :class:`Notice` is one message for the user, written once and rendered by each
channel (Telegram HTML, Discord markdown, a JSON webhook body, a console line).
Nothing here holds a token or a webhook URL: :class:`ChannelState` names a
channel and shows its target redacted.

Depends on nothing else in the project.
"""

from __future__ import annotations

from typing import Literal, get_args

from protocol._base import Message

__all__ = [
    "NOTICE_KINDS",
    "ChannelState",
    "GetNotifierState",
    "Notice",
    "NoticeKind",
    "NotifierState",
    "Notify",
]

#: What a notice is about.  ``[notify] events`` picks the kinds that are sent.
NoticeKind = Literal[
    "pipeline_complete",
    "task_failed",
    "escalation_opened",
    "budget_warning",
    "budget_stop",
    "stall",
    "recovery",
    "capability_gap",
    "consensus_blocked",
    "digest",
    "key_disabled",  # the provider refused an API key: the pool stopped using it
]
NOTICE_KINDS: tuple[NoticeKind, ...] = get_args(NoticeKind)


class Notice(Message, frozen=True):
    """One message for the user.

    ``body`` is plain text that fits on one screen (channels cut a longer one);
    ``action`` is what to do about it: a command (``executor answer ESC-001 approve
    --session /x``) or a link.  An ``escalation_opened`` notice names its
    ``escalation_id`` and ``options``: Telegram shows one button per option.
    """

    kind: NoticeKind
    title: str
    body: str = ""
    action: str | None = None
    escalation_id: str | None = None
    options: tuple[str, ...] = ()
    session_id: str | None = None


class Notify(Message, frozen=True):
    """Send ``notice`` on every channel (tell; never blocks the sender, never fails it)."""

    notice: Notice


class GetNotifierState(Message, frozen=True):
    """Ask for a :class:`NotifierState`."""


class ChannelState(Message, frozen=True):
    """One channel's counters.  ``target`` is redacted (no token, no webhook path).

    ``sent``: notices delivered; ``failed``: attempts that failed (a retried notice
    counts once per failure); ``dropped``: notices given up on (each reported to
    ``on_dropped``); ``queued``: waiting now.
    """

    name: str
    kind: str
    target: str
    sent: int = 0
    failed: int = 0
    dropped: int = 0
    queued: int = 0
    last_error: str | None = None
    last_error_at: float | None = None  # wall-clock seconds


class NotifierState(Message, frozen=True):
    """The reply to :class:`GetNotifierState`.

    ``skipped``: notices of kinds ``[notify] events`` leaves out; ``answers``: button
    presses handed to the answer callback; ``warnings``: why a configured channel is
    off (a token variable not set, ...).
    """

    channels: tuple[ChannelState, ...] = ()
    skipped: int = 0
    polling: bool = False
    answers: int = 0
    warnings: tuple[str, ...] = ()
