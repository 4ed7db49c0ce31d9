"""Supervision with Erlang/OTP semantics, for pykka (which has none).

A :class:`Supervisor` is owned by a parent actor and used only on that
actor's thread.  It starts children from :class:`ChildSpec` factories,
decides what happens when one exits, and stops them all in reverse start
order.

- Restart types: ``permanent`` children are always restarted (services),
  ``transient`` ones only after an abnormal exit (workers), ``temporary``
  ones never.
- Restart intensity: more than ``max_restarts`` restarts within
  ``period_s`` seconds and the supervisor gives up: :meth:`child_exited`
  returns :class:`Escalate`, and the parent stops the tree and saves state.
- Restarts wait an exponential backoff with jitter (Akka's formula); a child
  that lived longer than ``reset_after_s`` starts its count afresh.
- Deaths are seen two ways: children tell the parent from ``on_stop`` /
  ``on_failure`` (:class:`protocol.messages.ChildExited`), and
  :meth:`unreported_deaths` is the backstop for deaths no hook reports
  (pykka runs neither hook when ``on_start`` raises): it looks at each child's
  ``actor_stopped`` event.
"""

from __future__ import annotations

import random
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import pykka

from session.backoff import exponential_delay

__all__ = [
    "Backoff",
    "ChildSpec",
    "Escalate",
    "Forget",
    "Intensity",
    "Restart",
    "RestartType",
    "Supervisor",
]


class RestartType(StrEnum):
    PERMANENT = "permanent"
    TRANSIENT = "transient"
    TEMPORARY = "temporary"


@dataclass(frozen=True)
class Backoff:
    """``delay = min(max_s, min_s * 2**n) * (1 + random * jitter)``."""

    min_s: float = 0.2
    max_s: float = 30.0
    jitter: float = 0.2

    def delay(self, restarts: int, rng: Callable[[], float] = random.random) -> float:
        return exponential_delay(self.min_s, self.max_s, restarts, self.jitter, rng)


@dataclass(frozen=True)
class Intensity:
    max_restarts: int = 5
    period_s: float = 30.0


@dataclass
class ChildSpec:
    """How to (re)start one child.  ``start`` gets the incarnation number."""

    name: str
    start: Callable[[int], pykka.ActorRef[Any]]
    restart: RestartType = RestartType.PERMANENT
    shutdown_timeout_s: float = 5.0
    backoff: Backoff = field(default_factory=Backoff)
    reset_after_s: float = 60.0


@dataclass(frozen=True)
class Restart:
    delay_s: float
    restarts: int  # how many times this child has now been restarted in a row


@dataclass(frozen=True)
class Escalate:
    reason: str


@dataclass(frozen=True)
class Forget:
    """The child is gone for good (a normal exit, or a temporary child)."""


Decision = Restart | Escalate | Forget


@dataclass
class _Child:
    spec: ChildSpec
    ref: pykka.ActorRef[Any] | None
    incarnation: int
    started_at: float
    consecutive_restarts: int = 0
    handled: bool = False  # its current incarnation's death was already decided
    seen_dead_at: float | None = None


class Supervisor:
    """Owned by one parent actor; every method runs on that actor's thread."""

    def __init__(
        self,
        owner: str,
        intensity: Intensity | None = None,
        clock: Callable[[], float] = time.monotonic,
        backstop_grace_s: float = 1.0,
    ) -> None:
        self.owner = owner
        self.intensity = intensity or Intensity()
        self._clock = clock
        self._children: dict[str, _Child] = {}
        self._restart_times: deque[float] = deque()
        self._backstop_grace_s = backstop_grace_s
        self.stopping = False

    # --- starting ---------------------------------------------------------------

    def start_child(self, spec: ChildSpec) -> pykka.ActorRef[Any]:
        """Start a new child (its name must be free) and remember its start order."""
        if spec.name in self._children and not self._children[spec.name].handled:
            raise ValueError(f"{self.owner}: a child named {spec.name!r} is already running")
        child = _Child(spec=spec, ref=None, incarnation=1, started_at=self._clock())
        self._children.pop(spec.name, None)  # a finished child of that name moves to the end
        self._children[spec.name] = child
        child.ref = spec.start(child.incarnation)
        return child.ref

    def restart(self, name: str, incarnation: int) -> pykka.ActorRef[Any] | None:
        """Start the next incarnation of a child whose restart was decided.

        ``incarnation`` is the one that died; a stale request returns None.
        """
        child = self._children.get(name)
        if child is None or self.stopping or child.incarnation != incarnation or not child.handled:
            return None
        child.incarnation += 1
        child.handled = False
        child.seen_dead_at = None
        child.started_at = self._clock()
        child.ref = child.spec.start(child.incarnation)
        return child.ref

    # --- deaths -------------------------------------------------------------------

    def child_exited(self, name: str, incarnation: int, abnormal: bool) -> Decision | None:
        """Decide what to do about a death; None when the notice is stale or a duplicate."""
        child = self._children.get(name)
        if child is None or child.incarnation != incarnation or child.handled:
            return None
        child.handled = True
        spec = child.spec
        if self.stopping or spec.restart is RestartType.TEMPORARY:
            return Forget()
        if spec.restart is RestartType.TRANSIENT and not abnormal:
            return Forget()
        now = self._clock()
        self._restart_times.append(now)
        while self._restart_times and now - self._restart_times[0] > self.intensity.period_s:
            self._restart_times.popleft()
        if len(self._restart_times) > self.intensity.max_restarts:
            return Escalate(
                f"{self.owner}: more than {self.intensity.max_restarts} restarts within "
                f"{self.intensity.period_s:g} s (last: {name})"
            )
        if now - child.started_at > spec.reset_after_s:
            child.consecutive_restarts = 0
        delay = spec.backoff.delay(child.consecutive_restarts)
        child.consecutive_restarts += 1
        return Restart(delay_s=delay, restarts=child.consecutive_restarts)

    def unreported_deaths(self) -> list[tuple[str, int]]:
        """Children that died without telling (seen dead for longer than the grace)."""
        now = self._clock()
        found = []
        for name, child in self._children.items():
            if child.handled or child.ref is None or not child.ref.actor_stopped.is_set():
                continue
            if child.seen_dead_at is None:
                child.seen_dead_at = now
            elif now - child.seen_dead_at >= self._backstop_grace_s:
                found.append((name, child.incarnation))
        return found

    def forget(self, name: str) -> None:
        self._children.pop(name, None)

    # --- queries ------------------------------------------------------------------

    def ref(self, name: str) -> pykka.ActorRef[Any] | None:
        child = self._children.get(name)
        return None if child is None or child.handled else child.ref

    def incarnation(self, name: str) -> int | None:
        child = self._children.get(name)
        return None if child is None else child.incarnation

    def names(self) -> list[str]:
        return [name for name, child in self._children.items() if not child.handled]

    # --- stopping -----------------------------------------------------------------

    def stop_all(self) -> list[str]:
        """Stop every live child, last started first, each within its timeout.

        Returns the names of children that did not stop in time (their threads
        are daemons and are left behind).
        """
        self.stopping = True
        stuck = []
        for name, child in reversed(list(self._children.items())):
            if child.ref is None or child.ref.actor_stopped.is_set():
                continue
            try:
                child.ref.stop(block=True, timeout=child.spec.shutdown_timeout_s)
            except pykka.Timeout:
                stuck.append(name)
            except pykka.ActorDeadError:
                pass
        return stuck
