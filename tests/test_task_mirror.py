"""The Markdown mirror of the tasks: rendering, folders per lifecycle, edits read back (a real store, no mocks)."""

from __future__ import annotations

import os
import re
from pathlib import Path

import msgspec
import pytest

from protocol.records import RunRow, TaskDetails, TaskRow
from session.feedback import append_round
from session.mirror_markdown import EDITABLE, GENERATED_NOTE, parse_task_markdown, render_task
from session.redaction import register_secret
from session.store import Store, StoreReader
from session.store_changes import RunChange, RunStart, TaskChange
from session.task_mirror import MIRROR_DIR, MirrorResult, read_edits, sync_mirror, write_mirror

SECTIONS = [
    "Status",
    "Priority",
    "Agent",
    "Created",
    "Last Updated",
    "Goal",
    "Acceptance Criteria",
    "Definition of Ready",
    "Definition of Done",
    "Files Affected",
    "Implementation Notes",
    "Review Feedback",
    "Error Context",
    "Git Context",
]


@pytest.fixture
def store(tmp_path):
    store = Store.open(tmp_path)
    yield store
    store.close()


def put(store: Store, *rows: TaskRow) -> None:
    with store.transaction():
        store.put_tasks(list(rows))


def update(store: Store, task_id: str, **changes) -> None:
    with store.transaction():
        store.update_task(task_id, TaskChange(**changes))


def tasks(folder) -> list[TaskRow]:
    reader = StoreReader.open(folder)
    assert reader is not None
    try:
        return reader.tasks()
    finally:
        reader.close()


def mirror_files(folder) -> dict[str, str]:
    root = folder / MIRROR_DIR
    return {path.relative_to(root).as_posix(): path.read_text() for path in sorted(root.rglob("*")) if path.is_file()}


def headings(text: str) -> list[str]:
    """The level-2 headings outside fenced code blocks, as a Markdown viewer shows them."""
    found, fence = [], None
    for line in text.splitlines():
        marker = re.match(r"(`{3,}|~{3,})", line)
        if fence is None and marker:
            fence = marker[1]
        elif fence is not None and marker and line.strip().startswith(fence):
            fence = None
        elif fence is None and line.startswith("## "):
            found.append(line[3:])
    return found


def section(text: str, title: str) -> str:
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", text, re.MULTILINE | re.DOTALL)
    assert match, f"no section {title}"
    return match[1].strip()


PREPARED = TaskDetails(
    goal="Serve the users list",
    acceptance_criteria=["GET /users answers 200", "paged by 50"],
    definition_of_ready=["schema agreed"],
    definition_of_done=["tests pass", "docs updated"],
    files_affected=["api/users.py", "tests/test_users.py"],
    implementation_notes="Use the existing pager.\n\n```python\n## not a heading in code\n```",
    capabilities=["python"],
)


def test_render_has_every_section_in_order_and_shows_the_row():
    row = TaskRow(
        id="BE-002",
        owner="coder",
        status="completed",
        subject="Users endpoint",
        priority="P0",
        blocked_by=["BE-001", "DB-001"],
        agent="cursor-1",
        created_at="2025-01-01T00:00:00.000+00:00",
        updated_at="2025-01-02T00:00:00.000+00:00",
        details=PREPARED,
    )
    text = render_task(row, "completed", [], "")
    lines = text.splitlines()
    assert lines[0] == "# BE-002 — Users endpoint"
    assert lines[1] == GENERATED_NOTE
    assert headings(text) == SECTIONS
    status = section(text, "Status")
    assert status.splitlines()[0] == "completed"
    assert "blocked by: BE-001, DB-001" in status
    assert section(text, "Priority") == "P0"
    assert section(text, "Agent").splitlines() == ["cursor-1", "role: coder"]
    assert section(text, "Created") == "2025-01-01T00:00:00.000+00:00"
    assert section(text, "Last Updated") == "2025-01-02T00:00:00.000+00:00"
    assert section(text, "Goal") == "Serve the users list"
    assert section(text, "Acceptance Criteria").splitlines() == ["- [ ] GET /users answers 200", "- [ ] paged by 50"]
    assert section(text, "Files Affected").splitlines() == ["- api/users.py", "- tests/test_users.py"]
    assert section(text, "Review Feedback") == "none"
    assert section(text, "Error Context") == "none"
    assert section(text, "Git Context").startswith("none")
    assert text.endswith("\n")
    assert not text.endswith("\n\n")
    # Same inputs, same bytes; what a file shows reads back as the row's details.
    assert render_task(row, "completed", [], "") == text
    parsed = parse_task_markdown(text)
    assert parsed == {name: getattr(PREPARED, name) for name in EDITABLE}


