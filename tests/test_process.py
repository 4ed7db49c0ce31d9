"""The process runner, driven with real child processes."""

from __future__ import annotations

import hashlib
import json
import os
import resource
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import psutil
import pytest

from backends import spawn
from backends.process import run_process
from backends.process_tree import stop_tree
from backends.process_types import ProcessLimits, ProcessOutcome, ProcessSpec
from backends.sandbox import allowlisted_env

PY = sys.executable
# Upper bounds only: generous so a loaded machine never fails a test.
SAFE_WALL = 60.0


def spec_for(tmp_path: Path, argv: list[str], *, stdin_data: bytes | None = None) -> ProcessSpec:
    return ProcessSpec(
        argv=tuple(argv),
        cwd=str(tmp_path),
        env=allowlisted_env(),
        log_path=str(tmp_path / "logs" / "run.log"),
        stdin_data=stdin_data,
    )


def py(code: str) -> list[str]:
    return [PY, "-c", textwrap.dedent(code)]


def is_gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def wait_gone(pid: int, timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if is_gone(pid):
            return True
        time.sleep(0.05)
    return is_gone(pid)


def pids_from(outcome: ProcessOutcome) -> list[int]:
    return [int(tok) for tok in outcome.stdout_tail.split() if tok.isdigit()]


@pytest.fixture(autouse=True, params=["helper", "popen"])
def spawn_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every test here runs with each way of starting a child (backends/spawn.py): the compiled
    helper, and ``subprocess`` with the shell that joins the cgroup, where it is not built."""
    if request.param == "popen":
        monkeypatch.setattr(spawn, "HELPER", None)
    elif spawn.HELPER is None:
        pytest.skip("the spawn helper is not built here (no C compiler at install)")
    return str(request.param)


@pytest.fixture
def spare_sleeper():
    """A process of our own that a test may try (and fail) to kill."""
    proc = subprocess.Popen(["sleep", "60"], start_new_session=True)
    yield proc
    proc.kill()
    proc.wait()


# --------------------------------------------------------------------------- normal runs


def test_a_process_that_exits_0_reports_no_error_and_captures_its_output(tmp_path: Path) -> None:
    started: list[tuple[int, float]] = []
    lines: list[bytes] = []
    code = """
        import sys
        print("first line")
        sys.stdout.flush()
        print("oops", file=sys.stderr)
        sys.stderr.flush()
        print("second line")
        sys.stdout.write("no newline at the end")
    """
    spec = spec_for(tmp_path, py(code))
    outcome = run_process(
        spec,
        ProcessLimits(wall_timeout_s=SAFE_WALL),
        on_start=lambda pid, ct: started.append((pid, ct)),
        on_stdout_line=lines.append,
    )

    assert outcome.error_kind is None
    assert outcome.error is None
    assert outcome.exit_code == 0
    assert outcome.signal is None
    assert outcome.stdout_tail == b"first line\nsecond line\nno newline at the end"
    assert outcome.stderr_tail == b"oops\n"
    assert outcome.stdout_bytes == len(outcome.stdout_tail)
    assert outcome.stderr_bytes == 5
    assert outcome.duration_s > 0
    assert lines == [b"first line", b"second line", b"no newline at the end"]
    assert started == [(outcome.pid, outcome.create_time)]
    assert outcome.pid is not None
    assert outcome.create_time is not None
    assert abs(outcome.create_time - time.time()) < SAFE_WALL

    log = Path(spec.log_path).read_bytes()
    assert b"first line\n" in log
    assert b"oops\n" in log
    assert b"no newline at the end" in log


def test_on_start_gets_the_real_pid_and_create_time_while_the_child_runs(tmp_path: Path) -> None:
    seen: list[tuple[int, float, float, str]] = []

    def on_start(pid: int, create_time: float) -> None:
        proc = psutil.Process(pid)
        # Right after the spawn the child may still be inside exec (its cmdline reads
        # empty for a moment on a loaded machine): wait for it to become the program.
        deadline = time.monotonic() + 10
        while not proc.cmdline() and time.monotonic() < deadline:
            time.sleep(0.01)
        seen.append((pid, create_time, proc.create_time(), " ".join(proc.cmdline())))

    code = "import time; time.sleep(2)"
    outcome = run_process(spec_for(tmp_path, py(code)), ProcessLimits(wall_timeout_s=SAFE_WALL), on_start=on_start)

    assert outcome.error_kind is None
    [(pid, create_time, real_create_time, cmdline)] = seen
    assert pid == outcome.pid
    assert create_time == real_create_time
    assert "time.sleep(2)" in cmdline


def test_the_log_file_is_appended_to_and_its_parent_directory_is_created(tmp_path: Path) -> None:
    spec = ProcessSpec(
        argv=("/bin/sh", "-c", "echo run"),
        cwd=str(tmp_path),
        env=allowlisted_env(),
        log_path=str(tmp_path / "a" / "b" / "c.log"),
    )
    run_process(spec, ProcessLimits(wall_timeout_s=SAFE_WALL))
    run_process(spec, ProcessLimits(wall_timeout_s=SAFE_WALL))
    assert Path(spec.log_path).read_bytes() == b"run\nrun\n"


def test_stdin_data_is_fed_to_the_child_and_then_closed(tmp_path: Path) -> None:
    data = b"".join(b"line %d\n" % i for i in range(50_000))  # larger than a pipe buffer
    code = """
        import sys, hashlib
        body = sys.stdin.buffer.read()
        print(len(body), hashlib.sha256(body).hexdigest())
    """
    outcome = run_process(spec_for(tmp_path, py(code), stdin_data=data), ProcessLimits(wall_timeout_s=SAFE_WALL))
    assert outcome.error_kind is None
    assert outcome.stdout_tail.split() == [str(len(data)).encode(), hashlib.sha256(data).hexdigest().encode()]


def test_without_stdin_data_the_child_reads_end_of_file_at_once(tmp_path: Path) -> None:
    code = "import sys; print(repr(sys.stdin.read()))"
    outcome = run_process(spec_for(tmp_path, py(code)), ProcessLimits(wall_timeout_s=SAFE_WALL, hang_timeout_s=30))
    assert outcome.error_kind is None
    assert outcome.stdout_tail == b"''\n"


def test_a_child_that_does_not_read_its_stdin_does_not_break_the_run(tmp_path: Path) -> None:
    outcome = run_process(
        spec_for(tmp_path, py("print('ignored')"), stdin_data=b"x" * 1_000_000),
        ProcessLimits(wall_timeout_s=SAFE_WALL),
    )
    assert outcome.error_kind is None
    assert outcome.stdout_tail == b"ignored\n"


def test_the_child_sees_exactly_the_given_environment_and_working_directory(tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    code = "import os, json; print(json.dumps({'cwd': os.getcwd(), 'env': dict(os.environ)}))"
    spec = ProcessSpec(
        argv=tuple(py(code)),
        cwd=str(work),
        env={"ONLY_THIS": "1", "PATH": os.environ.get("PATH", "/usr/bin:/bin")},
        log_path=str(tmp_path / "run.log"),
    )
    outcome = run_process(spec, ProcessLimits(wall_timeout_s=SAFE_WALL))

    seen = json.loads(outcome.stdout_tail)
    assert Path(seen["cwd"]).resolve() == work.resolve()
    # Python itself may add LC_CTYPE (PEP 538 locale coercion); nothing else leaks in.
    assert set(seen["env"]) - {"LC_CTYPE"} == {"ONLY_THIS", "PATH"}


def test_arguments_are_passed_verbatim_never_through_a_shell(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    nasty = f"$(touch {marker}); `touch {marker}` | touch {marker} && echo hi"
    outcome = run_process(
        spec_for(tmp_path, [PY, "-c", "import sys; print(sys.argv[1])", nasty]),
        ProcessLimits(wall_timeout_s=SAFE_WALL),
    )
    assert outcome.stdout_tail == nasty.encode() + b"\n"
    assert not marker.exists()


# --------------------------------------------------------------------------- crashes


def test_a_non_zero_exit_is_a_crash_with_its_code(tmp_path: Path) -> None:
    outcome = run_process(
        spec_for(tmp_path, py("import sys; print('bye'); sys.exit(3)")), ProcessLimits(wall_timeout_s=SAFE_WALL)
    )
    assert outcome.error_kind == "crash"
    assert outcome.exit_code == 3
    assert outcome.signal is None
    assert outcome.error == "exited with code 3"
    assert outcome.stdout_tail == b"bye\n"


def test_a_process_killed_by_a_signal_we_did_not_send_is_a_crash_with_the_signal(tmp_path: Path) -> None:
    outcome = run_process(
        spec_for(tmp_path, py("import os, signal; os.kill(os.getpid(), signal.SIGKILL)")),
        ProcessLimits(wall_timeout_s=SAFE_WALL),
    )
    assert outcome.error_kind == "crash"
    assert outcome.exit_code is None
    assert outcome.signal == 9
    assert outcome.error == "killed by signal SIGKILL"


def test_a_segfault_is_reported_by_signal_name(tmp_path: Path) -> None:
    outcome = run_process(
        spec_for(tmp_path, py("import os, signal; os.kill(os.getpid(), signal.SIGSEGV)")),
        ProcessLimits(wall_timeout_s=SAFE_WALL),
    )
    assert outcome.error_kind == "crash"
    assert outcome.signal == signal.SIGSEGV
    assert outcome.error == "killed by signal SIGSEGV"


# --------------------------------------------------------------------------- timeouts


def test_a_silent_process_is_killed_as_hung_and_is_really_gone(tmp_path: Path) -> None:
    code = "import time; print('hello', flush=True); time.sleep(60)"
    outcome = run_process(
        spec_for(tmp_path, py(code)),
        ProcessLimits(wall_timeout_s=SAFE_WALL, hang_timeout_s=0.5, grace_s=5.0),
    )
    assert outcome.error_kind == "hang"
    assert outcome.error == "no output for 0.5 s (hang timeout)"
    assert outcome.signal == signal.SIGTERM
    assert outcome.exit_code is None
    assert outcome.stdout_tail == b"hello\n"
    assert outcome.pid is not None
    assert is_gone(outcome.pid)
    assert outcome.duration_s < SAFE_WALL


def test_a_process_that_keeps_printing_past_the_wall_timeout_is_killed_as_timeout(tmp_path: Path) -> None:
    code = """
        import time
        while True:
            print("tick", flush=True)
            time.sleep(0.05)
    """
    outcome = run_process(
        spec_for(tmp_path, py(code)),
        ProcessLimits(wall_timeout_s=1.0, hang_timeout_s=SAFE_WALL),
    )
    assert outcome.error_kind == "timeout"
    assert outcome.error == "still running after 1.0 s (wall timeout)"
    assert outcome.stdout_tail.startswith(b"tick\n")
    assert outcome.duration_s >= 1.0
    assert outcome.pid is not None
    assert is_gone(outcome.pid)


def test_a_process_that_closes_its_output_and_keeps_running_is_still_timed_out(tmp_path: Path) -> None:
    code = """
        import os, time
        print("closing", flush=True)
        os.close(1)
        os.close(2)
        time.sleep(60)
    """
    outcome = run_process(spec_for(tmp_path, py(code)), ProcessLimits(wall_timeout_s=1.0))
    assert outcome.error_kind == "timeout"
    assert outcome.stdout_tail == b"closing\n"
    assert outcome.pid is not None
    assert is_gone(outcome.pid)


def test_a_process_that_ignores_sigterm_is_killed_after_the_grace_period(tmp_path: Path) -> None:
    code = """
        import signal, time
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        print("ready", flush=True)
        time.sleep(60)
    """
    outcome = run_process(
        spec_for(tmp_path, py(code)),
        ProcessLimits(wall_timeout_s=SAFE_WALL, hang_timeout_s=0.5, grace_s=0.3),
    )
    assert outcome.error_kind == "hang"
    assert outcome.signal == signal.SIGKILL
    assert outcome.pid is not None
    assert is_gone(outcome.pid)


# --------------------------------------------------------------------------- bounded output


def test_a_flood_of_output_keeps_tails_and_log_bounded_but_counts_every_byte(tmp_path: Path) -> None:
    tail = 4096
    log_max = 1024 * 1024
    total = 20 * 1024 * 1024
    code = f"""
        import sys
        line = b"y" * 1023 + b"\\n"
        out = sys.stdout.buffer
        for _ in range({total} // 1024):
            out.write(line)
        out.flush()
        sys.stderr.buffer.write(b"e" * 10000 + b"END")
    """
    spec = spec_for(tmp_path, py(code))
    lines: list[bytes] = []
    maxrss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    outcome = run_process(
        spec,
        ProcessLimits(wall_timeout_s=SAFE_WALL * 3, tail_bytes=tail, log_max_bytes=log_max),
        on_stdout_line=lambda ln: lines.append(ln) if len(lines) < 3 else None,
    )
    maxrss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

    assert outcome.error_kind is None
    assert outcome.stdout_bytes == total
    assert outcome.stderr_bytes == 10003
    assert len(outcome.stdout_tail) == tail
    assert outcome.stdout_tail.endswith(b"y\n")
    assert len(outcome.stderr_tail) == tail
    assert outcome.stderr_tail.endswith(b"END")
    assert lines[0] == b"y" * 1023

    log = Path(spec.log_path).read_bytes()
    notice = f"\n[team-executor: log truncated at {log_max} bytes]\n".encode()
    assert log.endswith(notice)
    assert len(log) == log_max + len(notice)
    assert log.count(b"[team-executor: log truncated") == 1
    # The 20 MB went through a fixed-size buffer, not into our memory.
    assert maxrss_after - maxrss_before < 10 * 1024


def test_lines_longer_than_the_tail_size_are_cut(tmp_path: Path) -> None:
    lines: list[bytes] = []
    code = "import sys; sys.stdout.write('a' * 300 + '\\nshort\\n' + 'b' * 100)"
    outcome = run_process(
        spec_for(tmp_path, py(code)),
        ProcessLimits(wall_timeout_s=SAFE_WALL, tail_bytes=64),
        on_stdout_line=lines.append,
    )
    assert outcome.error_kind is None
    assert lines == [b"a" * 64, b"short", b"b" * 64]
    assert outcome.stdout_tail == b"b" * 64


# --------------------------------------------------------------------------- cancel and trees


def test_setting_the_cancel_event_from_another_thread_interrupts_the_run(tmp_path: Path) -> None:
    cancel = threading.Event()
    code = """
        import subprocess, time
        child = subprocess.Popen(["sleep", "60"])
        print(child.pid, flush=True)
        time.sleep(60)
    """
    lines: list[bytes] = []

    def on_line(line: bytes) -> None:
        lines.append(line)
        threading.Timer(0.2, cancel.set).start()

    outcome = run_process(
        spec_for(tmp_path, py(code)),
        ProcessLimits(wall_timeout_s=SAFE_WALL),
        cancel=cancel,
        on_stdout_line=on_line,
    )
    assert outcome.error_kind == "interrupted"
    assert outcome.pid is not None
    assert is_gone(outcome.pid)
    [grandchild] = pids_from(outcome)
    assert wait_gone(grandchild)


def test_a_cancel_event_already_set_stops_the_process_at_once(tmp_path: Path) -> None:
    cancel = threading.Event()
    cancel.set()
    outcome = run_process(
        spec_for(tmp_path, py("import time; time.sleep(60)")), ProcessLimits(wall_timeout_s=SAFE_WALL), cancel=cancel
    )
    assert outcome.error_kind == "interrupted"
    assert outcome.pid is not None
    assert is_gone(outcome.pid)


def test_a_hung_child_is_killed_together_with_its_grandchild(tmp_path: Path) -> None:
    code = """
        import subprocess, time
        child = subprocess.Popen(["sleep", "60"])
        print(child.pid, flush=True)
        time.sleep(60)
    """
    outcome = run_process(spec_for(tmp_path, py(code)), ProcessLimits(wall_timeout_s=SAFE_WALL, hang_timeout_s=0.5))
    assert outcome.error_kind == "hang"
    [grandchild] = pids_from(outcome)
    assert outcome.pid is not None
    assert is_gone(outcome.pid)
    assert wait_gone(grandchild)


def test_a_grandchild_in_its_own_session_is_still_found_through_the_tree(tmp_path: Path) -> None:
    code = """
        import subprocess, time
        child = subprocess.Popen(["sleep", "60"], start_new_session=True)
        print(child.pid, flush=True)
        time.sleep(60)
    """
    outcome = run_process(spec_for(tmp_path, py(code)), ProcessLimits(wall_timeout_s=SAFE_WALL, hang_timeout_s=0.5))
    assert outcome.error_kind == "hang"
    [grandchild] = pids_from(outcome)
    assert wait_gone(grandchild)


def test_a_background_grandchild_left_by_a_successful_child_is_stopped(tmp_path: Path) -> None:
    # The grandchild does not hold our pipes: both streams end when the child exits.
    code = """
        import subprocess
        child = subprocess.Popen(["sleep", "60"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        print(child.pid)
    """
    outcome = run_process(spec_for(tmp_path, py(code)), ProcessLimits(wall_timeout_s=SAFE_WALL))
    assert outcome.error_kind is None
    assert outcome.exit_code == 0
    [grandchild] = pids_from(outcome)
    assert wait_gone(grandchild)


def test_a_background_grandchild_that_holds_the_pipes_open_is_stopped_too(tmp_path: Path) -> None:
    # `sleep` inherits stdout and stderr, so they never reach end of file on their own.
    outcome = run_process(
        spec_for(tmp_path, ["/bin/sh", "-c", "sleep 60 & echo $!; echo done"]),
        ProcessLimits(wall_timeout_s=SAFE_WALL, hang_timeout_s=SAFE_WALL),
    )
    assert outcome.error_kind is None
    assert outcome.exit_code == 0
    assert outcome.stdout_tail.endswith(b"done\n")
    [grandchild] = pids_from(outcome)
    assert wait_gone(grandchild)


def test_an_exception_in_a_callback_propagates_after_the_tree_is_stopped(tmp_path: Path) -> None:
    code = """
        import time
        print("go", flush=True)
        time.sleep(60)
    """
    started: list[int] = []

    def boom(line: bytes) -> None:
        raise RuntimeError("callback failed")

    with pytest.raises(RuntimeError, match="callback failed"):
        run_process(
            spec_for(tmp_path, py(code)),
            ProcessLimits(wall_timeout_s=SAFE_WALL, grace_s=5.0),
            on_start=lambda pid, ct: started.append(pid),
            on_stdout_line=boom,
        )
    [pid] = started
    assert wait_gone(pid)


# --------------------------------------------------------------------------- spawn failures


def test_a_missing_program_is_spawn_failed_with_a_message_naming_it(tmp_path: Path) -> None:
    outcome = run_process(
        spec_for(tmp_path, ["no-such-agent-cli-xyz", "--help"]), ProcessLimits(wall_timeout_s=SAFE_WALL)
    )
    assert outcome.error_kind == "spawn_failed"
    assert outcome.error == "program not found: no-such-agent-cli-xyz (is it installed and on PATH?)"
    assert outcome.pid is None
    assert outcome.exit_code is None
    assert outcome.stdout_tail == b""


def test_a_file_that_is_not_executable_is_spawn_failed(tmp_path: Path) -> None:
    script = tmp_path / "script.sh"
    script.write_text("echo hi\n")
    outcome = run_process(spec_for(tmp_path, [str(script)]), ProcessLimits(wall_timeout_s=SAFE_WALL))
    assert outcome.error_kind == "spawn_failed"
    assert outcome.error is not None
    assert str(script) in outcome.error


def test_a_missing_working_directory_is_spawn_failed_naming_the_directory(tmp_path: Path) -> None:
    missing = tmp_path / "missing"
    spec = ProcessSpec(
        argv=("/bin/sh", "-c", "true"), cwd=str(missing), env=allowlisted_env(), log_path=str(tmp_path / "run.log")
    )
    outcome = run_process(spec, ProcessLimits(wall_timeout_s=SAFE_WALL))
    assert outcome.error_kind == "spawn_failed"
    assert outcome.error == f"working directory not found: {missing}"


def test_an_empty_argv_is_a_programming_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="argv is empty"):
        run_process(spec_for(tmp_path, []), ProcessLimits())


# --------------------------------------------------------------------------- stop_tree


def test_stop_tree_with_a_wrong_create_time_does_not_kill_the_process(spare_sleeper: subprocess.Popen) -> None:
    real = psutil.Process(spare_sleeper.pid).create_time()
    assert stop_tree(spare_sleeper.pid, create_time=real - 3600, grace_s=0.5) == []
    time.sleep(0.2)
    assert spare_sleeper.poll() is None


def test_stop_tree_with_the_right_create_time_stops_the_group_and_leaves_the_exit_status_to_us(
    spare_sleeper: subprocess.Popen,
) -> None:
    real = psutil.Process(spare_sleeper.pid).create_time()
    signalled = stop_tree(spare_sleeper.pid, create_time=real, grace_s=5.0)
    assert signalled == [spare_sleeper.pid]
    assert spare_sleeper.wait(timeout=SAFE_WALL) == -signal.SIGTERM


def test_stop_tree_on_a_process_already_gone_does_nothing_and_does_not_raise() -> None:
    proc = subprocess.Popen(["true"], start_new_session=True)
    proc.wait()
    assert stop_tree(proc.pid, grace_s=0.1) == []


def test_stop_tree_never_signals_the_caller() -> None:
    assert stop_tree(os.getpid(), grace_s=0.1) == []


def test_stderr_lines_reach_their_callback_and_a_stop_check_ends_the_run_with_its_kind(tmp_path: Path) -> None:
    code = """
        import sys, time
        for n in range(1, 1000):
            print(f"Reconnecting... {n}", file=sys.stderr, flush=True)
            time.sleep(0.2)
    """
    errors: list[bytes] = []
    outcome = run_process(
        spec_for(tmp_path, py(code)),
        ProcessLimits(wall_timeout_s=SAFE_WALL, grace_s=2),
        on_stderr_line=errors.append,
        stop_check=lambda: ("network", "the endpoint is gone") if len(errors) >= 2 else None,
    )
    assert (outcome.error_kind, outcome.error) == ("network", "the endpoint is gone")
    assert errors[:2] == [b"Reconnecting... 1", b"Reconnecting... 2"]
    assert outcome.pid is not None
    assert is_gone(outcome.pid)
