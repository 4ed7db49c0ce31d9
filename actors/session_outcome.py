"""The Session actor's two largest writes: the end of an attempt (its run row, its task,
its event, then the projection, the feedback file and the message bus, written after the
commit) and the start-up reconciliation."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from protocol.events import (
    ChangesRequested,
    SessionReconciled,
    TaskCancelled,
    TaskCompleted,
    TaskCreated,
    TaskFailed,
    TaskReset,
)
from protocol.messages import ReconcileApplied, ReconcilePlan, RecordOutcome
from session.feedback import append_round
from session.message_bus import error_message, task_complete_message, task_unblocked_message
from session.projection import write_atomic
from session.store import STATE_DIR, utc_now
from session.store_changes import RunChange, TaskChange

if TYPE_CHECKING:
    from actors.session import SessionActor

__all__ = ["write_outcome", "write_reconciliation"]


def write_outcome(actor: SessionActor, message: RecordOutcome) -> None:
    result = message.result
    now = utc_now()
    run_changes: dict[str, Any] = {
        "ended_at": now,
        "exit_code": result.exit_code,
        "outcome": message.disposition if message.disposition != "retry" else "failed",
        "error_kind": result.error_kind,
        "error": result.error,
        "tokens_in": result.tokens_in,
        "tokens_out": result.tokens_out,
        "tokens_cached": result.tokens_cached,
        "cost_usd": result.cost_usd,
        "model": result.model,
        "key_id": result.key_id,
        "agent_session_id": result.agent_session_id,
        "git_head_before": result.git_head_before,
        "git_head_after": result.git_head_after,
        "files_changed": list(result.files_modified) or None,
        "progress_lines": result.progress_lines,
    }
    with actor.store.transaction():
        actor.store.update_run(message.run_row_id, RunChange(**{k: v for k, v in run_changes.items() if v is not None}))
        if message.disposition == "completed":
            actor._update(
                message.task_id, TaskChange(status="completed", completed_at=now, last_error=None, last_error_kind=None)
            )
            actor._append(
                TaskCompleted(
                    task_id=message.task_id,
                    attempt=message.attempt,
                    artifacts=result.artifacts,
                    summary=result.summary[:500],
                )
            )
        elif message.disposition == "changes_requested" and message.sent_back is not None:
            # The review runs again after the work it sent back; neither is done for now.
            actor._update(message.task_id, TaskChange(status="pending", last_error=None, last_error_kind=None))
            actor._update(message.sent_back, TaskChange(status="pending", completed_at=None))
            actor._append(
                ChangesRequested(
                    task_id=message.sent_back,
                    review_task=message.task_id,
                    round=message.review_round,
                    feedback=result.feedback,
                )
            )
        elif message.disposition == "interrupted":
            row = actor.store.task(message.task_id)
            attempts = row.attempts if row is not None else 1
            actor._update(message.task_id, TaskChange(status="pending", attempts=max(0, attempts - 1)))
            actor._append(
                TaskReset(
                    task_id=message.task_id,
                    previous_status="in_progress",
                    reason="interrupted by the executor's shutdown",
                )
            )
        else:
            final = message.disposition == "failed"
            not_before = None
            if message.retry_in_s is not None:
                not_before = time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(time.time() + message.retry_in_s))
            actor._update(
                message.task_id,
                TaskChange(
                    status="failed" if final else "pending",
                    not_before=not_before,
                    last_error=(result.error or "")[:2000],
                    last_error_kind=result.error_kind,
                ),
            )
            actor._append(
                TaskFailed(
                    task_id=message.task_id,
                    attempt=message.attempt,
                    error_kind=result.error_kind or "crash",
                    error=(result.error or "")[:2000],
                    final=final,
                    retry_in_s=message.retry_in_s,
                )
            )
    actor.projection.worker_stopped(message.task_id)
    if message.sent_back is not None:
        # The ChangesRequested event holds the items too, should this write be lost to a crash.
        append_round(actor.folder, message.sent_back, message.review_round, message.task_id, now, result.feedback)
        actor.projection.task_reopened(message.sent_back)
    if message.disposition == "completed":
        actor.projection.task_completed(message.task_id)
        artifact = result.artifacts[0] if result.artifacts else None
        actor._post(
            message.role,
            message.report_text or result.summary or f"{message.task_id} complete",
            type="task_complete",
            data=task_complete_message(message.task_id, message.role, artifact, result.files_modified).data,
        )
        if message.unblocked:
            actor._post_message(message.role, task_unblocked_message(message.unblocked, message.task_id))
    elif message.disposition in ("failed", "retry"):
        actor._post_message(
            message.role,
            error_message(
                f"{message.task_id} attempt {message.attempt} failed ({result.error_kind}): {result.error}",
                task_id=message.task_id,
                error_kind=result.error_kind,
            ),
        )


def write_reconciliation(actor: SessionActor, plan: ReconcilePlan) -> ReconcileApplied:
    report_path: str | None = None
    if plan.report_markdown:
        stamp = utc_now().replace(":", "").replace("-", "").split(".")[0]
        path = actor.folder / STATE_DIR / "recovery" / f"{stamp}-{plan.run_id}.md"
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, plan.report_markdown.encode())
        report_path = str(path)
    now = utc_now()
    with actor.store.transaction():
        if plan.created:
            actor.store.put_tasks(list(plan.created))
            # A run's start creates every task of a new session: a few statements, not one per task.
            actor._append_all(
                *(
                    TaskCreated(
                        task_id=row.id, owner=row.owner, priority=row.priority, blocked_by=tuple(row.blocked_by)
                    )
                    for row in plan.created
                )
            )
        for task_id in plan.completed_from_session:
            actor._update(task_id, TaskChange(status="completed", completed_at=now))
        for reset in plan.resets:
            current = actor.store.task(reset.task_id)
            attempts = current.attempts if current is not None else 1
            # The interrupted attempt was not the task's fault: it does not count.
            actor._update(reset.task_id, TaskChange(status="pending", attempts=max(0, attempts - 1)))
            actor._append(TaskReset(task_id=reset.task_id, previous_status=reset.previous_status, reason=reset.reason))
        cancelled_runs = {cancel.run_row_id: cancel for cancel in plan.cancels}
        for cancel in plan.cancels:
            why = f"cancelled by {cancel.by} while it ran (the executor stopped before the attempt ended)"
            actor._update(
                cancel.task_id,
                TaskChange(status="failed", not_before=None, last_error=why, last_error_kind="cancelled"),
            )
            actor._append(TaskCancelled(task_id=cancel.task_id, reason="cancelled while running", by=cancel.by))
        for run_row_id in plan.closed_runs:
            if run_row_id in cancelled_runs:
                change = RunChange(
                    ended_at=now,
                    outcome="failed",
                    error_kind="cancelled",
                    error=f"cancelled by {cancelled_runs[run_row_id].by}; the executor stopped before it ended",
                )
            else:
                change = RunChange(
                    ended_at=now, outcome="interrupted", error="the executor stopped while this attempt ran"
                )
            actor.store.update_run(run_row_id, change)
        if report_path:
            actor.store.set_meta(recovery_report=report_path)
        actor._append(
            SessionReconciled(
                run_id=plan.run_id,
                unclean_previous_stop=plan.unclean_previous_stop,
                reset_tasks=tuple(r.task_id for r in plan.resets),
                cancelled_tasks=tuple(c.task_id for c in plan.cancels),
                created_tasks=tuple(r.id for r in plan.created),
                completed_from_session=plan.completed_from_session,
                killed_pids=plan.killed_pids,
                report_path=report_path,
            )
        )
    for row in plan.created:
        actor.projection.add_task(row.id)
    for row in actor.store.tasks():
        if row.status == "completed":
            actor.projection.task_completed(row.id)
        else:
            actor.projection.task_reopened(row.id)
    actor.projection.flush(force=True)
    return ReconcileApplied(report_path=report_path)
