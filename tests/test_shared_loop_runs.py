"""Many process runs watched by one thread (``watch_process``): what the Executor's reactor does."""

from __future__ import annotations

import sys
import textwrap
import threading
import time
from pathlib import Path

import psutil
import pytest

from backends.event_loop import EventLoop
from backends.process import Watched, _readers, watch_process
from backends.process_types import ProcessLimits, ProcessOutcome, ProcessSpec
from backends.sandbox import allowlisted_env


def spec(tmp_path: Path, name: str, code: str) -> ProcessSpec:
    return ProcessSpec(
        argv=(sys.executable, "-c", textwrap.dedent(code)),
        cwd=str(tmp_path),
        env=allowlisted_env(),
        log_path=str(tmp_path / "logs" / f"{name}.log"),
    )


@pytest.fixture
def loop():
    loop = EventLoop(helpers=2)
    yield loop
    loop.close()


def run_until(loop: EventLoop, done) -> None:
    for _ in range(2000):  # a bound on turns, not on time
        if done():
            return
        loop.run_once(0.5)
    raise AssertionError("the runs never ended")


def test_a_run_in_its_grace_period_does_not_hold_up_the_others(loop: EventLoop, tmp_path: Path) -> None:
    """The stubborn child ignores SIGTERM, so stopping it waits out its grace period: that wait
    happens on a helper, and a run started after the stop began ends first."""
    ended: dict[str, ProcessOutcome] = {}
    order: list[str] = []
    lines: list[bytes] = []

    def done(name: str):
        return lambda outcome: (ended.__setitem__(name, outcome), order.append(name))

    stubborn = watch_process(
        spec(
            tmp_path,
            "stubborn",
            """
            import signal, sys, time
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            print("ready", flush=True)
            time.sleep(60)
            """,
        ),
        ProcessLimits(grace_s=3.0),
        loop,
        done("stubborn"),
        on_stdout_line=lines.append,
    )
    assert not isinstance(stubborn, ProcessOutcome)
    run_until(loop, lambda: lines == [b"ready"])
    stubborn.cancel()
    quick = watch_process(
        spec(tmp_path, "quick", 'print("{\\"type\\": \\"progress\\"}"); print("plain")'),
        ProcessLimits(),
        loop,
        done("quick"),
        on_stdout_line=lines.append,
        stdout_line_prefix=b"{",
    )
    assert not isinstance(quick, ProcessOutcome)
    run_until(loop, lambda: len(ended) == 2)
    assert order == ["quick", "stubborn"]
    assert ended["quick"].error_kind is None
    assert ended["quick"].stdout_tail == b'{"type": "progress"}\nplain\n'
    assert lines == [b"ready", b'{"type": "progress"}']  # only the lines that can be events
    assert ended["stubborn"].error_kind == "interrupted"
    assert ended["stubborn"].signal == 9  # SIGTERM was ignored: killed after the grace period
    assert not psutil.pid_exists(stubborn.pid) or psutil.Process(stubborn.pid).status() == psutil.STATUS_ZOMBIE


def test_many_runs_on_one_thread_each_end_with_their_own_output(loop: EventLoop, tmp_path: Path) -> None:
    ended: dict[int, ProcessOutcome] = {}
    threads_before = threading.active_count()
    for index in range(20):
        started = watch_process(
            spec(tmp_path, f"run{index}", f"import sys; print({index}); sys.exit({index % 3})"),
            ProcessLimits(),
            loop,
            lambda outcome, index=index: ended.__setitem__(index, outcome),
        )
        assert not isinstance(started, ProcessOutcome)
    run_until(loop, lambda: len(ended) == 20)
    for index, outcome in ended.items():
        assert outcome.stdout_tail == f"{index}\n".encode()
        assert outcome.exit_code == index % 3
        assert (outcome.error_kind is None) == (index % 3 == 0)
        assert (tmp_path / "logs" / f"run{index}.log").read_bytes() == f"{index}\n".encode()
    assert threading.active_count() <= threads_before + 2  # the loop's helpers at most: no thread per run
    # A run that exits and leaves nothing behind ends on the loop's thread: no hand-off per run.
    assert not loop.helpers_used


def test_a_program_that_cannot_start_is_an_outcome_at_once(loop: EventLoop, tmp_path: Path) -> None:
    called: list[ProcessOutcome] = []
    missing = ProcessSpec(
        argv=("no-such-program-xyz",), cwd=str(tmp_path), env=allowlisted_env(), log_path=str(tmp_path / "x.log")
    )
    outcome = watch_process(missing, ProcessLimits(), loop, called.append)
    assert isinstance(outcome, ProcessOutcome)
    assert outcome.error_kind == "spawn_failed"
    assert "no-such-program-xyz" in (outcome.error or "")
    assert called == []


def test_an_error_of_ours_while_watching_ends_that_run_alone(loop: EventLoop, tmp_path: Path) -> None:
    """A callback that raises on a shared loop stops that run's tree and ends it as
    ``worker_crashed``; the loop, and the other run on it, go on."""
    ended: dict[str, ProcessOutcome] = {}

    def broken(line: bytes) -> None:
        raise RuntimeError(f"cannot take {line!r}")

    faulty = watch_process(
        spec(tmp_path, "faulty", 'import time; print("{}", flush=True); time.sleep(60)'),
        ProcessLimits(grace_s=1.0),
        loop,
        lambda outcome: ended.__setitem__("faulty", outcome),
        on_stdout_line=broken,
    )
    healthy = watch_process(
        spec(tmp_path, "healthy", 'import time; time.sleep(0.3); print("fine")'),
        ProcessLimits(),
        loop,
        lambda outcome: ended.__setitem__("healthy", outcome),
    )
    assert not isinstance(faulty, ProcessOutcome)
    assert not isinstance(healthy, ProcessOutcome)
    run_until(loop, lambda: len(ended) == 2)
    assert ended["faulty"].error_kind == "worker_crashed"
    assert "RuntimeError: cannot take b'{}'" in (ended["faulty"].error or "")
    assert ended["healthy"].error_kind is None
    assert ended["healthy"].stdout_tail == b"fine\n"
    assert not psutil.pid_exists(faulty.pid) or psutil.Process(faulty.pid).status() == psutil.STATUS_ZOMBIE


