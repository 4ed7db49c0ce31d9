"""Rolling a task back: check that it is safe, then put its files back as they were before it.

:func:`prepare` reads the store and the recorded attempts, plans with
:func:`session.task_changes.plan_rollback`, and checks the work tree now: every
file to restore must still be exactly what the rolled-back tasks left, else
someone changed it since (a person, or a task running now) and the rollback is
refused with the file's name.  :func:`restore` then writes the files.  Recording
the rollback in the store (the task's new status and a ``TaskRolledBack``
event) is a handoff request (``op="rollback"``), carried out by the live run or
under the session lock, like ``executor task`` steps.
"""

from __future__ import annotations

from pathlib import Path

from protocol.messages import HandoffRequest
from protocol.records import TaskRow
from session.attempt_trees import read_trees
from session.git_trees import GitTreeError, changed_files, restore_paths, tree_blob
from session.store import Store, StoreError, StoreReader
from session.task_changes import RollbackPlan, RollbackRefused, plan_rollback
from session.task_diff import attempt_changes, current_tree

__all__ = ["RollbackBlocked", "prepare", "record_in_store", "restore", "rollback_requests", "undo_restore"]

_NOT_NOW = {"in_progress": "is running", "review": "is claimed and in review"}


class RollbackBlocked(Exception):
    """The rollback is refused; the message says why and what to do (``usage``: a bad argument)."""

    def __init__(self, message: str, *, usage: bool = False, conflicts: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.usage = usage
        self.conflicts = conflicts


def _check_tasks(folder: Path, names: list[str], live: bool) -> None:
    reader = StoreReader.open(folder)
    if reader is None:
        raise RollbackBlocked(f"{folder} has never run: there is nothing to roll back")
    try:
        rows = {name: reader.task(name) for name in names}
    except StoreError as error:
        raise RollbackBlocked(str(error)) from None
    finally:
        reader.close()
    for name, row in rows.items():
        if row is None:
            raise RollbackBlocked(f"no task {name!r} in this session (`executor task status` lists them)", usage=True)
        if row.status in _NOT_NOW:
            raise RollbackBlocked(
                f"{name} {_NOT_NOW[row.status]}; roll it back once it has ended "
                "(to stop it now: the dashboard's cancel, or the MCP tool cancel_task)"
            )
        if live and row.status == "pending":
            raise RollbackBlocked(
                f"{name} is pending and the live run may start it any moment; cancel it first, "
                "or roll it back when the run has stopped"
            )


def prepare(folder: Path, task_id: str, cascade: tuple[str, ...], *, live: bool) -> RollbackPlan:
    """What to restore for ``task_id`` (and ``cascade``), checked against the store and the work tree now.

    Raises :class:`RollbackBlocked`."""
    _check_tasks(folder, [task_id, *cascade], live)
    records = read_trees(folder)
    try:
        open_roots = {record.root for record in records if record.after is None}
        now = {root: current_tree(folder, root) for root in open_roots}
        plan = plan_rollback(records, attempt_changes(folder, records, now), task_id, cascade)
        if isinstance(plan, RollbackRefused):
            raise RollbackBlocked(plan.reason, conflicts=plan.conflicts)
        root = Path(plan.root)
        current = now.get(plan.root) or current_tree(folder, plan.root)
        drifted = sorted(
            change.path for tree, paths in plan.expect.items() for change in changed_files(root, tree, current, paths)
        )
    except GitTreeError as error:
        raise RollbackBlocked(
            f"git cannot read the recorded state ({error}); the repository moved, or `git gc` pruned it"
        ) from None
    if drifted:
        shown = ", ".join(drifted[:10])
        raise RollbackBlocked(
            f"{shown} changed since {', '.join(plan.tasks)} ended (by a person, or by a task running now); "
            "commit, stash or undo that change first, so the rollback does not throw it away"
        )
    return plan


def _write(root: Path, trees: dict[str, tuple[str, ...]]) -> None:
    for tree, paths in trees.items():
        present = [path for path in paths if tree_blob(root, tree, path)]
        absent = [path for path in paths if path not in present]
        restore_paths(root, tree, present, absent)


def restore(plan: RollbackPlan) -> None:
    """Write the planned files back (the work tree only; the index and HEAD stay).  Raises :class:`GitTreeError`."""
    _write(Path(plan.root), plan.restore)


def undo_restore(plan: RollbackPlan) -> None:
    """Put the files back as the rolled-back tasks left them (the store refused to record the rollback).

    Raises :class:`GitTreeError`."""
    _write(Path(plan.root), plan.expect)


def rollback_requests(plan: RollbackPlan, to: str, by: str) -> list[HandoffRequest]:
    """The store changes for ``plan``: one ``rollback`` handoff per task, the first task's first."""
    first = plan.tasks[0]
    return [
        HandoffRequest(
            op="rollback",
            by=by,
            task_id=name,
            details={"to": to, "files": list(plan.files), "cascade_of": first if name != first else None},
        )
        for name in plan.tasks
    ]


def record_in_store(folder: Path, requests: list[HandoffRequest]) -> tuple[list[TaskRow], str | None]:
    """With no run going on (the caller holds the session lock): carry ``requests`` out on the store and
    take the tasks out of ``team-session.json``'s completed list.  Returns the rows recorded, and the
    reason the store refused the next one, if it did."""
    from session.handoff import HandoffRefused, apply_handoff  # noqa: PLC0415 - only the no-run path
    from session.loader import inspect_session  # noqa: PLC0415
    from session.projection import SessionProjection  # noqa: PLC0415

    rows: list[TaskRow] = []
    refusal: str | None = None
    store = Store.open(folder)
    try:
        for request in requests:
            result = apply_handoff(store, request)
            if isinstance(result, HandoffRefused):
                refusal = result.reason
                break
            rows.append(result)
        every_id = [row.id for row in store.tasks()]
    finally:
        store.close()
    loaded, _ = inspect_session(folder)
    if loaded is not None and rows:
        projection = SessionProjection(folder, loaded.team_raw, [*(task.id for task in loaded.tasks), *every_id])
        for row in rows:
            projection.task_reopened(row.id)
        projection.flush()
    return rows, refusal
