"""What an attempt did to the project's git repository.

Taken before and after each agent attempt: the HEAD commit (so a retried or
resumed task knows where the agent left off) and the files it changed —
committed between the two heads, or left modified/untracked in the tree,
minus what was already dirty before it started.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import msgspec

__all__ = ["GitState", "changed_files", "snapshot"]

_GIT_TIMEOUT_S = 20.0


class GitState(msgspec.Struct, frozen=True):
    head: str | None
    dirty: frozenset[str] = frozenset()


def _git(workdir: Path, *args: str) -> str | None:
    try:
        completed = subprocess.run(
            ["git", "-C", str(workdir), *args],
            capture_output=True,
            timeout=_GIT_TIMEOUT_S,
            check=False,
            env={"PATH": "/usr/local/bin:/usr/bin:/bin", "GIT_OPTIONAL_LOCKS": "0", "LC_ALL": "C"},
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
