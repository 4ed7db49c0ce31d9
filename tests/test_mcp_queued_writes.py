"""Queued writes through the MCP bridge (issue 18), driven by the official SDK client over
streamable HTTP against a real `executor run`: a queue_* tool returns a request id without
waiting for the Executor, get_write_status then says queued, applied (with what the write
did) or refused (naming the argument at fault), and what was applied is in the store."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.sessions import copy_demo
from tests.test_mcp_bridge import RunningBridge, _text


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningBridge]:
    bridge = RunningBridge(copy_demo(tmp_path_factory.mktemp("queued") / "session"), "--backend", "demo")
    yield bridge
    bridge.stop()


def test_a_queued_submit_returns_an_id_then_is_applied(served: RunningBridge) -> None:
    queued = served.call("queue_submit_task", {"name": "Write a poem", "assigned_to": "coder", "priority": "high"})
    assert not queued.is_error, _text(queued)
    ticket = queued.structured_content
    assert ticket["state"] == "queued"
    assert ticket["tool"] == "queue_submit_task"
    assert ticket["request_id"] in ticket["note"]
    status = served.settled_write(ticket["request_id"])
    assert status["state"] == "applied", status
    assert status["error"] is None
    task_id = status["result"]["task_id"]
    assert re.fullmatch(r"MCP-\d{3}", task_id)
    assert status["result"]["owner"] == "coder"
    assert status["result"]["priority"] == "P0"
    # Applied means the run has the task: it is read back from the store and runs to the end.
    done = served.wait_status(task_id, {"completed", "failed"})
    assert done["task"]["status"] == "completed", done
    assert done["task"]["source"] == "mcp"


def test_queued_writes_are_applied_in_the_order_they_were_queued(served: RunningBridge) -> None:
    tickets = [
        served.call("queue_submit_task", {"name": f"step {n}", "assigned_to": "coder"}).structured_content
        for n in range(3)
    ]
    ids = [served.settled_write(ticket["request_id"])["result"]["task_id"] for ticket in tickets]
    assert ids == sorted(ids), ids
    assert len(set(ids)) == 3


def test_a_bad_queued_write_is_reported_clearly(served: RunningBridge) -> None:
    # What the bridge can check itself is refused at once, naming the argument.
    bad_priority = served.call("queue_submit_task", {"name": "x", "assigned_to": "coder", "priority": "urgent"})
    assert bad_priority.is_error
    assert "priority" in _text(bad_priority)
    # What only the Executor knows comes back through get_write_status, naming the argument and the fix.
    role = served.call("queue_submit_task", {"name": "x", "assigned_to": "nobody"}).structured_content
    refused = served.settled_write(role["request_id"])
    assert refused["state"] == "refused", refused
    assert refused["result"] is None
    assert refused["error"].startswith("assigned_to: 'nobody' is not a role of this session; use one of:")
    dependency = served.call("queue_submit_task", {"name": "x", "assigned_to": "coder", "blocked_by": ["ZZ-9"]})
    refused = served.settled_write(dependency.structured_content["request_id"])
    assert refused["state"] == "refused"
    assert "blocked_by" in refused["error"]
    assert "ZZ-9" in refused["error"]
    cancel = served.call("queue_cancel_task", {"task_id": "NOPE-404"}).structured_content
    refused = served.settled_write(cancel["request_id"])
    assert refused["state"] == "refused"
    assert refused["error"].startswith("task_id: no task 'NOPE-404'")
    # An id the bridge never gave out is an error naming request_id, not a traceback.
    unknown = served.call("get_write_status", {"request_id": "W-nope-000001"})
    assert unknown.is_error
    assert "request_id: no queued write 'W-nope-000001'" in _text(unknown)


def test_a_queued_cancel_is_applied(served: RunningBridge) -> None:
    ticket = served.call("queue_submit_task", {"name": "to cancel", "assigned_to": "coder"}).structured_content
    task_id = served.settled_write(ticket["request_id"])["result"]["task_id"]
    cancel = served.call("queue_cancel_task", {"task_id": task_id}).structured_content
    status = served.settled_write(cancel["request_id"])
    done = served.wait_status(task_id, {"completed", "failed"})
    if status["state"] == "applied":  # it was cancelled pending or while running
        assert status["result"]["task_id"] == task_id
        assert status["result"]["was"] in ("pending", "in_progress")
        if status["result"]["was"] == "in_progress" and done["task"]["status"] == "completed":
            pass  # the attempt ended well before the stop reached it: its completion stands (CI saw this)
        else:
            assert done["task"]["last_error_kind"] == "cancelled", done
    else:  # the demo agent finished first: the refusal says so
        assert status["error"] == f"task_id: {task_id} is already completed", status
        assert done["task"]["status"] == "completed"


def test_a_queued_writes_outcome_outlives_the_run_that_took_it(tmp_path: Path) -> None:
    # The client keeps its request id through the night; the run is killed (-9) and started again
    # (by a person in the morning, or by a service manager): the id still gives the outcome, and
    # the write was applied once.
    folder = copy_demo(tmp_path / "session")
    first = RunningBridge(folder, "--backend", "demo")
    try:
        ticket = first.call("queue_submit_task", {"name": "night job", "assigned_to": "coder"}).structured_content
        applied = first.settled_write(ticket["request_id"])
        assert applied["state"] == "applied", applied
    finally:
        first.process.kill()  # nothing of it survives but what it committed
        first.process.wait(timeout=30)
        if first.process.stdout is not None:
            first.process.stdout.close()
    second = RunningBridge(folder, "--backend", "demo")
    try:
        again = second.settled_write(ticket["request_id"])
        assert again["state"] == "applied", again
        assert again["queued_at"] == applied["queued_at"]
        for field in ("task_id", "owner", "priority"):
            assert again["result"][field] == applied["result"][field]
        listed = second.call("list_tasks", {}).structured_content
        made = [task["id"] for task in listed["tasks"] if task["name"] == "night job"]
        assert made == [applied["result"]["task_id"]], listed
    finally:
        second.stop()
