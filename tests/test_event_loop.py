"""The event loop every process run is watched on: descriptors, timers, other threads, waits."""

from __future__ import annotations

import os
import threading

import pytest

from backends.event_loop import EventLoop


@pytest.fixture
def loop():
    loop = EventLoop(helpers=2)
    yield loop
    loop.close()


def run_until(loop: EventLoop, done, turns: int = 1000) -> None:
    for _ in range(turns):
        if done():
            return
        loop.run_once(0.5)
    raise AssertionError("the loop never got there")


def test_timers_run_in_the_order_of_their_deadlines_and_a_cancelled_one_never_runs(loop: EventLoop) -> None:
    ran: list[str] = []
    loop.call_later(0.03, lambda: ran.append("late"))
    cancelled = loop.call_later(0.01, lambda: ran.append("cancelled"))
    loop.call_later(0.0, lambda: ran.append("first"))
    loop.call_later(0.0, lambda: ran.append("second"))  # same deadline: the order they were set
    cancelled.cancel()
    run_until(loop, lambda: "late" in ran)
    assert ran == ["first", "second", "late"]


def test_a_readable_descriptor_calls_its_reader_until_it_is_removed(loop: EventLoop) -> None:
    read_end, write_end = os.pipe()
    got: list[bytes] = []

    def readable() -> None:
        chunk = os.read(read_end, 100)
        got.append(chunk)
        if not chunk:
            loop.remove(read_end)

    loop.add_reader(read_end, readable)
    os.write(write_end, b"hello")
    run_until(loop, lambda: got)
    os.close(write_end)
    run_until(loop, lambda: got[-1] == b"")
    assert got == [b"hello", b""]
    assert not loop.watching(read_end)
    os.close(read_end)


def test_callbacks_from_other_threads_run_on_the_loop_s_thread_in_order(loop: EventLoop) -> None:
    seen: list[tuple[int, str]] = []

    def other() -> None:
        for index in range(100):
            loop.call_soon_threadsafe(lambda index=index: seen.append((index, threading.current_thread().name)))

    thread = threading.Thread(target=other, name="other")
    thread.start()
    thread.join()
    run_until(loop, lambda: len(seen) == 100)
    assert [index for index, _ in seen] == list(range(100))
    assert {name for _, name in seen} == {threading.current_thread().name}


def test_blocking_work_runs_on_a_helper_while_the_loop_goes_on(loop: EventLoop) -> None:
    release = threading.Event()
    order: list[str] = []
    where: list[str] = []

    def wait() -> str:
        where.append(threading.current_thread().name)
        release.wait(30)
        return "waited"

    loop.run_blocking(wait, lambda result: (order.append(result), where.append(threading.current_thread().name)))
    loop.call_later(0.01, lambda: (order.append("timer"), release.set()))  # runs although the work still waits
    run_until(loop, lambda: "waited" in order)
    assert order == ["timer", "waited"]
    assert where[0].startswith("loop-helper")
    assert where[1] == threading.current_thread().name  # the result comes back to the loop's thread


def test_an_exception_of_blocking_work_is_raised_on_the_loop_s_thread(loop: EventLoop) -> None:
    def fail() -> None:
        raise OSError("disk gone")

    loop.run_blocking(fail, lambda _: None)
    with pytest.raises(OSError, match="disk gone"):
        run_until(loop, lambda: False)


def test_without_helpers_blocking_work_runs_inline() -> None:
    loop = EventLoop()
    got: list[str] = []
    loop.run_blocking(lambda: threading.current_thread().name, got.append)
    assert got == [threading.current_thread().name]
    loop.close()


def test_after_close_other_threads_may_still_call_it_and_nothing_runs() -> None:
    loop = EventLoop(helpers=1)
    ran: list[str] = []
    loop.close()
    loop.call_soon_threadsafe(lambda: ran.append("late"))  # a worker's last message, after the end
    loop.wake()
    loop.run_once(0)
    loop.close()  # twice is harmless
    assert ran == []


def test_waits_on_helpers_run_side_by_side() -> None:
    """Three grace periods at once take three helpers, not one after another (a Barrier of 3
    is passed only if all three wait at the same time)."""
    loop = EventLoop(helpers=8)
    barrier = threading.Barrier(3, timeout=30)
    done: list[int] = []
    for index in range(3):
        loop.run_blocking(lambda index=index: (barrier.wait(), index)[1], done.append)
    run_until(loop, lambda: len(done) == 3)
    assert sorted(done) == [0, 1, 2]
    loop.close()
