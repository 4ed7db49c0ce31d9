"""The scheduler: readiness, priority order, retries, inner loops, failure blocking."""

from __future__ import annotations

from pipeline.readiness import Scheduler
from protocol.records import TaskDetails, TaskRow


def row(task_id: str, *deps: str, owner: str = "r", priority: str = "P1", status: str = "pending") -> TaskRow:
    return TaskRow(id=task_id, owner=owner, blocked_by=list(deps), priority=priority, status=status)  # type: ignore[arg-type]


def drain(scheduler: Scheduler) -> list[str]:
    order = []
    while (task_id := scheduler.pop_ready()) is not None:
        order.append(task_id)
    return order


def test_ready_tasks_come_out_p0_first_then_by_id():
    scheduler = Scheduler([row("B"), row("A", priority="P2"), row("C", priority="P0"), row("D", "A")])
    assert drain(scheduler) == ["C", "B", "A"]


def test_completing_a_task_releases_exactly_its_unblocked_dependants():
    scheduler = Scheduler([row("A"), row("B"), row("C", "A", "B"), row("D", "A")])
    assert drain(scheduler) == ["A", "B"]
    scheduler.start("A")
    scheduler.start("B")
    assert scheduler.complete("A") == ["D"]
    assert scheduler.complete("B") == ["C"]
    assert drain(scheduler) == ["C", "D"]


def test_tasks_already_completed_at_start_do_not_block():
    scheduler = Scheduler([row("A", status="completed"), row("B", "A")])
    assert drain(scheduler) == ["B"]


def test_a_retry_waits_for_its_time():
    scheduler = Scheduler([row("A")])
    scheduler.start(scheduler.pop_ready() or "")
    scheduler.retry_at("A", 100.0)
    assert scheduler.pop_ready() is None
    assert not scheduler.finished()
    assert scheduler.next_retry_at() == 100.0
    scheduler.release_due(99.0)
    assert scheduler.pop_ready() is None
    scheduler.release_due(100.0)
    assert scheduler.pop_ready() == "A"


def test_a_failed_task_blocks_its_dependants_transitively_and_the_run_can_finish():
    scheduler = Scheduler([row("A"), row("B", "A"), row("C", "B"), row("D")])
    assert drain(scheduler) == ["A", "D"]
    scheduler.start("A")
    scheduler.start("D")
    scheduler.fail("A")
    scheduler.complete("D")
    assert scheduler.blocked() == ["B", "C"]
    assert scheduler.failed() == ["A"]
    assert scheduler.finished()


def test_an_inner_loop_role_never_runs_two_tasks_at_once():
    scheduler = Scheduler(
        [row("IMPL-1", owner="coder"), row("IMPL-2", owner="coder"), row("QA-1", owner="qa")],
        inner_loop_roles={"coder"},
    )
    first = scheduler.pop_ready()
    assert first == "IMPL-1"
    scheduler.start(first)
    assert drain(scheduler) == ["QA-1"], "IMPL-2 waits while the coder is busy"
    assert scheduler.complete("IMPL-1") == []
    assert scheduler.pop_for_role("coder") == "IMPL-2", "the chain continues in the same worker"
    assert scheduler.pop_for_role("coder") is None


def test_an_idle_inner_loop_role_s_tasks_compete_by_priority_with_the_rest():
    scheduler = Scheduler(
        [
            row("IMPL-1", owner="coder", priority="P2"),
            row("QA-1", owner="qa"),
            row("DOC-1", owner="doc", priority="P0"),
        ],
        inner_loop_roles={"coder"},
    )
    assert drain(scheduler) == ["DOC-1", "QA-1", "IMPL-1"]


def test_pop_for_role_of_a_role_without_an_inner_loop_is_none():
    scheduler = Scheduler([row("QA-1", owner="qa")])
    assert scheduler.pop_for_role("qa") is None
    assert scheduler.pop_ready() == "QA-1"


def test_a_reset_task_is_ready_again_at_once():
    scheduler = Scheduler([row("A"), row("B", "A")])
    scheduler.start(scheduler.pop_ready() or "")
    scheduler.reset("A")
    assert scheduler.pop_ready() == "A"


def test_a_revision_task_rewires_the_dependants_of_the_task_it_revises():
    scheduler = Scheduler([row("IMPL-001"), row("QA-001", "IMPL-001")])
    scheduler.start(scheduler.pop_ready() or "")
    scheduler.add(row("IMPL-002", "IMPL-001"), rewire=[("QA-001", ["IMPL-002"])])
    assert scheduler.complete("IMPL-001") == ["IMPL-002"]
    assert drain(scheduler) == ["IMPL-002"], "QA waits for the revision"
    scheduler.start("IMPL-002")
    assert scheduler.complete("IMPL-002") == ["QA-001"]


def test_a_large_graph_runs_to_completion_touching_each_edge_once():
    width, depth = 100, 50
    rows = []
    for layer in range(depth):
        for index in range(width):
            deps = [f"T{(layer - 1) * width + (index + k) % width}" for k in range(2)] if layer else []
            rows.append(row(f"T{layer * width + index}", *deps))
    scheduler = Scheduler(rows)
    done = 0
    while not scheduler.finished():
        batch = drain(scheduler)
        for task_id in batch:
            scheduler.start(task_id)
        for task_id in batch:
            scheduler.complete(task_id)
            done += 1
    assert done == width * depth


def with_files(task_id: str, *files: str, owner: str = "r") -> TaskRow:
    return TaskRow(id=task_id, owner=owner, details=TaskDetails(files_affected=list(files)))


def test_two_ready_tasks_that_declare_the_same_file_never_run_at_once():
    scheduler = Scheduler(
        [with_files("A", "src/a.py"), with_files("B", "./src/a.py", "src/c.py"), with_files("C", "src/b.py")]
    )
    first = scheduler.pop_ready()
    assert first == "A"
    scheduler.start("A")
    assert scheduler.pop_ready() == "C", "B shares src/a.py with the running A: it waits, C goes"
    scheduler.start("C")
    assert scheduler.pop_ready() is None
    assert scheduler.drain_file_waits() == [("B", "A", "src/a.py")]
    assert scheduler.has_waiting_work()
    scheduler.complete("C")
    assert scheduler.pop_ready() is None, "C held nothing B needs"
    scheduler.complete("A")
    assert scheduler.pop_ready() == "B", "A let go of the file: B runs"


def test_a_person_working_on_a_file_holds_it_too():
    scheduler = Scheduler(
        [with_files("D", "doc.md", owner="people"), with_files("E", "doc.md")], manual_roles=["people"]
    )
    scheduler.set_status("D", "in_progress")
    assert scheduler.pop_ready() is None
    scheduler.set_status("D", "review")
    assert scheduler.pop_ready() == "E"
