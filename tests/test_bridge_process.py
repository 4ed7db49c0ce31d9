"""`executor run --http` serves HTTP from a bridge process of its own (issue 18, part 3), driven
for real: the run's console script, its bridge process, the official SDK client over HTTP.

- the listening socket is the bridge process's, and what goes through it reaches the run: a
  queued write is applied and its status readable, a waiting write returns what it did, the
  tools that ask the run's services (fleet, key pool, router) answer;
- kill -9 of the run takes the bridge process with it: nothing is left listening;
- a bridge process that dies is reported on the run's console and replaced on the same
  address, and the ids of writes queued before it died still give their outcome;
- one that keeps dying is given up (said once), and the run goes on without it;
- one that fails before it ever serves stops the run (exit 2) naming its log.
"""

from __future__ import annotations

import queue
import signal
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psutil
import pytest

from tests.sessions import copy_demo
from tests.test_mcp_bridge import RunningBridge, _text

#: A bound for waiting on a process or a line, never a measurement: the tests wait for events.
_BOUND_S = 60.0


def _bridge_process(bridge: RunningBridge) -> psutil.Process:
    """The run's bridge process (`python -P -m cli.bridge_process`)."""
    found = [child for child in psutil.Process(bridge.process.pid).children() if _runs(child, "cli.bridge_process")]
    assert len(found) == 1, f"the run should have one bridge process, has {found}"
    return found[0]


def _runs(process: psutil.Process, module: str) -> bool:
    """Whether ``process`` is a live ``python -m module``: one killed a moment ago may still be a
    zombie until its parent reaps it, and has no command line any more."""
    try:
        return module in process.cmdline()
    except psutil.Error:
        return False


def _port(bridge: RunningBridge) -> int:
    port = urlsplit(bridge.url).port
    assert port is not None
    return port


class _Lines:
    """The run's console lines as they come, read on a thread (a readline blocks)."""

    def __init__(self, bridge: RunningBridge) -> None:
        self.seen: list[str] = []
        self._queue: queue.Queue[str] = queue.Queue()
        stream = bridge.process.stdout
        assert stream is not None
        self.closed = threading.Event()

        def read() -> None:
            with stream:
                for line in stream:
                    self._queue.put(line)
            self.closed.set()

        threading.Thread(target=read, daemon=True).start()

    def wait_for(self, text: str) -> str:
        """The first line holding ``text`` (the lines before it are kept in ``seen``)."""
        deadline = time.monotonic() + _BOUND_S
        while time.monotonic() < deadline:
            try:
                line = self._queue.get(timeout=1)
            except queue.Empty:
                continue
            self.seen.append(line)
            if text in line:
                return line
        raise AssertionError(f"no line with {text!r} from the run; it printed: {''.join(self.seen)}")


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningBridge]:
    bridge = RunningBridge(copy_demo(tmp_path_factory.mktemp("bridgeproc") / "session"), "--backend", "demo")
    yield bridge
    bridge.stop()


def test_the_http_server_is_a_process_of_its_own(served: RunningBridge) -> None:
    child = _bridge_process(served)
    assert child.pid != served.process.pid
    listening = [c for c in child.net_connections(kind="tcp") if c.status == psutil.CONN_LISTEN]
    assert [c.laddr.port for c in listening] == [_port(served)]
    # Loopback only, as before.
    assert listening[0].laddr.ip == "127.0.0.1"
    # The owner token never appears on its command line or in its environment.
    assert served.token not in " ".join(child.cmdline())
    assert served.token not in "".join(child.environ().values())


def test_a_queued_write_through_the_bridge_process_is_applied_and_readable(served: RunningBridge) -> None:
    ticket = served.call("queue_submit_task", {"name": "Write a haiku", "assigned_to": "coder"})
    assert not ticket.is_error, _text(ticket)
    status = served.settled_write(ticket.structured_content["request_id"])
    assert status["state"] == "applied", status
    task_id = status["result"]["task_id"]
    done = served.wait_status(task_id, {"completed", "failed"})
    assert done["task"]["status"] == "completed", done
    # A refusal only the run can give crosses back with its reason.
    refused = served.call("queue_submit_task", {"name": "x", "assigned_to": "nobody"})
    status = served.settled_write(refused.structured_content["request_id"])
    assert status["state"] == "refused"
    assert status["error"].startswith("assigned_to: 'nobody' is not a role of this session")


def test_waiting_writes_and_service_asks_cross_to_the_run(served: RunningBridge) -> None:
    submitted = served.call("submit_task", {"name": "Write a limerick", "assigned_to": "coder"})
    assert not submitted.is_error, _text(submitted)
    assert submitted.structured_content["owner"] == "coder"
    refused = served.call("cancel_task", {"task_id": "NOPE-1"})
    assert refused.is_error
    assert "task_id: no task 'NOPE-1'" in _text(refused)
    fleet = served.call("get_fleet_status", {})  # the Executor, then the key pool and MCP clients services
    assert not fleet.is_error, _text(fleet)
    assert fleet.structured_content["run_id"]
    choice = served.call("select_model", {"task_complexity": "low"})  # the router service, and a tell
    # The router answered (a choice, or its refusal naming the argument), not "not running"/"busy".
    assert not choice.is_error or _text(choice).startswith("task_complexity/force_model:"), _text(choice)


