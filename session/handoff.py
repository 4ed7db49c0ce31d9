"""Handoff operations on tasks: create, prep, claim, review, complete, fail, reopen.

For manual agents (a role with backend ``manual``): a person or an IDE agent
takes a task, works, and hands it on, through ``executor task ...`` or the MCP
tools.  Each operation checks the task's state, changes the store in one
transaction and records a :class:`TaskTransition` (or ``TaskCreated``).  The
same functions serve a live run (the Session actor calls them on its store) and
no run at all (the CLI calls them under the session lock), so both refuse alike.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable

import msgspec

from protocol.events import Event, TaskCreated, TaskRolledBack, TaskTransition
from protocol.messages import HandoffRequest
from protocol.records import TaskDetails, TaskRow
from protocol.types import Priority
from session.lifecycle import lifecycle_status
from session.store import Store, utc_now
from session.store_changes import TaskChange

__all__ = [
    "AGENT_NAME",
    "HandoffRefused",
    "apply_handoff",
    "claim_task",
    "complete_task",
    "create_task",
    "fail_task",
    "merge_details",
    "prep_task",
    "release_task",
    "rollback_task",
    "submit_for_review",
]

#: Appends an event to the store (the Session actor passes its own, which also tells the run's views).
Record = Callable[[Event, str | None], None]

AGENT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@:-]{0,99}$")


class HandoffRefused(msgspec.Struct, frozen=True):
    reason: str
    argument: str | None = None


def _task(store: Store, task_id: str) -> TaskRow | HandoffRefused:
    row = store.task(task_id)
    if row is None:
        return HandoffRefused(f"no task '{task_id}' in this session (`executor task status` lists them)", "task_id")
    return row


def _completed(store: Store, ids: Iterable[str]) -> set[str]:
    return {task_id for task_id in ids if (row := store.task(task_id)) is not None and row.status == "completed"}


def _move(
    store: Store, row: TaskRow, to_status: str, by: str, record: Record | None, note: str = "", **changes: object
) -> TaskRow:
    """One transition: the row's new state and its event, in one transaction."""
    lifecycle = lifecycle_status(row, _completed(store, row.blocked_by))
    with store.transaction():
        # to_status and changes are TaskChange fields named by the handoff operations in this module.
        store.update_task(row.id, TaskChange(status=to_status, **changes))  # type: ignore[arg-type]
        store.append(
            TaskTransition(task_id=row.id, from_status=lifecycle, to_status=to_status, by=by, note=note), row.id
        )
    updated = store.task(row.id)
    assert updated is not None  # noqa: S101 - it was just written
    return updated


def create_task(
    store: Store,
    *,
    title: str,
    role: str,
    prefix: str,
    by: str,
    priority: Priority = "P1",
    blocked_by: tuple[str, ...] = (),
    description: str = "",
    max_attempts: int = 3,
    record: Record | None = None,
) -> TaskRow | HandoffRefused:
    """A new pending task of ``role``, id ``<prefix>-NNN`` (the next free number)."""
    if not title.strip():
        return HandoffRefused("give the task a title", "title")
    unknown = [task_id for task_id in blocked_by if store.task(task_id) is None]
    if unknown:
        return HandoffRefused(f"no task {', '.join(unknown)} in this session", "blocked_by")
    numbers = [
        int(row.id[len(prefix) + 1 :])
        for row in store.tasks()
        if row.id.startswith(f"{prefix}-") and row.id[len(prefix) + 1 :].isdigit()
    ]
    now = utc_now()
    row = TaskRow(
        id=f"{prefix}-{max(numbers, default=0) + 1:03d}",
        owner=role,
        subject=title.strip()[:500],
        priority=priority,
        blocked_by=list(dict.fromkeys(blocked_by)),
        max_attempts=max_attempts,
        source="manual",
        created_at=now,
        updated_at=now,
        description=description,
    )
    with store.transaction():
        store.put_tasks([row])
        (record or store.append)(
            TaskCreated(
                task_id=row.id, owner=role, priority=priority, blocked_by=tuple(row.blocked_by), source="manual"
            ),
            row.id,
        )
    return row


def merge_details(current: TaskDetails, changes: dict[str, object]) -> TaskDetails:
    """``current`` with the given fields replaced (a field left out keeps its value)."""
    return msgspec.convert({**msgspec.to_builtins(current), **changes}, TaskDetails)


def prep_task(
    store: Store, task_id: str, changes: dict[str, object], by: str, record: Record | None = None
) -> TaskRow | HandoffRefused:
    """Fill in goal, acceptance criteria, definitions of ready and done, files affected, notes."""
    row = _task(store, task_id)
    if isinstance(row, HandoffRefused):
        return row
    if row.status in ("completed", "failed"):
        return HandoffRefused(f"{task_id} is already {row.status}; prepare a new task instead", "task_id")
    try:
        details = merge_details(row.details, changes)
    except msgspec.ValidationError as error:
        return HandoffRefused(f"details: {error}", "details")
    lifecycle = lifecycle_status(row, _completed(store, row.blocked_by))
    with store.transaction():
        store.update_task(task_id, TaskChange(details=details))
        (record or store.append)(
            TaskTransition(task_id=task_id, from_status=lifecycle, to_status=lifecycle, by=by, note="prepared"), task_id
        )
    return store.task(task_id) or row


