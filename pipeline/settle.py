"""How an attempt's end moves its task: done, retried, failed, cancelled, sent back by a
review, or revised after a consensus block.

Each branch records the outcome (a :class:`RecordOutcome`, committed with the turn) and
only then says what the user sees; dependants are dispatched by the same turn, so they
start only after the completion is committed.
"""

from __future__ import annotations

import msgspec

from pipeline.clock import Instant, iso
from pipeline.core import Attempt, Pipeline
from pipeline.effects import NotifyUser, RememberFailure
from pipeline.policy import DEFAULT_REVIEW_ROUNDS
from pipeline.requests import ask_user
from protocol.bridge import CAPABILITY_DECISION, CONSENSUS_DECISION, DECISION_OPTIONS, EscalateDecision
from protocol.events import CapabilityGap, ConsensusBlocked, RevisionCreated, TaskCancelled, WorkerCrashed
from protocol.messages import AttemptResult, CreateTasks, Disposition, RecordOutcome
from protocol.records import TaskRow
from session.graph import id_prefix

__all__ = ["attempt_finished", "worker_died"]


def attempt_finished(
    core: Pipeline, worker_id: str, task_id: str, result: AttemptResult, now: Instant, number: int | None = None
) -> None:
    """A worker reported its attempt's result; the worker then takes its next task or stops.
    A result whose attempt ``number`` is not the current one is refused (see ``attempt_of``)."""
    attempt = core.attempt_of(worker_id, task_id, number)
    if attempt is None:
        return
    del core.attempts[worker_id]
    settle(core, attempt, result, now)
    core.next_for(attempt, now)
    core.dispatch(now)


def worker_died(core: Pipeline, worker_id: str, error: str | None, now: Instant) -> bool:
    """A worker died in the middle of an attempt: that attempt failed (and is retried like any
    other failure).  Returns whether ``worker_id`` was running an attempt."""
    attempt = core.attempts.pop(worker_id, None)
    if attempt is None:
        return False
    core.events(WorkerCrashed(worker_id=worker_id, task_id=attempt.task_id, error=error or "died"))
    crash = AttemptResult(ok=False, error_kind="worker_crashed", error=error or "the worker died")
    settle(core, attempt, crash, now)
    return True


def _outcome(
    core: Pipeline, attempt: Attempt, result: AttemptResult, disposition: Disposition, **extra: object
) -> None:
    core.record(
        RecordOutcome(
            run_row_id=attempt.run_row_id,
            task_id=attempt.task_id,
            attempt=attempt.attempt,
            role=attempt.role,
            result=result,
            disposition=disposition,
            # extra holds only RecordOutcome's optional fields, named by the callers in this module.
            **extra,  # type: ignore[arg-type]
        )
    )


def settle(core: Pipeline, attempt: Attempt, result: AttemptResult, now: Instant) -> None:
    """Record how the attempt ended and move the task accordingly."""
    task_id, number = attempt.task_id, attempt.attempt
    running = len(core.attempts)
    spent_out = core.ledger.charge(task_id, result.cost_usd, running, core.out)
    if spent_out and not result.ok and result.error_kind != "interrupted":
        spent = core.ledger.spent_by_task.get(task_id, 0.0)
        result = msgspec.structs.replace(
            result,
            error_kind="over_budget",
            error=f"the task's budget of ${core.config.task_budget_usd:.2f} is spent (${spent:.2f}); "
            f"last attempt: {result.error_kind}: {result.error}",
        )
    if core.ledger.stopped and core.stopping_since is None:
        core.stopping_since = now.mono
    if not result.ok and attempt.stalled and result.error_kind == "interrupted":
        idle = now.mono - attempt.last_activity
        result = msgspec.structs.replace(
            result, error_kind="hang", error=f"stalled: no progress and no output for {idle:.0f}s; stopped"
        )
    if not result.ok and attempt.cancelled_by is not None:
        core.table.fail(task_id)
        core.update(task_id, status="failed", last_error_kind="cancelled")
        why = f"cancelled by {attempt.cancelled_by} while it ran"
        _outcome(core, attempt, msgspec.structs.replace(result, error_kind="cancelled", error=why), "failed")
        core.events(TaskCancelled(task_id=task_id, reason="cancelled while running", by=attempt.cancelled_by))
        core.say(f"✗ {task_id} cancelled by {attempt.cancelled_by}")
        return
    if not result.ok and result.error_kind == "interrupted":
        core.table.reset(task_id)
        core.update(task_id, status="pending", attempts=max(0, number - 1))
        _outcome(core, attempt, result, "interrupted")
        return
    if result.ok and result.outcome == "changes_requested" and _changes_requested(core, attempt, result, now):
        return
    high_block = result.ok and result.outcome == "consensus_blocked" and (result.severity or "").upper() == "HIGH"
    if high_block and _consensus_blocked_high(core, attempt, result, now):
        return
    if result.ok:
        _completed(core, attempt, result, now)
        return
    core.out.append(
        RememberFailure(
            task_id=task_id, attempt=number, kind=result.error_kind, error=result.error, tail=result.output_tail
        )
    )
    config = core.config
    # A rolled-back task's budget counts from the attempts it had made before (its numbers go on).
    tried = number - core.rows[task_id].attempts_before
    delay = config.retry.delay(tried, result.error_kind, config.max_attempts_of(attempt.role), config.random)
    if delay is not None:
        core.table.retry_at(task_id, now.mono + delay)
        core.update(task_id, status="pending")
        _outcome(core, attempt, result, "retry", retry_in_s=round(delay, 2))
        core.say(f"↻ {task_id} attempt {number} failed ({result.error_kind}: {result.error}); retrying in {delay:.1f}s")
        return
    core.table.fail(task_id)
    core.update(task_id, status="failed")
    _outcome(core, attempt, result, "failed")
    blocked = core.table.blocked()
    core.say(
        f"✗ {task_id} failed after {number} attempt(s) ({result.error_kind}: {result.error})"
        + (f"; blocked: {', '.join(blocked[:10])}" if blocked else "")
    )
    core.notify(
        NotifyUser(
            kind="task_failed",
            title=f"{task_id} ({attempt.role}) failed after {number} attempt(s)",
            body=f"{result.error_kind}: {(result.error or '')[:1000]}"
            + (f"\nBlocked by it: {', '.join(blocked[:20])}" if blocked else ""),
            action=f"{config.command('check')}, fix, then {config.command('resume')}",
        )
    )


