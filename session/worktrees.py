"""Git worktrees for tasks that must not share a work tree (``isolation: worktree``).

Two writers working on the same goal at once each get a worktree of their own,
on branch ``team-executor/<ID>`` from the project's HEAD, kept inside the
repository's git folder (``.git/team-executor-worktrees/<session>/<ID>``) so the
main work tree never sees it as a stray nested repository.  After a completed attempt, whatever the agent left
uncommitted is committed on that branch, so the work is in git, not only in a
folder.  An adjudicator then compares the branches and merges what it keeps.

A worktree is removed only once its work is safe: its branch is merged into the
project's HEAD (then the branch is deleted with ``git branch -d``, which itself
refuses unmerged commits), or it has been exported as a patch into
``artifacts/<ID>.patch`` (then the branch is kept).  Unmerged commits are never
deleted.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from protocol.records import TaskRow
from session.safe_git import SAFE_GIT_OPTIONS, safe_git_env
from session.safepath import task_file

__all__ = [
    "BRANCH_PREFIX",
    "NotARepository",
    "WorktreeError",
    "branch_of",
    "commit_all",
    "ensure_worktree",
    "settle_finished",
    "settle_worktree",
    "worktree_path",
    "worktrees_root",
]

BRANCH_PREFIX = "team-executor/"
_AUTHOR = ["-c", "user.name=team-executor", "-c", "user.email=team-executor@localhost"]


class WorktreeError(Exception):
    """git refused; the message says what and where."""


class NotARepository(WorktreeError):
    """The working directory is not in a git repository: there is nothing to make a worktree of."""


@dataclass(frozen=True)
class Settled:
    task_id: str
    action: str  # "merged" | "exported" | "kept"
    detail: str


def _git(cwd: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    try:
        # The agent worked in this repository and may have left hooks or an fsmonitor in its
        # config: they must not run, nor see the executor's keys (session.safe_git).
        done = subprocess.run(
            ["git", *SAFE_GIT_OPTIONS, *args],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
            env=safe_git_env(),
        )
    except FileNotFoundError:
        raise WorktreeError("git is not installed; isolation: worktree needs it") from None
    if check and done.returncode != 0:
        raise WorktreeError(f"git {' '.join(args)} in {cwd}: {done.stderr.strip() or done.stdout.strip()}")
    return done


def branch_of(task_id: str) -> str:
    return f"{BRANCH_PREFIX}{task_id}"


def worktrees_root(project: Path, session: Path) -> Path:
    common = Path(_git(project, "rev-parse", "--git-common-dir").stdout.strip())
    common = common if common.is_absolute() else (Path(project) / common).resolve()
    return common / "team-executor-worktrees" / Path(session).resolve().name


def worktree_path(project: Path, session: Path, task_id: str) -> Path:
    return task_file(worktrees_root(project, session), task_id)


@contextlib.contextmanager
def _one_at_a_time(worktree: Path) -> Iterator[None]:
    """Held while git's list of worktrees changes (add, prune, remove): git's .git/worktrees is not
    safe for two of those at once.  A lock file beside our worktrees, so that threads of this run
    and other processes on the same repository (Ray workers on a shared filesystem) wait alike."""
    folder = worktree.parent.parent
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder / ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # and with it the lock


def ensure_worktree(project: Path, session: Path, task_id: str) -> Path:
    """The task's worktree (made on first use; a retry finds its earlier commits there)."""
    if _git(project, "rev-parse", "--show-toplevel", check=False).returncode != 0:
        raise NotARepository(f"{project} is not in a git repository")
    path = worktree_path(project, session, task_id)
    if (path / ".git").exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    branch = branch_of(task_id)
    # One at a time: two `worktree add` (or a `prune` beside an `add`) at once see each other's
    # half-made .git/worktrees/<name> and fail ("failed to read .../commondir"), which lost
    # an attempt whenever two isolated tasks were dispatched together.
    with _one_at_a_time(path):
        exists = _git(project, "rev-parse", "--verify", "--quiet", f"refs/heads/{branch}", check=False).returncode == 0
        _git(project, "worktree", "prune")  # a folder removed by hand leaves a stale entry behind
        if exists:
            _git(project, "worktree", "add", str(path), branch)
        else:
            _git(project, "worktree", "add", "-b", branch, str(path), "HEAD")
    return path


def commit_all(path: Path, message: str) -> str | None:
    """Commit everything the agent left in the worktree; the new commit, or None if clean."""
    _git(path, "add", "-A")
    if _git(path, "diff", "--cached", "--quiet", check=False).returncode == 0:
        return None
    _git(path, *_AUTHOR, "commit", "-q", "--no-verify", "-m", message)
    return _git(path, "rev-parse", "HEAD").stdout.strip()


def settle_worktree(project: Path, session: Path, task_id: str) -> Settled:
    """Remove the task's worktree if its work is merged (branch deleted) or exported (branch kept)."""
    path = worktree_path(project, session, task_id)
    branch = branch_of(task_id)
    if not (path / ".git").exists():
        return Settled(task_id, "kept", "no worktree")
    commit_all(path, f"{task_id}: work left uncommitted (team-executor)")
    merged = _git(project, "merge-base", "--is-ancestor", branch, "HEAD", check=False).returncode == 0
    if merged:
        with _one_at_a_time(path):
            _git(project, "worktree", "remove", "--force", str(path))
        _git(project, "branch", "-d", branch)  # -d: git itself refuses to drop unmerged commits
        return Settled(task_id, "merged", f"{branch} is merged: worktree and branch removed")
    base = _git(project, "merge-base", "HEAD", branch).stdout.strip()
    patch = _git(project, "format-patch", "--stdout", f"{base}..{branch}").stdout
    target = task_file(Path(session), task_id, ".patch", "artifacts")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(patch, encoding="utf-8")
    with _one_at_a_time(path):
        _git(project, "worktree", "remove", "--force", str(path))
    return Settled(task_id, "exported", f"{branch} is not merged: exported to artifacts/{task_id}.patch, branch kept")


def settle_finished(project: Path, session: Path, rows: list[TaskRow]) -> list[Settled]:
    """Settle each worktree whose task and every task after it are completed (its work has been
    judged); a worktree whose story is not over yet stays for the next run."""
    by_id = {row.id: row for row in rows}
    dependants: dict[str, list[str]] = {}
    for row in rows:
        for blocker in row.blocked_by:
            dependants.setdefault(blocker, []).append(row.id)
    root = worktrees_root(project, session)
    settled = []
    for path in sorted(root.iterdir()) if root.is_dir() else []:
        found = by_id.get(path.name)
        if found is None or found.status != "completed":
            continue
        if all(by_id[later].status == "completed" for later in dependants.get(found.id, []) if later in by_id):
            settled.append(settle_worktree(project, session, found.id))
    return settled
