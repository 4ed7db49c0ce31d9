"""Supervision semantics with real pykka actors: restarts, intensity, backoff, order, backstop."""

from __future__ import annotations

import queue
import threading
import time
from typing import Any

import pykka
import pytest

from actors.base import TreeActor, handles
from actors.supervision import (
    Backoff,
    ChildSpec,
    Escalate,
    Forget,
    Intensity,
    Restart,
    RestartType,
    Supervisor,
)
from protocol._base import Message
from protocol.messages import ChildExited


class Crash(Message, frozen=True):
    pass


class Echo(Message, frozen=True):
    text: str


class Probe(TreeActor):
    """A child that answers, crashes on demand, and records its stop."""

    stops: list[str]
    fail_on_start = False

    def __init__(self, name: str, parent: Any, incarnation: int, stops: list[str]) -> None:
        super().__init__(name, parent, incarnation)
        self.stops = stops

    def started(self) -> None:
        if self.fail_on_start:
            raise RuntimeError("cannot start")

    def stopping(self) -> None:
        self.stops.append(self.name)

    @handles(Echo)
    def echo(self, message: Echo) -> Echo:
        return Echo(text=f"{self.name}#{self.incarnation}:{message.text}")

    @handles(Crash)
    def crash(self, message: Crash) -> None:
        raise RuntimeError("crashed on purpose")


class BadStarter(Probe):
    fail_on_start = True


class Inbox(pykka.ThreadingActor):
    """Stands in for the parent: hands ChildExited notices to the test through a queue."""

    def __init__(self, notices: queue.Queue[ChildExited]) -> None:
        super().__init__()
        self.notices = notices

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, ChildExited):
            self.notices.put(message)
        return None


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


NOTICES: queue.Queue[ChildExited] = queue.Queue()


@pytest.fixture
def parent():
    while not NOTICES.empty():
        NOTICES.get_nowait()
    ref = Inbox.start(NOTICES)
    yield ref
    pykka.ActorRegistry.stop_all()


def wait_for_notice(parent: pykka.ActorRef[Any], count: int = 1, timeout: float = 10) -> list[ChildExited]:
    return [NOTICES.get(timeout=timeout) for _ in range(count)]


def spec_for(name: str, parent: Any, stops: list[str], restart=RestartType.PERMANENT, cls=Probe) -> ChildSpec:
    return ChildSpec(
        name=name,
        start=lambda incarnation: cls.start(name, parent, incarnation, stops),
        restart=restart,
        backoff=Backoff(min_s=1.0, max_s=8.0, jitter=0.0),
        shutdown_timeout_s=5,
    )


def test_a_crashing_child_tells_its_parent_and_is_restarted_as_a_new_incarnation(parent):
    supervisor = Supervisor("test", Intensity(max_restarts=3, period_s=60))
    stops: list[str] = []
    ref = supervisor.start_child(spec_for("svc", parent, stops))
    assert ref.ask(Echo(text="hi"), timeout=5) == Echo(text="svc#1:hi")
    ref.tell(Crash())
    (notice,) = wait_for_notice(parent)
    assert (notice.name, notice.incarnation, notice.abnormal) == ("svc", 1, True)
    assert "crashed on purpose" in (notice.error or "")
    decision = supervisor.child_exited("svc", 1, abnormal=True)
    assert decision == Restart(delay_s=1.0, restarts=1)
    new_ref = supervisor.restart("svc", 1)
    assert new_ref is not None
    assert new_ref.ask(Echo(text="again"), timeout=5) == Echo(text="svc#2:again")


def test_a_duplicate_or_stale_death_notice_is_ignored(parent):
    supervisor = Supervisor("test")
    supervisor.start_child(spec_for("svc", parent, []))
    assert isinstance(supervisor.child_exited("svc", 1, abnormal=True), Restart)
    assert supervisor.child_exited("svc", 1, abnormal=True) is None
    supervisor.restart("svc", 1)
    assert supervisor.child_exited("svc", 1, abnormal=True) is None, "incarnation 1 is stale now"


def test_transient_children_are_restarted_only_after_an_abnormal_exit(parent):
    supervisor = Supervisor("test")
    supervisor.start_child(spec_for("w1", parent, [], RestartType.TRANSIENT))
    supervisor.start_child(spec_for("w2", parent, [], RestartType.TRANSIENT))
    assert supervisor.child_exited("w1", 1, abnormal=False) == Forget()
    assert isinstance(supervisor.child_exited("w2", 1, abnormal=True), Restart)


def test_temporary_children_are_never_restarted(parent):
    supervisor = Supervisor("test")
    supervisor.start_child(spec_for("t", parent, [], RestartType.TEMPORARY))
    assert supervisor.child_exited("t", 1, abnormal=True) == Forget()


