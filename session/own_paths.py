"""Which paths of a project are the executor's own, never a task's changes; and where a stored name may lead.

A session folder inside the project (``.workflow/.team/<id>``, or the project
itself) holds the executor's state, logs, agent homes and the task mirror; an
attempt's diff, its ``files_changed`` and a rollback leave all of it out.

The checks on names that come from the store (task ids, log paths) live here in
one place, so they can give way to the project-wide id grammar and safe-path
helper without hunting for copies.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path, PurePosixPath

__all__ = ["SESSION_ENTRIES", "TASK_ID", "contained", "is_own", "own_prefixes", "valid_task_id"]

#: What a session folder holds (shared/formats/team-session.md, plus the executor's state).
SESSION_ENTRIES = (
    ".executor",
    ".msg",
    "team-session.json",
    "task-analysis.json",
    "role-specs",
    "artifacts",
    "wisdom",
    "discussions",
    "feedback",
    "tasks",
    "agents.yaml",
    "executor.toml",
)

#: Task ids as the session format writes them (PM-001, IMPL-002-r1, ...): nothing that could be a path.
TASK_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,79}$")


def valid_task_id(text: str) -> bool:
    return TASK_ID.match(text) is not None and ".." not in text


def own_prefixes(repo_root: Path, session_dir: Path) -> tuple[str, ...]:
    """Repository-relative paths (POSIX) that belong to the executor for a session at ``session_dir``.

    The whole session folder when it is a subfolder of the repository; its known entries
    when it is the repository itself; nothing when it lies outside."""
    try:
        relative = Path(session_dir).resolve().relative_to(Path(repo_root).resolve())
    except ValueError:
        return ()
    if relative == Path():
        return SESSION_ENTRIES
    return (relative.as_posix(),)


def is_own(path: str, prefixes: Iterable[str]) -> bool:
    """Whether ``path`` (repository-relative, POSIX) is one of ``prefixes`` or lies under one."""
    parts = PurePosixPath(path).parts
    for prefix in prefixes:
        prefix_parts = PurePosixPath(prefix).parts
        if parts[: len(prefix_parts)] == prefix_parts:
            return True
    return False


def contained(root: Path, candidate: str | Path) -> Path | None:
    """``candidate`` (absolute, or relative to ``root``) resolved, if it stays inside ``root``; else None."""
    top = Path(root).resolve()
    try:
        path = Path(candidate)
        target = (path if path.is_absolute() else top / path).resolve()
    except (OSError, ValueError):
        return None
    return target if target.is_relative_to(top) else None
