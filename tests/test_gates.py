"""Quality gates run as processes under an agent's rules: what a gate may see, what it leaves
behind when it runs past its time, and what of its output is kept (and where)."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest

from backends.gates import GateRun, run_gates
from backends.sandbox import DEFAULT_ENV_ALLOW


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


def _how(tmp_path: Path, **fields: object) -> GateRun:
    return GateRun(cwd=tmp_path, log_path=tmp_path / "logs" / "T-001-a1.log", **fields)  # type: ignore[arg-type]


def test_a_gate_that_times_out_is_stopped_with_everything_it_started(tmp_path: Path) -> None:
    # A test runner that hangs, with a worker of its own in the background: the timeout must end
    # both (subprocess.run's timeout kills only the first process; the worker ran on for good).
    script = "sleep 300 & echo $! > background.pid; echo started; sleep 300"
    outcome = run_gates([("sh", "-c", script)], _how(tmp_path, timeout_s=1.0, grace_s=0.5))
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
    outcome = run_gates([("sh", "-c", "echo checked; exit 3")], _how(tmp_path, timeout_s=30.0))
    assert not outcome.ok
    assert outcome.exit_code == 3
    assert outcome.why == ""
    assert outcome.output_tail == "checked\n"
    assert run_gates([("true",), ("sh", "-c", "exit 0")], _how(tmp_path)).ok


def test_a_missing_program_is_named(tmp_path: Path) -> None:
    outcome = run_gates([("no-such-gate-program",)], _how(tmp_path))
    assert not outcome.ok
    assert "no-such-gate-program: no such program" in outcome.why


def test_a_gate_sees_the_agents_environment_not_the_executors_keys(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The gate runs the project's tests, and they run code an agent wrote: whatever the agent
    # may not read, its tests may not either (they used to get the executor's whole environment).
    monkeypatch.setenv("OPENAI_API_KEY", "the-executors-own-provider-key-0123")
    monkeypatch.setenv("TEAM_EXECUTOR_TOKEN", "the-owner-token-of-this-run-4567")
    monkeypatch.setenv("DATABASE_URL", "postgres://localhost/test")
    dump = f"import json, os; json.dump(dict(os.environ), open({str(tmp_path / 'env.json')!r}, 'w'))"
    how = _how(tmp_path, extra_env={"TEAM_EXECUTOR_TASK_ID": "T-001"})
    assert run_gates([(sys.executable, "-c", dump)], how).ok
    seen = json.loads((tmp_path / "env.json").read_text())
    assert "OPENAI_API_KEY" not in seen
    assert "TEAM_EXECUTOR_TOKEN" not in seen
    assert "DATABASE_URL" not in seen
    assert seen["TEAM_EXECUTOR_TASK_ID"] == "T-001"
    assert seen["PATH"]  # what a test runner needs to find its programs is still there
    # What you name in [run].gate_env (your config folder only) is passed too, and nothing more.
    how = _how(tmp_path, allow=(*DEFAULT_ENV_ALLOW, "DATABASE_URL"))
    assert run_gates([(sys.executable, "-c", dump)], how).ok
    seen = json.loads((tmp_path / "env.json").read_text())
    assert seen["DATABASE_URL"] == "postgres://localhost/test"
    assert "OPENAI_API_KEY" not in seen


def test_what_a_gate_prints_of_a_key_reaches_neither_the_feedback_nor_the_log(tmp_path: Path) -> None:
    # A test that prints a credential (a fixture, a failing assertion on a config) would put it
    # in feedback/<ID>.md, and from there in the next prompt sent to a provider.
    key = "sk-ant-api03-AbCdEfGhIjKlMnOpQrStUvWxYz0123456789"
    script = f"echo 'config: {key}'; echo 'token={key}' >&2; exit 1"
    outcome = run_gates([("sh", "-c", script)], _how(tmp_path))
    assert not outcome.ok
    assert "config:" in outcome.output_tail
    assert key not in outcome.output_tail
    log = (tmp_path / "logs" / "T-001-a1.log").read_text()
    assert "--- quality gate: sh -c" in log  # the log says which gate speaks
    assert "config:" in log
    assert key not in log


def test_an_attempts_gates_follow_its_output_in_its_log(tmp_path: Path) -> None:
    log = tmp_path / "logs" / "T-001-a1.log"
    log.parent.mkdir()
    log.write_text("what the agent printed\n")
    assert run_gates([("echo", "first gate"), ("echo", "second gate")], _how(tmp_path)).ok
    lines = log.read_text().splitlines()
    assert lines[0] == "what the agent printed"
    assert lines.index("first gate") < lines.index("--- quality gate: echo 'second gate' ---")
    assert lines[-1] == "second gate"


def test_a_gate_is_stopped_when_the_run_stops(tmp_path: Path) -> None:
    cancel = threading.Event()
    threading.Timer(0.5, cancel.set).start()
    started = time.monotonic()
    outcome = run_gates([("sleep", "300")], _how(tmp_path, cancel=cancel, grace_s=0.5))
    assert not outcome.ok
    assert outcome.why == "stopped: the run is stopping"
    assert time.monotonic() - started < 60  # not the gate's 600 s timeout


_FLOOD = """
import resource, sys
from pathlib import Path
from backends.gates import GateRun, run_gates
from backends.sandbox import DEFAULT_ENV_ALLOW
folder = Path(sys.argv[1])
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
outcome = run_gates([("sh", "-c", "yes 'a line of a test run that talks a lot' | head -c 150000000; exit 1")],
                    GateRun(cwd=folder, log_path=folder / "gate.log"))
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(after - before, len(outcome.output_tail), outcome.exit_code)
"""


def test_a_gate_that_floods_its_output_is_held_in_memory_only_as_a_tail(tmp_path: Path) -> None:
    # 150 MB of output: read whole (as it was), it took 150 MB and more to decode; now a tail.
    done = subprocess.run(
        [sys.executable, "-c", _FLOOD, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=Path(__file__).resolve().parents[1],
        check=True,
    )
    grown_kib, tail_chars, exit_code = (int(word) for word in done.stdout.split())
    assert exit_code == 1
    assert tail_chars <= 4000
    assert grown_kib < 40 * 1024, f"the gate's output grew the executor by {grown_kib} KiB"
    assert (tmp_path / "gate.log").stat().st_size < 70 * 1024 * 1024  # the log stops at its cap
