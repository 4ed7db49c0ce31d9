"""The SQLite event store: schema, migrations, writes, and a reader that never writes."""

from __future__ import annotations

import errno
import re
import sqlite3
import threading
from datetime import UTC, datetime

import msgspec
import pytest
import sqlite_utils

from protocol.events import TaskCompleted, TaskCreated, TaskFailed
from protocol.types import TaskStatus
from session.redaction import register_secret
from session.store import Store, StoreError, StoreReader, TaskRow, storage_problem, utc_now
from session.store_changes import RunChange, RunStart, TaskChange
from session.store_schema import MIGRATIONS, SCHEMA_VERSION


def test_a_new_store_is_in_wal_mode_at_the_current_schema_version(tmp_path):
    store = Store.open(tmp_path)
    try:
        assert store.schema_version() == SCHEMA_VERSION
        assert store.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert set(store.db.table_names()) >= {"events", "tasks", "runs", "meta"}
    finally:
        store.close()
    assert (tmp_path / ".executor" / "state.db").is_file()


def test_reopening_does_not_migrate_twice(tmp_path):
    Store.open(tmp_path).close()
    store = Store.open(tmp_path)
    assert store.schema_version() == SCHEMA_VERSION
    store.close()


def test_a_newer_schema_is_refused_with_the_fix(tmp_path):
    Store.open(tmp_path).close()
    conn = sqlite3.connect(tmp_path / ".executor" / "state.db")
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 5}")
    conn.close()
    with pytest.raises(StoreError, match=r"upgrade team-executor"):
        Store.open(tmp_path)
    with pytest.raises(StoreError, match=r"upgrade team-executor"):
        StoreReader.open(tmp_path)


def test_a_corrupt_database_is_a_store_error_not_a_crash(tmp_path):
    (tmp_path / ".executor").mkdir()
    (tmp_path / ".executor" / "state.db").write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreError, match=r"state\.db"):
        Store.open(tmp_path)
    with pytest.raises(StoreError, match=r"state\.db"):
        StoreReader.open(tmp_path)


def test_events_round_trip_as_protocol_structs(tmp_path):
    store = Store.open(tmp_path)
    with store.transaction():
        store.append(TaskCreated(task_id="A-1", owner="r", blocked_by=("B-1",)))
        store.append(TaskFailed(task_id="A-1", attempt=1, error_kind="hang", error="silent"))
        store.append(TaskCompleted(task_id="A-1", attempt=2, artifacts=("artifacts/a.md",)))
    events = [event for _, _, event in store.events()]
    assert events == [
        TaskCreated(task_id="A-1", owner="r", blocked_by=("B-1",)),
        TaskFailed(task_id="A-1", attempt=1, error_kind="hang", error="silent"),
        TaskCompleted(task_id="A-1", attempt=2, artifacts=("artifacts/a.md",)),
    ]
    assert store.count_events("task_completed", "A-1") == 1
    row = store.db.execute("SELECT type, task_id FROM events ORDER BY id LIMIT 1").fetchone()
    assert row == ("task_created", "A-1")
    store.close()


def test_a_failed_transaction_leaves_nothing_behind(tmp_path):
    store = Store.open(tmp_path)

    def create_then_fail() -> None:
        with store.transaction():
            store.put_tasks([TaskRow(id="A-1", owner="r")])
            store.append(TaskCreated(task_id="A-1", owner="r"))
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        create_then_fail()
    assert store.tasks() == []
    assert store.events() == []
    store.close()


def test_in_a_batch_a_failing_writer_undoes_only_its_own_writes_whether_first_or_not(tmp_path):
    store = Store.open(tmp_path)
    store.put_tasks([TaskRow(id="A-1", owner="r"), TaskRow(id="A-2", owner="r")])

    def write(task_id: str, status: TaskStatus, fail: bool = False) -> None:
        with store.transaction():
            store.update_task(task_id, TaskChange(status=status))
            store.append(TaskCreated(task_id=task_id, owner="r"))
            if fail:
                raise RuntimeError("boom")

    store.begin()
    with pytest.raises(RuntimeError):
        write("A-1", "failed", fail=True)  # the batch's first writer: the whole transaction goes
    assert not store.conn.in_transaction
    store.begin()
    write("A-1", "in_progress")
    with pytest.raises(RuntimeError):
        write("A-2", "failed", fail=True)  # a later writer: only its savepoint goes
    write("A-2", "completed")
    store.conn.execute("COMMIT")
    assert [(row.id, row.status) for row in store.tasks()] == [("A-1", "in_progress"), ("A-2", "completed")]
    assert [event.task_id for _, _, event in store.events()] == ["A-1", "A-2"]  # type: ignore[attr-defined]
    store.close()


