"""Asking the user for a key when a provider has none left, and reading the answer.

When every key of a provider is disabled (or there never was one), an attempt does
not fail: it opens one question per provider ("add a key") and waits for a key to
join the pool.  The question's answer ``fail`` gives up; a key added answers it
``added``.  These functions decide from the escalation rows alone, so the waiting
attempt (a worker thread) and the tests use the same rules.
"""

from __future__ import annotations

from collections.abc import Iterable

from protocol.bridge import KEY_REQUEST, EscalateDecision
from protocol.records import EscalationRow

__all__ = ["ADDED", "GIVE_UP", "answered_ids", "asked_by", "give_up_reason", "key_question", "open_request"]

ADDED = "added"
GIVE_UP = "fail"


def asked_by(provider: str) -> str:
    """The ``opened_by`` of the question about ``provider``: one open question per provider."""
    return f"{KEY_REQUEST}{provider}"


def key_question(provider: str, reason: str, task_id: str) -> EscalateDecision:
    """The question for the user: the exact command and the MCP tool that add a key."""
    return EscalateDecision(
        issue=(
            f"no usable {provider} key ({reason[:300]}); {task_id} waits for one: add one with "
            f"`executor keys add {provider}` (or the MCP tool add_api_key) and the run takes it at once, "
            f"or answer `{GIVE_UP}` to fail the tasks that wait"
        ),
        options=(ADDED, GIVE_UP),
        task_id=None,  # about the provider, not one task: every task that waits shares it
        opened_by=asked_by(provider),
        hold=False,
    )


def open_request(rows: Iterable[EscalationRow], provider: str) -> EscalationRow | None:
    """The open question about ``provider``, if any."""
    return next((row for row in rows if row.status == "open" and row.opened_by == asked_by(provider)), None)


def give_up_reason(rows: Iterable[EscalationRow], provider: str, seen: frozenset[str]) -> str | None:
    """Why to stop waiting: a question about ``provider`` answered ``fail`` that was not
    already answered when the attempt asked (``seen``: the ids answered then), else None."""
    for row in rows:
        mine = row.opened_by == asked_by(provider) and row.status == "answered" and row.id not in seen
        if mine and row.choice == GIVE_UP:
            who = row.answered_by or "the user"
            return f"no usable {provider} key: {row.id} was answered {GIVE_UP!r} by {who}"
    return None


def answered_ids(rows: Iterable[EscalationRow], provider: str) -> frozenset[str]:
    """The questions about ``provider`` already answered (an attempt that asks now ignores them)."""
    return frozenset(row.id for row in rows if row.opened_by == asked_by(provider) and row.status == "answered")