def claim_task(
    store: Store,
    task_id: str,
    agent: str,
    by: str,
    manual_roles: set[str],
    record: Record | None = None,
    capabilities: set[str] | None = None,
) -> TaskRow | HandoffRefused:
    """``agent`` takes a ready task of a manual role: it is theirs (in_progress) until handed on."""
    if not AGENT_NAME.match(agent):
        return HandoffRefused("use letters, digits and . _ @ : - (at most 100)", "agent")
    row = _task(store, task_id)
    if isinstance(row, HandoffRefused):
        return row
    if row.owner not in manual_roles:
        return HandoffRefused(
            f"{task_id} belongs to role {row.owner}, which the executor runs itself; only tasks of manual roles "
            f"({', '.join(sorted(manual_roles)) or 'none in this session'}) are claimed",
            "task_id",
        )
    if row.status == "in_progress" and row.agent == agent:
        return row  # claiming twice is harmless
    if row.status != "pending":
        held = f" by {row.agent}" if row.agent else ""
        return HandoffRefused(f"{task_id} is {row.status}{held}; only a ready task can be claimed", "task_id")
    waiting = [blocker for blocker in row.blocked_by if blocker not in _completed(store, row.blocked_by)]
    if waiting:
        return HandoffRefused(f"{task_id} is not ready: it waits for {', '.join(waiting)}", "task_id")
    lacking = sorted(set(row.details.capabilities) - capabilities) if capabilities is not None else []
    if lacking:
        return HandoffRefused(
            f"{task_id} needs {', '.join(lacking)}, which agents.yaml does not give {agent}; let someone who has "
            "it claim the task (executor task next shows who fits)",
            "agent",
        )
    return _move(
        store, row, "in_progress", by, record, note=f"claimed by {agent}", agent=agent, attempts=row.attempts + 1
    )


def submit_for_review(store: Store, task_id: str, by: str, record: Record | None = None) -> TaskRow | HandoffRefused:
    row = _task(store, task_id)
    if isinstance(row, HandoffRefused):
        return row
    if row.status == "review":
        return row
    if row.status != "in_progress" or row.agent is None:
        return HandoffRefused(f"{task_id} is {row.status}; claim it first, then hand it in for review", "task_id")
    return _move(store, row, "review", by, record)


def complete_task(store: Store, task_id: str, by: str, record: Record | None = None) -> TaskRow | HandoffRefused:
    row = _task(store, task_id)
    if isinstance(row, HandoffRefused):
        return row
    if row.status == "completed":
        return row
    if row.status not in ("in_progress", "review") or row.agent is None:
        return HandoffRefused(
            f"{task_id} is {row.status}; only a claimed task (in progress or review) completes", "task_id"
        )
    return _move(store, row, "completed", by, record, completed_at=utc_now(), last_error=None, last_error_kind=None)


def fail_task(
    store: Store, task_id: str, reason: str, by: str, record: Record | None = None
) -> TaskRow | HandoffRefused:
    row = _task(store, task_id)
    if isinstance(row, HandoffRefused):
        return row
    if not reason.strip():
        return HandoffRefused("say why it failed", "reason")
    if row.status not in ("in_progress", "review") or row.agent is None:
        return HandoffRefused(f"{task_id} is {row.status}; only a claimed task can be failed by its agent", "task_id")
    return _move(
        store,
        row,
        "failed",
        by,
        record,
        note=reason[:2000],
        last_error=reason[:2000],
        last_error_kind="reported_failed",
    )


def release_task(
    store: Store, task_id: str, reason: str, by: str, record: Record | None = None
) -> TaskRow | HandoffRefused:
    """A claimed task goes back to ready, unclaimed (its agent gave it up, or went silent)."""
    row = _task(store, task_id)
    if isinstance(row, HandoffRefused):
        return row
    if row.status != "in_progress" or row.agent is None:
        return HandoffRefused(f"{task_id} is {row.status}, not claimed; nothing to release", "task_id")
    note = f"released from {row.agent}" + (f": {reason}" if reason else "")
    return _move(store, row, "pending", by, record, note=note[:2000], agent=None)