def test_a_status_equal_to_the_lifecycle_is_not_repeated_and_no_agent_is_a_dash():
    row = TaskRow(id="A-001", owner="writer", status="in_progress", subject="s")
    text = render_task(row, "in_progress", [], "")
    assert section(text, "Status") == "in_progress"
    assert section(text, "Agent").splitlines() == ["—", "role: writer"]


def test_goal_falls_back_to_the_description_then_the_subject():
    described = TaskRow(id="A-1", owner="r", subject="S", description="D")
    assert section(render_task(described, "ready", [], ""), "Goal") == "D"
    assert section(render_task(TaskRow(id="A-1", owner="r", subject="S"), "ready", [], ""), "Goal") == "S"


def test_text_that_looks_like_a_section_or_a_fence_round_trips_and_keeps_the_sections():
    tricky = TaskDetails(
        goal="First\n## Acceptance Criteria\n\\## already escaped\n   ## indented",
        acceptance_criteria=["one\n## two", "[x] literal box", "none"],
        implementation_notes="```\nnever closed\n## inside",
    )
    row = TaskRow(id="A-001", owner="r", details=tricky)
    text = render_task(row, "ready", [], "# Feedback\n## Goal\n```\nunclosed")
    assert headings(text) == SECTIONS
    parsed = parse_task_markdown(text)
    assert parsed["goal"] == tricky.goal
    assert parsed["acceptance_criteria"] == tricky.acceptance_criteria
    assert parsed["implementation_notes"] == "```\nnever closed\n## inside\n```"  # the open fence was closed


def test_parsing_is_tolerant():
    text = (
        "# X-001 — whatever\n\n"
        "## goal\n\n  Ship it  \n\n"
        "## ACCEPTANCE CRITERIA:\n\n- [x] done one\n* [ ] star two\n+ plus three\n1. numbered four\n"
        "- wrapped\n  over two lines\nplain line\n\n"
        "## Definition of ready\n\n—\n\n"
        "## Definition of Done ##\n\nnone\n- but this one\n\n"
        "## My own section\n\n- ignored\n\n"
        "## Implementation Notes\n\nNONE\n"
    )
    assert parse_task_markdown(text) == {
        "goal": "Ship it",
        "acceptance_criteria": [
            "done one",
            "star two",
            "plus three",
            "numbered four",
            "wrapped\nover two lines",
            "plain line",
        ],
        "definition_of_ready": [],
        "definition_of_done": ["but this one"],
        "implementation_notes": "",
    }
    assert parse_task_markdown("") == {}
    assert parse_task_markdown("## Files Affected\n```\n## Goal\n") == {"files_affected": ["```"], "goal": ""}


def test_sync_without_a_store_writes_nothing(tmp_path):
    assert sync_mirror(tmp_path) == MirrorResult()
    assert not (tmp_path / MIRROR_DIR).exists()
    assert read_edits(tmp_path, []) == {}


