"""Queued writes on the run's side: how one is settled, and how one left queued is redone.

A ``queue_*`` MCP tool puts its message (with the request id as ``write_id``) in the
Executor's inbox and records it in the store as queued.  The record that applies it
settles it in the same transaction (:mod:`actors.session`); the Executor settles the rest
(a refusal, a cancel that stops a running attempt) with :func:`settlement`.  A run that
stops before handling one leaves it queued in the store, and the next run handles it
(:func:`redo`), so each is applied once.
"""

from __future__ import annotations

import contextlib
from typing import Any, Protocol

import msgspec
import pykka

from protocol._base import Message
from protocol.bridge import QUEUED_WRITES, Refused
from protocol.messages import RecordQueuedWrite, SettleWrite
from protocol.records import QueuedWriteRow

__all__ = ["record_queued", "redo", "settlement", "tool_of"]


class _Teller(Protocol):
    def tell(self, message: Any) -> None: ...


def record_queued(session: _Teller | None, ticket: tuple[str, str, float], message: Message) -> None:
    """Before ``message`` goes into the Executor's inbox: keep it in the store as queued (the
    Session actor's next commit, a few milliseconds), so a run that stops before handling it
    leaves it for the next run.  Without a Session actor (it is restarting) the write is still
    applied, only not kept should the run stop first."""
    if session is None:
        return
    request_id, tool, queued_at = ticket
    record = RecordQueuedWrite(
        write_id=request_id, tool=tool, message_json=msgspec.json.encode(message).decode(), queued_at=queued_at
    )
    with contextlib.suppress(pykka.ActorDeadError):
        session.tell(record)


def tool_of(kind: type[Message]) -> str:
    """The queue_* tool that sends messages of ``kind``."""
    return next((tool for tool, (sent, _) in QUEUED_WRITES.items() if sent is kind), kind.__name__)


def settlement(write_id: str, message: Message, reply: Any = None, error: str | None = None) -> SettleWrite:
    """How the Executor handled queued write ``write_id``: ``reply`` (a :class:`Refused` is a
    refusal, naming the argument at fault), or ``error`` when the handler failed."""
    if error is None and isinstance(reply, Refused):
        error = f"{reply.argument}: {reply.reason}" if reply.argument else reply.reason
    reply_json = msgspec.json.encode(reply).decode() if error is None and reply is not None else None
    return SettleWrite(write_id=write_id, tool=tool_of(type(message)), reply_json=reply_json, error=error)


def redo(write: QueuedWriteRow) -> Message:
    """The message of a write a stopped run left queued, to be handled now; or, for one that
    cannot be read back (a tool this version does not know, a damaged record), its refusal."""
    kinds = QUEUED_WRITES.get(write.tool)
    if kinds is None or write.message_json is None:
        why = f"unknown tool {write.tool!r}" if kinds is None else "its message was not recorded"
        return SettleWrite(write_id=write.id, tool=write.tool, error=f"not applied after a restart: {why}")
    try:
        message = msgspec.json.decode(write.message_json, type=kinds[0])
    except msgspec.DecodeError as error:  # not JSON, or not this tool's message (ValidationError)
        return SettleWrite(write_id=write.id, tool=write.tool, error=f"not applied after a restart: {error}")
    return msgspec.structs.replace(message, write_id=write.id)