#: 36 MB of short JSON lines, every one handed to the line callback: output that costs the
#: reader CPU (a `yes` flood costs it almost none).
_FLOOD = 'import sys; sys.stdout.buffer.write(b"{\\"n\\": 1}\\n" * 4_000_000)'


def _start_flood(loop: EventLoop, tmp_path: Path, ended: dict[str, ProcessOutcome], lines: list[int]) -> Watched:
    def count(_line: bytes) -> None:
        lines[0] += 1

    flood = watch_process(
        spec(tmp_path, "flood", _FLOOD),
        ProcessLimits(),
        loop,
        lambda outcome: ended.__setitem__("flood", outcome),
        on_stdout_line=count,
    )
    assert isinstance(flood, Watched)
    return flood


def _start_quiet(loop: EventLoop, tmp_path: Path, ended: dict[str, ProcessOutcome]) -> Watched:
    """Another run reading its output (none comes): beside it a flood has its share."""
    quiet = watch_process(
        spec(tmp_path, "quiet", "import time; time.sleep(60)"),
        ProcessLimits(),
        loop,
        lambda outcome: ended.__setitem__("quiet", outcome),
    )
    assert isinstance(quiet, Watched)
    return quiet


def _held_back_before_its_end(loop: EventLoop, flood: Watched, ended: dict[str, ProcessOutcome]) -> bool:
    for _ in range(200_000):  # a bound on turns, not on time
        if "flood" in ended:
            return False
        loop.run_once(0.5)
        if flood.held_back:
            return True
    raise AssertionError("the flood never ended")


# What a run's share of CPU is for: not starving the other runs of the process.  Alone, there
# is no one to starve, and holding it back would only make it take 20 times longer.


def test_a_flood_alone_is_read_to_its_end_and_never_held_back(loop: EventLoop, tmp_path: Path) -> None:
    assert _readers.reading == 0, "a run of an earlier test is still counted as reading"
    for _ in range(100):  # runs of an earlier test may have ended less than a second ago
        if _readers.alone():
            break
        time.sleep(0.05)
    ended: dict[str, ProcessOutcome] = {}
    lines = [0]
    flood = _start_flood(loop, tmp_path, ended, lines)
    # All of it read (every line seen: 1.5 s of CPU, far past the 20 ms burst), never held back.
    assert not _held_back_before_its_end(loop, flood, ended)
    assert ended["flood"].error_kind is None
    assert ended["flood"].stdout_bytes == 36_000_000
    assert lines == [4_000_000]
    assert _readers.reading == 0


def test_a_flood_beside_another_run_is_held_back(loop: EventLoop, tmp_path: Path) -> None:
    ended: dict[str, ProcessOutcome] = {}
    quiet = _start_quiet(loop, tmp_path, ended)
    flood = _start_flood(loop, tmp_path, ended, [0])
    assert _held_back_before_its_end(loop, flood, ended)
    flood.cancel()
    quiet.cancel()
    run_until(loop, lambda: "flood" in ended and "quiet" in ended)
    assert ended["flood"].error_kind == "interrupted"
    assert _readers.reading == 0  # each run counted from its watch to its end, whatever the end


def test_output_held_back_in_the_pipe_is_not_silence(loop: EventLoop, tmp_path: Path) -> None:
    # Every line of the flood costs its reader ~10 us of CPU (a 64 KiB chunk ~70 ms): beside
    # another run, a chunk read once the burst is spent is followed by a wait of 20 times its
    # cost (over a second), past the 0.5 s hang timeout, while the child only waits on its full
    # pipe.  That must not end it as a hang.  (`yes` starts printing at once: a slow start is
    # no part of it.)
    ended: dict[str, ProcessOutcome] = {}
    quiet = _start_quiet(loop, tmp_path, ended)

    def costly(_line: bytes) -> None:
        sum(range(1000))

    flood = watch_process(
        ProcessSpec(
            argv=("yes", '{"n": 1}'), cwd=str(tmp_path), env=allowlisted_env(), log_path=str(tmp_path / "flood.log")
        ),
        ProcessLimits(hang_timeout_s=0.5),
        loop,
        lambda outcome: ended.__setitem__("flood", outcome),
        on_stdout_line=costly,
        poll_interval_s=0.02,
    )
    assert isinstance(flood, Watched)
    holds = 0
    was_held = False
    for _ in range(200_000):  # a bound on turns, not on time
        if "flood" in ended or holds == 3:  # the second hold began after a whole chunk's debt
            break
        loop.run_once(0.5)
        if flood.held_back and not was_held:
            holds += 1
        was_held = flood.held_back
    assert "flood" not in ended, ended["flood"].error  # not ended as a hang while held back
    flood.cancel()
    quiet.cancel()
    run_until(loop, lambda: "flood" in ended and "quiet" in ended)
    assert ended["flood"].error_kind == "interrupted"