def test_a_task_moves_folders_as_its_status_changes(tmp_path, store):
    put(
        store,
        TaskRow(id="A-001", owner="coder", subject="first"),
        TaskRow(id="B-001", owner="coder", subject="second", blocked_by=["A-001"]),
    )
    result = sync_mirror(tmp_path)
    assert (result.written, result.moved, result.removed) == (2, 0, 0)
    assert set(mirror_files(tmp_path)) == {"ready/A-001.md", "pending/B-001.md"}
    assert sorted(path.name for path in (tmp_path / MIRROR_DIR).iterdir()) == ["pending", "ready"]

    update(store, "A-001", status="in_progress")
    result = sync_mirror(tmp_path)
    assert (result.written, result.moved, result.unchanged) == (0, 1, 1)
    assert set(mirror_files(tmp_path)) == {"in_progress/A-001.md", "pending/B-001.md"}

    update(store, "A-001", status="completed", completed_at="2025-01-03T00:00:00.000+00:00")
    result = sync_mirror(tmp_path)
    assert result.moved == 2  # A-001 is done, so B-001 is ready
    files = mirror_files(tmp_path)
    assert set(files) == {"completed/A-001.md", "ready/B-001.md"}
    assert section(files["completed/A-001.md"], "Status") == "completed"
    assert "completed: 2025-01-03" in section(files["completed/A-001.md"], "Last Updated")
    assert section(files["ready/B-001.md"], "Status") == "ready (pending)\nblocked by: A-001"
    assert not (tmp_path / MIRROR_DIR / "failed").exists()
    assert not (tmp_path / MIRROR_DIR / "review").exists()


def test_stale_task_files_are_removed_and_other_files_kept(tmp_path, store):
    put(store, TaskRow(id="A-001", owner="coder"))
    root = tmp_path / MIRROR_DIR
    for name in ("done/Z-009.md", "ready/OLD-TASK-12.md", "done/README.md", "done/notes.txt", "notes.md"):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text("x")
    (root / "archive").mkdir()
    (root / "archive" / "Z-010.md").write_text("not a lifecycle folder")
    (root / "done" / "Z-011.md.orig").write_text("kept")

    result = sync_mirror(tmp_path)
    assert result.removed == 2
    assert set(mirror_files(tmp_path)) == {
        "ready/A-001.md",
        "done/README.md",
        "done/notes.txt",
        "notes.md",
        "archive/Z-010.md",
        "done/Z-011.md.orig",
    }


def test_a_duplicate_in_an_old_folder_is_removed(tmp_path, store):
    put(store, TaskRow(id="A-001", owner="coder"))
    sync_mirror(tmp_path)
    stray = tmp_path / MIRROR_DIR / "failed" / "A-001.md"
    stray.parent.mkdir()
    stray.write_text((tmp_path / MIRROR_DIR / "ready" / "A-001.md").read_text())
    result = sync_mirror(tmp_path)
    assert (result.unchanged, result.removed) == (1, 1)
    assert not stray.exists()


def test_unchanged_content_is_not_rewritten(tmp_path, store):
    put(store, TaskRow(id="A-001", owner="coder", details=PREPARED), TaskRow(id="A-002", owner="coder"))
    sync_mirror(tmp_path)
    path = tmp_path / MIRROR_DIR / "ready" / "A-001.md"
    before = path.stat()
    result = sync_mirror(tmp_path)
    assert (result.written, result.moved, result.removed, result.unchanged) == (0, 0, 0, 2)
    after = path.stat()
    assert (after.st_mtime_ns, after.st_ino) == (before.st_mtime_ns, before.st_ino)
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".tmp")]

    update(store, "A-001", priority="P0")
    result = sync_mirror(tmp_path)
    assert (result.written, result.unchanged) == (1, 1)
    assert section(path.read_text(), "Priority") == "P0"


