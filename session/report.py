"""What ``executor check`` shows: where a pipeline stands, read-only.

Built from the session folder, the state database (when a run has happened)
and the lock file (is a run live right now?).  Never writes: it works from
another process while a run is going on.  Linear in tasks plus edges.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import msgspec

from protocol.events import TaskProgress
from protocol.records import RunRow
from session.feedback import FEEDBACK_DIR, rounds_so_far
from session.graph import TaskSpec, layers, priority_rank
from session.loader import inspect_session
from session.lock import read_holder
from session.problems import Problem
from session.processes import is_alive
from session.run_choices import RoleBackend
from session.store import StoreReader, TaskRow

__all__ = [
    "ActiveWorker",
    "CheckReport",
    "FailedTask",
    "Progress",
    "TaskView",
    "build_report",
]

ViewStatus = Literal["pending", "in_progress", "review", "completed", "failed", "not_created"]


class Progress(msgspec.Struct, frozen=True):
    completed: int
    total: int
    percent: float


class TaskView(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    owner: str
    status: ViewStatus
    blocked_by: list[str]
    priority: str
    attempts: int
    subject: str = ""
    # How each attempt ended, in order: "completed", "changes_requested" (a review sent work
    # back), or the error kind of a failure ("gate_failed", "crash", ...); "running" while open.
    outcomes: list[str] = msgspec.field(default_factory=list)
    review_rounds: int = 0  # review rounds that sent this task back (## Round N in feedback/<ID>.md)


class ActiveWorker(msgspec.Struct, frozen=True, kw_only=True):
    task_id: str
    role: str
    pid: int | None
    backend: str
    attempt: int
    started_at: str
    elapsed_s: float
    node: str | None = None  # on a cluster: where it runs
    # The attempt's newest progress report (coalesced to a few a second), and when it was recorded.
    percent: int | None = None
    note: str = ""
    progress_at: str | None = None


class FailedTask(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    error_kind: str | None
    error: str | None
    attempts: int


class BlockedTask(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    waiting_on_failed: list[str]


class Budget(msgspec.Struct, frozen=True, kw_only=True):
    spent_usd: float
    session_limit_usd: float | None = None
    task_limit_usd: float | None = None
    state: str | None = None  # ok | warning | exceeded, as the last run left it


class ExecutorState(msgspec.Struct, frozen=True, kw_only=True):
    running: bool
    pid: int | None = None
    command: str | None = None
    started_at: str | None = None
    last_run_id: str | None = None
    last_stop_clean: bool | None = None


class CheckReport(msgspec.Struct, kw_only=True):
    """The facts ``check --json`` prints.  Later versions add fields, never rename."""

    session_id: str | None
    folder: str
    valid: bool
    status: str | None
    progress: Progress
    tasks: list[TaskView]
    layers: list[list[str]]
    active_workers: list[ActiveWorker]
    ready: list[str]
    failed: list[FailedTask]
    blocked: list[BlockedTask]
    executor: ExecutorState
    next_command: str  # a command that works as printed, or "" when there is nothing to do
    problems: list[Problem] = msgspec.field(default_factory=list)
    recovery_report: str | None = None
    budget: Budget | None = None
    next_note: str = ""  # what to do before next_command, or why there is none
    backends: list[RoleBackend] = msgspec.field(default_factory=list)  # each role's, when the caller resolved them
    # Request ids of writes queued through MCP (queue_*) that no run has handled yet: a run that
    # stopped left them; the next one applies them.
    queued_writes_waiting: list[str] = msgspec.field(default_factory=list)


def _elapsed(started_at: str, now: datetime) -> float:
    try:
        return max(0.0, (now - datetime.fromisoformat(started_at)).total_seconds())
    except ValueError:
        return 0.0


def _invalid(folder: Path, problems: list[Problem]) -> CheckReport:
    return CheckReport(
        session_id=None,
        folder=str(folder),
        valid=False,
        status=None,
        progress=Progress(0, 0, 0.0),
        tasks=[],
        layers=[],
        active_workers=[],
        ready=[],
        failed=[],
        blocked=[],
        executor=ExecutorState(running=read_holder(folder) is not None),
        next_command=f"executor validate --session {folder}",
        next_note="first fix the problems above",
        problems=problems,
    )


def _outcomes(reader: StoreReader) -> dict[str, list[str]]:
    """Task id -> how each of its attempts ended, oldest first."""
    found: dict[str, list[str]] = {}
    query = "SELECT task_id, outcome, error_kind FROM runs ORDER BY id"
    for task_id, outcome, error_kind in reader.conn.execute(query):
        label = outcome or "running"
        if outcome == "failed" and error_kind:
            label = error_kind
        found.setdefault(task_id, []).append(label)
    return found


#: (recorded at, the event) of a task's newest progress report.
TaskProgressSeen = tuple[str, TaskProgress]


def _latest_progress(reader: StoreReader, runs: list[RunRow]) -> dict[str, TaskProgressSeen]:
    """Task id -> its newest progress report, for the running attempts (one indexed lookup each)."""
    found: dict[str, TaskProgressSeen] = {}
    for run in runs:
        latest = reader.latest_progress(run.task_id)
        if latest is not None and isinstance(latest[1], TaskProgress):
            found[run.task_id] = (latest[0], latest[1])
    return found


def _progress_fields(seen: TaskProgressSeen | None, attempt: int) -> dict[str, Any]:
    """An ActiveWorker's progress fields: only a report of this attempt (an earlier one's is stale)."""
    if seen is None or seen[1].attempt != attempt:
        return {}
    return {"percent": seen[1].percent, "note": seen[1].note, "progress_at": seen[0]}


def _review_rounds(folder: Path) -> dict[str, int]:
    """Task id -> review rounds so far, for the tasks that have a feedback file."""
    try:
        names = [entry.name for entry in (folder / FEEDBACK_DIR).iterdir() if entry.suffix == ".md"]
    except OSError:
        return {}
    return {name[:-3]: rounds_so_far(folder, name[:-3]) for name in names}


def build_report(folder: Path, backends: list[RoleBackend] | None = None) -> CheckReport:
    """Everything ``check`` shows.  Raises :class:`session.store.StoreError` on a bad database.

    ``backends``: each role's backend (:func:`session.run_choices.role_backends`), when the
    caller has resolved them; a role without one makes the next command name ``--backend demo``.
    """
    folder = Path(folder)
    session, problems = inspect_session(folder)
    if session is None:
        return _invalid(folder, problems)

    holder = read_holder(folder)
    reader = StoreReader.open(folder)
    rows: dict[str, TaskRow] = {}
    meta: dict[str, str] = {}
    open_runs = []
    progress: dict[str, TaskProgressSeen] = {}
    outcomes: dict[str, list[str]] = {}
    waiting_writes: list[str] = []
    spent = 0.0
    if reader is not None:
        try:
            rows = {row.id: row for row in reader.tasks()}
            waiting_writes = [write.id for write in reader.unsettled_writes()]
            outcomes = _outcomes(reader)
            meta = reader.meta()
            spent = sum(reader.spent_by_task().values())
            open_runs = reader.open_runs() if holder is not None else []
            progress = _latest_progress(reader, open_runs)
        finally:
            reader.close()

    completed_in_file = set(session.team.completed_tasks)
    specs: list[TaskSpec] = list(session.tasks)
    known = {spec.id for spec in specs}
    # Tasks created at run time (revisions, submitted through MCP) live only in the store.
    for task in rows.values():
        if task.id not in known:
            specs.append(
                TaskSpec(id=task.id, owner=task.owner, blocked_by=tuple(task.blocked_by), priority=task.priority)
            )

    rounds = _review_rounds(folder)
    views: list[TaskView] = []
    status_of: dict[str, ViewStatus] = {}
    for spec in specs:
        row = rows.get(spec.id)
        status: ViewStatus
        if row is not None:
            status = row.status
        elif spec.id in completed_in_file:
            status = "completed"
        else:
            status = "not_created"
        status_of[spec.id] = status
        views.append(
            TaskView(
                id=spec.id,
                owner=spec.owner,
                status=status,
                blocked_by=list(row.blocked_by if row else spec.blocked_by),
                priority=row.priority if row else spec.priority,
                attempts=row.attempts if row else 0,
                subject=spec.subject,
                outcomes=outcomes.get(spec.id, []),
                review_rounds=rounds.get(spec.id, 0),
            )
        )

    # Blocked by failure, transitively, walking the layers in order.
    graph_layers = layers(specs)
    doomed: dict[str, list[str]] = {}
    blocked_by = {view.id: view.blocked_by for view in views}
    for layer in graph_layers:
        for task_id in layer:
            if status_of[task_id] in ("completed", "failed", "in_progress", "review"):
                continue
            culprits = sorted(
                {dep for dep in blocked_by[task_id] if status_of.get(dep) == "failed"}
                | {c for dep in blocked_by[task_id] for c in doomed.get(dep, [])}
            )
            if culprits:
                doomed[task_id] = culprits

    ready_views = [
        view
        for view in views
        if view.status in ("pending", "not_created")
        and view.id not in doomed
        and all(status_of.get(dep) == "completed" for dep in view.blocked_by)
    ]
    ready = [view.id for view in sorted(ready_views, key=lambda v: (priority_rank(v.priority), v.id))]

    now = datetime.now(UTC)
    active = [
        ActiveWorker(
            task_id=run.task_id,
            role=rows[run.task_id].owner if run.task_id in rows else "",
            pid=run.pid,
            backend=run.backend,
            attempt=run.attempt,
            started_at=run.started_at,
            elapsed_s=round(_elapsed(run.started_at, now), 1),
            node=run.node,
            **_progress_fields(progress.get(run.task_id), run.attempt),
        )
        for run in open_runs
        if run.pid is None or is_alive(run.pid, run.pid_create_time)
    ]
    failed = [
        FailedTask(id=row.id, error_kind=row.last_error_kind, error=row.last_error, attempts=row.attempts)
        for row in rows.values()
        if row.status == "failed"
    ]
    completed = sum(1 for status in status_of.values() if status == "completed")
    total = len(status_of)
    last_clean = meta.get("clean_stop")
    executor = ExecutorState(
        running=holder is not None,
        pid=holder.pid if holder else None,
        command=holder.command if holder else None,
        started_at=holder.started_at if holder else None,
        last_run_id=meta.get("run_id"),
        last_stop_clean=None if last_clean is None else last_clean == "1",
    )

    pick_backend = " --backend demo" if backends and any(entry.backend is None for entry in backends) else ""
    next_note = ""
    if holder is not None:
        next_command, next_note = f"executor check --session {folder}", "a run is in progress"
    elif completed == total:
        next_command, next_note = "", f"every task is complete; the deliverables are in {folder / 'artifacts'}"
    elif reader is None:
        next_command = f"executor run --session {folder}{pick_backend}"
    elif not failed:
        next_command = f"executor resume --session {folder}{pick_backend}"
    else:
        next_command = f"executor resume --session {folder} --retry-failed{pick_backend}"
        next_note = "first fix what made the failed tasks fail (above)"
    if pick_backend:
        next_note = "some role has no backend: demo is the built-in agent (no key); `executor probe` lists real ones"
    if waiting_writes and holder is None and not next_command:
        next_command = f"executor resume --session {folder}{pick_backend}"
        next_note = f"{len(waiting_writes)} queued write(s) wait for a run to apply them"
    recovery = meta.get("recovery_report")
    budget = None
    if spent or "budget_state" in meta:
        budget = Budget(
            spent_usd=round(spent, 6),
            session_limit_usd=float(meta["budget_session_usd"]) if "budget_session_usd" in meta else None,
            task_limit_usd=float(meta["budget_task_usd"]) if "budget_task_usd" in meta else None,
            state=meta.get("budget_state"),
        )
    if budget is not None and budget.state == "exceeded" and holder is None:
        next_command = f"executor resume --session {folder}"
        next_note = "the budget is spent: first raise [budget].session_usd in the config"
    return CheckReport(
        session_id=session.session_id,
        folder=str(folder),
        valid=True,
        status=session.team.status,
        progress=Progress(completed, total, round(100.0 * completed / total, 1) if total else 0.0),
        tasks=views,
        layers=graph_layers,
        active_workers=active,
        ready=ready,
        failed=failed,
        blocked=[BlockedTask(id=t, waiting_on_failed=c) for t, c in doomed.items()],
        executor=executor,
        next_command=next_command,
        problems=[p for p in problems if p.severity == "warning"],
        recovery_report=recovery,
        budget=budget,
        next_note=next_note,
        backends=list(backends or []),
        queued_writes_waiting=waiting_writes,
    )