def test_tasks_and_runs_are_updated_in_place(tmp_path):
    store = Store.open(tmp_path)
    store.put_tasks([TaskRow(id="A-1", owner="r", blocked_by=["B-1"], priority="P0")])
    store.update_task("A-1", TaskChange(status="in_progress", attempts=1))
    run_id = store.insert_run(RunStart(run_id="R1", task_id="A-1", attempt=1, worker_id="w1", backend="command"))
    store.update_run(run_id, RunChange(pid=123, pid_create_time=1.5))
    (task,) = store.tasks()
    assert (task.status, task.attempts, task.blocked_by, task.priority) == ("in_progress", 1, ["B-1"], "P0")
    (run,) = store.open_runs()
    assert (run.pid, run.pid_create_time, run.ended_at) == (123, 1.5, None)
    store.update_run(run_id, RunChange(ended_at="now", outcome="completed"))
    assert store.open_runs() == []
    with pytest.raises(TypeError, match="colour"):
        TaskChange(colour="red")  # type: ignore[call-arg]
    store.close()


def test_a_run_row_recorded_twice_is_kept_as_it_was_and_the_second_insert_says_so(tmp_path):
    store = Store.open(tmp_path)
    first = RunStart(id=7, run_id="R1", task_id="A-1", attempt=1, worker_id="w1", backend="command")
    assert store.insert_run(first) == 7
    assert store.insert_run(msgspec.structs.replace(first, worker_id="w2")) == 0
    (run,) = store.runs()
    assert (run.id, run.worker_id) == (7, "w1")
    store.close()


def test_events_appended_in_one_statement_keep_their_order_and_task_ids(tmp_path):
    store = Store.open(tmp_path)
    store.append(TaskCreated(task_id="A-1", owner="r", priority="P1"))
    store.append_all(
        [
            TaskCreated(task_id="A-2", owner="r", priority="P1"),
            TaskFailed(task_id="A-3", attempt=1, error_kind="crash", error="x"),
        ]
    )
    events = store.events()
    assert [event_id for event_id, _, _ in events] == [1, 2, 3]
    assert [event.task_id for _, _, event in events] == ["A-1", "A-2", "A-3"]  # type: ignore[attr-defined]
    assert [row[0] for row in store.conn.execute("SELECT task_id FROM events ORDER BY id")] == ["A-1", "A-2", "A-3"]
    store.close()


def test_many_events_appended_together_are_split_over_statements_and_keep_their_order(tmp_path):
    store = Store.open(tmp_path)
    store.append_all([TaskCreated(task_id=f"T-{index}", owner="r") for index in range(1, 452)])
    events = store.events()
    assert [event_id for event_id, _, _ in events] == list(range(1, 452))
    assert [event.task_id for _, _, event in events] == [f"T-{index}" for index in range(1, 452)]  # type: ignore[attr-defined]
    store.close()


def test_putting_a_task_again_replaces_its_row_and_outside_a_batch_it_is_committed_at_once(tmp_path):
    store = Store.open(tmp_path)
    store.put_tasks([TaskRow(id="A-1", owner="r", subject="first", blocked_by=["B-1"], priority="P0")])
    store.put_tasks(
        [TaskRow(id="A-1", owner="q", subject="second", status="failed"), TaskRow(id="A-2", owner="r", attempts=2)]
    )
    reader = StoreReader.open(tmp_path)  # another connection: sees only what is committed
    assert reader is not None
    try:
        rows = {row.id: row for row in reader.tasks()}
    finally:
        reader.close()
    assert (rows["A-1"].owner, rows["A-1"].subject, rows["A-1"].status) == ("q", "second", "failed")
    assert (rows["A-1"].blocked_by, rows["A-1"].priority) == ([], TaskRow(id="x", owner="r").priority)
    assert rows["A-2"].attempts == 2
    store.close()


