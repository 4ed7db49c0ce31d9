"""Startup recovery: make the stored state agree with the session folder and reality.

Runs once per ``run``/``resume``, before anything is dispatched, while this
process holds the session lock (so every worker process of this session that
is still alive belongs to a dead executor).  It:

- creates the tasks task-analysis.json names but the store lacks;
- syncs both ways with ``completed_tasks`` (the file's completions are taken;
  the store's are projected back by the Session actor);
- resets ``in_progress`` tasks (orphans: their executor is gone) to pending;
- kills worker processes left by a crashed run — by pid *and* create time, so
  a reused pid is never touched — and any process carrying this session's
  marker in its environment (grandchildren that outlived their parent);
- detects an unclean previous stop and writes what happened into a report.

It decides; the Session actor applies the plan (it is the only writer).
"""

from __future__ import annotations

import os
from datetime import UTC, datetime

import psutil

from actors.base import TreeActor, handles
from backends.containment import sweep
from backends.process_tree import stop_tree
from pipeline.readiness import Scheduler
from protocol.messages import OpenRun, Reconcile, ReconcilePlan, TaskCancelPlan, TaskResetPlan
from protocol.records import TaskDetails, TaskRow
from session.loader import TeamSession
from session.processes import is_alive
from session.store import utc_now

__all__ = ["MARKER_VARIABLE", "Reconciler", "find_marked_processes", "plan_reconciliation"]

MARKER_VARIABLE = "TEAM_EXECUTOR_MARKER"
DEFAULT_MAX_ATTEMPTS = 3


def find_marked_processes(marker: str) -> list[psutil.Process]:
    """Live processes whose environment carries this session's marker (not us)."""
    found = []
    me = os.getpid()
    for process in psutil.process_iter(["pid"]):
        if process.pid == me:
            continue
        try:
            if process.environ().get(MARKER_VARIABLE) == marker and process.status() != psutil.STATUS_ZOMBIE:
                found.append(process)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess, OSError):
            continue
    return found


def _kill_leftovers(open_runs: tuple[OpenRun, ...], marker: str, grace_s: float) -> tuple[list[int], list[str]]:
    killed: list[int] = []
    notes: list[str] = []
    for run in open_runs:
        if run.pid and is_alive(run.pid, run.create_time):
            pids = stop_tree(run.pid, run.create_time, grace_s=grace_s)
            killed.extend(pids)
            notes.append(f"- {run.task_id} attempt {run.attempt}: pid {run.pid} was still running; stopped {pids}")
        elif run.pid:
            notes.append(f"- {run.task_id} attempt {run.attempt}: pid {run.pid} had already exited")
        else:
            notes.append(f"- {run.task_id} attempt {run.attempt}: no process had been recorded yet")
    for process in find_marked_processes(marker):
        try:
            create_time = process.create_time()
        except psutil.NoSuchProcess:
            continue
        pids = stop_tree(process.pid, create_time, grace_s=grace_s)
        fresh = [pid for pid in pids if pid not in killed]
        if fresh:
            killed.extend(fresh)
            notes.append(f"- pid {process.pid} carried this session's marker (an orphaned descendant): stopped {fresh}")
    contained = [pid for pid in sweep(marker, grace_s) if pid not in killed]
    if contained:  # escaped the group and dropped the marker, but not the attempt's cgroup
        killed.extend(contained)
        notes.append(f"- left in the cgroups of the crashed run's attempts: stopped {contained}")
    return sorted(set(killed)), notes


def _max_attempts(session: TeamSession, role: str) -> int:
    spec = session.role_specs.get(role)
    return (spec.meta.max_attempts if spec else None) or DEFAULT_MAX_ATTEMPTS


