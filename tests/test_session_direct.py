"""The Session actor's handlers called on the Executor's thread (``DirectLine``): batching,
a failure as a crash with a restart, and the mailbox's messages from other threads beside them.

The calling thread here plays the Executor's: the link is used from it alone, as the
Executor uses it, with the real Session actor, Supervisor and SQLite store.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from actors.session import SessionActor
from actors.session_link import SESSION, DirectLine, SessionLink
from actors.supervision import ChildSpec, RestartType, Supervisor
from protocol._base import Message
from protocol.messages import BeginRun, CreateTasks, GetState, RecordDispatch, RecordQueuedWrite, StateSnapshot
from protocol.records import TaskRow
from session.loader import load_session
from session.store import StoreReader
from tests.sessions import write_session


class Line:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.sunk: list[tuple[str, Any]] = []  # (thread name, event) as the sinks see them
        self.resent = 0
        self.running: list[Message] = []
        self.direct = DirectLine()
        self.supervisor = Supervisor("test")
        session = load_session(folder)
        self.supervisor.start_child(
            ChildSpec(
                name=SESSION,
                start=lambda inc: SessionActor.start(SESSION, None, inc, session, [self.sink], 0.5, self.direct),
                restart=RestartType.PERMANENT,
                shutdown_timeout_s=10.0,
            )
        )
        self.link = SessionLink(self.supervisor, self.resend, self.direct)

    def sink(self, _event_id: int, _at: str, event: Any) -> None:
        self.sunk.append((threading.current_thread().name, event))

    def resend(self) -> list[Message]:
        self.resent += 1
        return list(self.running)

    def stored_runs(self) -> list[Any]:
        reader = StoreReader.open(self.folder)
        assert reader is not None
        try:
            return reader.runs()
        finally:
            reader.close()


@pytest.fixture
def line(tmp_path: Path) -> Iterator[Line]:
    folder = write_session(tmp_path / "s", {"worker": "T"}, {"T-1": [], "T-2": []})
    line = Line(folder)
    line.link.ask(BeginRun(run_id="R1", command="run", pid=1, max_workers=2))
    line.link.ask(CreateTasks(tasks=(TaskRow(id="T-1", owner="worker"), TaskRow(id="T-2", owner="worker"))))
    yield line
    line.supervisor.stop_all()


def _dispatch(task_id: str, run_row_id: int) -> RecordDispatch:
    return RecordDispatch(
        run_row_id=run_row_id,
        task_id=task_id,
        attempt=1,
        worker_id=f"worker-{run_row_id}",
        role="worker",
        backend="command",
        run_id="R1",
        log_path=f"/logs/{task_id}-a1.log",
    )


class NotASessionMessage(Message, frozen=True):
    """A message the Session has no handler for: its handler raises, as a bug of ours would."""


def test_records_are_written_on_the_caller_s_thread_and_committed_when_it_says_so(line: Line) -> None:
    before = len(line.sunk)
    line.link.tell(_dispatch("T-1", 1))
    assert line.stored_runs() == []  # still in the open batch: other readers do not see it yet
    assert len(line.sunk) == before  # nor is it shown
    line.link.commit_open_batch()
    assert [run.task_id for run in line.stored_runs()] == ["T-1"]
    shown = [thread for thread, event in line.sunk[before:] if getattr(event, "task_id", None) == "T-1"]
    assert shown
    assert set(shown) == {threading.current_thread().name}  # committed and published right here


def test_a_handler_that_fails_on_the_direct_line_is_the_session_s_crash_and_it_restarts(line: Line) -> None:
    line.link.tell(_dispatch("T-1", 1))
    line.running = [_dispatch("T-1", 1)]
    first = line.supervisor.ref(SESSION)
    assert first is not None
    line.link.tell(NotASessionMessage())
    assert first.actor_stopped.wait(10)
    second = line.supervisor.ref(SESSION)
    assert second is not None
    assert second is not first
    assert line.supervisor.incarnation(SESSION) == 2
    assert line.resent == 1  # the running attempts' records went to the new one
    snapshot = line.link.ask(GetState())  # and it answers
    assert isinstance(snapshot, StateSnapshot)
    assert [task.status for task in snapshot.tasks if task.id == "T-1"] == ["in_progress"]
    # What the failed one had written before the failing message was committed, not lost.
    assert [run.task_id for run in line.stored_runs()] == ["T-1"]


def test_the_mailbox_s_messages_from_another_thread_interleave_safely_with_direct_calls(line: Line) -> None:
    ref = line.supervisor.ref(SESSION)
    assert ref is not None

    def bridge() -> None:  # the MCP bridge queues its writes through the mailbox
        for index in range(200):
            ref.tell(RecordQueuedWrite(write_id=f"w{index}", tool="submit_task", message_json="{}", queued_at=1.0))

    other = threading.Thread(target=bridge)
    other.start()
    for index in range(200):
        line.link.tell(_dispatch("T-1" if index % 2 else "T-2", index + 1))
    other.join()
    line.link.ask(GetState())  # a reply commits the batch
    ref.ask(GetState(), timeout=10)  # and the mailbox is through
    reader = StoreReader.open(line.folder)
    assert reader is not None
    try:
        assert len(reader.runs()) == 200
        assert len(reader.conn.execute("SELECT id FROM queued_writes").fetchall()) == 200
    finally:
        reader.close()
