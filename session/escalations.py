"""Answering a question for the user, in the store: one rule for the running tree and the CLI.

The Session actor uses it while a run goes on; ``executor answer`` and the MCP
bridge of a session that cannot run use :func:`answer_from_outside`: through the
session's inbox when a run is live, else directly in the store under the session
lock, so the next run finds the question answered.
"""

from __future__ import annotations

from pathlib import Path

import msgspec

from protocol.bridge import Refused
from protocol.events import EscalationAnswered
from protocol.records import EscalationRow
from session import inbox
from session.lock import SessionBusy, SessionLock, read_holder
from session.store import Store, StoreError, utc_now

__all__ = ["REPLY_WAIT_S", "answer_from_outside", "answer_in_store"]

#: How long an answer handed to a live run waits for the run to take it.
REPLY_WAIT_S = 15.0


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


def answer_from_outside(
    folder: Path, escalation_id: str, choice: str, answered_by: str, wait_s: float = REPLY_WAIT_S
) -> tuple[bool, str]:
    """Answer from a process that is not the run: (whether it was recorded, a message for people).

    A live run gets the answer through its inbox (it replies within a tick); with none,
    the answer is written to the store under the session lock."""
    if read_holder(folder) is not None:
        name = inbox.post(folder, {"kind": "answer", "id": escalation_id, "choice": choice, "by": answered_by})
        reply = inbox.wait_reply(folder, name, wait_s)
        if reply is None:
            return False, (
                f"the running executor did not take the answer within {wait_s:g}s; it stays in "
                f"{inbox.inbox_dir(folder)} and is carried out when the run reads it"
            )
        return bool(reply.get("ok")), str(reply.get("message", ""))
    lock = SessionLock(folder)
    try:
        lock.acquire("answer")
    except SessionBusy as error:
        return False, str(error)
    try:
        store = Store.open(folder)
    except StoreError as error:
        lock.release()
        return False, str(error)
    try:
        answered = answer_in_store(store, escalation_id, choice, answered_by)
    finally:
        store.close()
        lock.release()
    if isinstance(answered, EscalationRow):
        return True, f"{answered.id} answered: {answered.choice} (the next run goes on from there)"
    return False, answered.reason