def test_utc_now_is_isoformat_to_the_millisecond_in_utc():
    before = datetime.now(UTC)
    text = utc_now()
    after = datetime.now(UTC)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00", text)
    assert before.replace(microsecond=before.microsecond // 1000 * 1000) <= datetime.fromisoformat(text) <= after


def test_agent_text_in_any_column_is_masked_beside_the_words_and_times_stored_as_they_are(tmp_path):
    secret, shaped = "storeSECRETvalue-0123456789", "sk-ant-" + "Q9w8E7r6" * 4
    register_secret(secret)
    store = Store.open(tmp_path)
    now = utc_now()
    store.put_tasks([TaskRow(id="A-1", owner="r", description=f"use {secret}")])
    with store.transaction():
        store.update_task(
            "A-1",
            TaskChange(
                status="failed",
                last_error=f"{now} {secret}",
                last_error_kind="crash",
                completed_at=now,
                not_before=f"{now} {shaped}",
                subject=shaped,
            ),
        )
        run = store.insert_run(
            RunStart(id=1, run_id=secret, task_id="A-1", attempt=1, worker_id=shaped, backend="command")
        )
        store.update_run(run, RunChange(ended_at=now, outcome="failed", error=secret, model=f"completed {shaped}"))
        store.append_all([TaskFailed(task_id="A-1", attempt=1, error_kind="crash", error=secret)] * 2)
        store.append(TaskFailed(task_id="A-1", attempt=1, error_kind="crash", error=f"{now} {shaped}"))
    store.close()
    files = b"".join(path.read_bytes() for path in (tmp_path / ".executor").iterdir())
    assert secret.encode() not in files
    assert shaped.encode() not in files
    reader = StoreReader.open(tmp_path)
    assert reader is not None
    (task,) = reader.tasks()
    assert (task.status, task.last_error_kind, task.completed_at) == ("failed", "crash", now)
    assert task.last_error == f"{now} …6789"
    (row,) = reader.runs()
    assert (row.outcome, row.ended_at, row.run_id, row.model) == ("failed", now, "…6789", "completed …E7r6")
    assert all(time == now or time > now for _, time, _ in reader.events())
    reader.close()


def test_the_reader_returns_none_before_any_run(tmp_path):
    assert StoreReader.open(tmp_path) is None
    assert not (tmp_path / ".executor").exists()


def test_the_reader_never_creates_files_on_a_closed_database(tmp_path):
    store = Store.open(tmp_path)
    store.put_tasks([TaskRow(id="A-1", owner="r")])
    store.close()
    before = sorted(p.name for p in (tmp_path / ".executor").iterdir())
    reader = StoreReader.open(tmp_path)
    assert reader is not None
    assert [t.id for t in reader.tasks()] == ["A-1"]
    reader.close()
    assert sorted(p.name for p in (tmp_path / ".executor").iterdir()) == before


def test_the_reader_sees_commits_while_the_writer_keeps_writing(tmp_path):
    store = Store.open(tmp_path)
    store.put_tasks([TaskRow(id=f"T-{i}", owner="r") for i in range(100)])
    reader = StoreReader.open(tmp_path)
    assert reader is not None
    seen: list[int] = []

    def read_repeatedly() -> None:
        for _ in range(50):
            seen.append(sum(1 for t in reader.tasks() if t.status == "completed"))

    thread = threading.Thread(target=read_repeatedly)
    thread.start()
    for i in range(100):
        store.update_task(f"T-{i}", TaskChange(status="completed"))
    thread.join()
    assert seen == sorted(seen), "a reader must never see completions disappear"
    assert sum(1 for t in reader.tasks() if t.status == "completed") == 100
    reader.close()
    store.close()


def test_meta_values_are_upserted(tmp_path):
    store = Store.open(tmp_path)
    store.set_meta(run_id="R1", clean_stop="0")
    store.set_meta(clean_stop="1")
    assert store.meta() == {"run_id": "R1", "clean_stop": "1"}
    store.close()


def test_rows_with_nulls_written_by_another_tool_still_read_with_defaults(tmp_path):
    store = Store.open(tmp_path)
    store.put_tasks([TaskRow(id="A-1", owner="r", subject="kept")])
    store.conn.execute("INSERT INTO tasks (id, owner, status) VALUES ('B-1', 'r', 'pending')")
    store.conn.commit()
    tasks = {t.id: t for t in store.tasks()}
    assert tasks["A-1"].subject == "kept"
    assert (tasks["B-1"].subject, tasks["B-1"].blocked_by, tasks["B-1"].max_attempts) == ("", [], 3)
    store.close()


def test_a_sqlite_utils_plugin_in_the_environment_never_touches_the_state_connection(tmp_path):
    # A plugin installed beside the executor would otherwise prepare every connection sqlite-utils
    # makes: the session's state is ours alone.
    prepared: list[sqlite3.Connection] = []

    class Plugin:
        @sqlite_utils.hookimpl
        def prepare_connection(self, conn: sqlite3.Connection) -> None:
            prepared.append(conn)

    plugin = Plugin()
    sqlite_utils.plugins.pm.register(plugin, name="test-plugin")
    try:
        sqlite_utils.Database(memory=True)
        assert len(prepared) == 1  # the plugin is live: a connection of sqlite-utils' own gets it
        store = Store.open(tmp_path)
        store.close()
        assert len(prepared) == 1
    finally:
        sqlite_utils.plugins.pm.unregister(plugin)


def test_a_version_1_database_is_migrated_in_place_keeping_its_rows(tmp_path):
    db = sqlite_utils.Database(tmp_path / "state.db")
    MIGRATIONS[0](db)
    db.execute("PRAGMA user_version = 1")
    db["runs"].insert({"run_id": "R0", "task_id": "A-1", "attempt": 1, "worker_id": "w", "backend": "demo"})
    db.close()
    (tmp_path / ".executor").mkdir()
    (tmp_path / "state.db").rename(tmp_path / ".executor" / "state.db")
    store = Store.open(tmp_path)
    assert store.schema_version() == SCHEMA_VERSION
    (run,) = store.runs()
    assert (run.run_id, run.agent_session_id, run.files_changed) == ("R0", None, [])
    store.update_run(
        run.id, RunChange(agent_session_id="sess-1", git_head_before="abc", files_changed=["a.py", "b.py"])
    )
    (run,) = store.runs()
    assert (run.agent_session_id, run.git_head_before, run.files_changed) == ("sess-1", "abc", ["a.py", "b.py"])
    store.close()


def test_a_database_of_an_older_executor_is_read_as_it_is_by_check(tmp_path):
    """`check` never migrates: a schema-2 file (before descriptions and questions) still reads."""
    (tmp_path / ".executor").mkdir()
    path = tmp_path / ".executor" / "state.db"
    db = sqlite_utils.Database(path)
    MIGRATIONS[0](db)
    MIGRATIONS[1](db)
    db.execute("PRAGMA user_version = 2")
    db["tasks"].insert({"id": "A-001", "owner": "coder", "status": "completed", "blocked_by": "[]"})
    db.close()
    reader = StoreReader.open(tmp_path)
    assert reader is not None
    (task,) = reader.tasks()
    assert (task.id, task.status, task.description) == ("A-001", "completed", "")
    assert reader.escalations() == []
    assert reader.escalation("ESC-001") is None
    assert reader.schema_version() == 2
    reader.close()


@pytest.mark.parametrize(
    ("error", "problem"),
    [
        (OSError(errno.ENOSPC, "No space left on device"), "the disk is full"),
        (OSError(errno.EROFS, "Read-only file system"), "the file system is read-only"),
        (sqlite3.OperationalError("database or disk is full"), "the disk is full"),
        (sqlite3.OperationalError("attempt to write a readonly database"), "the file system is read-only"),
        (sqlite3.OperationalError("disk I/O error"), "the disk failed (I/O error)"),
        (sqlite3.OperationalError("no such table: tasks"), None),
        (ValueError("nothing to do with storage"), None),
    ],
)
def test_storage_problems_are_named(error, problem):
    assert storage_problem(error) == problem


def test_a_queued_write_settled_before_its_record_arrives_gets_its_message_and_keeps_its_settlement(tmp_path):
    """The record of a queued write (the bridge, through the Session's mailbox) and its settlement
    (the Executor, on its own thread) come by different paths: either may land first."""
    store = Store.open(tmp_path)
    try:
        store.settle_write("W-1", "queue_submit_task", '{"ok": true}', None)
        store.record_queued_write("W-1", "queue_submit_task", '{"name": "night job"}', 123.0)
        store.record_queued_write("W-2", "queue_submit_task", '{"name": "in order"}', 124.0)
        store.settle_write("W-2", "queue_submit_task", None, "name: refused")
        store.record_queued_write("W-2", "queue_submit_task", '{"name": "sent twice"}', 125.0)
        first, second = store.queued_write("W-1"), store.queued_write("W-2")
    finally:
        store.close()
    assert first is not None
    assert (first.state, first.message_json, first.queued_at, first.reply_json) == (
        "applied",
        '{"name": "night job"}',
        123.0,
        '{"ok": true}',
    )
    assert second is not None
    assert (second.state, second.message_json, second.queued_at, second.error) == (
        "refused",
        '{"name": "in order"}',
        124.0,
        "name: refused",
    )
