"""The task-id grammar and the one helper that builds paths from ids, on real folders."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from protocol.ids import MAX_TASK_ID, is_task_id, task_id_problem
from session.safepath import UnsafePath, is_private, make_folder, open_new_file, task_file, within


@pytest.mark.parametrize("good", ["IMPL-001", "ST0-001", "a", "_x", "v1.2-rc_3", "9" * MAX_TASK_ID])
def test_plain_ids_are_in_the_grammar(good: str) -> None:
    assert is_task_id(good)
    assert task_id_problem(good) is None


@pytest.mark.parametrize(
    "bad",
    ["", "../x", "a/b", ".hidden", "-rf", "a b", "$(id)", "a\n", "a\0b", "é-001", "9" * (MAX_TASK_ID + 1), "`x`"],
)
def test_anything_else_is_refused_with_a_reason(bad: str) -> None:
    assert not is_task_id(bad)
    assert task_id_problem(bad)


def test_task_file_keeps_the_file_in_its_folder(tmp_path: Path) -> None:
    assert task_file(tmp_path, "T-001", ".md", "feedback") == tmp_path / "feedback" / "T-001.md"
    with pytest.raises(UnsafePath):
        task_file(tmp_path, "T-001/../../x", ".md", "feedback")


def test_within_follows_links_before_it_decides(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "logs").mkdir(parents=True)
    (root / "out").symlink_to(tmp_path)
    assert within(root, "logs", "a.log") == root / "logs" / "a.log"
    with pytest.raises(UnsafePath, match="leads outside"):
        within(root, "out", "escaped.log")
    with pytest.raises(UnsafePath, match="NUL"):
        within(root, "a\0b")


def test_a_link_anywhere_on_the_way_is_followed_before_deciding(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "logs" / "deep").mkdir(parents=True)
    (root / "inner").mkdir()
    (root / "logs" / "planted.log").symlink_to(tmp_path / "victim.txt")  # the last part, not yet a file
    (root / "logs" / "deep" / "up").symlink_to(tmp_path)  # a middle part
    (root / "logs" / "mine").symlink_to(root / "inner")  # a link that stays inside is fine
    with pytest.raises(UnsafePath, match="leads outside"):
        within(root, "logs", "planted.log")
    with pytest.raises(UnsafePath, match="leads outside"):
        within(root, "logs", "deep", "up", "x.log")
    with pytest.raises(UnsafePath, match="leads outside"):
        within(root, "logs", "..", "..", "x.log")
    assert within(root, "logs", "mine", "x.log") == root / "logs" / "mine" / "x.log"
    assert within(root, "logs", "new", "deeper", "x.log") == root / "logs" / "new" / "deeper" / "x.log"


def test_the_private_folder_is_judged_by_where_a_path_really_leads(tmp_path: Path) -> None:
    (tmp_path / ".executor").mkdir()
    (tmp_path / "artifacts").mkdir()
    (tmp_path / "artifacts" / "peek.md").symlink_to(tmp_path / ".executor" / "state.db")
    assert is_private(tmp_path, Path(".executor/state.db"))
    assert is_private(tmp_path, Path("artifacts/../.executor"))
    assert is_private(tmp_path, Path("artifacts/peek.md"))
    assert not is_private(tmp_path, Path("artifacts/plan.md"))


def test_a_new_file_is_made_with_its_folder_and_a_link_planted_at_its_name_is_refused(tmp_path):
    # Prompts and logs are opened by name after task_file() checked it; an agent that plants a
    # link at that name in between must not get the executor to write through it.
    target = tmp_path / "deep" / "er" / "T-1-a1.log"
    fd = open_new_file(target, os.O_WRONLY | os.O_APPEND)
    os.write(fd, b"one\n")
    os.close(fd)
    assert target.read_bytes() == b"one\n"
    outside = tmp_path / "outside.txt"
    outside.write_text("keep")
    planted = tmp_path / "deep" / "er" / "T-1-a2.log"
    planted.symlink_to(outside)
    with pytest.raises(OSError) as refused:
        open_new_file(planted, os.O_WRONLY | os.O_TRUNC)
    assert refused.value.errno == errno.ELOOP
    assert outside.read_text() == "keep"
    make_folder(tmp_path / "deep" / "er")  # already there: nothing happens
    make_folder(tmp_path / "a" / "b")
    assert (tmp_path / "a" / "b").is_dir()