def test_with_a_memo_an_unchanged_task_is_not_rendered_again_and_edits_are_still_seen(tmp_path, store):
    put(store, TaskRow(id="A-001", owner="coder", details=PREPARED), TaskRow(id="A-002", owner="coder"))
    memo: dict = {}
    sync_mirror(tmp_path, memo=memo)
    path = tmp_path / MIRROR_DIR / "ready" / "A-001.md"
    # Same size, same mtime, same inode, other bytes: only a pass that renders and compares sees it.
    written = path.stat()
    text = path.read_text()
    path.write_text(text.replace("A-001", "A-00X", 1))
    os.utime(path, ns=(written.st_atime_ns, written.st_mtime_ns))
    result = sync_mirror(tmp_path, memo=memo)
    assert (result.written, result.unchanged, result.conflicts) == (0, 2, [])
    assert "A-00X" in path.read_text()  # not rendered again: the memo says the file is as written
    assert sync_mirror(tmp_path).written == 1  # without the memo the pass renders and repairs it

    # A person's edit changes the file's mtime: the memo does not hide it, the edit is kept.
    sync_mirror(tmp_path, memo=memo)
    edit(path, "Implementation Notes", "Use the pager.")
    update(store, "A-001", status="in_progress")
    result = sync_mirror(tmp_path, memo=memo)
    assert result.conflicts == ["A-001"]
    assert "Use the pager." in path.read_text()

    # A store change is rendered: the task's source is no longer the one remembered.
    update(store, "A-002", priority="P0")
    result = sync_mirror(tmp_path, memo=memo)
    assert result.written == 1
    assert section((tmp_path / MIRROR_DIR / "ready" / "A-002.md").read_text(), "Priority") == "P0"

    # A secret registered after a file was written is masked in it on the next pass.
    leaked = "mirrorLeakCheckValue" + "9Q7w3E5r"
    update(store, "A-002", details=TaskDetails(implementation_notes=f"the agent said {leaked}"))
    sync_mirror(tmp_path, memo=memo)
    second = tmp_path / MIRROR_DIR / "ready" / "A-002.md"
    assert leaked in second.read_text()  # nobody knew it was a secret yet
    register_secret(leaked)
    sync_mirror(tmp_path, memo=memo)
    assert leaked not in second.read_text()


def test_with_a_memo_a_file_left_as_written_is_not_read_back_when_its_task_changes(tmp_path, store, monkeypatch):
    # A run's mirror pass rewrites every task that moved on since the last; the files it left
    # itself (same mtime, size and inode) cannot hold a person's edit, so they are not read and
    # parsed first -- that read was most of a busy run's mirror cost.
    put(store, TaskRow(id="A-001", owner="coder", details=PREPARED), TaskRow(id="A-002", owner="coder"))
    memo: dict = {}
    sync_mirror(tmp_path, memo=memo)
    edited = tmp_path / MIRROR_DIR / "ready" / "A-002.md"
    edit(edited, "Implementation Notes", "Use the pager.")
    update(store, "A-001", status="in_progress")
    update(store, "A-002", priority="P0")
    reads: list[str] = []
    real_read_bytes = Path.read_bytes

    def counted(path: Path) -> bytes:
        reads.append(path.name)
        return real_read_bytes(path)

    monkeypatch.setattr(Path, "read_bytes", counted)
    result = sync_mirror(tmp_path, memo=memo)
    assert reads == ["A-002.md"]  # only the file a person touched is read, to keep the edit
    assert (result.moved, result.conflicts) == (1, ["A-002"])
    assert (tmp_path / MIRROR_DIR / "in_progress" / "A-001.md").is_file()
    assert not (tmp_path / MIRROR_DIR / "ready" / "A-001.md").exists()
    assert "Use the pager." in edited.read_text()


def edit(path, title: str, body: str) -> None:
    text = path.read_text()
    old = section(text, title)
    path.write_text(text.replace(f"## {title}\n\n{old}\n", f"## {title}\n\n{body}\n", 1))


