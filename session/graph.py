"""The task graph: which tasks exist, who owns them, what blocks them.

Tasks come from task-analysis.json: ``capabilities[].tasks[]`` (shape b) and
the keys of ``dependency_graph`` (both shapes).  A task's owner is, in order:
the task's own ``role``, the graph entry's ``role`` (shape a), the capability's
name when it names a role, then the role whose prefix matches the task id.
Everything here is linear in tasks plus edges.
"""

from __future__ import annotations

import difflib
import heapq
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import msgspec
from pydantic import ValidationError

from protocol.types import PRIORITIES, Priority
from session.models import CapabilityTask, GraphEntry, TaskAnalysisFile
from session.problems import Problem

__all__ = [
    "MCP_CALL_KEYS",
    "TaskMcpCall",
    "TaskSpec",
    "derive_tasks",
    "find_cycles",
    "id_prefix",
    "layers",
    "priority_rank",
]

_ANALYSIS = "task-analysis.json"
_ID_SUFFIX = re.compile(r"-\d+$")
_MAX_CYCLES_REPORTED = 5


class TaskMcpCall(msgspec.Struct, frozen=True, kw_only=True):
    """A task's ``"mcp"`` entry: the MCP tool call that is the task (for roles on the ``mcp`` backend).

    ``server`` and ``tool`` may be left to the role-spec's ``mcp_server``/``mcp_tool``.
    """

    server: str | None = None
    tool: str | None = None
    arguments: dict[str, Any] = msgspec.field(default_factory=dict)


MCP_CALL_KEYS = ("server", "tool", "arguments")
_MCP_EXAMPLES = {"server": "netops", "tool": "ping"}


class TaskSpec(msgspec.Struct, frozen=True, kw_only=True):
    """A task as the session folder defines it (not its run-time state)."""

    id: str
    owner: str
    blocked_by: tuple[str, ...] = ()
    priority: Priority = "P1"
    goal: str = ""
    steps: tuple[str, ...] = ()
    key_files: tuple[str, ...] = ()
    upstream_artifacts: tuple[str, ...] = ()
    success_criteria: str = ""
    constraints: str = ""
    mcp: TaskMcpCall | None = None

    @property
    def subject(self) -> str:
        first_line = self.goal.strip().split("\n", 1)[0]
        return first_line[:120] if first_line else self.id


def priority_rank(priority: str) -> int:
    return PRIORITIES.index(priority) if priority in PRIORITIES else len(PRIORITIES)


def id_prefix(task_id: str) -> str:
    """``IMPL-002`` -> ``IMPL``; an id without a numeric suffix is its own prefix."""
    return _ID_SUFFIX.sub("", task_id)


def _joined(value: str | list[str]) -> str:
    return "; ".join(value) if isinstance(value, list) else value


_GraphEntry = tuple[tuple[str, ...], str | None, Priority | None, list[Problem]]


def _no_entry(*problems: Problem) -> _GraphEntry:
    """No dependencies, role or priority: the entry is unusable for the reasons given."""
    return (), None, None, list(problems)


def _graph_entry(task_id: str, raw: Any) -> _GraphEntry:
    field = f"$.dependency_graph.{task_id}"
    if isinstance(raw, list):
        if all(isinstance(dep, str) for dep in raw):
            return tuple(raw), None, None, []
        return _no_entry(
            Problem(
                file=_ANALYSIS,
                field=field,
                message="dependency list must contain task ids (strings)",
                fix='write it as ["TASK-001", ...]',
            )
        )
    if isinstance(raw, dict):
        try:
            entry = GraphEntry.model_validate(raw)
        except ValidationError as error:
            return _no_entry(
                *(
                    Problem(
                        file=_ANALYSIS,
                        field=f"{field}." + ".".join(str(p) for p in item["loc"]),
                        message=item["msg"],
                        fix='shape (a) entries are {"depends_on": [ids], "role": "<role>"}',
                    )
                    for item in error.errors()
                )
            )
        return tuple(entry.depends_on), entry.role, entry.priority, []
    return _no_entry(
        Problem(
            file=_ANALYSIS,
            field=field,
            message=f"must be a list of task ids or an object with depends_on, got {type(raw).__name__}",
            fix='use ["DEP-001"] (adjacency list) or {"depends_on": ["DEP-001"], "role": "..."}',
        )
    )


