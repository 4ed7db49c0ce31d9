"""Queued writes in the store (the MCP queue_* tools), driven on the real actor tree: recorded
before the Executor handles them, settled in the transaction that applies them, and applied by
the next run when a run stopped with them still in its inbox — once, however many runs follow."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

from actors.queued_writes import record_queued, redo
from protocol.bridge import Cancelled, CancelTask, SubmitTask, TaskAccepted
from protocol.messages import CreateTasks, SettleWrite
from protocol.records import QueuedWriteRow, TaskRow
from session.report import build_report
from session.store import Store
from tests.fake_backend import HOLD, FakeBackend
from tests.harness import Tree
from tests.sessions import write_session
from tests.waiting import wait_for


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    return write_session(tmp_path / "s", {"worker": "A"}, {"A-001": []})


@pytest.fixture
def runs(folder: Path) -> Iterator[list[Tree]]:
    started: list[Tree] = []
    yield started
    for run in started:
        run.close()


def _start(folder: Path, runs: list[Tree]) -> Tree:
    fake = FakeBackend()
    fake.script("A-001", HOLD)  # the session's own task holds the run open
    run = Tree(folder, fake, keep_alive=True)
    runs.append(run)
    return run


def _queue(run: Tree, request_id: str, message: Any, tool: str, send: bool = True) -> Any:
    """What the run's side of the bridge does with a queued write: record it, then hand it over."""
    message = msgspec.structs.replace(message, write_id=request_id)
    session = run.ref.proxy().supervisor.get(timeout=10).ref("session")
    record_queued(session, (request_id, tool, time.time()), message)
    return run.ask(message) if send else None


def _stored(run: Tree, request_id: str) -> QueuedWriteRow | None:
    row: QueuedWriteRow | None = run._read(lambda reader: reader.queued_write(request_id))
    return row


def test_a_queued_submit_is_settled_with_the_task_it_created(folder: Path, runs: list[Tree]) -> None:
    run = _start(folder, runs)
    reply = _queue(run, "W-abc-000001", SubmitTask(name="night job", assigned_to="worker"), "queue_submit_task")
    assert isinstance(reply, TaskAccepted)
    row = _stored(run, "W-abc-000001")
    assert row is not None
    assert (row.state, row.tool, row.error) == ("applied", "queue_submit_task", None)
    assert row.reply_json is not None
    assert msgspec.json.decode(row.reply_json, type=TaskAccepted).task.id == reply.task.id == "MCP-001"
    assert msgspec.json.decode(row.message_json or "", type=SubmitTask).name == "night job"


def test_the_record_that_applies_a_write_settles_it_in_its_own_transaction(folder: Path, runs: list[Tree]) -> None:
    # Settled by the Session actor with the task row, not by the Executor's word after it: a run
    # killed between the two would otherwise find the task made and the write still queued, and
    # make it again.
    run = _start(folder, runs)
    session = run.ref.proxy().supervisor.get(timeout=10).ref("session")
    row = TaskRow(id="MCP-009", owner="worker", subject="made by a queued write", max_attempts=3)
    session.ask(CreateTasks(tasks=(row,), write_id="W-abc-000009"), timeout=10)
    stored = _stored(run, "W-abc-000009")
    assert stored is not None
    assert (stored.state, stored.tool) == ("applied", "queue_submit_task")
    assert msgspec.json.decode(stored.reply_json or "", type=TaskAccepted).task.id == "MCP-009"


def test_a_refused_queued_write_is_settled_with_the_reason_naming_the_argument(folder: Path, runs: list[Tree]) -> None:
    run = _start(folder, runs)
    _queue(run, "W-abc-000002", SubmitTask(name="x", assigned_to="nobody"), "queue_submit_task")
    row = wait_for(lambda: (found := _stored(run, "W-abc-000002")) and found.state != "queued" and found, what="it")
    assert row.state == "refused"
    assert row.error is not None
    assert row.error.startswith("assigned_to: 'nobody' is not a role of this session")
    assert "MCP-001" not in run.tasks()


