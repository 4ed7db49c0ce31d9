"""The Executor's line to the Session actor (the only writer): tell, ask, and recover.

With a :class:`DirectLine` the Executor's records and questions do not travel through the
Session's mailbox: its handlers run on the Executor's thread (:meth:`SessionActor.call`,
under the Session's lock; its own thread serves the others, the bridge's queued writes).
A handler that fails there is the Session actor's crash: it is stopped and restarted.

A Session actor that died is restarted on demand, once, and the running attempts' records
are sent to it again (they are idempotent); when even that fails the caller gets
:class:`StateWriteFailed` and the run stops with that reason.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

import pykka

from actors.supervision import Escalate, Supervisor
from protocol._base import Message
from protocol.events import Event, ServiceRestarted
from protocol.messages import RecordEvents

__all__ = ["SESSION", "DirectLine", "SessionLink", "StateWriteFailed"]

log = logging.getLogger("executor.root")

SESSION = "session"
ASK_TIMEOUT_S = 30.0


class StateWriteFailed(Exception):
    """The Session actor could not record a transition even after a restart."""


class _HandlerFailed(Exception):
    """A Session handler called on the Executor's thread raised (the actor's crash)."""


class DirectCallee(Protocol):
    """What the Executor calls on the Session actor from its own thread."""

    @property
    def actor_ref(self) -> pykka.ActorRef[Any]: ...

    def call(self, message: Message) -> Any: ...

    def commit_open_batch(self) -> None: ...


class DirectLine:
    """Where the Session actor of the moment is, for calls from the Executor's thread.  Each
    Session actor attaches itself once it has started (its store open)."""

    def __init__(self) -> None:
        self._actor: DirectCallee | None = None
        self._changed = threading.Condition()

    def attach(self, actor: DirectCallee) -> None:
        with self._changed:
            self._actor = actor
            self._changed.notify_all()

    def actor_for(self, ref: pykka.ActorRef[Any], timeout_s: float = ASK_TIMEOUT_S) -> DirectCallee:
        """The actor behind ``ref``, once it has started; raises ``ActorDeadError`` if it died
        first, ``Timeout`` if it takes longer than ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        with self._changed:
            while self._actor is None or self._actor.actor_ref != ref:
                if ref.actor_stopped.is_set():
                    raise pykka.ActorDeadError(f"{ref} stopped before it started")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise pykka.Timeout(f"{ref} did not start within {timeout_s:.0f} s")
                self._changed.wait(min(left, 0.05))
            return self._actor


class SessionLink:
    def __init__(
        self,
        supervisor: Supervisor,
        running_records: Callable[[], list[Message]],
        direct: DirectLine | None = None,
    ) -> None:
        self.supervisor = supervisor
        self.running_records = running_records
        self.direct = direct

    def ref(self) -> pykka.ActorRef[Any]:
        ref = self.supervisor.ref(SESSION)
        if ref is None or ref.actor_stopped.is_set():
            ref = self.restart_now(SESSION)
        return ref

    def restart_now(self, name: str) -> pykka.ActorRef[Any]:
        incarnation = self.supervisor.incarnation(name) or 1
        decision = self.supervisor.child_exited(name, incarnation, abnormal=True)
        if isinstance(decision, Escalate):
            raise StateWriteFailed(decision.reason)
        ref = self.supervisor.restart(name, incarnation)
        if ref is None:
            raise StateWriteFailed(f"{name} could not be restarted")
        self.record(ServiceRestarted(name=name, restarts=incarnation, error="restarted on demand"))
        if name == SESSION:
            self.resync(ref)
        return ref

    def resync(self, ref: pykka.ActorRef[Any]) -> None:
        """A restarted Session actor lost its uncommitted batch: send the running
        attempts' records again (they are idempotent)."""
        for message in self.running_records():
            ref.tell(message)

    def ask(self, message: Message) -> Any:
        """Ask the Session actor; after one failure, restart it and ask once more."""
        for attempt in (1, 2):
            ref = self.ref()
            try:
                if self.direct is not None:
                    return self._call(ref, message)
                return ref.ask(message, timeout=ASK_TIMEOUT_S)
            except (pykka.ActorDeadError, pykka.Timeout, _HandlerFailed) as error:
                if attempt == 2:
                    raise StateWriteFailed(
                        f"the Session actor did not record {type(message).__name__}: {error}"
                    ) from error
                self.restart_now(SESSION)
        raise AssertionError("unreachable")

    def tell(self, message: Message) -> None:
        try:
            ref = self.ref()
            if self.direct is not None:
                self._call(ref, message)
            else:
                ref.tell(message)
        except (pykka.ActorDeadError, pykka.Timeout):
            log.warning("session actor gone; %s dropped", type(message).__name__)
        except _HandlerFailed:
            self.restart_now(SESSION)  # the message it failed on is lost, as with a crash in its mailbox

    def commit_open_batch(self) -> None:
        """Commit what the direct calls left uncommitted (the Executor is idle: nothing more is
        coming for the batch).  A Session behind a mailbox commits when its mailbox is empty."""
        if self.direct is None:
            return
        ref = self.supervisor.ref(SESSION)
        if ref is None or ref.actor_stopped.is_set():
            return
        try:
            self.direct.actor_for(ref).commit_open_batch()
        except (pykka.ActorDeadError, pykka.Timeout):
            return
        except Exception as error:  # noqa: BLE001 - the store failed: the Session crashed, as in _call
            self._stop_failed(ref, error, "committing")

    def _call(self, ref: pykka.ActorRef[Any], message: Message) -> Any:
        """The Session's handler for ``message``, on this thread; its failure is the actor's crash."""
        assert self.direct is not None  # noqa: S101 - only called with a direct line
        actor = self.direct.actor_for(ref)
        try:
            return actor.call(message)
        except pykka.ActorDeadError:
            raise
        except Exception as error:
            self._stop_failed(ref, error, type(message).__name__)
            raise _HandlerFailed(f"{type(error).__name__}: {error}") from error

    def _stop_failed(self, ref: pykka.ActorRef[Any], error: Exception, what: str) -> None:
        log.error("session: failed on %s: %s: %s", what, type(error).__name__, error)
        ref.stop(block=False)  # it commits what it can and closes its store on its own thread

    def record(self, *events: Event, meta: dict[str, str] | None = None) -> None:
        """Log events (best effort: never restarts the Session for them)."""
        ref = self.supervisor.ref(SESSION)
        if ref is None or ref.actor_stopped.is_set():
            return
        message = RecordEvents(events=events, meta=meta or {})
        if self.direct is None:
            ref.tell(message)
            return
        with contextlib.suppress(pykka.ActorDeadError, pykka.Timeout, _HandlerFailed):
            self._call(ref, message)  # in order with the other records of this thread
