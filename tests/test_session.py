"""The Session actor, driven with the records of a run: what lands in state.db and on the bus."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pykka
import pytest

from actors.session import SessionActor
from protocol.messages import (
    AttemptResult,
    AwaitCommit,
    BeginRun,
    CreateTasks,
    FinishRun,
    RecordDispatch,
    RecordOutcome,
    RecordStart,
)
from protocol.records import TaskRow
from session.loader import load_session
from session.message_bus import read_messages
from session.redaction import register_secret
from session.store import StoreReader
from tests.sessions import write_session

TIMEOUT = 10


@pytest.fixture
def session(tmp_path: Path) -> Iterator[tuple[pykka.ActorRef[Any], Path]]:
    folder = write_session(tmp_path / "s", {"worker": "T"}, {"T-1": [], "T-2": ["T-1"]})
    ref = SessionActor.start("session", None, 1, load_session(folder), (), 0.5)
    try:
        ref.ask(BeginRun(run_id="R1", command="run", pid=1, max_workers=2), timeout=TIMEOUT)
        ref.ask(CreateTasks(tasks=(TaskRow(id="T-1", owner="worker"), TaskRow(id="T-2", owner="worker"))))
        yield ref, folder
    finally:
        ref.stop(block=True, timeout=TIMEOUT)


def _dispatch(task_id: str, run_row_id: int, worker_id: str = "worker-1") -> RecordDispatch:
    return RecordDispatch(
        run_row_id=run_row_id,
        task_id=task_id,
        attempt=1,
        worker_id=worker_id,
        role="worker",
        backend="command",
        run_id="R1",
        log_path=f"/logs/{task_id}-a1.log",
    )


def _completed(attempt: int, result: AttemptResult, **extra: Any) -> RecordOutcome:
    """T-1's attempt (run row = attempt number) completed, unblocking T-2."""
    return RecordOutcome(
        run_row_id=attempt,
        task_id="T-1",
        attempt=attempt,
        role="worker",
        result=result,
        disposition="completed",
        unblocked=("T-2",),
        **extra,
    )


def _type(event: Any) -> str:
    return str(event.__struct_config__.tag)


def _stored(folder: Path) -> tuple[list[Any], list[Any], list[Any]]:
    """(runs, events of the tasks, tasks) as committed."""
    reader = StoreReader.open(folder)
    assert reader is not None
    try:
        events = [event for _, _, event in reader.events() if getattr(event, "task_id", None)]
        return reader.runs(), events, reader.tasks()
    finally:
        reader.close()


def test_a_dispatch_recorded_twice_writes_its_run_its_events_and_its_bus_line_once(session):
    ref, folder = session
    ref.tell(_dispatch("T-1", 1))
    ref.tell(_dispatch("T-1", 1, worker_id="worker-2"))  # re-sent after a restart of the Session actor
    ref.ask(AwaitCommit(), timeout=TIMEOUT)
    runs, events, tasks = _stored(folder)
    assert [(run.id, run.worker_id) for run in runs] == [(1, "worker-1")]
    dispatched = [_type(event) for event in events if _type(event) in ("worker_spawned", "task_dispatched")]
    assert dispatched == ["worker_spawned", "task_dispatched"]
    assert {row.id: (row.status, row.attempts) for row in tasks}["T-1"] == ("in_progress", 1)
    assert [line["data"]["phase"] for line in read_messages(folder)] == ["dispatched"]


def test_an_attempt_is_recorded_from_dispatch_to_completion(session):
    ref, folder = session
    ref.tell(_dispatch("T-1", 1))
    ref.tell(RecordStart(run_row_id=1, task_id="T-1", attempt=1, role="worker", pid=42, create_time=1.5))
    result = AttemptResult(ok=True, exit_code=0, summary="T-1 done")
    ref.tell(_completed(1, result))
    ref.ask(AwaitCommit(), timeout=TIMEOUT)
    runs, events, tasks = _stored(folder)
    (run,) = runs
    assert (run.pid, run.pid_create_time, run.outcome, run.exit_code) == (42, 1.5, "completed", 0)
    assert run.ended_at is not None
    assert [_type(event) for event in events if event.task_id == "T-1"] == [
        "task_created",
        "worker_spawned",
        "task_dispatched",
        "task_started",
        "task_completed",
    ]
    row = {row.id: row for row in tasks}["T-1"]
    assert (row.status, row.completed_at is not None, row.last_error) == ("completed", True, None)
    assert [line["type"] for line in read_messages(folder)] == ["progress", "task_complete", "task_unblocked"]