def rollback_task(
    store: Store, task_id: str, details: dict[str, object], by: str, record: Record | None = None
) -> TaskRow | HandoffRefused:
    """``executor rollback`` put the task's files back: it is pending again (a fresh set of attempts) or cancelled.

    ``details``: ``to`` ("pending" or "cancelled"), ``files`` (what was restored), ``cascade_of``."""
    row = _task(store, task_id)
    if isinstance(row, HandoffRefused):
        return row
    to = details.get("to", "pending")
    if to not in ("pending", "cancelled"):
        return HandoffRefused(f"--to {to!r}: say pending or cancelled", "to")
    if row.status in ("in_progress", "review"):
        who = f" (claimed by {row.agent})" if row.agent else ""
        return HandoffRefused(f"{task_id} is {row.status}{who}; roll it back once it has ended", "task_id")
    files = details.get("files", [])
    cascade_of = details.get("cascade_of")
    event = TaskRolledBack(
        task_id=task_id,
        to_status=str(to),
        files=tuple(str(path) for path in files)[:1000] if isinstance(files, list) else (),
        by=by,
        cascade_of=str(cascade_of) if cascade_of else None,
    )
    if to == "pending":
        # A fresh budget counted from the attempts already made, so attempt numbers (logs, diffs) stay unique.
        change = TaskChange(
            status="pending",
            attempts_before=row.attempts,
            completed_at=None,
            last_error=None,
            last_error_kind=None,
            agent=None,
        )
    else:
        change = TaskChange(status="failed", last_error=f"rolled back by {by}", last_error_kind="cancelled")
    with store.transaction():
        store.update_task(task_id, change)
        (record or store.append)(event, task_id)
    updated = store.task(task_id)
    assert updated is not None  # noqa: S101 - it was just written
    return updated


def apply_handoff(store: Store, request: HandoffRequest, record: Record | None = None) -> TaskRow | HandoffRefused:
    """Carry out one request (the CLI's, the inbox's or an MCP tool's) on ``store``."""
    match request.op:
        case "create":
            return create_task(
                store,
                title=request.title,
                role=request.role,
                prefix=request.prefix,
                by=request.by,
                priority=request.priority,
                blocked_by=request.blocked_by,
                description=request.description,
                max_attempts=request.max_attempts,
                record=record,
            )
        case "prep":
            return prep_task(store, request.task_id, request.details, request.by, record)
        case "claim":
            capabilities = set(request.agent_capabilities) if request.agent_capabilities is not None else None
            return claim_task(
                store, request.task_id, request.agent, request.by, set(request.manual_roles), record, capabilities
            )
        case "review":
            return submit_for_review(store, request.task_id, request.by, record)
        case "complete":
            return complete_task(store, request.task_id, request.by, record)
        case "fail":
            return fail_task(store, request.task_id, request.reason, request.by, record)
        case "release":
            return release_task(store, request.task_id, request.reason, request.by, record)
        case "rollback":
            return rollback_task(store, request.task_id, request.details, request.by, record)
    return HandoffRefused(f"unknown operation {request.op!r}", "op")


def choose_next(
    rows: list[TaskRow], agent: str, manual_roles: Iterable[str], capabilities: set[str] | None = None
) -> tuple[TaskRow | None, str]:
    """The task ``agent`` should do next, and why; (None, what everything waits on) when none.

    Its own claimed work comes first; then the ready, unclaimed tasks of manual roles that
    its capabilities cover (all, when it declares none), by priority, then by how much each
    unblocks, then by id."""
    manual = set(manual_roles)
    by_id = {row.id: row for row in rows}
    mine = sorted(
        (row for row in rows if row.agent == agent and row.status == "in_progress"),
        key=lambda row: (row.priority, row.id),
    )
    if mine:
        row = mine[0]
        return row, f"{row.id} is yours and in progress: finish it (then `executor task review {row.id}`)"
    dependants: dict[str, int] = {}
    for row in rows:
        for blocker in row.blocked_by:
            dependants[blocker] = dependants.get(blocker, 0) + 1
    ready = [
        row
        for row in rows
        if row.owner in manual
        and row.status == "pending"
        and all(
            (blocker_row := by_id.get(blocker)) is None or blocker_row.status == "completed"
            for blocker in row.blocked_by
        )
    ]
    fitting = [row for row in ready if capabilities is None or set(row.details.capabilities) <= capabilities]
    if fitting:
        fitting.sort(key=lambda row: (row.priority, -dependants.get(row.id, 0), row.id))
        row = fitting[0]
        why = [f"{row.priority}", "ready" + (f" ({', '.join(row.blocked_by)} done)" if row.blocked_by else "")]
        if dependants.get(row.id):
            why.append(f"{dependants[row.id]} task(s) wait for it")
        if row.details.capabilities:
            why.append(f"needs {', '.join(row.details.capabilities)}, which you have")
        why.append(f"role {row.owner}")
        return row, f"{row.id}: {'; '.join(why)} — claim it with `executor task claim {row.id} --agent {agent}`"
    if ready:
        needs = sorted({cap for row in ready for cap in row.details.capabilities} - (capabilities or set()))
        return None, f"{len(ready)} task(s) are ready but need what you lack: {', '.join(needs)}"
    waiting = [
        f"{row.id} waits for {', '.join(b for b in row.blocked_by if by_id.get(b) and by_id[b].status != 'completed')}"
        for row in rows
        if row.owner in manual and row.status == "pending"
    ]
    if waiting:
        return None, "nothing is ready for you: " + "; ".join(waiting[:5])
    return None, "no manual task is waiting" + ("" if manual else " (this session has no role with backend: manual)")
