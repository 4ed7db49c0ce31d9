"""What an attempt did to the project's git repository.

Taken before and after each agent attempt: the HEAD commit (so a retried or
resumed task knows where the agent left off) and the files it changed —
committed between the two heads, or left modified/untracked in the tree,
minus what was already dirty before it started.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import msgspec

from session.safe_git import SAFE_GIT_OPTIONS, safe_git_env

__all__ = ["EXECUTOR_WRITES", "GitState", "changed_files", "executor_paths", "moved", "snapshot", "touched_since"]

_GIT_TIMEOUT_S = 20.0


class GitState(msgspec.Struct, frozen=True):
    head: str | None
    dirty: frozenset[str] = frozenset()


def _git(workdir: Path, *args: str) -> str | None:
    try:
        completed = subprocess.run(
            ["git", *SAFE_GIT_OPTIONS, "-C", str(workdir), *args],
            capture_output=True,
            timeout=_GIT_TIMEOUT_S,
            check=False,
            env=safe_git_env(),
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return completed.stdout.decode("utf-8", "replace") if completed.returncode == 0 else None


def _porcelain_paths(text: str) -> frozenset[str]:
    paths = set()
    entries = text.split("\0")
    index = 0
    while index < len(entries):
        entry = entries[index]
        if len(entry) > 3:
            paths.add(entry[3:])
            if entry[0] in "RC":  # a rename or copy carries its source as the next entry
                index += 1
        index += 1
    return frozenset(paths)


def snapshot(workdir: Path) -> GitState | None:
    """The repository's state, or None when ``workdir`` is not in a git work tree."""
    head = _git(workdir, "rev-parse", "--verify", "-q", "HEAD")
    status = _git(workdir, "status", "--porcelain=v1", "-z", "--untracked-files=all")
    if status is None:
        return None
    return GitState(head=head.strip() if head else None, dirty=_porcelain_paths(status))


def changed_files(workdir: Path, before: GitState | None, after: GitState | None) -> tuple[str, ...]:
    """Files the attempt changed, sorted (paths relative to the repository root)."""
    if before is None or after is None:
        return ()
    changed = set(after.dirty - before.dirty)
    if before.head and after.head and before.head != after.head:
        committed = _git(workdir, "diff", "--name-only", "-z", before.head, after.head)
        if committed:
            changed.update(path for path in committed.split("\0") if path)
    return tuple(sorted(changed))


def moved(before: GitState | None, after: GitState | None) -> bool:
    """HEAD moved during the attempt (a commit, a reset, a checkout)."""
    return before is not None and after is not None and before.head != after.head


#: Folders an mtime scan skips: tools' caches and our own state, not the agent's work.
_SKIPPED = frozenset({".git", ".executor", "node_modules", "__pycache__", ".venv"})
#: What the executor itself writes in a session folder while an attempt runs.
EXECUTOR_WRITES = (".executor", ".msg", "team-session.json", "wisdom", "artifacts")


def executor_paths(session: Path) -> tuple[Path, ...]:
    """The paths of a session folder that :func:`touched_since` leaves out (see EXECUTOR_WRITES)."""
    return tuple(session / name for name in EXECUTOR_WRITES)


def touched_since(folder: Path, since: float, limit: int = 20_000, skip: tuple[Path, ...] = ()) -> bool:
    """Whether a file under ``folder`` was created, modified or removed at or after ``since``.

    For a working directory that is no git repository, where :func:`snapshot` sees nothing.
    Looks at ``limit`` entries at most (a huge tree counts as touched: no proof of idleness).
    ``skip``: paths left out (what the executor writes in the session folder meanwhile;
    artifacts are counted on their own).  A folder's time changes when an entry is added
    or removed, so a deletion counts too.
    """
    skipped = {os.path.realpath(path) for path in skip}
    seen = 0
    stack = [folder]
    while stack:
        try:
            with os.scandir(stack.pop()) as entries:
                for entry in entries:
                    seen += 1
                    if seen > limit:
                        return True
                    if entry.name in _SKIPPED or os.path.realpath(entry.path) in skipped:
                        continue
                    try:
                        if entry.is_dir(follow_symlinks=False):
                            stack.append(Path(entry.path))
                        if entry.stat(follow_symlinks=False).st_mtime >= since:
                            return True
                    except OSError:
                        continue
        except OSError:
            continue
    return False
