"""The real actor tree in process (tests/harness.py): scheduling, retries, reviews, budgets,
stalls, questions and cancellation, driven message by message with a manual clock and
checked in the SQLite store.  No agent process, no sleeps."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from protocol.bridge import (
    AnswerEscalation,
    Cancelled,
    CancelTask,
    EscalateDecision,
    EscalationRecord,
    SubmitTask,
    TaskAccepted,
)
from protocol.messages import AttemptResult, HandoffRequest, ShutdownRequest
from tests.fake_backend import HOLD, FakeBackend, failure
from tests.harness import Tree
from tests.sessions import write_session

Factory = Callable[..., Tree]


@pytest.fixture
def tree(tmp_path: Path) -> Iterator[Factory]:
    started: list[Tree] = []

    def start(
        graph: dict[str, list[str]],
        roles: dict[str, str] | None = None,
        script: dict[str, tuple[AttemptResult, ...]] | None = None,
        **options: Any,
    ) -> Tree:
        """A tree on a new session; ``script`` says how attempts end (before anything runs)."""
        role_extra = options.pop("role_extra", None)
        inner_loop = options.pop("inner_loop", frozenset())
        roles = roles or {"worker": next(iter(graph)).rsplit("-", 1)[0]}
        folder = write_session(
            tmp_path / f"s{len(started)}", roles, graph, role_extra=role_extra, inner_loop=inner_loop
        )
        fake = FakeBackend()
        for task_id, results in (script or {}).items():
            fake.script(task_id, *results)
        run = Tree(folder, fake, manual=options.pop("manual", frozenset()), **options)
        started.append(run)
        return run

    yield start
    for run in started:
        run.close()


def test_a_pipeline_runs_in_dependency_order_and_finishes(tree: Factory) -> None:
    run = tree({"A-001": [], "A-002": ["A-001"], "A-003": ["A-001"], "A-004": ["A-002", "A-003"]})
    summary = run.finished()
    assert (summary.completed, summary.total, summary.failed) == (4, 4, ())
    order = [o.task_id for o in run.fake.orders]
    assert order[0] == "A-001"
    assert order[-1] == "A-004"
    assert {row.status for row in run.tasks().values()} == {"completed"}
    assert any(line.startswith("✓ A-004 (worker) done") for line in run.lines)


def test_a_failed_attempt_waits_out_its_backoff_on_the_clock_then_runs_again(tree: Factory) -> None:
    tail = failure(output_tail="failing attempt 2 on purpose")
    run = tree({"A-001": []}, script={"A-001": (failure(), tail)})
    run.wait(lambda: run.tasks()["A-001"].last_error_kind == "crash", "the first failure")
    run.tick(0.9)
    assert len(run.fake.attempts("A-001")) == 1, "the 1 s backoff has not passed"
    run.tick(0.2)
    run.wait(lambda: len(run.fake.attempts("A-001")) == 2, "the second attempt")
    run.wait(lambda: run.tasks()["A-001"].attempts == 2 and run.tasks()["A-001"].status == "pending", "its failure")
    run.tick(1.9)
    assert len(run.fake.attempts("A-001")) == 2, "the backoff doubled to 2 s"
    run.tick(0.2)
    assert run.wait_status("A-001", "completed").attempts == 3
    prompts = [Path(order.prompt_file).read_text() for order in run.fake.attempts("A-001")]
    assert "Attempt 1 failed" not in prompts[0]
    assert "Attempt 1 failed (crash): crash on purpose" in prompts[1]
    assert "Attempt 2 failed (crash)" in prompts[2]
    assert "failing attempt 2 on purpose" in prompts[2], "the output tail travels with the feedback"


def test_after_its_last_attempt_a_task_fails_and_blocks_its_dependants(tree: Factory) -> None:
    run = tree({"A-001": [], "A-002": ["A-001"]}, max_attempts=1, script={"A-001": (failure("timeout"),)})
    summary = run.finished()
    assert (summary.failed, summary.blocked) == (("A-001",), ("A-002",))
    row = run.tasks()["A-001"]
    assert (row.status, row.last_error_kind) == ("failed", "timeout")
    assert run.fake.attempts("A-002") == []


def test_changes_requested_reopens_the_work_with_feedback_and_the_review_runs_again(tree: Factory) -> None:
    changes = AttemptResult(ok=True, outcome="changes_requested", feedback=("add a test",))
    run = tree(
        {"IMPL-001": [], "REV-001": ["IMPL-001"]},
        roles={"coder": "IMPL", "reviewer": "REV"},
        script={"REV-001": (changes,)},
    )
    run.finished()
    assert [o.task_id for o in run.fake.orders] == ["IMPL-001", "REV-001", "IMPL-001", "REV-001"]
    second = Path(run.fake.attempts("IMPL-001")[1].prompt_file).read_text()
    assert "add a test" in second
    assert (run.folder / "feedback" / "IMPL-001.md").exists()
    assert "changes_requested" in run.event_types()


def test_past_its_review_rounds_the_user_decides_and_accept_lets_the_dependants_go(tree: Factory) -> None:
    changes = AttemptResult(ok=True, outcome="changes_requested", feedback=("still wrong",))
    run = tree(
        {"IMPL-001": [], "REV-001": ["IMPL-001"], "DOC-001": ["REV-001"]},
        roles={"coder": "IMPL", "reviewer": "REV", "writer": "DOC"},
        role_extra={"reviewer": "review_rounds: 1\n"},
        keep_alive=True,
        script={"REV-001": (changes, changes)},
    )
    row = run.wait_status("REV-001", "failed")
    assert row.last_error_kind == "needs_decision"
    question = run.wait(lambda: next((line for line in run.lines if line.startswith("? ESC-")), None), "a question")
    escalation_id = question.split(":")[0][2:]
    answer = run.ask(AnswerEscalation(escalation_id=escalation_id, choice="accept", answered_by="alice"))
    assert isinstance(answer, EscalationRecord)
    run.wait_status("DOC-001", "completed")


def test_a_question_holds_exactly_its_task_until_answered(tree: Factory) -> None:
    run = tree({"T-001": [], "T-002": ["T-001"], "T-003": ["T-001"]}, keep_alive=True, script={"T-001": (HOLD,)})
    run.wait(lambda: "T-001" in run.fake.running, "T-001 to run")
    record = run.ask(EscalateDecision(issue="Ship T-002?", options=("go", "stop"), task_id="T-002"))
    assert record.escalation.holds_task
    run.fake.release("T-001")
    run.wait_status("T-003", "completed")
    run.sync()
    assert run.tasks()["T-002"].status == "pending"
    assert run.fake.attempts("T-002") == [], "held: never dispatched"
    run.ask(AnswerEscalation(escalation_id=record.escalation.id, choice="go", answered_by="bob"))
    run.wait_status("T-002", "completed")


def test_a_question_with_a_deadline_takes_its_default_on_the_clock(tree: Factory) -> None:
    run = tree({"T-001": []}, keep_alive=True)
    run.wait_status("T-001", "completed")
    record = run.ask(
        EscalateDecision(issue="Go on?", options=("yes", "no"), timeout_s=60, default_choice="no", hold=False)
    )
    run.tick(30)
    assert not any("answered" in line for line in run.lines)
    run.tick(31)
    run.sync()
    assert f"✓ {record.escalation.id} answered: no (by timeout)" in run.lines


def test_the_session_budget_stops_new_tasks(tree: Factory) -> None:
    run = tree(
        {"A-001": [], "A-002": ["A-001"]},
        session_budget_usd=1.0,
        script={"A-001": (AttemptResult(ok=True, cost_usd=1.5),)},
    )
    summary = run.finished()
    assert summary.budget_stopped
    assert run.fake.attempts("A-002") == []
    assert "budget_exceeded" in run.event_types()


def test_a_silent_attempt_is_stopped_at_its_stall_limit_and_retried_as_a_hang(tree: Factory) -> None:
    run = tree(
        {"A-001": []}, role_extra={"worker": "stall_after: 60\nstall_stop_after: 120\n"}, script={"A-001": (HOLD,)}
    )
    run.wait(lambda: "A-001" in run.fake.running, "A-001 to run")
    run.tick(61)
    assert any("has shown no progress" in line for line in run.lines)
    run.tick(60)
    run.wait(lambda: len(run.fake.attempts("A-001")) == 2 or run.tasks()["A-001"].last_error_kind == "hang", "a hang")
    run.tick(1.1)
    row = run.wait_status("A-001", "completed")
    assert row.attempts == 2
    assert "task_stalled" in run.event_types()


def test_cancelling_a_running_task_stops_it_and_records_who(tree: Factory) -> None:
    run = tree({"A-001": [], "A-002": ["A-001"]}, script={"A-001": (HOLD,)})
    run.wait(lambda: "A-001" in run.fake.running, "A-001 to run")
    reply = run.ask(CancelTask(task_id="A-001", by="carol"))
    assert reply == Cancelled(task_id="A-001", was="in_progress")
    summary = run.finished()
    row = run.tasks()["A-001"]
    assert (row.status, row.last_error_kind) == ("failed", "cancelled")
    assert summary.blocked == ("A-002",)


def test_a_submitted_task_runs_after_the_tasks_it_names(tree: Factory) -> None:
    run = tree({"A-001": []}, keep_alive=True, script={"A-001": (HOLD,)})
    run.wait(lambda: "A-001" in run.fake.running, "A-001 to run")
    accepted = run.ask(SubmitTask(name="follow up", blocked_by=("A-001",)))
    assert isinstance(accepted, TaskAccepted)
    assert accepted.task.id == "MCP-001"
    assert run.fake.attempts("MCP-001") == []
    run.fake.release("A-001")
    run.wait_status("MCP-001", "completed")


def test_tasks_that_change_the_same_file_take_turns_and_others_run_alongside(tmp_path: Path) -> None:
    tasks = [
        {"id": "T-001", "goal": "Edit the parser", "key_files": ["src/parser.py"]},
        {"id": "T-002", "goal": "Also edit the parser", "key_files": ["src/parser.py", "docs/parser.md"]},
        {"id": "T-003", "goal": "Edit the CLI", "key_files": ["src/cli.py"]},
    ]
    folder = write_session(
        tmp_path / "s",
        {"worker": "T"},
        {"T-001": [], "T-002": [], "T-003": []},
        capabilities=[{"name": "worker", "prefix": "T", "tasks": tasks}],
    )
    fake = FakeBackend()
    fake.script("T-001", HOLD)
    fake.script("T-003", HOLD)
    run = Tree(folder, fake, max_workers=3)
    try:
        run.wait(lambda: {"T-001", "T-003"} <= run.fake.running, "T-001 and T-003 to run together")
        run.sync()
        assert run.fake.attempts("T-002") == []
        assert "⧗ T-002 waits for T-001: both change src/parser.py, so they do not run at once" in run.lines
        run.fake.release("T-001")
        run.wait_status("T-002", "completed")
        run.fake.release("T-003")
        run.finished()
    finally:
        run.close()


def test_a_graceful_stop_lets_the_running_attempt_finish_within_the_grace(tree: Factory) -> None:
    run = tree({"A-001": [], "A-002": []}, max_workers=1, shutdown_grace_s=30, script={"A-001": (HOLD,)})
    run.wait(lambda: "A-001" in run.fake.running, "A-001 to run")
    run.ref.tell(ShutdownRequest(reason="signal SIGTERM"))
    run.fake.release("A-001")
    summary = run.finished()
    assert summary.interrupted
    assert run.tasks()["A-001"].status == "completed"
    assert run.fake.attempts("A-002") == [], "no new task after the stop"


def test_a_manual_task_in_review_holds_its_dependants_until_a_person_completes_it(tree: Factory) -> None:
    run = tree(
        {"DSN-001": [], "IMPL-001": ["DSN-001"]},
        roles={"designer": "DSN", "coder": "IMPL"},
        manual=frozenset({"designer"}),
    )
    claimed = run.ask(HandoffRequest(op="claim", by="cli", task_id="DSN-001", agent="alice"))
    assert (claimed.status, claimed.agent) == ("in_progress", "alice")
    assert run.ask(HandoffRequest(op="review", by="cli", task_id="DSN-001")).status == "review"
    run.sync()  # everything the Executor did about it is done and committed
    assert run.fake.attempts("IMPL-001") == [], "the automatic task waits while its blocker is in review"
    assert run.tasks()["IMPL-001"].status == "pending"
    run.ask(HandoffRequest(op="complete", by="cli", task_id="DSN-001"))
    run.wait_status("IMPL-001", "completed")
    assert "✓ DSN-001 completed by alice; unblocked IMPL-001" in run.lines


def test_a_silent_claim_is_released_past_its_claim_idle_timeout(tree: Factory) -> None:
    run = tree(
        {"DSN-001": []},
        roles={"designer": "DSN"},
        manual=frozenset({"designer"}),
        role_extra={"designer": "claim_idle_timeout: 600\n"},
    )
    run.ask(HandoffRequest(op="claim", by="cli", task_id="DSN-001", agent="alice"))
    run.tick(1)
    assert run.tasks()["DSN-001"].status == "in_progress"
    run.clock.wall += 10_000  # the claim's last update is now far in the past on the run's clock
    run.tick(1)
    assert run.tasks()["DSN-001"].status == "pending"
    assert any(line.startswith("⇠ DSN-001 released: alice was silent") for line in run.lines)


def test_inner_loop_tasks_run_one_after_another_on_one_worker(tree: Factory) -> None:
    run = tree(
        {"IMPL-001": [], "IMPL-002": [], "IMPL-003": [], "QA-001": []},
        roles={"coder": "IMPL", "qa": "QA"},
        max_workers=4,
        script={"IMPL-001": (HOLD,)},
        inner_loop=frozenset({"coder"}),
    )
    run.wait(lambda: "IMPL-001" in run.fake.running, "IMPL-001 to run")
    run.wait_status("QA-001", "completed")
    assert run.fake.attempts("IMPL-002") == [], "the chain's next task waits for its worker"
    run.fake.release("IMPL-001")
    run.finished()
    coder_runs = [r for r in run.runs() if r.task_id.startswith("IMPL")]
    assert len({r.worker_id for r in coder_runs}) == 1, "one worker runs the whole chain"
    assert [r.task_id for r in coder_runs] == ["IMPL-001", "IMPL-002", "IMPL-003"]


def test_consensus_blocked_high_creates_one_revision_then_asks_and_accept_goes_on(tree: Factory) -> None:
    high = AttemptResult(ok=True, outcome="consensus_blocked", severity="HIGH", detail="reviewers disagree on the API")
    run = tree(
        {"A-001": [], "A-002": ["A-001"], "B-001": []},
        roles={"writer": "A", "other": "B"},
        keep_alive=True,
        script={"A-001": (high,), "A-003": (high,)},
    )
    assert run.wait_status("A-003", "failed").last_error_kind == "needs_decision"
    assert "! A-001: consensus blocked (HIGH) — created revision task A-003" in run.lines
    assert run.tasks()["A-002"].status == "pending", "A-002 waits for the revision's decision"
    run.wait_status("B-001", "completed")
    question = run.wait(lambda: next((line for line in run.lines if line.startswith("? ESC-")), None), "a question")
    assert "(retry / accept / leave failed)" in question
    run.ask(AnswerEscalation(escalation_id=question.split(":")[0][2:], choice="accept", answered_by="dana"))
    run.wait_status("A-002", "completed")
    assert any(line.startswith("✓ A-003 accepted as done") for line in run.lines)


def test_consensus_blocked_medium_goes_on_and_is_logged_to_wisdom(tree: Factory) -> None:
    medium = AttemptResult(ok=True, outcome="consensus_blocked", severity="MEDIUM", detail="naming debate")
    run = tree({"A-001": [], "A-002": ["A-001"]}, script={"A-001": (medium,)})
    assert run.finished().completed == 2
    assert "naming debate" in (run.folder / "wisdom" / "issues.md").read_text()


def test_a_capability_gap_warns_asks_and_goes_on(tree: Factory) -> None:
    gap = AttemptResult(ok=True, outcome="capability_gap", detail="nobody can do UX research")
    run = tree({"A-001": [], "A-002": ["A-001"]}, script={"A-001": (gap,)})
    assert run.finished().completed == 2
    assert any("capability gap — nobody can do UX research" in line for line in run.lines)
    assert "capability_gap" in run.event_types()


def test_a_task_that_spends_its_budget_gets_no_more_attempts(tree: Factory) -> None:
    costly = AttemptResult(ok=False, error_kind="crash", error="nope", cost_usd=0.5)
    run = tree({"A-001": [], "A-002": []}, max_attempts=5, task_budget_usd=0.8, script={"A-001": (costly, costly)})
    run.wait(lambda: run.tasks()["A-001"].attempts == 1 and run.tasks()["A-001"].status == "pending", "a retry")
    run.tick(1.1)
    row = run.wait_status("A-001", "failed")
    assert (row.attempts, row.last_error_kind) == (2, "over_budget")
    assert "the task's budget of $0.80 is spent ($1.00)" in (row.last_error or "")
    assert run.finished().failed == ("A-001",)
    assert run.tasks()["A-002"].status == "completed"