def _completed(core: Pipeline, attempt: Attempt, result: AttemptResult, now: Instant) -> None:
    task_id = attempt.task_id
    unblocked = core.table.complete(task_id)
    core.update(task_id, status="completed")
    if result.outcome == "consensus_blocked":
        core.events(
            ConsensusBlocked(task_id=task_id, severity=result.severity or "", detail=result.detail, action="logged"),
            wisdom_issue=f"{task_id} consensus_blocked ({result.severity}): {result.detail}",
        )
    report = final_report(attempt.role, task_id, result, unblocked, core.table.finished())
    _outcome(core, attempt, result, "completed", unblocked=tuple(unblocked), report_text=report)
    core.say(
        f"✓ {task_id} ({attempt.role}) done in {now.mono - attempt.started:.1f}s"
        + (f" → {', '.join(result.artifacts)}" if result.artifacts else "")
    )
    if result.outcome == "capability_gap":
        core.events(CapabilityGap(task_id=task_id, detail=result.detail))
        core.say(
            f"! {task_id}: capability gap — {result.detail}. The executor never invents roles: continue, "
            "re-run the coordinator, or add a role-spec by hand."
        )
        ask_user(
            core,
            EscalateDecision(
                issue=f"{task_id} reports a capability gap: {result.detail}. The executor never invents "
                "roles: continue as is, or stop the run to re-run the coordinator or add a role-spec.",
                options=DECISION_OPTIONS[CAPABILITY_DECISION],
                task_id=task_id,
                opened_by=CAPABILITY_DECISION,
                hold=False,
            ),
            now,
        )


def reviewed_task(rows: dict[str, TaskRow], review: TaskRow, named: str | None) -> str | None:
    """The work a review judges: the blocker it names, else its last blocker of another role."""
    blockers = [task_id for task_id in review.blocked_by if task_id in rows]
    if named is not None and named in blockers:
        return named
    others = [task_id for task_id in blockers if rows[task_id].owner != review.owner]
    return others[-1] if others else None


