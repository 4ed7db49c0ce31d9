"""The Executor's line to the Session actor (the only writer): tell, ask, and recover.

A Session actor that died is restarted on demand, once, and the running attempts' records
are sent to it again (they are idempotent); when even that fails the caller gets
:class:`StateWriteFailed` and the run stops with that reason.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import pykka

from actors.supervision import Escalate, Supervisor
from protocol._base import Message
from protocol.events import Event, ServiceRestarted
from protocol.messages import RecordEvents

__all__ = ["SESSION", "SessionLink", "StateWriteFailed"]

log = logging.getLogger("executor.root")

SESSION = "session"
ASK_TIMEOUT_S = 30.0


class StateWriteFailed(Exception):
    """The Session actor could not record a transition even after a restart."""


class SessionLink:
    def __init__(self, supervisor: Supervisor, running_records: Callable[[], list[Message]]) -> None:
        self.supervisor = supervisor
        self.running_records = running_records

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
                return ref.ask(message, timeout=ASK_TIMEOUT_S)
            except (pykka.ActorDeadError, pykka.Timeout) as error:
                if attempt == 2:
                    raise StateWriteFailed(
                        f"the Session actor did not record {type(message).__name__}: {error}"
                    ) from error
                self.restart_now(SESSION)
        raise AssertionError("unreachable")

    def tell(self, message: Message) -> None:
        try:
            self.ref().tell(message)
        except pykka.ActorDeadError:
            log.warning("session actor gone; %s dropped", type(message).__name__)

    def record(self, *events: Event, meta: dict[str, str] | None = None) -> None:
        """Log events (best effort: never restarts the Session for them)."""
        ref = self.supervisor.ref(SESSION)
        if ref is not None and not ref.actor_stopped.is_set():
            ref.tell(RecordEvents(events=events, meta=meta or {}))
