"""Attempt numbers as fencing tokens, and a lost node as a worker death: the pipeline core,
in process (the real cluster is tests/test_cluster.py)."""

from __future__ import annotations

from pipeline import settle
from pipeline.effects import Effect, Record, StartAttempt
from protocol.events import ReportRefused
from protocol.messages import RecordEvents
from tests.test_pipeline import OK, crash, make, outcomes, row


def refused(effects: list[Effect]) -> list[ReportRefused]:
    return [
        event
        for effect in effects
        if isinstance(effect, Record) and isinstance(effect.message, RecordEvents)
        for event in effect.message.events
        if isinstance(event, ReportRefused)
    ]


def restarted(effects: list[Effect], run) -> StartAttempt:
    """The next attempt of A: started by the same turn (no backoff) or by the next tick."""
    run.core.tick(run.clock.advance(0.01))
    starts = [e for e in [*effects, *run.take()] if isinstance(e, StartAttempt) and e.task_id == "A"]
    assert len(starts) == 1
    return starts[0]


def test_a_lost_node_is_retried_at_once_within_the_attempt_budget() -> None:
    run = make([row("A")], max_attempts=2)
    run.take()
    effects = run.finish("A", crash("node_lost"))
    (outcome,) = outcomes(effects)
    assert (outcome.disposition, outcome.retry_in_s) == ("retry", 0.0)
    assert restarted(effects, run).attempt == 2
    (last,) = outcomes(run.finish("A", crash("node_lost")))
    assert last.disposition == "failed", "the budget still bounds it: node_lost is never 'completed'"


def test_a_late_report_of_a_replaced_attempt_is_refused_and_logged_never_applied() -> None:
    run = make([row("A")], max_attempts=3)
    (first,) = run.started().values()
    worker = first.worker_id
    second = restarted(run.finish("A", crash("node_lost")), run)
    assert second.attempt == 2
    now = run.clock.now()
    # The lost attempt's result arrives after all (its node came back): fenced off by its number.
    settle.attempt_finished(run.core, second.worker_id, "A", OK, now, number=1)
    # Progress is fenced the same way (the Executor asks attempt_of with the report's number).
    assert run.core.attempt_of(second.worker_id, "A", 1, "progress") is None
    effects = run.take()
    assert [(e.attempt, e.current_attempt, e.report) for e in refused(effects)] == [
        (1, 2, "finished"),
        (1, 2, "progress"),
    ]
    assert outcomes(effects) == [], "nothing was settled by the stale report"
    assert "A" in {attempt.task_id for attempt in run.core.attempts.values()}
    (done,) = outcomes(run.finish("A"))
    assert (done.attempt, done.disposition) == (2, "completed")
    assert worker  # the first attempt's worker id existed