def test_edits_are_read_back_and_an_edited_file_is_not_overwritten(tmp_path, store):
    put(store, TaskRow(id="A-001", owner="coder", details=PREPARED), TaskRow(id="A-002", owner="coder"))
    sync_mirror(tmp_path)
    path = tmp_path / MIRROR_DIR / "ready" / "A-001.md"
    assert read_edits(tmp_path, tasks(tmp_path)) == {}

    edit(path, "Acceptance Criteria", "- [x] GET /users answers 200\n* [ ] paged by 50\n- [ ] sorted by name")
    edit(path, "Implementation Notes", "Use the pager from api/paging.py.")
    edits = read_edits(tmp_path, tasks(tmp_path))
    assert set(edits) == {"A-001"}
    assert edits["A-001"] == msgspec.structs.replace(
        PREPARED,
        acceptance_criteria=["GET /users answers 200", "paged by 50", "sorted by name"],
        implementation_notes="Use the pager from api/paging.py.",
    )
    assert edits["A-001"].capabilities == ["python"]

    # The store changes while the file holds edits it does not have: the file stays as the person left it.
    update(store, "A-001", status="in_progress", agent="cursor-1")
    edited = path.read_bytes()
    result = sync_mirror(tmp_path)
    assert result.conflicts == ["A-001"]
    assert path.read_bytes() == edited
    assert not (tmp_path / MIRROR_DIR / "in_progress" / "A-001.md").exists()
    assert read_edits(tmp_path, tasks(tmp_path)) == edits  # still found in the old folder

    # The caller applies the edits, then writes: the file moves and shows the store.
    update(store, "A-001", details=edits["A-001"])
    result = sync_mirror(tmp_path)
    assert (result.conflicts, result.moved) == ([], 1)
    assert not path.exists()
    moved = (tmp_path / MIRROR_DIR / "in_progress" / "A-001.md").read_text()
    assert section(moved, "Acceptance Criteria").splitlines()[-1] == "- [ ] sorted by name"
    assert read_edits(tmp_path, tasks(tmp_path)) == {}


def test_preserve_edits_false_overwrites(tmp_path, store):
    put(store, TaskRow(id="A-001", owner="coder", details=PREPARED))
    sync_mirror(tmp_path)
    path = tmp_path / MIRROR_DIR / "ready" / "A-001.md"
    edit(path, "Goal", "Something else")
    rows = tasks(tmp_path)
    assert write_mirror(tmp_path, rows, {}, {}).conflicts == ["A-001"]
    result = write_mirror(tmp_path, rows, {}, {}, preserve_edits=False)
    assert (result.conflicts, result.written) == ([], 1)
    assert section(path.read_text(), "Goal") == "Serve the users list"


def test_a_store_change_is_not_mistaken_for_an_edit(tmp_path, store):
    put(store, TaskRow(id="A-001", owner="coder", details=PREPARED))
    sync_mirror(tmp_path)
    path = tmp_path / MIRROR_DIR / "ready" / "A-001.md"
    update(store, "A-001", details=msgspec.structs.replace(PREPARED, goal="A new goal", files_affected=["x.py"]))
    assert read_edits(tmp_path, tasks(tmp_path)) == {}  # the file's old goal is not an edit
    # The person edits one section of the stale file; the other stale one does not undo the store's change.
    edit(path, "Implementation Notes", "Mine")
    edits = read_edits(tmp_path, tasks(tmp_path))
    assert edits["A-001"].goal == "A new goal"
    assert edits["A-001"].files_affected == ["x.py"]
    assert edits["A-001"].implementation_notes == "Mine"


def test_the_goal_shown_as_a_fallback_is_not_an_edit(tmp_path, store):
    put(store, TaskRow(id="A-001", owner="coder", subject="Subject", description="The description"))
    sync_mirror(tmp_path)
    path = tmp_path / MIRROR_DIR / "ready" / "A-001.md"
    assert section(path.read_text(), "Goal") == "The description"
    assert read_edits(tmp_path, tasks(tmp_path)) == {}
    # A hand-made file (no record of what was written) showing the fallback: no edit either.
    path.write_text("# A-001\n\n## Goal\n\nThe description\n\n## Acceptance Criteria\n\nnone\n")
    assert read_edits(tmp_path, tasks(tmp_path)) == {}
    path.write_text("# A-001\n\n## Goal\n\nThe real goal\n")
    edits = read_edits(tmp_path, tasks(tmp_path))
    assert edits["A-001"] == TaskDetails(goal="The real goal")


def test_unreadable_files_are_skipped_by_read_edits_and_kept_by_write_mirror(tmp_path, store):
    put(store, TaskRow(id="A-001", owner="coder", details=PREPARED))
    sync_mirror(tmp_path)
    path = tmp_path / MIRROR_DIR / "ready" / "A-001.md"
    path.write_bytes(b"## Goal\n\n\xff\xfe not utf-8\n")
    assert read_edits(tmp_path, tasks(tmp_path)) == {}
    assert sync_mirror(tmp_path).conflicts == ["A-001"]
    assert path.read_bytes() == b"## Goal\n\n\xff\xfe not utf-8\n"


