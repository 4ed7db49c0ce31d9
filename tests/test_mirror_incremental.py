"""The task mirror kept by what changed: a pass over the tasks the new events name.

A real store (SQLite file) and real files; the keeper's whole passes driven by a manual clock.
"""

from __future__ import annotations

from protocol.events import RunCompleted, TaskProgress, TasksReopened
from protocol.records import TaskRow
from session.mirror_keeper import WHOLE_PASS_S, MirrorKeeper
from session.redaction import register_secret
from session.store import Store
from session.store_changes import TaskChange
from session.task_mirror import MIRROR_DIR, sync_mirror


def _files(folder) -> set[str]:
    root = folder / MIRROR_DIR
    return {path.relative_to(root).as_posix() for path in root.rglob("*.md")}


def _change(store: Store, task_id: str, **changes) -> int:
    """A row change and its event, in one transaction, as the Session writes them; the event's id."""
    with store.transaction():
        store.update_task(task_id, TaskChange(**changes))
        return store.append(TaskProgress(task_id=task_id, attempt=1, note="changed"))


def _session(tmp_path) -> Store:
    store = Store.open(tmp_path)
    with store.transaction():
        store.put_tasks(
            [
                TaskRow(id="A-001", owner="coder"),
                TaskRow(id="B-001", owner="coder", blocked_by=["A-001"]),
                TaskRow(id="C-001", owner="coder"),
            ]
        )
    return store


def test_a_pass_since_an_event_writes_the_named_tasks_and_those_waiting_for_them(tmp_path):
    store = _session(tmp_path)
    try:
        sync_mirror(tmp_path, memo={})
        assert _files(tmp_path) == {"ready/A-001.md", "pending/B-001.md", "ready/C-001.md"}
        last = store.last_event_id()
        # Someone removes C-001's file; nothing happens to C-001 in the store.
        (tmp_path / MIRROR_DIR / "ready" / "C-001.md").unlink()
        (tmp_path / MIRROR_DIR / "ready" / "Z-009.md").write_text("a task the store never had\n")
        newest = _change(store, "A-001", status="completed", completed_at="2026-12-07T00:00:00.000+00:00")
        result = sync_mirror(tmp_path, memo={}, since=(last, newest))
        # A-001 moved; B-001 too (no event of its own: its blocker is done); C-001 was not looked at.
        assert result.moved == 2
        assert _files(tmp_path) == {"completed/A-001.md", "ready/B-001.md", "ready/Z-009.md"}
        # A whole pass puts back what changed without an event and removes the stranger.
        sync_mirror(tmp_path, memo={})
        assert _files(tmp_path) == {"completed/A-001.md", "ready/B-001.md", "ready/C-001.md"}
    finally:
        store.close()


def test_a_waiting_task_takes_its_folder_from_all_its_blockers_not_only_the_changed_one(tmp_path):
    store = Store.open(tmp_path)
    try:
        with store.transaction():
            store.put_tasks(
                [
                    TaskRow(id="A-001", owner="coder"),
                    TaskRow(id="C-001", owner="coder"),
                    TaskRow(id="E-001", owner="coder"),
                    TaskRow(id="D-001", owner="coder", blocked_by=["A-001", "C-001"]),
                    TaskRow(id="F-001", owner="coder", blocked_by=["A-001", "E-001"]),
                ]
            )
        _change(store, "C-001", status="completed", completed_at="2026-12-07T00:00:00.000+00:00")
        sync_mirror(tmp_path, memo={})
        assert {"pending/D-001.md", "pending/F-001.md"} <= _files(tmp_path)
        last = store.last_event_id()
        newest = _change(store, "A-001", status="completed", completed_at="2026-12-07T00:01:00.000+00:00")
        result = sync_mirror(tmp_path, memo={}, since=(last, newest))
        # D-001's other blocker was done before (no event since): it is ready now; F-001 still waits for E-001.
        assert "ready/D-001.md" in _files(tmp_path)
        assert "pending/F-001.md" in _files(tmp_path)
        assert result.moved == 2  # A-001 and D-001; C-001 and E-001 were not looked at
    finally:
        store.close()


