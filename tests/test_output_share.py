"""The share of CPU a run's output may take: a token bucket that holds back a flood while other
runs read theirs, and lets a lone run read at full speed (manual clock, no process)."""

from __future__ import annotations

from backends.process import _Readers, _Throttle


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_run_over_its_share_waits_until_the_share_has_paid_for_what_it_spent() -> None:
    clock = Clock()
    throttle = _Throttle(0.05, 0.02, clock)
    assert throttle.wait_s() == 0.0  # a full burst to start with
    throttle.spend(0.03)  # 10 ms past the burst
    assert abs(throttle.wait_s() - 0.2) < 1e-9  # 10 ms at 5% of a core: 0.2 s
    clock.now += 0.2
    assert throttle.wait_s() == 0.0
    clock.now += 100
    assert throttle.wait_s() == 0.0  # the credit never grows past the burst, however long it was quiet
    throttle.spend(0.1)
    assert abs(throttle.wait_s() - 1.6) < 1e-9


def test_a_run_alone_reads_at_once_and_owes_nothing_when_another_starts() -> None:
    clock = Clock()
    throttle = _Throttle(0.05, 0.02, clock)
    for _ in range(100):  # a lone flood: 100 chunks of 5 ms each, back to back
        assert throttle.wait_s(alone=lambda: True) == 0.0
        throttle.spend(0.005)
    # Another run starts: the flood pays for its last chunk (5 ms: 0.1 s at 5%), not for the
    # 0.5 s it spent alone (10 s).
    assert abs(throttle.wait_s() - 0.1) < 1e-9


def test_a_run_is_alone_once_no_other_has_read_for_a_second() -> None:
    clock = Clock()
    readers = _Readers(clock)
    assert readers.alone()  # nothing read yet
    readers.add()
    assert readers.alone()  # the asking run itself, from its start
    readers.add()
    assert not readers.alone()
    clock.now += 60
    assert not readers.alone()  # two read, however long
    readers.discard()
    assert not readers.alone()  # the other just ended: a pipeline's next task may be on its way
    clock.now += _Readers.QUIET_S - 0.01
    readers.add()  # ... and it came
    readers.discard()
    clock.now += 0.5
    assert not readers.alone()
    clock.now += _Readers.QUIET_S
    assert readers.alone()
    readers.discard()
    assert readers.alone()