def test_a_queued_cancel_is_settled_with_what_the_task_was(folder: Path, runs: list[Tree]) -> None:
    run = _start(folder, runs)
    created = _queue(run, "W-abc-000003", SubmitTask(name="later", blocked_by=("A-001",)), "queue_submit_task")
    _queue(run, "W-abc-000004", CancelTask(task_id=created.task.id), "queue_cancel_task")
    row = _stored(run, "W-abc-000004")
    assert row is not None
    assert row.state == "applied"
    assert msgspec.json.decode(row.reply_json or "", type=Cancelled) == Cancelled(task_id="MCP-001", was="pending")
    assert run.tasks()["MCP-001"].last_error_kind == "cancelled"


def test_a_write_a_stopped_run_left_queued_is_applied_once_by_the_next_run(folder: Path, runs: list[Tree]) -> None:
    # The run stops with the write recorded but never handled (in its inbox when it was killed).
    first = _start(folder, runs)
    _queue(
        first, "W-abc-000005", SubmitTask(name="queued at the stop", assigned_to="worker"), "queue_submit_task", False
    )
    first.close()
    store = Store.open(folder)  # what the stopped run left
    try:
        (left,) = store.unsettled_writes()
    finally:
        store.close()
    assert left.id == "W-abc-000005"
    assert build_report(folder).queued_writes_waiting == ["W-abc-000005"]  # `executor check` says so
    second = _start(folder, runs)
    row = wait_for(lambda: (found := _stored(second, "W-abc-000005")) and found.state != "queued" and found, what="it")
    assert row.state == "applied"
    task_id = msgspec.json.decode(row.reply_json or "", type=TaskAccepted).task.id
    assert second.tasks()[task_id].subject == "queued at the stop"
    assert build_report(folder).queued_writes_waiting == []
    second.close()
    third = _start(folder, runs)  # and once only: the run after that finds nothing to redo
    third.sync()
    assert [row.id for row in third.tasks().values() if row.id.startswith("MCP-")] == [task_id]


def test_the_first_settlement_of_a_write_stands(tmp_path: Path) -> None:
    # The record that applies a write settles it; the Executor's settlement after it (or a
    # refusal of a write re-sent after a restart) must not change what the client reads.
    store = Store.open(tmp_path)
    try:
        store.record_queued_write("W-1", "queue_submit_task", "{}", 1.0)
        store.settle_write("W-1", "queue_submit_task", '{"first": true}', None)
        store.settle_write("W-1", "queue_submit_task", '{"second": true}', None)
        store.settle_write("W-1", "queue_submit_task", None, "task_id: refused later")
        store.record_queued_write("W-1", "queue_submit_task", "{}", 2.0)  # sent again: still settled
        row = store.queued_write("W-1")
        assert row is not None
        assert (row.state, row.reply_json, row.error, row.queued_at) == ("applied", '{"first": true}', None, 1.0)
        # A settlement whose queued record was lost (a restarted Session actor) is kept all the same.
        store.settle_write("W-2", "queue_cancel_task", None, "task_id: no task 'X-1'")
        lost = store.queued_write("W-2")
        assert lost is not None
        assert (lost.state, lost.message_json, lost.error) == ("refused", None, "task_id: no task 'X-1'")
        assert store.unsettled_writes() == []
    finally:
        store.close()


def test_a_queued_write_that_cannot_be_read_back_is_refused_and_the_run_goes_on(tmp_path: Path) -> None:
    # A damaged record (a disk error, an older version's tool) must not stop the next run's boot.
    for message_json, tool, why in (
        ("{not json", "queue_submit_task", "not applied after a restart: JSON is malformed"),
        ('{"type": "submit_task"}', "queue_submit_task", "not applied after a restart: Object missing required field"),
        ("{}", "queue_frobnicate", "not applied after a restart: unknown tool 'queue_frobnicate'"),
    ):
        again = redo(QueuedWriteRow(id="W-1", tool=tool, message_json=message_json))
        assert isinstance(again, SettleWrite)
        assert again.error is not None
        assert again.error.startswith(why), again.error
    message = redo(
        QueuedWriteRow(id="W-2", tool="queue_cancel_task", message_json='{"type":"cancel_task","task_id":"A-1"}')
    )
    assert message == CancelTask(task_id="A-1", write_id="W-2")