def plan_reconciliation(session: TeamSession, message: Reconcile, marker: str, grace_s: float = 5.0) -> ReconcilePlan:
    """Decide the reconciliation and kill leftovers; changes no file."""
    snapshot = message.snapshot
    stored = {row.id: row for row in snapshot.tasks}
    completed_in_file = set(session.team.completed_tasks)
    now = utc_now()

    created = tuple(
        TaskRow(
            id=spec.id,
            owner=spec.owner,
            status="completed" if spec.id in completed_in_file else "pending",
            subject=spec.subject,
            priority=spec.priority,
            blocked_by=list(spec.blocked_by),
            max_attempts=_max_attempts(session, spec.owner),
            created_at=now,
            updated_at=now,
            completed_at=now if spec.id in completed_in_file else None,
            details=TaskDetails(files_affected=list(spec.key_files)),
        )
        for spec in session.tasks
        if spec.id not in stored
    )
    completed_from_session = tuple(
        task_id
        for task_id in session.team.completed_tasks
        if task_id in stored and stored[task_id].status != "completed"
    )
    # A task whose cancellation was asked for while it ran stays cancelled, whoever stopped first.
    cancel_asked = {run.task_id: run for run in snapshot.open_runs if run.cancel_requested_by}
    orphans = [
        row
        for row in stored.values()
        # A task a person claimed (agent set) is theirs, not an orphan of the previous executor.
        if row.status == "in_progress" and row.agent is None and row.id not in completed_from_session
    ]
    cancels = tuple(
        TaskCancelPlan(task_id=row.id, run_row_id=run.run_row_id, by=run.cancel_requested_by or "")
        for row in orphans
        if (run := cancel_asked.get(row.id)) is not None
    )
    resets = tuple(
        TaskResetPlan(
            task_id=row.id,
            previous_status="in_progress",
            reason="it was running when the previous executor stopped",
        )
        for row in orphans
        if row.id not in cancel_asked
    )
    killed, kill_notes = _kill_leftovers(snapshot.open_runs, marker, grace_s)
    unclean = snapshot.meta.get("clean_stop") == "0"

    report = None
    if unclean or resets or cancels or killed:
        report = _report(
            session, snapshot.meta, message, created, completed_from_session, resets, cancels, kill_notes, unclean
        )
    return ReconcilePlan(
        run_id=message.run_id,
        unclean_previous_stop=unclean,
        created=created,
        completed_from_session=completed_from_session,
        resets=resets,
        cancels=cancels,
        closed_runs=tuple(run.run_row_id for run in snapshot.open_runs),
        killed_pids=tuple(killed),
        report_markdown=report,
    )


def _next_up(
    message: Reconcile, created: tuple[TaskRow, ...], completed: tuple[str, ...], resets: tuple[TaskResetPlan, ...]
) -> list[str]:
    reset_ids = {reset.task_id for reset in resets}
    rows = []
    for row in (*message.snapshot.tasks, *created):
        status = "completed" if row.id in completed else "pending" if row.id in reset_ids else row.status
        rows.append(
            TaskRow(id=row.id, owner=row.owner, status=status, priority=row.priority, blocked_by=row.blocked_by)
        )
    scheduler = Scheduler(rows)
    ready = []
    while (task_id := scheduler.pop_ready()) is not None:
        ready.append(task_id)
    return ready


def _report(
    session: TeamSession,
    meta: dict[str, str],
    message: Reconcile,
    created: tuple[TaskRow, ...],
    completed: tuple[str, ...],
    resets: tuple[TaskResetPlan, ...],
    cancels: tuple[TaskCancelPlan, ...],
    kill_notes: list[str],
    unclean: bool,
) -> str:
    stamp = datetime.now(UTC).isoformat(timespec="seconds")
    lines = [f"# Recovery report — {session.session_id}", "", f"Written {stamp} by run {message.run_id}.", ""]
    if unclean:
        lines.append(
            f"The previous run ({meta.get('run_id', 'unknown')}, started {meta.get('run_started_at', 'unknown')}) "
            "did not stop cleanly (killed, crashed, or the machine went down)."
        )
    else:
        lines.append("The previous run stopped cleanly, but left work to tidy up.")
    lines += ["", "## What was running", *(kill_notes or ["- nothing"]), "", "## What was reset"]
    lines += [f"- {reset.task_id}: {reset.previous_status} -> pending ({reset.reason})" for reset in resets] or [
        "- nothing"
    ]
    if cancels:
        lines += ["", "## Cancelled (asked for while they ran; not run again)"]
        lines += [f"- {cancel.task_id}: cancelled by {cancel.by}" for cancel in cancels]
    if completed:
        lines += ["", "## Taken as completed from team-session.json", *(f"- {task_id}" for task_id in completed)]
    if created:
        lines += ["", f"## Created from task-analysis.json ({len(created)})"]
        lines += [f"- {row.id} ({row.owner})" for row in created[:50]]
        if len(created) > 50:
            lines.append(f"- … and {len(created) - 50} more")
    upcoming = _next_up(message, created, completed, resets)
    lines += ["", "## What runs next", *([f"- {task_id}" for task_id in upcoming[:50]] or ["- nothing is ready"])]
    if len(upcoming) > 50:
        lines.append(f"- … and {len(upcoming) - 50} more")
    return "\n".join(lines) + "\n"


class Reconciler(TreeActor):
    """A service actor: answers :class:`Reconcile` with a :class:`ReconcilePlan`."""

    def __init__(
        self, name: str, parent: object, incarnation: int, session: TeamSession, marker: str, grace_s: float
    ) -> None:
        # The supervisor passes its own ref as parent; the constructor signature pykka builds from is untyped.
        super().__init__(name, parent, incarnation)  # type: ignore[arg-type]
        self.session = session
        self.marker = marker
        self.grace_s = grace_s

    @handles(Reconcile)
    def reconcile(self, message: Reconcile) -> ReconcilePlan:
        return plan_reconciliation(self.session, message, self.marker, self.grace_s)
