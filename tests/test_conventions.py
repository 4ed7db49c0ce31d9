"""Which files under artifacts/ belong to a task: by name, found in the sorted listing."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from backends.conventions import belongs_to_task, task_artifact_files

NAMES = [
    "T-1", "T-1.md", "T-1-out.md", "T-1_notes.txt", "T-1 copy.md", "T-10.md", "T-1x.md", "T-100-out.md",
    "T-2.md", "S-1.md", "t-1.md", "T-1é.md", "T-1.é.md", "T", "T.md", "T-", "T--1.md", "Ü-1.md", "T-1~",
]  # fmt: skip
TASKS = ["T-1", "T-10", "T-100", "T", "T-", "T-2", "S-1", "t-1", "T-1é", "Ü-1", "X-9", "T-1.md"]


def _naive(folder: Path, task_id: str) -> list[Path]:
    """The whole listing, each name tested: what the index must agree with."""
    found: list[Path] = []
    for name in sorted(os.listdir(folder)):
        path = folder / name
        if not belongs_to_task(name, task_id) or path.is_symlink():
            continue
        if path.is_file():
            found.append(path)
        elif path.is_dir():
            for root, dirs, files in os.walk(path):
                dirs.sort()
                found.extend(Path(root, file) for file in sorted(files) if not Path(root, file).is_symlink())
    return found


@pytest.fixture
def artifacts(tmp_path: Path) -> Path:
    folder = tmp_path / "artifacts"
    folder.mkdir()
    for name in NAMES:
        if name == "T-1":  # a folder of the task's files
            (folder / name / "sub").mkdir(parents=True)
            (folder / name / "a.md").write_text("a")
            (folder / name / "sub" / "b.md").write_text("b")
        else:
            (folder / name).write_text(name)
    (folder / "T-1-link.md").symlink_to(folder / "S-1.md")
    # The listing is remembered by the folder's mtime only once it is older than a clock tick.
    old = time.time() - 5
    os.utime(folder, (old, old))
    return folder


@pytest.mark.parametrize("task_id", TASKS)
def test_the_files_found_are_those_a_test_of_every_name_finds(artifacts, task_id):
    for _ in range(2):  # the second time from the remembered listing
        assert task_artifact_files(artifacts, task_id) == _naive(artifacts, task_id)


def test_what_belongs_to_a_task_and_what_does_not(artifacts):
    found = [path.relative_to(artifacts).as_posix() for path in task_artifact_files(artifacts, "T-1")]
    assert found == [
        "T-1/a.md", "T-1/sub/b.md", "T-1 copy.md", "T-1-out.md", "T-1.md", "T-1.é.md", "T-1_notes.txt", "T-1~",
    ]  # fmt: skip
    assert task_artifact_files(artifacts, "") == []
    assert task_artifact_files(artifacts.parent / "missing", "T-1") == []
