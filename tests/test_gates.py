"""Quality gates run as processes: what a gate that runs past its time leaves behind."""

from __future__ import annotations

import time
from pathlib import Path

import psutil

from session.gates import run_gates


def _gone(pid: int, within_s: float = 10.0) -> bool:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.05)
    return False


def test_a_gate_that_times_out_is_stopped_with_everything_it_started(tmp_path: Path) -> None:
    # A test runner that hangs, with a worker of its own in the background: the timeout must end
    # both (subprocess.run's timeout kills only the first process; the worker ran on for good).
    script = "sleep 300 & echo $! > background.pid; echo started; sleep 300"
    outcome = run_gates([("sh", "-c", script)], tmp_path, timeout_s=1.0)
    assert not outcome.ok
    assert outcome.why == "timed out after 1s"
    assert "started" in outcome.output_tail  # what it printed before the timeout is kept
    background = int((tmp_path / "background.pid").read_text())
    try:
        assert _gone(background), "the gate's background process outlived the gate's timeout"
    finally:
        if psutil.pid_exists(background):
            psutil.Process(background).kill()


def test_a_gate_that_ends_gives_its_exit_code_and_output(tmp_path: Path) -> None:
    outcome = run_gates([("sh", "-c", "echo checked; exit 3")], tmp_path, timeout_s=30.0)
    assert not outcome.ok
    assert outcome.exit_code == 3
    assert outcome.output_tail == "checked\n"
    assert run_gates([("true",), ("sh", "-c", "exit 0")], tmp_path, timeout_s=30.0).ok


def test_a_missing_program_is_named(tmp_path: Path) -> None:
    outcome = run_gates([("no-such-gate-program",)], tmp_path, timeout_s=30.0)
    assert not outcome.ok
    assert "no-such-gate-program: no such program" in outcome.why
