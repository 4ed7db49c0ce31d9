"""`executor hook install` in a real git repository: the pre-commit hook runs the gates of the
tasks in progress (a failure blocks the commit and writes the feedback file), the post-commit
hook moves a claimed task named in the message to review, and a hook that was there runs first."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from protocol.records import TaskRow
from session.store import Store, StoreReader
from tests.conftest import EXECUTOR
from tests.sessions import write_session
from tests.test_mcp_bridge import ENV

GIT_ENV = {
    **ENV,
    "GIT_AUTHOR_NAME": "Test",
    "GIT_AUTHOR_EMAIL": "test@example.invalid",
    "GIT_COMMITTER_NAME": "Test",
    "GIT_COMMITTER_EMAIL": "test@example.invalid",
    "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
}
GATE = (
    "import pathlib, sys; text = pathlib.Path('status.txt').read_text().strip(); "
    "print('status is', text); sys.exit(text != 'ok')"
)


def _git(repo: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, env=GIT_ENV, check=check)


def _executor(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(EXECUTOR), *args], capture_output=True, text=True, env=GIT_ENV, check=False, timeout=60)


def _repo_with_session(tmp_path: Path) -> tuple[Path, Path]:
    repo = tmp_path / "repo"
    repo.mkdir()
    _git(repo, "init", "-q", "-b", "main")
    session = repo / "session"
    verify = f'verify: [["{sys.executable}", "-c", "{GATE}"]]\n'
    write_session(
        session,
        {"designer": "DSN"},
        {"DSN-001": [], "DSN-002": []},
        role_extra={"designer": "backend: manual\n" + verify},
    )
    store = Store.open(session)
    try:  # DSN-001 claimed by alice (as `executor task claim` leaves it); DSN-002 not taken
        store.put_tasks(
            [
                TaskRow(id="DSN-001", owner="designer", status="in_progress", agent="alice", attempts=1),
                TaskRow(id="DSN-002", owner="designer"),
            ]
        )
    finally:
        store.close()
    (repo / ".gitignore").write_text("session/.executor/\n")
    return repo, session


def test_the_hooks_gate_commits_and_move_the_named_task_to_review(tmp_path: Path) -> None:
    repo, session = _repo_with_session(tmp_path)
    hooks = repo / ".git" / "hooks"
    theirs = hooks / "pre-commit"
    theirs.write_text(f"#!/bin/sh\necho ran >> {tmp_path / 'their-hook-ran'}\n")
    theirs.chmod(0o755)

    installed = _executor("hook", "install", "--session", str(session))
    assert installed.returncode == 0, installed.stderr
    assert "your previous hook runs first" in installed.stdout

    (repo / "status.txt").write_text("not yet\n")
    _git(repo, "add", "-A")
    blocked = _git(repo, "commit", "-m", "DSN-001: a first draft", check=False)
    assert blocked.returncode != 0, "a failing gate stops the commit"
    assert "the gate" in blocked.stderr
    assert "DSN-001" in blocked.stderr
    assert _git(repo, "rev-list", "--all", check=False).stdout == "", "nothing was committed"
    feedback = (session / "feedback" / "DSN-001.md").read_text()
    assert "## Gate failed" in feedback
    assert "status is not yet" in feedback
    assert not (session / "feedback" / "DSN-002.md").exists(), "only tasks in progress are gated"
    assert (tmp_path / "their-hook-ran").read_text() == "ran\n", "the hook that was there ran first"

    (repo / "status.txt").write_text("ok\n")
    _git(repo, "add", "-A")
    committed = _git(repo, "commit", "-m", "DSN-001: the export design\n\nAlso mentions NOPE-9.", check=False)
    assert committed.returncode == 0, committed.stderr
    assert "DSN-001 moved to review" in committed.stderr
    reader = StoreReader.open(session)
    assert reader is not None
    try:
        statuses = {row.id: row.status for row in reader.tasks()}
    finally:
        reader.close()
    assert statuses == {"DSN-001": "review", "DSN-002": "pending"}

    removed = _executor("hook", "uninstall", "--session", str(session))
    assert removed.returncode == 0, removed.stderr
    assert theirs.read_text().startswith("#!/bin/sh\necho ran"), "the original hook is back"
    assert not (hooks / "post-commit").exists()


def test_installing_outside_a_repository_is_a_clear_error(tmp_path: Path) -> None:
    session = write_session(tmp_path / "s", {"designer": "DSN"}, {"DSN-001": []})
    result = _executor("hook", "install", "--session", str(session))
    assert result.returncode == 2
    assert "is not inside a git repository" in result.stderr