def _mcp_entry(raw: Any, field: str) -> tuple[TaskMcpCall | None, list[Problem]]:
    """A task's ``"mcp"`` value, checked; ``field`` is its JSON path."""
    shape = '{"server": "<name in [mcp_servers]>", "tool": "<tool name>", "arguments": {...}}'
    if raw is None:
        return None, []
    if not isinstance(raw, dict):
        return None, [
            Problem(
                file=_ANALYSIS,
                field=field,
                message=f"must be an object, got {type(raw).__name__}",
                fix=f"write it as {shape}",
            )
        ]
    problems = [
        Problem(
            file=_ANALYSIS,
            field=f"{field}.{key}",
            message=f"unknown key '{key}'",
            fix="".join(f"did you mean '{close}'? " for close in difflib.get_close_matches(key, MCP_CALL_KEYS, n=1))
            + f"use only {', '.join(MCP_CALL_KEYS)}: {shape}",
        )
        for key in raw
        if key not in MCP_CALL_KEYS
    ]
    for key in ("server", "tool"):
        value = raw.get(key)
        if value is not None and not (isinstance(value, str) and value.strip()):
            problems.append(
                Problem(
                    file=_ANALYSIS,
                    field=f"{field}.{key}",
                    message=f"must be a non-empty string, got {type(value).__name__}",
                    fix=f'write it in quotes, e.g. "{key}": "{_MCP_EXAMPLES[key]}", '
                    f"or leave it out to use the role-spec's mcp_{key}",
                )
            )
    arguments = raw.get("arguments", {})
    if not isinstance(arguments, dict):
        problems.append(
            Problem(
                file=_ANALYSIS,
                field=f"{field}.arguments",
                message=f"must be an object of the tool's arguments, got {type(arguments).__name__}",
                fix='write it as {"name": value, ...}, or leave it out for a tool without arguments',
            )
        )
    if problems:
        return None, problems
    return TaskMcpCall(server=raw.get("server"), tool=raw.get("tool"), arguments=arguments), []


def derive_tasks(
    analysis: TaskAnalysisFile,
    role_names: Iterable[str],
    prefix_to_role: Mapping[str, str],
    duplicate_graph_keys: Sequence[str] = (),
) -> tuple[list[TaskSpec], list[Problem]]:
    """Every task of the session with owner, blockers and priority; and every problem."""
    roles = set(role_names)
    problems: list[Problem] = []

    for task_id in duplicate_graph_keys:
        problems.append(
            Problem(
                file=_ANALYSIS,
                field=f"$.dependency_graph.{task_id}",
                message=f"duplicate task id {task_id} (the key appears more than once)",
                fix="merge the entries into one",
            )
        )

    defined: dict[str, tuple[CapabilityTask, str, str]] = {}  # id -> (task, capability, path)
    for cap_index, capability in enumerate(analysis.capabilities):
        for task_index, task in enumerate(capability.tasks):
            path = f"$.capabilities[{cap_index}].tasks[{task_index}].id"
            if task.id in defined:
                problems.append(
                    Problem(
                        file=_ANALYSIS,
                        field=path,
                        message=f"duplicate task id {task.id} (first defined at {defined[task.id][2]})",
                        fix="give each task its own id",
                    )
                )
                continue
            defined[task.id] = (task, capability.name, path)

    graph: dict[str, tuple[tuple[str, ...], str | None, Priority | None]] = {}
    for task_id, raw in analysis.dependency_graph.items():
        deps, role, priority, entry_problems = _graph_entry(task_id, raw)
        problems.extend(entry_problems)
        graph[task_id] = (deps, role, priority)

    ordered_ids = list(graph)
    ordered_ids.extend(task_id for task_id in defined if task_id not in graph)
    known = set(ordered_ids)

    tasks: list[TaskSpec] = []
    for task_id in ordered_ids:
        deps, graph_role, graph_priority = graph.get(task_id, ((), None, None))
        cap_task, cap_name, _ = defined.get(task_id, (None, None, ""))
        owner = (
            (cap_task.role if cap_task else None)
            or graph_role
            or (cap_name if cap_name in roles else None)
            or prefix_to_role.get(id_prefix(task_id))
        )
        field = f"$.dependency_graph.{task_id}" if task_id in graph else defined[task_id][2]
        mcp_raw, mcp_field = None, ""
        if cap_task is not None and cap_task.mcp is not None:
            mcp_raw, mcp_field = cap_task.mcp, defined[task_id][2].removesuffix(".id") + ".mcp"
        elif isinstance(analysis.dependency_graph.get(task_id), dict):
            mcp_raw, mcp_field = analysis.dependency_graph[task_id].get("mcp"), f"$.dependency_graph.{task_id}.mcp"
        mcp, mcp_problems = _mcp_entry(mcp_raw, mcp_field)
        problems.extend(mcp_problems)
        if owner is None:
            problems.append(
                Problem(
                    file=_ANALYSIS,
                    field=field,
                    message=(
                        f"cannot tell which role owns task {task_id}: "
                        f"no role given and no role has prefix '{id_prefix(task_id)}'"
                    ),
                    fix='add "role" to the task, or a role with that prefix to team-session.json',
                )
            )
            owner = ""
        elif owner not in roles:
            problems.append(
                Problem(
                    file=_ANALYSIS,
                    field=field,
                    message=f"task {task_id} is owned by unknown role '{owner}'",
                    fix=(
                        f"add role '{owner}' to team-session.json roles[] (with its role-spec) "
                        f"or assign one of: {', '.join(sorted(roles))}"
                    ),
                )
            )
        unique_deps: list[str] = []
        for dep in deps:
            if dep not in known:
                problems.append(
                    Problem(
                        file=_ANALYSIS,
                        field=f"$.dependency_graph.{task_id}",
                        message=f"task {task_id} depends on unknown task {dep}",
                        fix=f"define {dep} or remove it from the dependencies",
                    )
                )
            elif dep not in unique_deps:
                unique_deps.append(dep)
        tasks.append(
            TaskSpec(
                id=task_id,
                owner=owner,
                blocked_by=tuple(unique_deps),
                priority=(cap_task.priority if cap_task and cap_task.priority else graph_priority) or "P1",
                goal=cap_task.goal if cap_task else "",
                steps=tuple(cap_task.steps) if cap_task else (),
                key_files=tuple(cap_task.key_files) if cap_task else (),
                upstream_artifacts=tuple(cap_task.upstream_artifacts) if cap_task else (),
                success_criteria=_joined(cap_task.success_criteria) if cap_task else "",
                constraints=_joined(cap_task.constraints) if cap_task else "",
                mcp=mcp,
            )
        )

    for cycle in find_cycles({task.id: task.blocked_by for task in tasks}):
        problems.append(
            Problem(
                file=_ANALYSIS,
                field=f"$.dependency_graph.{cycle[0]}",
                message="dependency cycle: " + " -> ".join([*cycle, cycle[0]]),
                fix="remove one of these dependencies so the tasks can run in order",
            )
        )
    return tasks, problems


