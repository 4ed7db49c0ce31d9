"""What a task changed, and how to undo it: pure decisions over the recorded attempts.

The inputs are the attempts in the order they started (:class:`AttemptTrees`)
and, for each, the files it changed (computed from its before/after trees by the
caller, with the executor's own files already left out).  Nothing here runs git
or touches a file.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import msgspec

from session.attempt_trees import AttemptTrees

__all__ = [
    "AttemptKey",
    "RollbackPlan",
    "RollbackRefused",
    "ended_within",
    "plan_rollback",
    "select_attempts",
    "task_paths",
]

AttemptKey = tuple[str, int]  # (task id, attempt)


class RollbackRefused(msgspec.Struct, frozen=True):
    reason: str
    conflicts: tuple[str, ...] = ()  # tasks that would have to be named with --cascade


class RollbackPlan(msgspec.Struct, frozen=True, kw_only=True):
    """Restore each path from the tree it had before the first rolled-back attempt that changed it.

    ``expect``: the tree each path must still match now (what the last rolled-back attempt
    that changed it left); a path that differs was changed since by someone else."""

    tasks: tuple[str, ...]  # the task first, then the cascaded ones
    root: str
    restore: dict[str, tuple[str, ...]]  # before tree -> paths
    expect: dict[str, tuple[str, ...]]  # after tree -> paths
    files: tuple[str, ...]


def _key(record: AttemptTrees) -> AttemptKey:
    return (record.task_id, record.attempt)


def ended_within(records: list[AttemptTrees], record: AttemptTrees) -> list[AttemptTrees]:
    """Other tasks' attempts in the same tree that ended while ``record`` ran (it is open: since it began).

    Their changes are in ``record``'s before/after trees too, though ``record`` did not make them."""
    last = record.ended if record.ended is not None else float("inf")
    return [
        other
        for other in records
        if other.task_id != record.task_id
        and other.root == record.root
        and other.ended is not None
        and record.started < other.ended < last
    ]


def select_attempts(records: Iterable[AttemptTrees], task_id: str, attempt: int | None) -> list[AttemptTrees] | str:
    """The task's recorded attempts (one of them with ``attempt``), or why there are none."""
    mine = [record for record in records if record.task_id == task_id]
    if not mine:
        return (
            f"no git state is recorded for {task_id}: it has not run, or it ran outside a git repository "
            "(or before this executor recorded attempts)"
        )
    if attempt is not None:
        chosen = [record for record in mine if record.attempt == attempt]
        if not chosen:
            known = ", ".join(str(record.attempt) for record in mine)
            return f"--attempt {attempt}: {task_id} has recorded attempts {known}"
        return chosen
    root = mine[-1].root  # a task moved to a worktree of its own: its newest place counts
    return [record for record in mine if record.root == root]


def task_paths(attempts: Iterable[AttemptTrees], changed: Mapping[AttemptKey, frozenset[str]]) -> tuple[str, ...]:
    """Every file any of ``attempts`` changed, sorted."""
    paths: set[str] = set()
    for record in attempts:
        paths |= changed.get(_key(record), frozenset())
    return tuple(sorted(paths))


def plan_rollback(
    records: list[AttemptTrees],
    changed: Mapping[AttemptKey, frozenset[str]],
    task_id: str,
    cascade: Iterable[str] = (),
) -> RollbackPlan | RollbackRefused:
    """Undo ``task_id`` (and the ``cascade`` tasks) in the files they changed.

    Refused when another task's attempt, started after the first rolled-back one, changed
    one of those files: undoing ours would undo part of theirs.  The refusal names them,
    so the caller can offer ``--cascade``."""
    rolled = [task_id, *(name for name in dict.fromkeys(cascade) if name != task_id)]
    mine = [record for record in records if record.task_id in rolled]
    missing = [name for name in rolled if not any(record.task_id == name for record in mine)]
    if missing:
        return RollbackRefused(
            f"no git state is recorded for {', '.join(missing)}: nothing to roll back "
            "(it has not run, or it ran outside a git repository)"
        )
    roots = {record.root for record in mine}
    if len(roots) > 1:
        return RollbackRefused(
            f"{', '.join(rolled)} worked in different trees ({', '.join(sorted(roots))}); roll them back one by one"
        )
    first = records.index(mine[0])
    paths = set(task_paths(mine, changed))
    if not paths:
        return RollbackRefused(f"{task_id} changed no file of the project; nothing to roll back")
    conflicts: dict[str, set[str]] = {}
    for record in records[first:]:
        if record.task_id in rolled:
            continue
        overlap = changed.get(_key(record), frozenset()) & paths
        if overlap:
            conflicts.setdefault(record.task_id, set()).update(overlap)
    if conflicts:
        named = "; ".join(f"{name} ({', '.join(sorted(files)[:5])})" for name, files in sorted(conflicts.items()))
        return RollbackRefused(
            f"later tasks changed the same files: {named}. Undoing {task_id} would undo their work too; "
            f"to roll them back as well, add --cascade {','.join(sorted(conflicts))}",
            tuple(sorted(conflicts)),
        )
    restore: dict[str, list[str]] = {}
    expect: dict[str, list[str]] = {}
    for path in sorted(paths):
        touching = [record for record in mine if path in changed.get(_key(record), frozenset())]
        restore.setdefault(touching[0].before, []).append(path)
        last_after = touching[-1].after
        if last_after is None:
            return RollbackRefused(
                f"{touching[-1].task_id} attempt {touching[-1].attempt} has no recorded end (still running, or "
                "its executor was killed); wait for it, or resume the session first"
            )
        expect.setdefault(last_after, []).append(path)
    return RollbackPlan(
        tasks=tuple(rolled),
        root=mine[0].root,
        restore={tree: tuple(items) for tree, items in restore.items()},
        expect={tree: tuple(items) for tree, items in expect.items()},
        files=tuple(sorted(paths)),
    )
