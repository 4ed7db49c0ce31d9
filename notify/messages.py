"""A :class:`~protocol.notify.Notice` as each channel shows it.

The Notice itself lives in :mod:`protocol.notify` (actors exchange it); this
module renders it: plain text (console, Apprise), Telegram HTML (escaped, with an
inline keyboard for an escalation), Discord markdown (escaped, no mentions), and
a JSON body for generic webhooks.  Each renderer keeps within its service's
length limit by cutting the body, never the title or the action.
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable
from typing import Any

import msgspec

from protocol.notify import NOTICE_KINDS, Notice, NoticeKind

__all__ = [
    "CALLBACK_PREFIX",
    "NOTICE_KINDS",
    "Notice",
    "NoticeKind",
    "callback_data",
    "discord_text",
    "parse_callback_data",
    "plain_text",
    "telegram_html",
    "telegram_keyboard",
    "webhook_payload",
]

#: Telegram's callback_data of an escalation button: ``esc:<escalation id>:<option>``.
CALLBACK_PREFIX = "esc"
_CALLBACK_MAX_BYTES = 64  # Telegram refuses longer callback_data
_TELEGRAM_MAX_CHARS = 4096
_DISCORD_MAX_CHARS = 2000
_SHORT_OPTION = 12  # up to 3 options this short share one row of buttons

_MARK: dict[str, str] = {
    "pipeline_complete": "✅",
    "task_failed": "❌",
    "escalation_opened": "❓",
    "budget_warning": "💸",
    "budget_stop": "🛑",
    "stall": "⏳",
    "recovery": "🔁",
    "capability_gap": "🧩",
    "consensus_blocked": "🤝",
    "digest": "📋",
    "key_disabled": "🔑",
}


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: max(0, limit - 1)].rstrip() + "…"


def _fit(text: str, escape: Callable[[str], str], budget: int) -> str:
    """``escape(text)``, cut so that the escaped text has at most ``budget`` characters.

    Escaping can grow a text (``&`` -> ``&amp;``): cut the plain text, escape, and cut
    it further in proportion to the overshoot until it fits (the limit shrinks each turn, so this ends).
    """
    limit = budget
    while limit > 0:
        shown = escape(_cut(text, limit))
        if len(shown) <= budget:
            return shown
        limit = min(limit - 1, limit * budget // len(shown))
    return ""


def _is_link(action: str) -> bool:
    return action.startswith(("https://", "http://"))


def plain_text(notice: Notice) -> str:
    """Title, body, action and session as plain lines (no markup)."""
    lines = [f"{_MARK.get(notice.kind, '•')} {notice.title}"]
    if notice.body:
        lines.append(notice.body)
    if notice.options:
        lines.append("Options: " + ", ".join(notice.options))
    if notice.action:
        lines.append(f"→ {notice.action}")
    if notice.session_id:
        lines.append(f"session: {notice.session_id}")
    return "\n".join(lines)


def telegram_html(notice: Notice) -> str:
    """The notice as Telegram ``parse_mode=HTML`` text: every piece of it escaped, at most 4096 characters."""
    head = f"<b>{html.escape(_MARK.get(notice.kind, '•') + ' ' + notice.title)}</b>"
    tail: list[str] = []
    if notice.action:
        shown = html.escape(notice.action)
        tail.append(shown if _is_link(notice.action) else f"<code>{shown}</code>")
    if notice.session_id:
        tail.append(f"<i>session {html.escape(notice.session_id)}</i>")
    fixed = len(head) + sum(len(part) + 2 for part in tail) + 2
    body = _fit(notice.body, html.escape, _TELEGRAM_MAX_CHARS - fixed)
    return "\n\n".join(part for part in (head, body, "\n".join(tail)) if part)[:_TELEGRAM_MAX_CHARS]


def callback_data(escalation_id: str, option: str) -> str | None:
    """``esc:ID:OPTION`` for a button, or ``None`` when it cannot be one (too long, or a ``:`` in the id)."""
    if ":" in escalation_id or not escalation_id or not option:
        return None
    data = f"{CALLBACK_PREFIX}:{escalation_id}:{option}"
    return data if len(data.encode()) <= _CALLBACK_MAX_BYTES else None


def parse_callback_data(data: Any) -> tuple[str, str] | None:
    """``(escalation_id, option)`` from a button's callback_data, or ``None`` for anything else."""
    if not isinstance(data, str):
        return None
    prefix, _, rest = data.partition(":")
    escalation_id, _, option = rest.partition(":")
    if prefix != CALLBACK_PREFIX or not escalation_id or not option:
        return None
    return escalation_id, option


def telegram_keyboard(notice: Notice) -> dict[str, Any] | None:
    """An ``inline_keyboard`` reply markup with one button per option, or ``None`` when there is nothing to press.

    Options whose callback_data would not fit are left out; the message's action
    line still says how to answer.
    """
    if notice.escalation_id is None or not notice.options:
        return None
    buttons = []
    for option in notice.options:
        data = callback_data(notice.escalation_id, option)
        if data is not None:
            buttons.append({"text": option, "callback_data": data})
    if not buttons:
        return None
    one_row = len(buttons) <= 3 and all(len(button["text"]) <= _SHORT_OPTION for button in buttons)
    return {"inline_keyboard": [buttons] if one_row else [[button] for button in buttons]}


_DISCORD_INLINE = re.compile(r"([\\*_~`|\[\]])")
_DISCORD_LINE_START = re.compile(r"^(\s*)([>#-])", re.MULTILINE)


def _discord_escape(text: str) -> str:
    # Agents write these texts: nothing in them may format or link (pings are off in the request).
    return _DISCORD_LINE_START.sub(r"\1\\\2", _DISCORD_INLINE.sub(r"\\\1", text))


def discord_text(notice: Notice) -> str:
    """The notice as Discord message content (markdown escaped), at most 2000 characters."""
    head = f"**{_discord_escape(_MARK.get(notice.kind, '•') + ' ' + notice.title)}**"
    tail: list[str] = []
    if notice.options:
        tail.append("Options: " + ", ".join(_discord_escape(option) for option in notice.options))
    if notice.action:
        # A code span shows the command as is; only a backtick could end it early.
        command = notice.action.replace("`", "'")
        tail.append(notice.action if _is_link(notice.action) else f"`{command}`")
    if notice.session_id:
        tail.append(f"*session {_discord_escape(notice.session_id)}*")
    fixed = len(head) + sum(len(part) + 1 for part in tail) + 2
    body = _fit(notice.body, _discord_escape, _DISCORD_MAX_CHARS - fixed)
    return "\n".join(part for part in (head, body, *tail) if part)[:_DISCORD_MAX_CHARS]


def webhook_payload(notice: Notice) -> dict[str, Any]:
    """The JSON body a generic webhook receives: every field of the notice plus ``text`` (plain)."""
    payload: dict[str, Any] = msgspec.to_builtins(notice)
    payload.pop("type", None)
    payload["text"] = plain_text(notice)
    return payload