def test_no_secret_in_task_text_or_agent_output_reaches_state_db_the_bus_or_the_session_file(session):
    ref, folder = session
    secret, shaped = "sessionSECRETvalue-0123456789", "xoxb-" + "4Kd8Lq2Pz7" * 3
    register_secret(secret)
    ref.ask(CreateTasks(tasks=(TaskRow(id="T-3", owner="worker", subject=shaped, description=f"use {secret}"),)))
    ref.tell(_dispatch("T-1", 1))
    ref.tell(RecordStart(run_row_id=1, task_id="T-1", attempt=1, role="worker", pid=42, create_time=1.5))
    failed = AttemptResult(ok=False, error_kind="crash", error=f"token={secret} {shaped}", summary=shaped)
    ref.tell(RecordOutcome(run_row_id=1, task_id="T-1", attempt=1, role="worker", result=failed, disposition="retry"))
    ref.tell(msgspec.structs.replace(_dispatch("T-1", 2), attempt=2))
    done = AttemptResult(
        ok=True,
        exit_code=0,
        summary=f"done with {secret}",
        artifacts=(f"out/{shaped}.md",),
        files_modified=(f"src/{secret}.py",),
        model=shaped,
        agent_session_id=secret,
    )
    ref.tell(_completed(2, done, report_text=f"[worker] T-1 done: {shaped}"))
    ref.ask(FinishRun(run_id="R1", clean=True, interrupted_tasks=()), timeout=TIMEOUT)
    bus, projection = folder / ".msg" / "messages.jsonl", folder / "team-session.json"
    written = [*(folder / ".executor").glob("state.db*"), bus, projection]
    for path in written:
        data = path.read_bytes()
        assert secret.encode() not in data, path
        assert shaped.encode() not in data, path
    assert "…6789" in bus.read_text(encoding="utf-8")  # masked, not dropped
    runs, _, _ = _stored(folder)
    assert [run.outcome for run in runs] == ["failed", "completed"]


def test_events_of_a_handler_that_fails_are_not_shown_for_they_are_not_stored(tmp_path):
    # The failing handler's savepoint undoes its rows and events in the store; the sinks (the
    # console, --json-events) must not show them either: nothing is visible before it is durable.
    from protocol.events import ReportRefused  # noqa: PLC0415
    from protocol.messages import RecordEvents  # noqa: PLC0415

    folder = write_session(tmp_path / "s", {"worker": "T"}, {"T-1": []})
    shown: list[str] = []
    sink = lambda _id, _at, event: shown.append(_type(event))  # noqa: E731
    ref = SessionActor.start("session", None, 1, load_session(folder), [sink], 0.5)
    ref.ask(BeginRun(run_id="R1", command="run", pid=1, max_workers=2), timeout=TIMEOUT)
    before = len(shown)
    kept = ReportRefused(worker_id="w", task_id="T-1", attempt=1, report="start", current_attempt=2)
    ref.tell(RecordEvents(events=(kept,)))
    undone = ReportRefused(worker_id="w", task_id="T-1", attempt=3, report="start", current_attempt=2)
    # A value the store cannot write: the handler fails after it appended its event.
    bad = RecordEvents(events=(undone,), meta={"key": object()})  # type: ignore[dict-item]
    with pytest.raises(Exception):  # noqa: B017 - the handler's own failure, whatever its type
        ref.ask(bad, timeout=TIMEOUT)
    ref.stop(block=True, timeout=TIMEOUT)
    stored = [event.attempt for event in _stored(folder)[1] if _type(event) == "report_refused"]
    assert stored == [1]
    assert shown[before:] == ["report_refused"]
