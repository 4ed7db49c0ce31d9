"""The pipeline core's decisions, in process, with a manual clock: no threads, no I/O.

Each test feeds the core inputs (attempts finished, answers, ticks) and reads the effects
it returns, the way the Executor actor does.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import msgspec
import pytest

from pipeline import requests, settle
from pipeline.clock import Instant
from pipeline.core import Pipeline
from pipeline.effects import (
    AnswerByDefault,
    CancelAttempt,
    Effect,
    Finish,
    NotifyUser,
    OpenQuestion,
    Record,
    RememberFailure,
    RetireWorker,
    Say,
    StartAttempt,
)
from pipeline.policy import PipelineConfig, RetryPolicy, RolePolicy
from protocol.bridge import CancelTask, EscalateDecision, Reopened, ReopenFailed, SubmitTask
from protocol.events import BudgetExceeded, TaskStalled
from protocol.messages import AttemptResult, CreateTasks, RecordDispatch, RecordOutcome
from protocol.records import EscalationRow, TaskDetails, TaskRow
from session.key_requests import answered_ids, give_up_reason, key_question, open_request

OK = AttemptResult(ok=True, summary="done")


def crash(kind: str = "crash") -> AttemptResult:
    return AttemptResult(ok=False, error_kind=kind, error=f"{kind} on purpose")


def row(task_id: str, *blocked_by: str, owner: str = "worker", **extra: object) -> TaskRow:
    return TaskRow(id=task_id, owner=owner, blocked_by=list(blocked_by), **extra)  # type: ignore[arg-type]


@dataclass
class Clock:
    mono: float = 1000.0
    wall: float = 1_800_000_000.0

    def now(self) -> Instant:
        return Instant(mono=self.mono, wall=self.wall)

    def advance(self, seconds: float) -> Instant:
        self.mono += seconds
        self.wall += seconds
        return self.now()


@dataclass
class Run:
    """A core and the effects it has produced so far, read like the Executor reads them."""

    core: Pipeline
    clock: Clock = field(default_factory=Clock)
    log: list[Effect] = field(default_factory=list)

    def take(self) -> list[Effect]:
        effects = self.core.drain()
        self.log += effects
        return effects

    def started(self) -> dict[str, StartAttempt]:
        """Attempts started by the effects not yet taken, by task id."""
        return {e.task_id: e for e in self.take() if isinstance(e, StartAttempt)}

    def finish(self, task_id: str, result: AttemptResult = OK) -> list[Effect]:
        attempt = next(a for a in self.core.attempts.values() if a.task_id == task_id)
        settle.attempt_finished(self.core, attempt.worker_id, task_id, result, self.clock.now())
        return self.take()

    def lines(self, effects: list[Effect]) -> list[str]:
        return [e.line for e in effects if isinstance(e, Say)]


def make(
    rows: list[TaskRow], roles: dict[str, RolePolicy] | None = None, clock: Clock | None = None, **options: object
) -> Run:
    clock = clock or Clock()
    config = PipelineConfig(
        run_id="run-1",
        folder="/s",
        state_dir="/s/.executor",
        roles=roles or {"worker": RolePolicy(backend="command")},
        secret=b"k" * 32,
        retry=RetryPolicy(min_s=2.0, max_s=60.0, jitter=0.0),
        **options,  # type: ignore[arg-type]
    )
    core = Pipeline(config, rows, clock.now())
    core.start([r.id for r in rows], clock.now())
    return Run(core, clock)


def outcomes(effects: list[Effect]) -> list[RecordOutcome]:
    return [e.message for e in effects if isinstance(e, Record) and isinstance(e.message, RecordOutcome)]


# --- readiness and order -------------------------------------------------------------------


def test_ready_tasks_start_p0_first_up_to_max_workers_and_dependants_after_completion() -> None:
    run = make([row("A", priority="P2"), row("B", priority="P0"), row("C"), row("D", "B")], max_workers=2)
    assert list(run.started()) == ["B", "C"]
    effects = run.finish("B")
    starts = [e for e in effects if isinstance(e, StartAttempt)]
    assert [s.task_id for s in starts] == ["D"], "the freed worker takes the unblocked P1 before the P2"
    assert not starts[0].new_worker, "on the worker that just finished"


def test_the_dispatch_record_comes_before_the_start_and_the_completion_before_its_line() -> None:
    run = make([row("A"), row("B", "A")])
    first = run.take()
    kinds = [type(e.message).__name__ if isinstance(e, Record) else type(e).__name__ for e in first]
    assert kinds.index("RecordDispatch") < kinds.index("StartAttempt")
    effects = run.finish("A")
    names = [type(e.message).__name__ if isinstance(e, Record) else type(e).__name__ for e in effects]
    assert names.index("RecordOutcome") < names.index("Say")
    assert names.index("RecordOutcome") < names.index("RecordDispatch") < names.index("StartAttempt")


def test_the_run_finishes_with_a_summary_once_nothing_can_move() -> None:
    run = make([row("A"), row("B", "A")], max_attempts=1)
    run.take()
    effects = run.finish("A", crash())
    (finish,) = [e for e in effects if isinstance(e, Finish)]
    assert finish.summary.failed == ("A",)
    assert finish.summary.blocked == ("B",)
    assert not finish.record


# --- retries --------------------------------------------------------------------------------


def test_a_failed_attempt_is_retried_after_its_backoff_and_the_prompt_hears_why() -> None:
    run = make([row("A")])
    run.take()
    effects = run.finish("A", crash())
    (failure,) = [e for e in effects if isinstance(e, RememberFailure)]
    assert (failure.attempt, failure.kind) == (1, "crash")
    (outcome,) = outcomes(effects)
    assert (outcome.disposition, outcome.retry_in_s) == ("retry", 2.0)
    assert isinstance(effects[-1], RetireWorker)
    run.core.tick(run.clock.advance(1.9))
    assert run.started() == {}
    run.core.tick(run.clock.advance(0.2))
    assert run.started()["A"].attempt == 2
    effects = run.finish("A", crash())
    assert outcomes(effects)[0].retry_in_s == 4.0, "the backoff doubles"


@pytest.mark.parametrize("kind", ["over_budget"])
def test_kinds_that_cannot_be_helped_by_another_attempt_fail_at_once(kind: str) -> None:
    run = make([row("A")])
    run.take()
    effects = run.finish("A", crash(kind))
    assert outcomes(effects)[0].disposition == "failed"
    assert any(isinstance(e, NotifyUser) and e.kind == "task_failed" for e in effects)


def test_a_role_max_attempts_bounds_the_retries() -> None:
    run = make([row("A")], roles={"worker": RolePolicy(max_attempts=1)})
    run.take()
    effects = run.finish("A", crash())
    assert outcomes(effects)[0].disposition == "failed"
    assert "✗ A failed after 1 attempt(s)" in run.lines(effects)[0]


def test_a_rolled_back_task_gets_a_fresh_budget_counted_from_its_earlier_attempts() -> None:
    # `executor rollback` reopened A after 4 attempts: the next is attempt 5, and it may fail
    # max_attempts - 1 times before the task fails for good.
    run = make([row("A", attempts=4, attempts_before=4)])
    assert run.started()["A"].attempt == 5
    effects = run.finish("A", crash())
    assert (outcomes(effects)[0].disposition, outcomes(effects)[0].retry_in_s) == ("retry", 2.0)
    run.core.tick(run.clock.advance(2.0))
    assert run.started()["A"].attempt == 6
    run.finish("A", crash())
    run.core.tick(run.clock.advance(4.0))
    assert run.started()["A"].attempt == 7
    effects = run.finish("A", crash())
    assert outcomes(effects)[0].disposition == "failed"
    assert "✗ A failed after 7 attempt(s)" in run.lines(effects)[0]


def test_reopened_failed_tasks_get_a_fresh_budget_and_their_attempt_numbers_go_on() -> None:
    run = make([row("A")], roles={"worker": RolePolicy(max_attempts=1)}, keep_alive=True)
    run.take()
    assert outcomes(run.finish("A", crash()))[0].disposition == "failed"
    reopened = requests.reopen_failed(run.core, ReopenFailed(by="test"), run.clock.now())
    assert isinstance(reopened, Reopened)
    assert reopened.task_ids == ("A",)
    assert run.started()["A"].attempt == 2, "attempt 1's log and record are never reused"
    effects = run.finish("A", crash())
    assert "✗ A failed after 2 attempt(s)" in run.lines(effects)[0]


def test_an_interrupted_attempt_does_not_count() -> None:
    run = make([row("A")])
    run.take()
    effects = run.finish("A", crash("interrupted"))
    assert outcomes(effects)[0].disposition == "interrupted"
    (again,) = [e for e in effects if isinstance(e, StartAttempt)]
    assert again.attempt == 1, "ready again at once, as the same attempt"


def test_a_dead_worker_fails_its_attempt_as_a_crash_and_it_is_retried() -> None:
    run = make([row("A")])
    (start,) = run.started().values()
    assert settle.worker_died(run.core, start.worker_id, "boom", run.clock.now())
    effects = run.take()
    assert outcomes(effects)[0].result.error_kind == "worker_crashed"
    assert outcomes(effects)[0].disposition == "retry"


# --- reviews and consensus -------------------------------------------------------------------


def review_run(rounds: int | None = None) -> Run:
    roles = {"coder": RolePolicy(), "reviewer": RolePolicy(review_rounds=rounds)}
    rows = [row("IMPL-001", owner="coder"), row("REV-001", "IMPL-001", owner="reviewer")]
    run = make(rows, roles=roles, keep_alive=True)  # served: the run waits for the answer
    run.take()
    run.finish("IMPL-001")
    return run


CHANGES = AttemptResult(ok=True, outcome="changes_requested", feedback=("fix the tests",))


def test_changes_requested_sends_the_work_back_then_the_review_runs_again() -> None:
    run = review_run()
    effects = run.finish("REV-001", CHANGES)
    (outcome,) = outcomes(effects)
    assert (outcome.disposition, outcome.sent_back, outcome.review_round) == ("changes_requested", "IMPL-001", 1)
    assert [e.task_id for e in effects if isinstance(e, StartAttempt)] == ["IMPL-001"]
    assert run.core.rows["REV-001"].status == "pending"
    effects = run.finish("IMPL-001")
    assert [e.task_id for e in effects if isinstance(e, StartAttempt)] == ["REV-001"]


def test_past_its_review_rounds_the_user_decides_and_retry_runs_the_review_again() -> None:
    run = review_run(rounds=1)
    run.finish("REV-001", CHANGES)
    run.finish("IMPL-001")
    effects = run.finish("REV-001", CHANGES)
    assert outcomes(effects)[0].result.error_kind == "needs_decision"
    (question,) = [e for e in effects if isinstance(e, OpenQuestion)]
    assert question.question.task_id == "REV-001"
    answer = EscalationRow(
        id="ESC-1", issue="", task_id="REV-001", opened_by="executor:consensus", created_at="", choice="retry"
    )
    requests.answered(run.core, answer, run.clock.now())
    assert "REV-001" in run.started()


def test_a_high_consensus_block_creates_one_revision_then_asks_the_user() -> None:
    blocked = AttemptResult(ok=True, outcome="consensus_blocked", severity="HIGH", detail="disagree")
    run = make([row("ARCH-001"), row("IMPL-001", "ARCH-001")], max_workers=1)
    run.take()
    effects = run.finish("ARCH-001", blocked)
    (created,) = [e.message for e in effects if isinstance(e, Record) and isinstance(e.message, CreateTasks)]
    assert created.tasks[0].id == "ARCH-002"
    assert created.rewire == (("IMPL-001", ("ARCH-002",)),)
    assert [e.task_id for e in effects if isinstance(e, StartAttempt)] == ["ARCH-002"]
    effects = run.finish("ARCH-002", blocked)
    assert outcomes(effects)[0].result.error_kind == "needs_decision"
    assert any(isinstance(e, OpenQuestion) for e in effects)


# --- budgets and stalls ------------------------------------------------------------------------


def test_a_task_over_its_budget_gets_no_more_attempts() -> None:
    run = make([row("A")], task_budget_usd=1.0)
    run.take()
    effects = run.finish("A", AttemptResult(ok=False, error_kind="crash", error="x", cost_usd=1.5))
    assert outcomes(effects)[0].result.error_kind == "over_budget"
    assert outcomes(effects)[0].disposition == "failed"


def test_the_session_budget_stops_new_tasks_and_ends_the_run_as_budget_stopped() -> None:
    run = make([row("A"), row("B", "A")], session_budget_usd=1.0)
    run.take()
    effects = run.finish("A", AttemptResult(ok=True, cost_usd=2.0))
    events = [e.message.events[0] for e in effects if isinstance(e, Record) and getattr(e.message, "events", ())]
    assert any(isinstance(event, BudgetExceeded) and event.scope == "session" for event in events)
    assert not any(isinstance(e, StartAttempt) for e in effects)
    (finish,) = [e for e in effects if isinstance(e, Finish)]
    assert finish.summary.budget_stopped
    assert finish.record


def test_a_silent_attempt_is_reported_then_stopped_and_retried_as_a_hang() -> None:
    run = make([row("A")], roles={"worker": RolePolicy(stall_after_s=10, stall_stop_after_s=30)})
    run.take()
    run.core.tick(run.clock.advance(11))
    effects = run.take()
    stalls = [e.message.events[0] for e in effects if isinstance(e, Record) and getattr(e.message, "events", ())]
    assert [s.action for s in stalls if isinstance(s, TaskStalled)] == ["reported"]
    run.core.tick(run.clock.advance(20))
    effects = run.take()
    assert any(isinstance(e, CancelAttempt) for e in effects)
    effects = run.finish("A", crash("interrupted"))
    assert outcomes(effects)[0].result.error_kind == "hang"
    assert outcomes(effects)[0].disposition == "retry"


def test_output_in_the_log_counts_as_life() -> None:
    run = make([row("A")], roles={"worker": RolePolicy(stall_after_s=10, stall_stop_after_s=30)})
    (start,) = run.started().values()
    at = run.clock.advance(40)
    run.core.tick(at, {start.worker_id: at.wall - 1})
    assert not [e for e in run.take() if isinstance(e, Record) and getattr(e.message, "events", ())]


# --- questions, holds, cancel, submit ---------------------------------------------------------


def test_a_question_holds_its_pending_task_until_the_answer_and_a_deadline_answers_by_default() -> None:
    run = make([row("A"), row("B", "A")])
    run.take()
    question = requests.question_for(
        run.core,
        EscalateDecision(issue="ship B?", options=("go", "stop"), task_id="B", timeout_s=60, default_choice="go"),
        run.clock.now(),
    )
    assert not isinstance(question, type(None))
    opened = EscalationRow(
        id="ESC-1", issue="ship B?", task_id="B", opened_by="mcp", created_at="", holds_task=True,
        deadline=question.deadline, default_choice="go",  # type: ignore[union-attr]
    )  # fmt: skip
    requests.question_opened(run.core, opened, "/s")
    assert "B" not in {e.task_id for e in run.finish("A") if isinstance(e, StartAttempt)}, "held"
    run.core.tick(run.clock.advance(61))
    assert [e for e in run.take() if isinstance(e, AnswerByDefault)] == [
        AnswerByDefault(escalation_id="ESC-1", choice="go")
    ]
    requests.answered(run.core, msgspec.structs.replace(opened, status="answered", choice="go"), run.clock.now())
    assert "B" in run.started()


def test_cancelling_a_running_task_stops_its_attempt_and_records_the_cancellation_at_its_end() -> None:
    run = make([row("A")])
    run.take()
    requests.cancel(run.core, CancelTask(task_id="A", by="alice"), run.clock.now())
    assert any(isinstance(e, CancelAttempt) for e in run.take())
    effects = run.finish("A", crash("interrupted"))
    assert outcomes(effects)[0].result.error_kind == "cancelled"
    assert "✗ A cancelled by alice" in run.lines(effects)


def test_a_submitted_task_is_numbered_after_earlier_ones_and_dispatched() -> None:
    run = make([row("MCP-004", status="completed")], keep_alive=True)
    run.take()
    reply = requests.submit(run.core, SubmitTask(name="more"), ["worker"], run.clock.now())
    assert reply.task.id == "MCP-005"  # type: ignore[union-attr]
    assert "MCP-005" in run.started()


# --- file conflicts and inner loops -------------------------------------------------------------


def test_tasks_that_change_the_same_file_never_run_at_once() -> None:
    files = TaskDetails(files_affected=["src/a.py"])
    run = make([row("A", details=files), row("B", details=files), row("C")])
    effects = run.take()
    assert {e.task_id for e in effects if isinstance(e, StartAttempt)} == {"A", "C"}
    assert any("B waits for A" in line for line in run.lines(effects))
    effects = run.finish("A")
    assert [e.task_id for e in effects if isinstance(e, StartAttempt)] == ["B"]


def test_an_inner_loop_role_runs_its_chain_on_one_worker() -> None:
    roles = {"coder": RolePolicy(inner_loop=True)}
    run = make([row("IMPL-1", owner="coder"), row("IMPL-2", owner="coder")], roles=roles)
    (first,) = run.started().values()
    effects = run.finish(first.task_id)
    (second,) = [e for e in effects if isinstance(e, StartAttempt)]
    assert (second.worker_id, second.new_worker) == (first.worker_id, False)


# --- stopping ----------------------------------------------------------------------------------


def test_a_graceful_stop_waits_its_grace_then_cancels_and_finishes_interrupted() -> None:
    run = make([row("A"), row("B")], shutdown_grace_s=5)
    run.take()
    run.core.shutdown("signal SIGTERM", True, run.clock.now())
    assert not any(isinstance(e, CancelAttempt) for e in run.take())
    run.core.tick(run.clock.advance(6))
    assert len([e for e in run.take() if isinstance(e, CancelAttempt)]) == 2
    run.finish("A", crash("interrupted"))
    effects = run.finish("B", crash("interrupted"))
    (finish,) = [e for e in effects if isinstance(e, Finish)]
    assert finish.summary.interrupted
    assert finish.record
    assert not [e for e in effects if isinstance(e, StartAttempt)]


def test_agent_ids_differ_per_attempt_and_only_the_owner_may_report() -> None:
    run = make([row("A"), row("B")])
    starts = run.started()
    assert starts["A"].agent_id != starts["B"].agent_id
    assert requests.own_attempt(run.core, "A", starts["A"].agent_id).task_id == "A"  # type: ignore[union-attr]
    refused = requests.own_attempt(run.core, "B", starts["A"].agent_id)
    assert refused.argument == "task_id"  # type: ignore[union-attr]


def test_dispatch_records_name_the_log_of_the_attempt() -> None:
    run = make([row("A")])
    (dispatch,) = [e.message for e in run.take() if isinstance(e, Record) and isinstance(e.message, RecordDispatch)]
    assert dispatch.log_path == "/s/.executor/logs/A-a1.log"


def test_tasks_that_wait_for_a_provider_key_share_one_question_until_it_is_answered() -> None:
    run = make([row("A"), row("B")])
    run.take()
    asks = [key_question("openai", "every key is disabled", task) for task in ("A", "B")]
    requests.ask_user(run.core, asks[0], run.clock.now())
    (opened,) = [e.question for e in run.take() if isinstance(e, OpenQuestion)]
    assert opened.task_id is None, "about the provider"
    assert not opened.holds_task
    assert opened.options == ("added", "fail")
    assert "`executor keys add openai`" in opened.issue
    assert "add_api_key" in opened.issue
    stored = EscalationRow(id="ESC-1", issue=opened.issue, opened_by=opened.opened_by, options=["added", "fail"])
    requests.question_opened(run.core, stored, "/s")
    requests.ask_user(run.core, asks[1], run.clock.now())
    other = key_question("anthropic", "no key", "B")
    requests.ask_user(run.core, other, run.clock.now())
    asked = [e.question.opened_by for e in run.take() if isinstance(e, OpenQuestion)]
    assert asked == ["keys:anthropic"], "one open question per provider"
    answered = msgspec.structs.replace(stored, status="answered", choice="added")
    requests.answered(run.core, answered, run.clock.now())
    requests.ask_user(run.core, asks[1], run.clock.now())
    assert [e.question.opened_by for e in run.take() if isinstance(e, OpenQuestion)] == ["keys:openai"], (
        "a pool that runs dry again asks again"
    )


def test_a_waiting_attempt_gives_up_only_on_a_fail_answered_after_it_asked() -> None:
    def asked(qid: str, provider: str = "openai", **extra: object) -> EscalationRow:
        return EscalationRow(id=qid, issue="?", opened_by=f"keys:{provider}", **extra)  # type: ignore[arg-type]

    earlier = asked("ESC-1", status="answered", choice="fail", answered_by="user")
    seen = answered_ids([earlier, asked("ESC-2")], "openai")
    assert seen == frozenset({"ESC-1"})
    assert give_up_reason([earlier, asked("ESC-2")], "openai", seen) is None, "an old answer is not this one"
    now_failed = asked("ESC-2", status="answered", choice="fail", answered_by="mcp")
    reason = give_up_reason([earlier, now_failed], "openai", seen)
    assert reason is not None
    assert "ESC-2" in reason
    assert "mcp" in reason
    assert give_up_reason([asked("ESC-3", "anthropic", status="answered", choice="fail")], "openai", seen) is None
    assert give_up_reason([asked("ESC-2", status="answered", choice="added")], "openai", seen) is None
    assert open_request([earlier, asked("ESC-2")], "openai") == asked("ESC-2")
    assert open_request([earlier], "openai") is None
