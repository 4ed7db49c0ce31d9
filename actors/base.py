"""The base of every actor in the tree.

A :class:`TreeActor` receives protocol Structs only and dispatches them by
type to methods registered with :func:`handles`.  It tells its parent when it
stops (normally or not) with :class:`protocol.messages.ChildExited`, so a
supervisor learns of every death its hooks can report; the supervisor's
backstop covers the rest.

Threads are daemons: a wedged actor (an agent call that never returns) must
not keep the process alive after an orderly shutdown has given up on it.
"""

from __future__ import annotations

import contextlib
import logging
import traceback
from collections.abc import Callable
from types import TracebackType
from typing import Any, ClassVar, TypeVar

import pykka

from protocol._base import Message
from protocol.messages import ChildExited

__all__ = ["TreeActor", "UnknownMessage", "handles"]

log = logging.getLogger("executor.actors")

_M = TypeVar("_M", bound=Message)
_Handler = Callable[[Any, Any], Any]


class UnknownMessage(TypeError):
    """An actor received a message type it has no handler for (a programming error)."""


def handles(message_type: type[_M]) -> Callable[[_Handler], _Handler]:
    """Mark a method as the handler of ``message_type``."""

    def mark(method: _Handler) -> _Handler:
        # A marker on the function object, read back when the actor builds its dispatch table.
        method.__handles__ = message_type  # type: ignore[attr-defined]
        return method

    return mark


class TreeActor(pykka.ThreadingActor):
    use_daemon_thread = True
    _handlers: ClassVar[dict[type[Message], str]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        handlers: dict[type[Message], str] = {}
        for klass in reversed(cls.__mro__):
            for name, value in vars(klass).items():
                message_type = getattr(value, "__handles__", None)
                if message_type is not None:
                    handlers[message_type] = name
        cls._handlers = handlers

    def __init__(self, name: str, parent: pykka.ActorRef[Any] | None = None, incarnation: int = 1) -> None:
        super().__init__()
        self.name = name
        self.parent = parent
        self.incarnation = incarnation

    # --- hooks subclasses use -----------------------------------------------------

    def started(self) -> None:
        """Runs on the actor's thread before any message; raising stops the actor."""

    def stopping(self) -> None:
        """Runs on the actor's thread when it stops, normally or after a crash."""

    # --- pykka plumbing --------------------------------------------------------------

    def on_start(self) -> None:
        try:
            self.started()
        except Exception as error:
            self._tell_parent(abnormal=True, error=f"failed to start: {type(error).__name__}: {error}")
            raise

    def on_receive(self, message: Any) -> Any:
        name = self._handlers.get(type(message))
        if name is None:
            raise UnknownMessage(f"{self.name} cannot handle {type(message).__name__}")
        return getattr(self, name)(message)

    def on_stop(self) -> None:
        try:
            self.stopping()
        finally:
            self._tell_parent(abnormal=False)

    def on_failure(
        self,
        exception_type: type[BaseException] | None,
        exception_value: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            self.stopping()
        except Exception:
            log.exception("%s: clean-up after a crash failed", self.name)
        summary = "".join(traceback.format_exception_only(exception_type, exception_value)).strip()
        self._tell_parent(abnormal=True, error=summary)

    def _tell_parent(self, abnormal: bool, error: str | None = None) -> None:
        if self.parent is None:
            return
        with contextlib.suppress(pykka.ActorDeadError):  # the parent is gone too: nobody left to tell
            self.parent.tell(ChildExited(name=self.name, incarnation=self.incarnation, abnormal=abnormal, error=error))
