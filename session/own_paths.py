"""Which paths of a project are the executor's own, never a task's changes.

A session folder inside the project (``.workflow/.team/<id>``, or the project
itself) holds the executor's state, logs, agent homes and the task mirror; an
attempt's diff, its ``files_changed`` and a rollback leave all of it out.

Names that come from the store are checked by the project-wide helpers: task ids
by ``protocol.ids``, paths by ``session.safepath``.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path, PurePosixPath

__all__ = ["SESSION_ENTRIES", "is_own", "own_prefixes"]

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
