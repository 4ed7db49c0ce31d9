"""The descendant list used where there is no cgroup: what it finds, and what it costs.

Real processes; the clock is the ``now`` each look is given (the table is read on the same
clock), so when a look scans the machine is decided here, not by the test's speed.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from backends.containment import Descendants, ProcessTable


def _wait_for_descendants(pid: int, count: int) -> None:
    deadline = time.monotonic() + 10
    while len(psutil.Process(pid).children(recursive=True)) < count:
        assert time.monotonic() < deadline, "the test's process tree never formed"
        time.sleep(0.01)


@pytest.fixture
def tree(tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A shell with a child in its group, one in a session of its own (``setsid``), and one whose
    name holds ``) (`` (the name field of /proc/<pid>/stat may hold anything)."""
    odd = tmp_path / "a) (b c"
    odd.symlink_to("/bin/sleep")
    shell = subprocess.Popen(["sh", "-c", f"sleep 30 & setsid sleep 30 & '{odd}' 30 & wait"])
    _wait_for_descendants(shell.pid, 3)
    try:
        yield shell
    finally:
        for child in psutil.Process(shell.pid).children(recursive=True):
            child.kill()
        shell.kill()
        shell.wait()


def test_a_look_records_every_descendant_and_nothing_else(tree):
    bystander = subprocess.Popen(["sleep", "30"])
    try:
        watch = Descendants(tree.pid, table=ProcessTable(), now=0.0)
        watch.look(now=1.0)
        expected = {child.pid for child in psutil.Process(tree.pid).children(recursive=True)}
        assert set(watch.seen) == expected
        assert len(expected) == 3
        assert bystander.pid not in watch.seen
        # Each recorded process carries its create time: a pid reused later is not the same process.
        odd = next(proc for proc in watch.seen.values() if proc.name().startswith("a) (b"))
        assert odd.create_time() == psutil.Process(odd.pid).create_time()
    finally:
        bystander.kill()
        bystander.wait()


def test_one_scan_serves_every_attempt_that_looks_within_the_table_s_age(tree):
    table = ProcessTable(max_age_s=0.2)
    first = Descendants(tree.pid, table=table, now=0.0)
    second = Descendants(tree.pid, table=table, now=0.0)
    first.look(now=1.0)
    second.look(now=1.1)
    assert table.scans == 1
    assert set(first.seen) == set(second.seen)
    assert len(first.seen) == 3
    second.look(now=1.7)  # its next look: the scan is 0.7 s old now
    assert table.scans == 2


def test_an_attempt_started_after_the_last_scan_gets_a_new_one(tree):
    table = ProcessTable(max_age_s=10.0)
    Descendants(tree.pid, table=table, now=0.0).look(now=1.0)
    late = Descendants(tree.pid, table=table, now=1.05)  # spawned after that scan was taken
    late.look(now=1.2)
    assert table.scans == 2, "a scan older than the attempt cannot hold what the attempt started"
    assert len(late.seen) == 3


def test_a_command_over_before_the_first_look_costs_no_scan(tree):
    table = ProcessTable()
    watch = Descendants(tree.pid, table=table, interval_s=0.5, first_look_s=0.1, now=0.0)
    watch.look(now=0.0)
    watch.look(now=0.09)
    assert table.scans == 0
    assert not watch.seen
    watch.look(now=0.1)
    assert table.scans == 1
    assert len(watch.seen) == 3
    watch.look(now=0.5)  # within its interval
    assert table.scans == 1


def test_stop_ends_what_was_recorded(tree):
    watch = Descendants(tree.pid, table=ProcessTable(), now=0.0)
    watch.look(now=1.0)
    recorded = list(watch.seen.values())
    stopped = watch.stop(grace_s=2.0)
    assert sorted(stopped) == sorted(proc.pid for proc in recorded)
    deadline = time.monotonic() + 5
    while any(proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE for proc in recorded):
        assert time.monotonic() < deadline, "a recorded descendant survived stop()"
        time.sleep(0.02)


def test_a_pid_given_to_a_new_process_is_not_taken_for_the_old_one(tree, monkeypatch):
    # Between two scans a process may end and its pid go to another: the table knows processes
    # by pid and start, so the old psutil.Process (holding the old create time, with which a
    # signal would be refused) is never handed out for the new one.
    from backends import containment  # noqa: PLC0415 - only this test reaches inside

    child = psutil.Process(tree.pid).children()[0].pid
    starts = iter(["100", "100", "200"])
    monkeypatch.setattr(containment, "_parents_from_proc", lambda: {child: (tree.pid, next(starts))})
    table = ProcessTable(max_age_s=0.0)
    first = table.descendants(tree.pid, now=1.0, not_before=0.0)
    same = table.descendants(tree.pid, now=2.0, not_before=0.0)
    successor = table.descendants(tree.pid, now=3.0, not_before=0.0)
    assert table.scans == 3
    assert first[0] is same[0], "the same process (same start) is not made again"
    assert successor[0] is not first[0], "a new start is a new process"
