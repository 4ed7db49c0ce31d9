"""isolation: worktree in a real git repository: two writers work at once, each on its own branch
in its own worktree; the adjudicator merges one; at the end the merged worktree and branch are
removed and the other is exported as a patch, its branch (its commits) kept."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.sessions import command_role_extra, write_session

GIT = ["git", "-c", "user.name=t", "-c", "user.email=t@e"]


def _git(repo: Path, *args: str) -> str:
    return subprocess.run([*GIT, *args], cwd=repo, capture_output=True, text=True, check=True).stdout


def test_two_writers_in_worktrees_and_an_adjudicator_that_merges_one(tmp_path: Path, executor_cli: Any) -> None:
    project = tmp_path / "project"
    project.mkdir()
    _git(project, "init", "-q", "-b", "main")
    (project / "README.md").write_text("# project\n")
    (project / ".gitignore").write_text(".workflow/\n")
    _git(project, "add", ".")
    _git(project, "commit", "-qm", "init")
    extra = command_role_extra(sys.executable)
    folder = write_session(
        project / ".workflow" / ".team" / "TC-dual",
        {"coder": "IMPL", "alt": "ALT", "judge": "JUDGE"},
        {"IMPL-001": [], "ALT-001": [], "JUDGE-001": ["IMPL-001", "ALT-001"]},
        role_extra={"coder": extra + "isolation: worktree\n", "alt": extra + "isolation: worktree\n", "judge": extra},
    )
    merge = [*GIT, "merge", "--no-edit", "-q", "team-executor/IMPL-001"]
    (folder / "behaviors.json").write_text(
        json.dumps(
            {
                "IMPL-001": {"write_file": {"path": "slug.py", "text": "def slug(s): return s.lower()\n"}, "sleep": 1},
                "ALT-001": {"write_file": {"path": "slug.py", "text": "import re\n# another way\n"}, "sleep": 1},
                "JUDGE-001": {"run": merge},
            }
        )
    )
    result = executor_cli("run", "--session", str(folder), "--max-workers", "2")
    assert result.returncode == 0, result.stdout + result.stderr
    assert (project / "slug.py").read_text() == "def slug(s): return s.lower()\n", "the judge merged IMPL-001"
    assert not (project / ".workflow" / ".team" / "TC-dual" / "slug.py").exists()
    branches = _git(project, "branch", "--list", "team-executor/*").split()
    assert "team-executor/ALT-001" in branches, "the unmerged branch (its commits) is kept"
    assert "team-executor/IMPL-001" not in branches, "the merged branch is removed"
    assert "IMPL-001: team-executor/IMPL-001 is merged" in result.stdout
    patch = (folder / "artifacts" / "ALT-001.patch").read_text()
    assert "another way" in patch, "the unmerged work is exported before its worktree goes"
    worktrees = _git(project, "worktree", "list")
    assert "ALT-001" not in worktrees
    assert "IMPL-001" not in worktrees
    note = (folder / "artifacts" / "IMPL-001-worktree.md").read_text()
    assert "team-executor/IMPL-001" in note
    assert _git(project, "status", "--porcelain") == "", "the main tree has no stray nested repository"


def test_worktrees_made_at_the_same_moment_are_all_made(tmp_path: Path) -> None:
    # Two isolated tasks dispatched together used to race in `git worktree add` (and `prune`):
    # "fatal: failed to read .git/worktrees/ALT-001/commondir", an attempt lost as spawn_failed.
    import threading  # noqa: PLC0415

    from session.worktrees import ensure_worktree  # noqa: PLC0415

    project = tmp_path / "project"
    project.mkdir()
    for argv in (["init", "-q", "-b", "main"], ["commit", "-q", "--allow-empty", "-m", "init"]):
        subprocess.run(
            ["git", "-c", "user.name=t", "-c", "user.email=t@t", *argv], cwd=project, check=True, capture_output=True
        )
    session = project / "session"
    session.mkdir()
    ids = [f"T-{n:03d}" for n in range(1, 41)]
    errors: list[BaseException] = []
    start = threading.Barrier(len(ids))

    def make(task_id: str) -> None:
        start.wait()
        try:
            ensure_worktree(project, session, task_id)
        except BaseException as error:  # noqa: BLE001 - collected and shown below
            errors.append(error)

    threads = [threading.Thread(target=make, args=(task_id,)) for task_id in ids]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    listed = subprocess.run(["git", "worktree", "list"], cwd=project, check=True, capture_output=True, text=True)
    assert len(listed.stdout.splitlines()) == 1 + len(ids)
