"""Answering a question for the user, in the store: one rule for the running tree and the CLI.

The Session actor uses it while a run goes on; ``executor answer`` uses it
directly (holding the session lock) when no run is live, so the next run
finds the question answered.
"""

from __future__ import annotations

import msgspec

from protocol.bridge import Refused
from protocol.events import EscalationAnswered
from protocol.records import EscalationRow
from session.store import Store, utc_now

__all__ = ["answer_in_store"]


def answer_in_store(store: Store, escalation_id: str, choice: str, answered_by: str) -> EscalationRow | Refused:
    """Record ``choice`` for ``escalation_id`` (with who and when), or say why not."""
    row = store.escalation(escalation_id)
    if row is None:
        return Refused(reason=f"no escalation '{escalation_id}' in this session", argument="id")
    if row.status != "open":
        return Refused(
            reason=f"{row.id} was already answered ({row.choice!r} by {row.answered_by} at {row.answered_at})",
            argument="id",
        )
    if row.options and choice not in row.options:
        return Refused(
            reason=f"{choice!r} is not one of the options of {row.id}: {', '.join(row.options)}", argument="choice"
        )
    answered = msgspec.structs.replace(
        row, status="answered", choice=choice, answered_by=answered_by, answered_at=utc_now()
    )
    with store.transaction():
        store.put_escalation(answered)
        store.append(
            EscalationAnswered(escalation_id=row.id, choice=choice, answered_by=answered_by), task_id=row.task_id
        )
    return answered