def test_backoff_doubles_per_consecutive_restart_up_to_the_cap(parent):
    clock = FakeClock()
    supervisor = Supervisor("test", Intensity(max_restarts=100, period_s=1), clock=clock)
    supervisor.start_child(spec_for("svc", parent, []))
    delays = []
    for incarnation in range(1, 7):
        clock.now += 2  # outside the intensity period, inside reset_after
        decision = supervisor.child_exited("svc", incarnation, abnormal=True)
        assert isinstance(decision, Restart)
        delays.append(decision.delay_s)
        supervisor.restart("svc", incarnation)
    assert delays == [1.0, 2.0, 4.0, 8.0, 8.0, 8.0]


def test_a_child_that_lived_long_enough_starts_its_backoff_afresh(parent):
    clock = FakeClock()
    supervisor = Supervisor("test", clock=clock)
    supervisor.start_child(spec_for("svc", parent, []))
    assert supervisor.child_exited("svc", 1, abnormal=True).delay_s == 1.0
    supervisor.restart("svc", 1)
    assert supervisor.child_exited("svc", 2, abnormal=True).delay_s == 2.0
    supervisor.restart("svc", 2)
    clock.now += 3600
    assert supervisor.child_exited("svc", 3, abnormal=True).delay_s == 1.0


def test_jitter_stretches_the_delay_by_at_most_its_factor():
    backoff = Backoff(min_s=1.0, max_s=100, jitter=0.5)
    assert backoff.delay(2, rng=lambda: 0.0) == 4.0
    assert backoff.delay(2, rng=lambda: 1.0) == 6.0


def test_too_many_restarts_within_the_period_escalate(parent):
    clock = FakeClock()
    supervisor = Supervisor("root", Intensity(max_restarts=2, period_s=10), clock=clock)
    supervisor.start_child(spec_for("svc", parent, []))
    for incarnation in (1, 2):
        clock.now += 1
        assert isinstance(supervisor.child_exited("svc", incarnation, abnormal=True), Restart)
        supervisor.restart("svc", incarnation)
    clock.now += 1
    decision = supervisor.child_exited("svc", 3, abnormal=True)
    assert isinstance(decision, Escalate)
    assert "more than 2 restarts within 10 s (last: svc)" in decision.reason


def test_restarts_outside_the_period_do_not_add_up(parent):
    clock = FakeClock()
    supervisor = Supervisor("root", Intensity(max_restarts=2, period_s=10), clock=clock)
    supervisor.start_child(spec_for("svc", parent, []))
    for incarnation in range(1, 8):
        clock.now += 6
        assert isinstance(supervisor.child_exited("svc", incarnation, abnormal=True), Restart)
        supervisor.restart("svc", incarnation)


def test_an_on_start_failure_is_reported_by_the_child_and_seen_by_the_backstop(parent):
    clock = FakeClock()
    supervisor = Supervisor("test", clock=clock, backstop_grace_s=1.0)
    ref = supervisor.start_child(spec_for("bad", parent, [], cls=BadStarter))
    (notice,) = wait_for_notice(parent)
    assert notice.abnormal
    assert "failed to start" in (notice.error or "")
    assert ref.actor_stopped.wait(5)
    assert supervisor.unreported_deaths() == []  # first sighting starts the grace
    clock.now += 1.5
    assert supervisor.unreported_deaths() == [("bad", 1)]
    assert isinstance(supervisor.child_exited("bad", 1, abnormal=True), Restart)
    assert supervisor.unreported_deaths() == [], "a handled death is not reported again"


def test_stop_all_stops_children_in_reverse_start_order(parent):
    supervisor = Supervisor("test")
    stops: list[str] = []
    for name in ("session", "reconciler", "worker-1", "worker-2"):
        supervisor.start_child(spec_for(name, parent, stops))
    assert supervisor.stop_all() == []
    assert stops == ["worker-2", "worker-1", "reconciler", "session"]
    assert supervisor.restart("session", 1) is None, "nothing restarts while stopping"


def test_a_child_that_will_not_stop_in_time_is_reported_not_waited_on_forever(parent):
    release = threading.Event()

    class Stuck(Probe):
        @handles(Echo)
        def echo(self, message: Echo) -> Echo:
            release.wait(30)
            return message

    supervisor = Supervisor("test")
    ref = supervisor.start_child(
        ChildSpec(name="stuck", start=lambda i: Stuck.start("stuck", parent, i, []), shutdown_timeout_s=0.3)
    )
    ref.tell(Echo(text="block"))
    time.sleep(0.1)
    assert supervisor.stop_all() == ["stuck"]
    release.set()
