"""Writes queued to the Executor without waiting for it: an id at once, the outcome later.

A queued write is one message put in the Executor's inbox (a pykka ask that the
bridge does not block on), so the tool answers in the time it takes to validate
its arguments, however busy the dispatch path is.  The outcome is read when
someone asks for it (``get_write_status``): ``queued`` until the Executor has
handled the message, then ``applied`` with what it returned (a submitted task's
id) or ``refused`` with the reason, naming the argument at fault.

A request the Executor turns away only because the run is still starting is
sent again when its status is next asked for, so a write queued during start-up
is applied, not refused.  Ids live in this bridge process's memory (the newest
:data:`KEEP` requests); what a write did is durable in the store like any other
change (a submitted task is in ``list_tasks`` and the event log).
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

import pykka
from mcp.server.mcpserver.exceptions import ToolError

from bridge.context import ActorLink, BridgeContext, NotRunnable, Unavailable
from bridge.models import QueuedOut, WriteStatusOut
from protocol.bridge import Refused

__all__ = ["KEEP", "WriteQueue"]

#: How many requests the queue remembers; the oldest settled ones are forgotten first.
KEEP = 10_000

#: What turns the Executor's reply into the JSON a client reads back.
Convert = Callable[[Any], dict[str, Any]]


@dataclass
class _Request:
    id: str
    tool: str
    message: Any
    convert: Convert
    future: pykka.Future[Any]
    queued_at: float
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

    def enqueue(self, tool: str, message: Any, convert: Convert) -> QueuedOut:
        """Put ``message`` in the Executor's inbox; raises a ToolError only if no run can take it."""
        if self.context.unusable is not None:
            raise NotRunnable(self.context.unusable)
        ref = self.context.executor()
        if ref is None:
            raise Unavailable("the executor is still starting; try again in a moment")
        future = self._send(ref, message)
        with self._lock:
            request_id = f"W-{self._prefix}-{next(self._numbers):06d}"
            self._requests[request_id] = _Request(request_id, tool, message, convert, future, time.time())
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
        if request is None:
            raise ToolError(
                f"request_id: no queued write '{request_id}' in this bridge (ids are kept in memory for the "
                f"newest {self.keep} writes; a restarted bridge has forgotten older ones — list_tasks shows "
                "what was applied)"
            )
        self._settle(request)
        return WriteStatusOut(
            request_id=request.id,
            tool=request.tool,
            state=request.state,
            result=request.result,
            error=request.error,
            queued_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(request.queued_at)),
        )

    # --- internals ------------------------------------------------------------------------

    @staticmethod
    def _send(ref: ActorLink, message: Any) -> pykka.Future[Any]:
        try:
            future: pykka.Future[Any] = ref.ask(message, block=False)
            return future
        except pykka.ActorDeadError:
            raise Unavailable("the executor is not running (the run has ended or is restarting it)") from None

    def _settle(self, request: _Request) -> None:
        """Read the Executor's reply if it has come (never waits for it)."""
        with self._lock:
            if request.state != "queued":
                return
            try:
                reply = request.future.get(timeout=0)
            except pykka.Timeout:
                return  # still in the Executor's inbox
            except pykka.ActorDeadError:
                request.state, request.error = "refused", "the executor stopped before it handled this write"
                return
            except Exception as error:  # noqa: BLE001 - a handler's failure is this write's outcome
                request.state, request.error = "refused", f"the executor failed on this write: {error}"
                return
            if isinstance(reply, Refused) and reply.retry_later:
                ref = self.context.executor()
                if ref is not None:  # the run was starting: send it again rather than refuse it
                    try:
                        request.future = ref.ask(request.message, block=False)
                    except pykka.ActorDeadError:
                        request.state, request.error = "refused", "the executor is not running"
                return
            if isinstance(reply, Refused):
                request.state = "refused"
                request.error = f"{reply.argument}: {reply.reason}" if reply.argument else reply.reason
                return
            request.state, request.result = "applied", request.convert(reply)

    def _forget_oldest(self) -> None:
        while len(self._requests) > self.keep:
            self._requests.popitem(last=False)
