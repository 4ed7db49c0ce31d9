"""team-session.json as a projection: atomic writes, owned fields only, coalesced flushes."""

from __future__ import annotations

import json
import os
import shutil
import stat

import pytest

import session.projection as projection_module
from session.loader import SESSION_FILE, load_session
from session.projection import SessionProjection, write_atomic
from tests.sessions import DEMO

CLOCK = "2026-03-01T12:00:00.000+00:00"


def team_file(**extra):
    return {
        "session_id": "TC-demo",
        "x_first_unknown": {"nested": [1, "two", None], "ünïcode": "✓"},
        "task_description": "build it",
        "status": "active",
        "team_name": "demo",
        "roles": [{"name": "coder", "prefix": "CODE", "role_spec": "role-specs/coder.md", "x_role_extra": True}],
        "pipeline": {"dependency_graph": {"CODE-002": ["CODE-001"]}, "tasks_total": 99, "x_pipeline_extra": "kept"},
        "completed_tasks": ["CODE-001"],
        "active_workers": [{"task": "CODE-009", "role": "coder", "pid": 1}],
        "created_at": "2026-02-27T00:00:00Z",
        "x_last_unknown": 3.5,
        **extra,
    }


def make_projection(folder, raw=None, tasks=("CODE-001", "CODE-002", "CODE-003")):
    raw = team_file() if raw is None else raw
    (folder / SESSION_FILE).write_text(json.dumps(raw, indent=2))
    return SessionProjection(folder, raw, list(tasks), clock=lambda: CLOCK)


def written(folder):
    return json.loads((folder / SESSION_FILE).read_text(encoding="utf-8"))


def leftovers(folder):
    return [p.name for p in folder.iterdir() if p.name.endswith(".tmp")]


# --- write_atomic ---------------------------------------------------------------------


def test_write_atomic_replaces_the_file_and_leaves_no_temp_files(tmp_path):
    target = tmp_path / "file.json"
    target.write_bytes(b"old")
    write_atomic(target, b"new")
    assert target.read_bytes() == b"new"
    assert leftovers(tmp_path) == []


def test_write_atomic_creates_a_missing_file(tmp_path):
    write_atomic(tmp_path / "new.json", b"{}\n")
    assert (tmp_path / "new.json").read_bytes() == b"{}\n"


def test_write_atomic_keeps_the_permission_bits_of_the_file_it_replaces(tmp_path):
    target = tmp_path / "file.json"
    target.write_bytes(b"old")
    target.chmod(0o640)
    write_atomic(target, b"new")
    assert stat.S_IMODE(target.stat().st_mode) == 0o640


def test_write_atomic_into_a_missing_directory_raises_and_creates_nothing(tmp_path):
    with pytest.raises(FileNotFoundError):
        write_atomic(tmp_path / "absent" / "file.json", b"data")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("failing", ["fsync", "replace"])
