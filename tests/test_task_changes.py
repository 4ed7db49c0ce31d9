"""The pure decisions behind diff and rollback: which attempts, which files, what may be undone,
and which paths are the executor's own or lead outside where they belong."""

from __future__ import annotations

from pathlib import Path

from session.attempt_trees import AttemptTrees
from session.own_paths import SESSION_ENTRIES, is_own, own_prefixes
from session.task_changes import (
    RollbackPlan,
    RollbackRefused,
    ended_within,
    plan_rollback,
    select_attempts,
    task_paths,
)


def _attempt(task_id: str, attempt: int, before: str, after: str | None, root: str = "/repo") -> AttemptTrees:
    return AttemptTrees(task_id=task_id, attempt=attempt, root=root, before=before, after=after)


# Three tasks in one tree: A writes x then (retry) y, B writes x later, C writes z.
RECORDS = [
    _attempt("A", 1, "t0", "t1"),
    _attempt("A", 2, "t1", "t2"),
    _attempt("C", 1, "t2", "t3"),
    _attempt("B", 1, "t3", "t4"),
]
CHANGED = {
    ("A", 1): frozenset({"x"}),
    ("A", 2): frozenset({"x", "y"}),
    ("C", 1): frozenset({"z"}),
    ("B", 1): frozenset({"x"}),
}


def test_a_task_without_attempts_or_with_an_unknown_attempt_is_named() -> None:
    assert "no git state is recorded for Q" in str(select_attempts(RECORDS, "Q", None))
    assert select_attempts(RECORDS, "A", 3) == "--attempt 3: A has recorded attempts 1, 2"
    assert [r.attempt for r in select_attempts(RECORDS, "A", None)] == [1, 2]  # type: ignore[union-attr]


def test_a_tasks_paths_are_the_union_of_its_attempts() -> None:
    assert task_paths(RECORDS[:2], CHANGED) == ("x", "y")


def test_rolling_back_a_task_whose_files_a_later_task_changed_is_refused_naming_it() -> None:
    refused = plan_rollback(RECORDS, CHANGED, "A")
    assert isinstance(refused, RollbackRefused)
    assert refused.conflicts == ("B",)
    assert "B (x)" in refused.reason
    assert "--cascade B" in refused.reason


def test_with_the_later_task_cascaded_each_file_goes_back_to_before_the_first_change() -> None:
    plan = plan_rollback(RECORDS, CHANGED, "A", cascade=["B"])
    assert isinstance(plan, RollbackPlan)
    assert plan.tasks == ("A", "B")
    assert plan.restore == {"t0": ("x",), "t1": ("y",)}
    assert plan.expect == {"t4": ("x",), "t2": ("y",)}  # what the last rolled-back attempt left
    assert plan.files == ("x", "y")


def test_an_unrelated_later_task_does_not_block_and_the_last_task_rolls_back_alone() -> None:
    plan = plan_rollback(RECORDS, CHANGED, "C")
    assert isinstance(plan, RollbackPlan)
    assert plan.restore == {"t2": ("z",)}
    plan_b = plan_rollback(RECORDS, CHANGED, "B")
    assert isinstance(plan_b, RollbackPlan)
    assert plan_b.restore == {"t3": ("x",)}


def test_nothing_to_roll_back_or_an_open_attempt_is_refused() -> None:
    nothing = plan_rollback([_attempt("A", 1, "t0", "t0")], {}, "A")
    assert isinstance(nothing, RollbackRefused)
    assert "changed no file" in nothing.reason
    running = plan_rollback([_attempt("A", 1, "t0", None)], {("A", 1): frozenset({"x"})}, "A")
    assert isinstance(running, RollbackRefused)
    assert "has no recorded end" in running.reason
    unknown = plan_rollback(RECORDS, CHANGED, "A", cascade=["Q"])
    assert isinstance(unknown, RollbackRefused)
    assert "no git state is recorded for Q" in unknown.reason


def test_tasks_in_different_trees_are_rolled_back_one_by_one() -> None:
    records = [_attempt("A", 1, "t0", "t1"), _attempt("B", 1, "u0", "u1", root="/worktree-b")]
    refused = plan_rollback(records, {("A", 1): frozenset({"x"}), ("B", 1): frozenset({"x"})}, "A", ["B"])
    assert isinstance(refused, RollbackRefused)
    assert "different trees" in refused.reason


def test_the_session_folder_is_the_executors_own(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    session = repo / ".workflow" / ".team" / "TC-1"
    session.mkdir(parents=True)
    prefixes = own_prefixes(repo, session)
    assert prefixes == (".workflow/.team/TC-1",)
    assert is_own(".workflow/.team/TC-1/.executor/logs/A-a1.log", prefixes)
    assert is_own(".workflow/.team/TC-1/tasks/pending/A.md", prefixes)
    assert not is_own(".workflow/.team/TC-10/x", prefixes)
    assert not is_own("src/app.py", prefixes)
    assert own_prefixes(repo, repo) == SESSION_ENTRIES  # the session is the repository itself
    assert is_own(".executor/homes/A/x", SESSION_ENTRIES)
    assert not is_own("src/tasks.py", SESSION_ENTRIES)
    assert own_prefixes(repo, tmp_path / "elsewhere") == ()


def test_the_attempts_that_ended_while_another_ran_are_the_ones_whose_changes_it_saw() -> None:
    a = AttemptTrees(task_id="A", attempt=1, root="/r", before="t0", after="t3", started=1, ended=6)
    b = AttemptTrees(task_id="B", attempt=1, root="/r", before="t0", after="t1", started=2, ended=3)
    c = AttemptTrees(task_id="C", attempt=1, root="/r", before="t3", after="t4", started=7, ended=8)
    d = AttemptTrees(task_id="D", attempt=1, root="/r", before="t1", after=None, started=4)
    other_tree = AttemptTrees(task_id="E", attempt=1, root="/w", before="u0", after="u1", started=2, ended=4)
    records = [a, b, d, other_tree, c]
    assert ended_within(records, a) == [b]  # C began after A ended; D has not ended; E is another tree
    assert ended_within(records, d) == [a, c], "an open attempt has seen everything that ended since it began"
    assert ended_within(records, b) == []
