"""One executor per session: the lock refuses a second holder and dies with its owner."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from session.lock import SessionBusy, SessionLock, read_holder

HOLD = textwrap.dedent(
    """
    import sys, time
    from session.lock import SessionLock
    lock = SessionLock(sys.argv[1]); lock.acquire("run")
    print("held", flush=True)
    time.sleep(600)
    """
)


@pytest.fixture
def holder_process(tmp_path):
    process = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    assert process.stdout.readline().strip() == "held"
    yield process
    if process.poll() is None:
        process.kill()
    process.wait()
    process.stdout.close()


def test_a_second_holder_is_refused_with_the_first_ones_pid(tmp_path, holder_process):
    with pytest.raises(SessionBusy) as caught:
        SessionLock(tmp_path).acquire("resume")
    assert f"pid {holder_process.pid}" in str(caught.value)
    assert "executor run" in str(caught.value)


def test_read_holder_sees_a_live_holder_without_taking_the_lock(tmp_path, holder_process):
    holder = read_holder(tmp_path)
    assert holder is not None
    assert holder.pid == holder_process.pid
    # Reading took nothing: the holder is still the only one, and still refuses others.
    with pytest.raises(SessionBusy):
        SessionLock(tmp_path).acquire("run")


def test_kill_9_of_the_holder_frees_the_lock_without_any_clean_up(tmp_path, holder_process):
    os.kill(holder_process.pid, signal.SIGKILL)
    holder_process.wait()
    assert read_holder(tmp_path) is None, "a dead holder is not reported as running"
    lock = SessionLock(tmp_path)
    lock.acquire("resume")
    assert read_holder(tmp_path) is not None
    lock.release()


def test_release_lets_the_next_executor_in(tmp_path):
    with SessionLock(tmp_path) as first:
        first.acquire("run")
    deadline = time.monotonic() + 5
    second = SessionLock(tmp_path)
    second.acquire("run")
    assert time.monotonic() < deadline
    second.release()
    assert read_holder(tmp_path) is None


def test_a_childs_start_time_read_from_proc_is_psutils_even_when_its_name_holds_parentheses(tmp_path):
    # The worker reads each child's create time itself (three system calls); the reconciler and
    # stop_tree compare it with psutil's, so the two must agree.  A program may call itself
    # anything: the name field of /proc/<pid>/stat can hold spaces and ") (".
    import psutil  # noqa: PLC0415 - only this test needs it

    from session.processes import started_at  # noqa: PLC0415

    odd = tmp_path / "a) (b c"
    odd.symlink_to("/bin/sleep")
    child = subprocess.Popen([str(odd), "5"])
    try:
        assert psutil.Process(child.pid).name().startswith("a) (b")
        assert started_at(child.pid) == pytest.approx(psutil.Process(child.pid).create_time(), abs=0.02)
        assert started_at(os.getpid()) == pytest.approx(psutil.Process().create_time(), abs=0.02)
    finally:
        child.kill()
        child.wait()
    assert started_at(child.pid) is None  # reaped: no such process