def test_a_failed_write_leaves_the_old_file_intact_and_no_temp_file(tmp_path, monkeypatch, failing):
    target = tmp_path / "file.json"
    target.write_bytes(b"old")

    def fail(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(projection_module.os, failing, fail)
    with pytest.raises(OSError, match="No space left"):
        write_atomic(target, b"new")
    monkeypatch.undo()
    assert target.read_bytes() == b"old"
    assert leftovers(tmp_path) == []


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root ignores directory permissions")
def test_a_read_only_directory_refuses_the_write_and_the_old_file_stays(tmp_path):
    target = tmp_path / "file.json"
    target.write_bytes(b"old")
    tmp_path.chmod(0o500)
    try:
        with pytest.raises(PermissionError):
            write_atomic(target, b"new")
    finally:
        tmp_path.chmod(0o700)
    assert target.read_bytes() == b"old"
    assert leftovers(tmp_path) == []


# --- the projected document -----------------------------------------------------------


def test_a_flush_replaces_only_the_owned_fields_and_keeps_every_other_key_and_its_order(tmp_path):
    raw = team_file()
    projection = make_projection(tmp_path, raw)
    projection.task_completed("CODE-002")
    projection.worker_started("CODE-003", "coder", 4242, "2026-03-01T11:59:00+00:00")
    projection.set_status("paused")
    assert projection.flush()

    result = written(tmp_path)
    assert list(result) == [*raw, "updated_at"]
    owned = {"status", "completed_tasks", "active_workers", "pipeline", "updated_at"}
    assert {key: value for key, value in result.items() if key not in owned} == {
        key: value for key, value in raw.items() if key not in owned
    }
    assert result["status"] == "paused"
    assert result["completed_tasks"] == ["CODE-001", "CODE-002"]
    assert result["active_workers"] == [
        {"task": "CODE-003", "role": "coder", "started_at": "2026-03-01T11:59:00+00:00", "pid": 4242}
    ]
    assert result["pipeline"] == {
        "dependency_graph": {"CODE-002": ["CODE-001"]},
        "tasks_total": 3,
        "x_pipeline_extra": "kept",
        "tasks_completed": 2,
    }
    assert result["updated_at"] == CLOCK


def test_the_file_is_indented_utf8_with_a_trailing_newline(tmp_path):
    projection = make_projection(tmp_path)
    projection.flush(force=True)
    text = (tmp_path / SESSION_FILE).read_bytes().decode("utf-8")
    assert text.endswith("}\n")
    assert '\n  "session_id": "TC-demo"' in text
    assert "✓" in text  # not \u2713
    assert leftovers(tmp_path) == []


def test_an_existing_updated_at_keeps_its_place(tmp_path):
    raw = {"updated_at": "old", **team_file()}
    projection = make_projection(tmp_path, raw)
    projection.flush(force=True)
    result = written(tmp_path)
    assert next(iter(result)) == "updated_at"
    assert result["updated_at"] == CLOCK


def test_a_missing_pipeline_is_created_with_the_counts(tmp_path):
    raw = team_file()
    del raw["pipeline"]
    projection = make_projection(tmp_path, raw)
    projection.flush(force=True)
    assert written(tmp_path)["pipeline"] == {"tasks_total": 3, "tasks_completed": 1}


def test_completed_tasks_keep_file_order_first_then_completion_order_without_duplicates(tmp_path):
    raw = team_file(completed_tasks=["CODE-003", "CODE-001", "CODE-003"])
    projection = make_projection(tmp_path, raw, tasks=["CODE-001", "CODE-002", "CODE-003", "CODE-004"])
    projection.task_completed("CODE-004")
    projection.task_completed("CODE-001")
    projection.task_completed("CODE-002")
    projection.task_completed("CODE-004")
    projection.flush()
    assert written(tmp_path)["completed_tasks"] == ["CODE-003", "CODE-001", "CODE-004", "CODE-002"]


def test_a_reopened_task_leaves_completed_and_goes_last_when_it_completes_again(tmp_path):
    projection = make_projection(tmp_path, team_file(completed_tasks=["CODE-001", "CODE-002"]))
    projection.task_reopened("CODE-001")
    projection.flush()
    assert written(tmp_path)["completed_tasks"] == ["CODE-002"]
    assert written(tmp_path)["pipeline"]["tasks_completed"] == 1
    projection.task_completed("CODE-001")
    projection.flush()
    assert written(tmp_path)["completed_tasks"] == ["CODE-002", "CODE-001"]


def test_completed_ids_that_are_not_tasks_stay_listed_but_are_not_counted(tmp_path):
    projection = make_projection(tmp_path, team_file(completed_tasks=["GONE-001", "CODE-001"]))
    projection.flush(force=True)
    result = written(tmp_path)
    assert result["completed_tasks"] == ["GONE-001", "CODE-001"]
    assert result["pipeline"]["tasks_completed"] == 1


def test_an_added_task_counts_in_the_total(tmp_path):
    projection = make_projection(tmp_path)
    projection.add_task("CODE-004")
    assert projection.dirty
    projection.flush()
    assert written(tmp_path)["pipeline"]["tasks_total"] == 4


def test_workers_from_an_earlier_run_are_not_projected_and_stopped_workers_leave(tmp_path):
    projection = make_projection(tmp_path)
    projection.worker_started("CODE-002", "coder", 11, "t1")
    projection.worker_started("CODE-003", "coder", 12, "t2")
    projection.worker_stopped("CODE-002")
    projection.flush()
    assert [worker["task"] for worker in written(tmp_path)["active_workers"]] == ["CODE-003"]
    projection.worker_stopped("CODE-003")
    projection.flush()
    assert written(tmp_path)["active_workers"] == []


def test_a_new_projection_is_not_dirty_and_does_not_write_unless_forced(tmp_path):
    projection = make_projection(tmp_path)
    before = (tmp_path / SESSION_FILE).read_bytes()
    assert not projection.dirty
    assert not projection.flush()
    assert (tmp_path / SESSION_FILE).read_bytes() == before
    assert projection.flush(force=True)
    assert (tmp_path / SESSION_FILE).read_bytes() != before


def test_changes_that_change_nothing_do_not_make_it_dirty(tmp_path):
    projection = make_projection(tmp_path)
    projection.set_status("active")
    projection.task_completed("CODE-001")
    projection.task_reopened("CODE-002")
    projection.worker_stopped("CODE-002")
    projection.add_task("CODE-001")
    assert not projection.dirty


def test_a_flush_clears_dirty_and_a_failed_flush_keeps_it(tmp_path, monkeypatch):
    projection = make_projection(tmp_path)
    projection.task_completed("CODE-002")

    def fail(*args, **kwargs):
        raise OSError(5, "I/O error")

    monkeypatch.setattr(projection_module.os, "replace", fail)
    with pytest.raises(OSError, match="I/O error"):
        projection.flush()
    assert projection.dirty
    monkeypatch.undo()
    assert projection.flush()
    assert not projection.dirty


def test_flush_if_due_writes_at_most_once_per_interval(tmp_path, monkeypatch):
    projection = make_projection(tmp_path)
    writes = []
    real_write = projection_module.write_atomic

    def counting_write(path, data):
        writes.append(data)
        real_write(path, data)

    monkeypatch.setattr(projection_module, "write_atomic", counting_write)
    assert not projection.flush_if_due(100.0)  # nothing changed
    projection.task_completed("CODE-002")
    assert projection.flush_if_due(100.0)  # the first write is due at once
    projection.task_completed("CODE-003")
    assert not projection.flush_if_due(100.2)
    projection.worker_started("CODE-003", "coder", 7, "t")
    assert not projection.flush_if_due(100.49)
    assert projection.flush_if_due(100.5)
    assert not projection.flush_if_due(200.0)  # clean again
    assert len(writes) == 2
    assert written(tmp_path)["completed_tasks"] == ["CODE-001", "CODE-002", "CODE-003"]


def test_flush_if_due_counts_the_interval_from_a_forced_flush(tmp_path):
    projection = make_projection(tmp_path)
    projection.flush(force=True, now=10.0)
    projection.task_completed("CODE-002")
    assert not projection.flush_if_due(10.1, min_interval_s=1.0)
    assert projection.flush_if_due(11.0, min_interval_s=1.0)


def test_the_projected_demo_session_still_loads(tmp_path):
    folder = tmp_path / "demo"
    shutil.copytree(DEMO, folder)
    session = load_session(folder)
    projection = SessionProjection(folder, session.team_raw, [task.id for task in session.tasks])
    first = session.tasks[0].id
    projection.task_completed(first)
    projection.worker_started(session.tasks[1].id, session.tasks[1].owner, os.getpid(), "2026-03-01T00:00:00+00:00")
    projection.flush()
    reloaded = load_session(folder)
    assert first in reloaded.team.completed_tasks
    assert reloaded.team_raw["pipeline"]["tasks_total"] == len(session.tasks)
    owned = {"status", "completed_tasks", "active_workers", "pipeline", "updated_at"}
    assert {k: v for k, v in reloaded.team_raw.items() if k not in owned} == {
        k: v for k, v in session.team_raw.items() if k not in owned
    }