def test_kill_9_of_the_run_takes_the_bridge_process_with_it(tmp_path: Path) -> None:
    bridge = RunningBridge(copy_demo(tmp_path / "session"), "--backend", "demo")
    child = _bridge_process(bridge)
    port = _port(bridge)
    socket.create_connection(("127.0.0.1", port), timeout=10).close()  # it serves
    bridge.process.kill()
    bridge.process.communicate()
    child.wait(timeout=_BOUND_S)  # raises psutil.TimeoutExpired if it outlives the run
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=10)


def test_a_bridge_process_that_dies_is_reported_and_replaced(tmp_path: Path) -> None:
    bridge = RunningBridge(copy_demo(tmp_path / "session"), "--backend", "demo")
    lines = _Lines(bridge)
    try:
        ticket = bridge.call("queue_submit_task", {"name": "Before the crash", "assigned_to": "coder"})
        request_id = ticket.structured_content["request_id"]
        before = bridge.settled_write(request_id)
        assert before["state"] == "applied", before
        child = _bridge_process(bridge)
        child.kill()
        reported = lines.wait_for("the HTTP bridge process")
        assert f"! the HTTP bridge process (pid {child.pid}) was killed by SIGKILL" in reported
        assert "The run goes on" in reported
        assert ".executor/bridge.log" in reported
        again = lines.wait_for("the HTTP bridge serves again")
        assert f"(pid {_bridge_process(bridge).pid}) on {bridge.url}" in again
        # Same address, same token; the write queued before the crash still gives its outcome.
        after = bridge.settled_write(request_id)
        assert after["state"] == "applied", after
        assert after["result"] == before["result"]
        fresh = bridge.call("queue_submit_task", {"name": "After the crash", "assigned_to": "coder"})
        assert bridge.settled_write(fresh.structured_content["request_id"])["state"] == "applied"
    finally:
        bridge.process.send_signal(signal.SIGINT)  # the line reader owns stdout: no communicate()
        bridge.process.wait(timeout=_BOUND_S)
        lines.closed.wait(_BOUND_S)


def test_a_bridge_process_that_keeps_dying_is_given_up_and_the_run_goes_on(tmp_path: Path) -> None:
    # Past MAX_RESTARTS exits within RESTART_PERIOD_S the run stops replacing it, says so once,
    # and goes on with its tasks (a crash loop must not take the run down, nor spin).
    from bridge.host import MAX_RESTARTS, RESTART_PERIOD_S  # noqa: PLC0415

    bridge = RunningBridge(copy_demo(tmp_path / "session"), "--backend", "demo")
    lines = _Lines(bridge)
    try:
        for _ in range(MAX_RESTARTS):
            _bridge_process(bridge).kill()
            lines.wait_for("the HTTP bridge serves again")
        last = _bridge_process(bridge)
        last.kill()
        given_up = lines.wait_for("so the run goes on without it")
        assert f"(pid {last.pid}) was killed by SIGKILL" in given_up
        assert f"it failed {MAX_RESTARTS + 1} times within {RESTART_PERIOD_S:g}s" in given_up
        assert f"({bridge.url} is not served)" in given_up
        last.wait(timeout=_BOUND_S)
        assert not [c for c in psutil.Process(bridge.process.pid).children() if _runs(c, "cli.bridge_process")]
        assert bridge.process.poll() is None  # the run itself goes on
    finally:
        bridge.process.send_signal(signal.SIGINT)
        code = bridge.process.wait(timeout=_BOUND_S)
        lines.closed.wait(_BOUND_S)
    assert code == 0, "".join(lines.seen)  # stopped by the person at the terminal: kept, resumable


def test_a_bridge_process_that_fails_before_it_serves_stops_the_run_with_where_to_look(
    tmp_path: Path, executor_cli: Any
) -> None:
    # A broken web stack on this machine (stood in for by a fastapi that cannot be imported: the
    # run itself never imports it, its bridge process does): the run must not go on half-served,
    # nor hang, nor leave its lock behind; it says where the reason is, and the next run on a
    # mended machine starts cleanly.
    folder = copy_demo(tmp_path / "session")
    shadow = tmp_path / "shadow"
    shadow.mkdir()
    (shadow / "fastapi.py").write_text('raise ImportError("fastapi cannot load here (the test says so)")\n')
    broken = executor_cli(
        "run", "--session", str(folder), "--backend", "demo", "--http", "0", env={"PYTHONPATH": str(shadow)}
    )
    assert broken.returncode == 2, broken.stdout + broken.stderr
    log = folder / ".executor" / "bridge.log"
    assert f"before it served. See {log}" in broken.stdout + broken.stderr
    assert "Traceback" not in broken.stdout + broken.stderr
    assert "fastapi cannot load here" in log.read_text()
    mended = executor_cli("run", "--session", str(folder), "--backend", "demo", "--exit-when-done")
    assert mended.returncode == 0, mended.stdout + mended.stderr