def _changes_requested(core: Pipeline, attempt: Attempt, result: AttemptResult, now: Instant) -> bool:
    """A reviewer's changes_requested sends the work back with the feedback, and the review
    runs again after it; past the role's ``review_rounds`` (default 3) the user decides.

    Returns True when it handled the outcome fully (False: the review simply completes)."""
    review_id = attempt.task_id
    target = reviewed_task(core.rows, core.rows[review_id], result.reviewed_task)
    if target is None:
        core.say(f"! {review_id} requested changes but reviews no task of another role; taken as done")
        return False
    limit = core.config.role(attempt.role).review_rounds or DEFAULT_REVIEW_ROUNDS
    round_number = core.review_rounds.get(target, 0) + 1
    items = "; ".join(result.feedback) or result.summary
    if round_number > limit:
        core.table.fail(review_id)
        # The kind is what the decision's answer looks for (pipeline.requests.apply_decision).
        core.update(review_id, status="failed", last_error_kind="needs_decision")
        decision = AttemptResult(
            ok=False,
            error_kind="needs_decision",
            error=f"changes still requested on {target} after {limit} review round(s): {items}"[:2000],
        )
        _outcome(core, attempt, decision, "failed")
        core.say(f"? {review_id}: still not accepted after {limit} round(s) on {target} — your decision")
        ask_user(
            core,
            EscalateDecision(
                issue=f"{review_id} still requests changes on {target} after {limit} review round(s): "
                f"{items[:1500]}. retry: one more review; accept: take the work as it is so what depends "
                "on the review goes on; leave failed: its dependants stay blocked.",
                options=DECISION_OPTIONS[CONSENSUS_DECISION],
                task_id=review_id,
                opened_by=CONSENSUS_DECISION,
                hold=False,
            ),
            now,
        )
        return True
    core.review_rounds[target] = round_number
    core.table.send_back(target, review_id)
    core.update(target, status="pending", completed_at=None)
    core.update(review_id, status="pending")
    # The Session writes the feedback file in this turn's commit, before the reopened
    # task can start (its prompt is built from that file).
    _outcome(core, attempt, result, "changes_requested", sent_back=target, review_round=round_number)
    core.say(
        f"↺ {review_id} requested changes on {target} (round {round_number} of {limit}): "
        f"{target} goes again with the feedback in feedback/{target}.md"
    )
    return True


def _consensus_blocked_high(core: Pipeline, attempt: Attempt, result: AttemptResult, now: Instant) -> bool:
    """One revision task for the same role; a second HIGH block waits for the user.

    Returns True when it handled the outcome fully.
    """
    task_id = attempt.task_id
    row = core.rows[task_id]
    already_revised = row.source == "revision" or any(other.revises == task_id for other in core.rows.values())
    if already_revised:
        core.table.fail(task_id)
        core.update(task_id, status="failed", last_error_kind="needs_decision")
        decision = AttemptResult(
            ok=False,
            error_kind="needs_decision",
            error=f"consensus blocked (HIGH) again after a revision: {result.detail}",
        )
        _outcome(core, attempt, decision, "failed")
        core.events(ConsensusBlocked(task_id=task_id, severity="HIGH", detail=result.detail, action="paused"))
        core.say(
            f"? {task_id}: consensus blocked (HIGH) twice — this needs your decision: {result.detail}. "
            "Only the tasks that depend on it wait."
        )
        ask_user(
            core,
            EscalateDecision(
                issue=f"{task_id} is blocked by a disagreement (HIGH) again after a revision: {result.detail}. "
                "retry: run it again; accept: take it as done so what depends on it goes on; "
                "leave failed: its dependants stay blocked.",
                options=DECISION_OPTIONS[CONSENSUS_DECISION],
                task_id=task_id,
                opened_by=CONSENSUS_DECISION,
                hold=False,
            ),
            now,
        )
        return True
    prefix = id_prefix(task_id)
    numbers = [
        int(other[len(prefix) + 1 :])
        for other in core.rows
        if id_prefix(other) == prefix and other[len(prefix) + 1 :].isdigit()
    ]
    revision_id = f"{prefix}-{max(numbers, default=0) + 1:03d}"
    stamp = iso(now.wall)
    revision = TaskRow(
        id=revision_id,
        owner=row.owner,
        status="pending",
        subject=f"Revise {task_id}",
        priority=row.priority,
        blocked_by=[task_id],
        max_attempts=row.max_attempts,
        source="revision",
        revises=task_id,
        created_at=stamp,
        updated_at=stamp,
    )
    rewire = tuple((dependant, (revision_id,)) for dependant in core.table.dependants(task_id))
    core.record(CreateTasks(tasks=(revision,), rewire=rewire))
    core.add_task(revision, f"Revise {task_id}: resolve the blocking disagreement — {result.detail}", rewire)
    core.events(
        RevisionCreated(task_id=revision_id, revises=task_id, reason=result.detail),
        ConsensusBlocked(task_id=task_id, severity="HIGH", detail=result.detail, action="revision"),
    )
    core.say(f"! {task_id}: consensus blocked (HIGH) — created revision task {revision_id}")
    return False  # the blocked attempt itself completes; its dependants now also wait for the revision


def final_report(role: str, task_id: str, result: AttemptResult, unblocked: list[str], finished: bool) -> str:
    """The worker's final report in the upstream format: ``[role]`` first, a status line last."""
    first = result.summary.strip().split("\n", 1)[0] if result.summary else f"{task_id} complete"
    if not first.startswith("["):
        first = f"[{role}] {first}"
    if unblocked:
        status = f"Tasks unblocked: {', '.join(unblocked)}. Ready for next stage."
    elif finished:
        status = "All my tasks done. Pipeline may be complete."
    else:
        status = "All my tasks done. Other tasks still running."
    return f"{first}\n{status}"