def test_a_hostile_task_id_is_skipped(tmp_path, store):
    put(
        store,
        TaskRow(id="../x", owner="coder"),
        TaskRow(id="a/b", owner="coder"),
        TaskRow(id=".hidden", owner="coder"),
        TaskRow(id="A-001", owner="coder"),
    )
    result = sync_mirror(tmp_path)
    assert sorted(result.skipped) == sorted(["../x", "a/b", ".hidden"])
    assert result.written == 1
    assert set(mirror_files(tmp_path)) == {"ready/A-001.md"}
    assert not (tmp_path / "x.md").exists()
    assert not (tmp_path / MIRROR_DIR / "x.md").exists()
    assert read_edits(tmp_path, tasks(tmp_path)) == {}


def test_feedback_shows_in_review_feedback(tmp_path, store):
    put(store, TaskRow(id="A-001", owner="coder"), TaskRow(id="A-002", owner="coder"))
    append_round(tmp_path, "A-001", 1, "reviewer", "2025-01-01T00:00:00Z", ("handle the empty list", "add a test"))
    sync_mirror(tmp_path)
    text = (tmp_path / MIRROR_DIR / "ready" / "A-001.md").read_text()
    feedback = section(text, "Review Feedback")
    assert "- [ ] handle the empty list" in feedback
    assert "#### Round 1 — changes requested by reviewer" in feedback  # its headings sit below the section's
    assert headings(text) == SECTIONS
    assert section((tmp_path / MIRROR_DIR / "ready" / "A-002.md").read_text(), "Review Feedback") == "none"


def test_runs_show_in_git_context_and_failed_ones_in_error_context(tmp_path, store):
    put(store, TaskRow(id="A-001", owner="coder", subject="s"))
    with store.transaction():
        first = store.insert_run(RunStart(run_id="R1", task_id="A-001", attempt=1, worker_id="w1", backend="claude"))
        store.update_run(
            first, RunChange(ended_at="t1", outcome="failed", error_kind="hang", error="silent for 600s\ntrace line")
        )
        second = store.insert_run(RunStart(run_id="R2", task_id="A-001", attempt=2, worker_id="w1", backend="claude"))
        store.update_run(
            second,
            RunChange(
                model="sonnet",
                ended_at="t2",
                outcome="completed",
                git_head_before="1111111",
                git_head_after="2222222",
                files_changed=["api/users.py", "tests/test_users.py"],
            ),
        )
        store.update_task(
            "A-001", TaskChange(status="failed", last_error="gate: tests failed", last_error_kind="gate_failed")
        )
    sync_mirror(tmp_path)
    text = (tmp_path / MIRROR_DIR / "failed" / "A-001.md").read_text()
    git = section(text, "Git Context")
    assert "attempt 2 (claude/sonnet): 1111111..2222222, 2 files changed" in git
    assert "    - api/users.py\n    - tests/test_users.py" in git
    assert "attempt 1" not in git
    errors = section(text, "Error Context")
    assert "gate_failed: gate: tests failed" in errors
    assert "- attempt 1 (claude) failed, ended t1: hang: silent for 600s\n    trace line" in errors
    assert "attempt 2" not in errors


def test_write_mirror_takes_runs_and_feedback_as_given(tmp_path):
    rows = [TaskRow(id="A-001", owner="coder"), TaskRow(id="A-002", owner="coder", blocked_by=["A-001"])]
    run = RunRow(id=1, run_id="R1", task_id="A-001", attempt=1, worker_id="w", backend="b", git_head_after="abc")
    result = write_mirror(tmp_path, rows, {"A-001": [run]}, {"A-002": "please fix"})
    assert (result.written, result.skipped, result.conflicts) == (2, [], [])
    assert "?..abc" in section((tmp_path / MIRROR_DIR / "ready" / "A-001.md").read_text(), "Git Context")
    assert section((tmp_path / MIRROR_DIR / "pending" / "A-002.md").read_text(), "Review Feedback") == "please fix"
    assert write_mirror(tmp_path, [], {}, {}).removed == 2
    assert mirror_files(tmp_path) == {}


