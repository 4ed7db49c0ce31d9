"""Layers, cycles and priorities of the task graph."""

from __future__ import annotations

from session.graph import TaskSpec, find_cycles, id_prefix, layers


def spec(task_id: str, *deps: str, priority: str = "P1") -> TaskSpec:
    return TaskSpec(id=task_id, owner="r", blocked_by=deps, priority=priority)  # type: ignore[arg-type]


def test_layers_group_tasks_by_dependency_depth_with_p0_first():
    tasks = [spec("B-1"), spec("A-1", priority="P2"), spec("C-1", priority="P0"), spec("D-1", "A-1", "B-1")]
    assert layers(tasks) == [["C-1", "B-1", "A-1"], ["D-1"]]


def test_tasks_in_a_cycle_end_up_in_a_last_layer_rather_than_vanishing():
    tasks = [spec("A-1"), spec("B-1", "C-1"), spec("C-1", "B-1")]
    assert layers(tasks) == [["A-1"], ["B-1", "C-1"]]


def test_find_cycles_reports_each_distinct_cycle_once():
    cycles = find_cycles({"A": ["B"], "B": ["A"], "C": ["D"], "D": ["C"], "E": []})
    assert sorted(sorted(c) for c in cycles) == [["A", "B"], ["C", "D"]]


def test_find_cycles_handles_long_chains_without_recursion_limits():
    chain = {f"T{i}": [f"T{i - 1}"] for i in range(1, 50_000)}
    chain["T0"] = []
    assert find_cycles(chain) == []
    chain["T0"] = ["T49999"]
    (cycle,) = find_cycles(chain)
    assert len(cycle) == 50_000


def test_id_prefix_strips_only_the_numeric_suffix():
    assert id_prefix("IMPL-002") == "IMPL"
    assert id_prefix("SEC-AUDIT-010") == "SEC-AUDIT"
    assert id_prefix("README") == "README"
