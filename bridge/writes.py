"""Writes queued to the Executor without waiting for it: an id at once, the outcome later.

A queued write is one message put in the Executor's inbox (a pykka ask that the
bridge does not block on), so the tool answers in the time it takes to validate
its arguments, however busy the dispatch path is.  The outcome is read when
someone asks for it (``get_write_status``): ``queued`` until the Executor has
handled the message, then ``applied`` with what it returned (a submitted task's
id) or ``refused`` with the reason, naming the argument at fault.

A request the Executor turns away only because the run is still starting is
sent again when its status is next asked for, so a write queued during start-up
is applied, not refused.  Ids live in the bridge's memory (the newest :data:`KEEP`
requests) and, when the bridge is a process of its own, in the run's too: a
replaced bridge process asks the run for an id it does not know
(``context.recall``).

And in the store: the run records each write as queued (:func:`actors.queued_writes.record_queued`, before
it reaches the Executor's inbox) and settles it in the transaction that applies it
(:mod:`actors.queued_writes`).  A run stopped (or killed) with writes still in its inbox
leaves them queued, and the next run applies them; an id nobody here remembers is read
back from the store, so its outcome outlives the run that took it, and a write is
applied once.
"""

from __future__ import annotations

import itertools
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import msgspec
import pykka
from mcp.server.mcpserver.exceptions import ToolError

from bridge.context import ActorLink, BridgeContext, NotRunnable, Recalled, Unavailable
from bridge.models import QueuedOut, WriteStatusOut
from protocol.bridge import QUEUED_WRITES, Refused
from protocol.records import QueuedWriteRow
from session.store import StoreError

__all__ = ["KEEP", "WriteQueue"]

#: How many requests the queue remembers; the oldest settled ones are forgotten first.
KEEP = 10_000

#: What turns the Executor's reply into the JSON a client reads back.
Convert = Callable[[Any], dict[str, Any]]

#: The state of a request whose Executor stopped before answering: the store says what became of it.
_LOST = "lost"


@dataclass
class _Request:
    id: str
    tool: str
    message: Any
    convert: Convert
    future: pykka.Future[Any] | None  # None: recalled from the run before it had the outcome
    queued_at: float
    recalled: bool = False
    state: str = "queued"
    result: dict[str, Any] | None = None
    error: str | None = None


