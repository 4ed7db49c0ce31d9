"""A task's changes to the project as a diff: ``executor diff`` and ``/api/tasks/{id}/diff``.

From the first selected attempt's *before* tree to the last one's *after* tree,
limited to the files those attempts changed (so a task running beside others in
the same tree does not show their work), never the executor's own files.  An
attempt still running (no *after* yet) is compared with the work tree as it is
now, and the diff says so.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import msgspec

from session.attempt_trees import AttemptTrees, read_trees
from session.git_trees import (
    FileChange,
    GitTreeError,
    capture_tree,
    changed_files,
    changed_paths,
    diff_patch,
    is_object,
)
from session.own_paths import is_own, own_prefixes
from session.task_changes import AttemptKey, ended_within, select_attempts, task_paths

__all__ = ["DiffUnavailable", "TaskDiff", "attempt_changes", "task_diff"]


class DiffUnavailable(Exception):
    """No diff can be made; the message says why and what to do (``argument``: the one at fault, if any)."""

    def __init__(self, message: str, argument: str | None = None) -> None:
        super().__init__(message)
        self.argument = argument


class TaskDiff(msgspec.Struct, frozen=True, kw_only=True):
    task_id: str
    attempts: tuple[int, ...]
    root: str
    before: str
    after: str
    live: bool  # the last attempt has not ended: ``after`` is the work tree now
    files: tuple[FileChange, ...]
    added: int
    removed: int
    patch: str | None = None  # None when only the stat was asked for


def attempt_changes(
    session_dir: Path,
    records: Iterable[AttemptTrees],
    now: dict[str, str] | None = None,
    only: Iterable[AttemptTrees] | None = None,
) -> dict[AttemptKey, frozenset[str]]:
    """Files each attempt (of ``only``, default all) changed, without the executor's own and without what
    other tasks' attempts in ``records`` left while it ran; an open attempt is compared with ``now[root]``.

    Raises :class:`GitTreeError` when a recorded tree is gone (pruned by ``git gc``)."""
    every = list(records)
    changes: dict[AttemptKey, frozenset[str]] = {}
    prefixes: dict[str, tuple[str, ...]] = {}
    for record in every if only is None else only:
        after = record.after or (now or {}).get(record.root)
        if after is None or not (is_object(record.before) and is_object(after)):
            continue
        root = Path(record.root)
        if record.root not in prefixes:
            prefixes[record.root] = own_prefixes(root, session_dir)
        paths = {p for p in changed_paths(root, record.before, after) if not is_own(p, prefixes[record.root])}
        # Tasks running beside it share the tree: a file another attempt left exactly as this one's
        # end shows it was that attempt's change, not this one's.
        for other in ended_within(every, record):
            if paths and other.after is not None:
                theirs = paths & changed_paths(root, other.before, other.after)
                paths -= theirs - changed_paths(root, other.after, after)
        changes[(record.task_id, record.attempt)] = frozenset(paths)
    return changes


def current_tree(session_dir: Path, root: str) -> str:
    """The work tree at ``root`` now, without the executor's own files."""
    return capture_tree(Path(root), own_prefixes(Path(root), session_dir))


def task_diff(session_dir: Path, task_id: str, attempt: int | None = None, *, patch: bool = True) -> TaskDiff:
    """What ``task_id`` changed (or one of its attempts).  Raises :class:`DiffUnavailable`."""
    records = read_trees(session_dir)
    chosen = select_attempts(records, task_id, attempt)
    if isinstance(chosen, str):
        raise DiffUnavailable(chosen, "attempt" if chosen.startswith("--attempt") else None)
    root = chosen[-1].root
    live = chosen[-1].after is None
    try:
        now = {root: current_tree(session_dir, root)} if live else {}
        changed = attempt_changes(session_dir, records, now, only=chosen)
        after = chosen[-1].after or now[root]
        paths = task_paths(chosen, changed)
        files = tuple(changed_files(Path(root), chosen[0].before, after, paths)) if paths else ()
        text = diff_patch(Path(root), chosen[0].before, after, paths) if patch and paths else ("" if patch else None)
    except GitTreeError as error:
        raise DiffUnavailable(
            f"git cannot compare {task_id}'s recorded trees in {root} ({error}); the repository moved, "
            "or `git gc` pruned them"
        ) from None
    return TaskDiff(
        task_id=task_id,
        attempts=tuple(record.attempt for record in chosen),
        root=root,
        before=chosen[0].before,
        after=after,
        live=live,
        files=files,
        added=sum(change.added or 0 for change in files),
        removed=sum(change.removed or 0 for change in files),
        patch=text,
    )