def test_awkward_text_in_the_store_is_never_mistaken_for_an_edit(tmp_path, store):
    awkward = TaskDetails(
        goal="  Line\n## Goal\n<!-- mirror-base (x): goal=0 -->\n```\n## code\n",
        acceptance_criteria=["", "  spaced  ", "multi\n\n  line\n- dash", "[ ] box", "none", "—"],
        definition_of_ready=["   "],
        files_affected=["```", "    indented"],
        implementation_notes="none",
    )
    put(store, TaskRow(id="A-001", owner="coder", subject="## not a heading", details=awkward))
    assert sync_mirror(tmp_path).written == 1
    text = (tmp_path / MIRROR_DIR / "ready" / "A-001.md").read_text()
    assert headings(text) == SECTIONS
    assert read_edits(tmp_path, tasks(tmp_path)) == {}
    update(store, "A-001", priority="P2")
    result = sync_mirror(tmp_path)
    assert (result.written, result.conflicts) == (1, [])
    assert read_edits(tmp_path, tasks(tmp_path)) == {}


def test_symbolic_links_are_neither_read_nor_removed(tmp_path, store):
    put(store, TaskRow(id="A-001", owner="coder"))
    outside = tmp_path / "elsewhere.md"
    outside.write_text("## Goal\n\nnot mine\n")
    done = tmp_path / MIRROR_DIR / "done"
    done.mkdir(parents=True)
    (done / "Z-001.md").symlink_to(outside)
    (done / "A-001.md").symlink_to(outside)
    result = sync_mirror(tmp_path)
    assert (result.written, result.removed, result.conflicts) == (1, 0, [])
    assert (done / "Z-001.md").is_symlink()
    assert (done / "A-001.md").is_symlink()
    assert read_edits(tmp_path, tasks(tmp_path)) == {}
    assert outside.read_text() == "## Goal\n\nnot mine\n"


def test_a_completed_task_in_the_old_done_folder_moves_to_completed(tmp_path, store):
    put(store, TaskRow(id="A-001", owner="coder", status="completed"))
    sync_mirror(tmp_path)
    old = tmp_path / MIRROR_DIR / "done" / "A-001.md"
    old.parent.mkdir()
    (tmp_path / MIRROR_DIR / "completed" / "A-001.md").rename(old)
    result = sync_mirror(tmp_path)
    assert result.moved == 1
    assert set(mirror_files(tmp_path)) == {"completed/A-001.md"}


def test_a_masked_secret_in_an_editable_section_is_not_an_edit(tmp_path, store):
    # The file shows the mask where the store holds the secret: that is what was written, not a
    # person's edit. Were it one, the file would be frozen (a conflict on every pass) and
    # `executor task` would write the mask back into the store.
    leaked = "maskedEditCheckValue" + "4R8t2Y6u"
    notes = f"the agent pasted {leaked} here"
    put(store, TaskRow(id="A-001", owner="coder", details=TaskDetails(goal="Ship", implementation_notes=notes)))
    register_secret(leaked)  # known once it was in the store (a key added later, an agent's leak seen later)
    sync_mirror(tmp_path)
    path = tmp_path / MIRROR_DIR / "ready" / "A-001.md"
    assert leaked not in path.read_text()
    assert read_edits(tmp_path, tasks(tmp_path)) == {}

    update(store, "A-001", status="in_progress")  # the next pass moves the file: no conflict
    result = sync_mirror(tmp_path)
    assert result.conflicts == []
    moved = tmp_path / MIRROR_DIR / "in_progress" / "A-001.md"
    assert moved.exists()
    assert not path.exists()

    # A real edit of another section is still read back, and the masked one is left as the store has it.
    edit(moved, "Goal", "Ship it today")
    edits = read_edits(tmp_path, tasks(tmp_path))
    assert edits["A-001"].goal == "Ship it today"
    assert edits["A-001"].implementation_notes == notes