def test_the_store_gives_the_rows_around_some_tasks_and_which_are_done(tmp_path):
    store = _session(tmp_path)
    try:
        _change(store, "C-001", status="completed", completed_at="2026-12-07T00:00:00.000+00:00")
        assert sorted(row.id for row in store.tasks_around({"A-001"})) == ["A-001", "B-001"]
        assert [row.id for row in store.tasks_around({"C-001", "X-404"})] == ["C-001"]
        assert store.tasks_around(set()) == []
        assert store.completed_among({"A-001", "C-001", "X-404"}) == {"C-001"}
        assert store.completed_among(set()) == set()
    finally:
        store.close()


def test_an_event_that_names_no_task_makes_it_a_whole_pass(tmp_path):
    store = _session(tmp_path)
    try:
        sync_mirror(tmp_path, memo={})
        last = store.last_event_id()
        (tmp_path / MIRROR_DIR / "ready" / "C-001.md").unlink()
        with store.transaction():
            store.update_task("A-001", TaskChange(status="failed"))
            newest = store.append(TasksReopened(task_ids=("A-001",), by="test"))
        sync_mirror(tmp_path, memo={}, since=(last, newest))
        assert "ready/C-001.md" in _files(tmp_path)
        assert "failed/A-001.md" in _files(tmp_path)
    finally:
        store.close()


def test_the_end_of_a_run_names_no_task_and_changes_none(tmp_path):
    store = _session(tmp_path)
    try:
        sync_mirror(tmp_path, memo={})
        last = store.last_event_id()
        (tmp_path / MIRROR_DIR / "ready" / "C-001.md").unlink()
        _change(store, "A-001", status="in_progress")
        with store.transaction():
            newest = store.append(RunCompleted(run_id="r", completed=0, total=3))
        sync_mirror(tmp_path, memo={}, since=(last, newest))
        assert "in_progress/A-001.md" in _files(tmp_path)
        assert "ready/C-001.md" not in _files(tmp_path)  # still a pass over what changed
    finally:
        store.close()


def test_the_keeper_passes_over_what_changed_and_over_everything_now_and_then(tmp_path):
    store = _session(tmp_path)
    keeper = MirrorKeeper(tmp_path)
    try:
        _change(store, "C-001", priority="P0")
        keeper.sync_if_changed(now=0.0)  # the first pass is whole
        assert (keeper.passes, keeper.whole_passes) == (1, 1)
        (tmp_path / MIRROR_DIR / "ready" / "C-001.md").unlink()
        _change(store, "A-001", status="in_progress")
        keeper.sync_if_changed(now=1.0)
        assert (keeper.passes, keeper.whole_passes) == (2, 1)
        assert "in_progress/A-001.md" in _files(tmp_path)
        assert "ready/C-001.md" not in _files(tmp_path)
        assert keeper.sync_if_changed(now=2.0) == 0.0  # nothing new: no pass at all

        # A secret registered since the last whole pass: every file may hold it, so all are looked at.
        register_secret("keeperSecretValue" + "4T8y2U6i")
        _change(store, "A-001", subject="second look")
        keeper.sync_if_changed(now=3.0)
        assert keeper.whole_passes == 2
        assert "ready/C-001.md" in _files(tmp_path)

        (tmp_path / MIRROR_DIR / "ready" / "C-001.md").unlink()
        _change(store, "A-001", subject="third look")
        keeper.sync_if_changed(now=3.0 + WHOLE_PASS_S - 0.1)
        assert keeper.whole_passes == 2
        _change(store, "A-001", subject="fourth look")
        keeper.sync_if_changed(now=3.0 + WHOLE_PASS_S)
        assert keeper.whole_passes == 3
        assert "ready/C-001.md" in _files(tmp_path)
    finally:
        store.close()