def find_cycles(blocked_by: Mapping[str, Sequence[str]]) -> list[list[str]]:
    """Distinct cycles (each as the list of its tasks), found by an iterative DFS."""
    white, grey, black = 0, 1, 2
    colour = dict.fromkeys(blocked_by, white)
    cycles: list[list[str]] = []
    seen_sets: set[frozenset[str]] = set()
    for root in blocked_by:
        if colour[root] != white:
            continue
        stack: list[tuple[str, int]] = [(root, 0)]
        path: list[str] = []
        while stack:
            node, index = stack.pop()
            if index == 0:
                colour[node] = grey
                path.append(node)
            deps = blocked_by.get(node, ())
            if index < len(deps):
                stack.append((node, index + 1))
                dep = deps[index]
                state = colour.get(dep)
                if state == white:
                    stack.append((dep, 0))
                elif state == grey:
                    cycle = path[path.index(dep) :]
                    key = frozenset(cycle)
                    if key not in seen_sets and len(cycles) < _MAX_CYCLES_REPORTED:
                        seen_sets.add(key)
                        cycles.append(cycle)
            else:
                colour[node] = black
                path.pop()
    return cycles


def layers(tasks: Sequence[TaskSpec]) -> list[list[str]]:
    """Tasks by dependency depth (layer 0 has no blockers), P0 first then id.

    Tasks caught in a cycle cannot be layered; they are returned as a final layer.
    """
    by_id = {task.id: task for task in tasks}
    waiting = {task.id: len(task.blocked_by) for task in tasks}
    dependants: dict[str, list[str]] = {task.id: [] for task in tasks}
    for task in tasks:
        for dep in task.blocked_by:
            if dep in dependants:
                dependants[dep].append(task.id)
            else:
                waiting[task.id] -= 1  # unknown dependency: reported elsewhere, ignored here

    def key(task_id: str) -> tuple[int, str]:
        return priority_rank(by_id[task_id].priority), task_id

    current = sorted((t for t, n in waiting.items() if n == 0), key=key)
    result: list[list[str]] = []
    placed = 0
    while current:
        result.append(current)
        placed += len(current)
        following: list[tuple[int, str]] = []
        for task_id in current:
            for dependant in dependants[task_id]:
                waiting[dependant] -= 1
                if waiting[dependant] == 0:
                    heapq.heappush(following, key(dependant))
        current = [heapq.heappop(following)[1] for _ in range(len(following))]
    if placed < len(tasks):
        result.append(sorted((t for t, n in waiting.items() if n > 0), key=key))
    return result