class WriteQueue:
    """Hands writes to the Executor and remembers each one's outcome by its request id."""

    def __init__(self, context: BridgeContext, keep: int = KEEP) -> None:
        self.context = context
        self.keep = keep
        self._requests: OrderedDict[str, _Request] = OrderedDict()
        self._lock = threading.Lock()
        # A per-process prefix: two bridges (or one restarted) never hand out the same id.
        self._prefix = secrets.token_hex(3)
        self._numbers = itertools.count(1)
        self._converters: dict[str, Convert] = {}

    def register(self, tool: str, convert: Convert) -> None:
        """How ``tool``'s outcome is shown: known before any write, for ids recalled from the run."""
        self._converters[tool] = convert

    def enqueue(self, tool: str, message: Any, convert: Convert) -> QueuedOut:
        """Put ``message`` in the Executor's inbox; raises a ToolError only if no run can take it."""
        if self.context.unusable is not None:
            raise NotRunnable(self.context.unusable)
        ref = self.context.executor()
        if ref is None:
            raise Unavailable("the executor is still starting; try again in a moment")
        self._converters.setdefault(tool, convert)
        with self._lock:
            request_id = f"W-{self._prefix}-{next(self._numbers):06d}"
        message = msgspec.structs.replace(message, write_id=request_id)  # its outcome is recorded under the id
        request = _Request(request_id, tool, message, convert, None, time.time())
        request.future = self._send(ref, request)
        with self._lock:
            self._requests[request_id] = request
            self._forget_oldest()
        return QueuedOut(
            request_id=request_id,
            tool=tool,
            state="queued",
            note=f"queued for the executor; get_write_status(request_id='{request_id}') gives the outcome",
        )

    def status(self, request_id: str) -> WriteStatusOut:
        with self._lock:
            request = self._requests.get(request_id)
        if request is None or (request.recalled and request.future is None):
            request = self._recall(request_id)
        if request is not None:
            self._settle(request)
            if request.state != _LOST:
                return _status(
                    request.id, request.tool, request.queued_at, request.state, request.result, request.error
                )
        stored = self._stored(request_id)
        if stored is not None:
            return self._status_of(stored)
        if request is not None:  # not in the store (it could not be recorded): what the bridge saw
            why = "the executor stopped before it handled this write"
            return _status(request.id, request.tool, request.queued_at, "refused", None, why)
        raise ToolError(
            f"request_id: no queued write '{request_id}' in this session (a request id is what a queue_* "
            "tool returned; list_tasks shows what the session holds)"
        )

    # --- internals ------------------------------------------------------------------------

    def _recall(self, request_id: str) -> _Request | None:
        """A write this bridge process does not know (or knew only as pending), as the run remembers it."""
        if self.context.recall is None:
            return None
        try:
            recalled: Recalled | None = self.context.recall(request_id)
        except (pykka.ActorDeadError, pykka.Timeout):
            recalled = None
        if recalled is None:
            return None
        convert = self._converters.get(recalled.tool, _as_fields)
        request = _Request(
            request_id, recalled.tool, recalled.message, convert, recalled.future, recalled.queued_at, recalled=True
        )
        with self._lock:
            self._requests[request_id] = request
            self._forget_oldest()
        return request

    def _send(self, ref: ActorLink, request: _Request) -> pykka.Future[Any]:
        """Into the Executor's inbox; the run records it as queued first (``ask_queued``: a bridge
        process's link; a plain actor ref, in a test, only hands it over)."""
        ticket = (request.id, request.tool, request.queued_at)
        try:
            ask_queued = getattr(ref, "ask_queued", None)
            if ask_queued is not None:
                queued: pykka.Future[Any] = ask_queued(request.message, ticket)
                return queued
            future: pykka.Future[Any] = ref.ask(request.message, block=False)
            return future
        except pykka.ActorDeadError:
            raise Unavailable("the executor is not running (the run has ended or is restarting it)") from None

    def _settle(self, request: _Request) -> None:
        """Read the Executor's reply if it has come (never waits for it)."""
        with self._lock:
            if request.state != "queued" or request.future is None:
                return
            try:
                reply = request.future.get(timeout=0)
            except pykka.Timeout:
                return  # still in the Executor's inbox
            except pykka.ActorDeadError:
                request.state = _LOST  # kept queued in the store: the next run applies it
                return
            except Exception as error:  # noqa: BLE001 - a handler's failure is this write's outcome
                request.state, request.error = "refused", f"the executor failed on this write: {error}"
                return
            if isinstance(reply, Refused) and reply.retry_later:
                ref = self.context.executor()
                if ref is not None:  # the run was starting: send it again rather than refuse it
                    try:
                        request.future = self._send(ref, request)
                    except Unavailable:
                        request.state, request.error = "refused", "the executor is not running"
                return
            if isinstance(reply, Refused):
                request.state = "refused"
                request.error = f"{reply.argument}: {reply.reason}" if reply.argument else reply.reason
                return
            request.state, request.result = "applied", request.convert(reply)

    def _stored(self, request_id: str) -> QueuedWriteRow | None:
        """The write as the store has it (recorded by this run or an earlier one), or None."""
        try:
            return self.context.reader().queued_write(request_id)
        except (ToolError, StoreError):
            return None  # no state yet, or a store that cannot be read: as good as unknown

    def _status_of(self, row: QueuedWriteRow) -> WriteStatusOut:
        result: dict[str, Any] | None = None
        kinds = QUEUED_WRITES.get(row.tool)
        if row.state == "applied" and row.reply_json is not None and kinds is not None:
            try:
                reply = msgspec.json.decode(row.reply_json, type=kinds[1])
            except msgspec.DecodeError:  # a damaged record: the state stands, what it did is unknown
                reply = None
            result = self._converters.get(row.tool, _as_fields)(reply) if reply is not None else None
        error = row.error
        if row.state == "queued":
            error = None  # not handled yet: by this run soon, or by the next (executor resume) if it stopped
        return _status(row.id, row.tool, row.queued_at, row.state, result, error)

    def _forget_oldest(self) -> None:  # with the lock held
        while len(self._requests) > self.keep:
            self._requests.popitem(last=False)


def _as_fields(reply: Any) -> dict[str, Any]:
    """A reply of a tool this bridge has no converter for: its fields."""
    fields: dict[str, Any] = msgspec.to_builtins(reply)
    return fields


def _status(
    request_id: str, tool: str, queued_at: float, state: str, result: dict[str, Any] | None, error: str | None
) -> WriteStatusOut:
    return WriteStatusOut(
        request_id=request_id,
        tool=tool,
        state=state,
        result=result,
        error=error,
        queued_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(queued_at)),
    )
