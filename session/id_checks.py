"""Task ids, id prefixes and path fields of a session, checked before anything uses them.

The files are written by an LLM and may be hostile: an id becomes a file name and
an argv word, a path field becomes a file the executor opens.  Each problem names
the file, the JSON path and the fix (see :mod:`protocol.ids` for the grammar).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from protocol.ids import TASK_ID_RULE, is_task_id, task_id_problem
from session.models import TaskAnalysisFile, TeamSessionFile
from session.problems import Problem
from session.safepath import path_text_problem
from session.store import StoreReader

__all__ = ["analysis_id_problems", "path_field_problems", "session_id_problems", "stored_bad_ids"]

_ANALYSIS = "task-analysis.json"
_SESSION = "team-session.json"


def _key(name: str) -> str:
    """A mapping key in a JSON path; quoted when it is not a plain word (it may hold anything)."""
    return f".{name}" if name.replace("-", "").replace("_", "").isalnum() else f"[{json.dumps(name)}]"


def _id_problem(file: str, field: str, value: object) -> Problem | None:
    reason = task_id_problem(value)
    if reason is None:
        return None
    return Problem(file=file, field=field, message=reason, fix=f"rename the task: {TASK_ID_RULE}")


def analysis_id_problems(analysis: TaskAnalysisFile) -> list[Problem]:
    """Every task id in task-analysis.json that is not in the id grammar."""
    found: list[Problem | None] = []
    for task_id, entry in analysis.dependency_graph.items():
        where = f"$.dependency_graph{_key(task_id)}"
        found.append(_id_problem(_ANALYSIS, where, task_id))
        deps = entry.get("depends_on") if isinstance(entry, dict) else entry
        if isinstance(deps, list):
            for index, dep in enumerate(deps):
                suffix = f".depends_on[{index}]" if isinstance(entry, dict) else f"[{index}]"
                found.append(_id_problem(_ANALYSIS, where + suffix, dep))
    for cap_index, capability in enumerate(analysis.capabilities):
        for task_index, task in enumerate(capability.tasks):
            where = f"$.capabilities[{cap_index}].tasks[{task_index}]"
            found.append(_id_problem(_ANALYSIS, f"{where}.id", task.id))
            found.extend(_paths(_ANALYSIS, f"{where}.key_files", task.key_files))
            found.extend(_paths(_ANALYSIS, f"{where}.upstream_artifacts", task.upstream_artifacts))
    return [problem for problem in found if problem is not None]


def session_id_problems(team: TeamSessionFile) -> list[Problem]:
    """Role prefixes (new task ids are ``<prefix>-NNN``) and completed task ids in team-session.json."""
    problems: list[Problem] = []
    for index, role in enumerate(team.roles):
        # A role's name fills {role} in a command argv and names role-specs/<role>.md.
        name_reason = task_id_problem(role.name)
        if name_reason is not None:
            problems.append(
                Problem(
                    file=_SESSION,
                    field=f"$.roles[{index}].name",
                    message=f"role name {role.name!r} is not a plain word: {name_reason.replace('task id', 'name')}",
                    fix="name the role with letters, digits, '-', '_' and '.' only, e.g. coder",
                )
            )
        reason = task_id_problem(role.prefix)
        if reason is not None:
            problems.append(
                Problem(
                    file=_SESSION,
                    field=f"$.roles[{index}].prefix",
                    message=f"the prefix of role '{role.name}' cannot start a task id: {reason}",
                    fix=f"give the role a prefix such as IMPL: {TASK_ID_RULE}",
                )
            )
        problems.extend(_paths(_SESSION, f"$.roles[{index}].role_spec", [role.role_spec]))
    for index, task_id in enumerate(team.completed_tasks):
        problem = _id_problem(_SESSION, f"$.completed_tasks[{index}]", task_id)
        if problem is not None:
            problems.append(problem)
    return problems


def stored_bad_ids(folder: Path) -> list[str]:
    """Task ids in the session's state database that are outside the grammar (a store an
    older version filled from a hostile task-analysis.json); [] when there is no store."""
    reader = StoreReader.open(Path(folder))
    if reader is None:
        return []
    try:
        return [row.id for row in reader.tasks() if not is_task_id(row.id)]
    finally:
        reader.close()


def path_field_problems(file: str, field: str, values: Iterable[object]) -> list[Problem]:
    """A path field whose value cannot be a path (NUL, control characters, absurd length)."""
    return _paths(file, field, values)


def _paths(file: str, field: str, values: Iterable[object]) -> list[Problem]:
    problems: list[Problem] = []
    for index, value in enumerate(values):
        reason = path_text_problem(value) if isinstance(value, str) else None
        if reason is not None:
            where = field if field.endswith("role_spec") else f"{field}[{index}]"
            problems.append(
                Problem(
                    file=file,
                    field=where,
                    message=reason,
                    fix="write a plain relative path inside the session folder, e.g. artifacts/PLAN-001-plan.md",
                )
            )
    return problems
