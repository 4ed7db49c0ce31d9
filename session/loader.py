"""Load a session folder, or say everything that is wrong with it.

:func:`inspect_session` never raises for bad content: every problem (missing or
unparseable files, wrong values, missing role-specs, unknown owners, unknown
dependencies, cycles, duplicates) comes back as a :class:`Problem`.
:func:`load_session` raises :class:`SessionInvalid` with all of them instead.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from session.graph import TaskSpec, derive_tasks
from session.id_checks import analysis_id_problems, session_id_problems
from session.models import RoleEntry, TaskAnalysisFile, TeamSessionFile
from session.problems import Problem, SessionInvalid
from session.rolespec import RoleSpec, parse_role_spec
from session.safepath import is_private, path_text_problem

__all__ = [
    "ANALYSIS_FILE",
    "SESSION_FILE",
    "TeamSession",
    "inspect_session",
    "json_path",
    "load_session",
    "read_json_file",
]

SESSION_FILE = "team-session.json"
ANALYSIS_FILE = "task-analysis.json"
MAX_JSON_BYTES = 64 << 20


@dataclass
class TeamSession:
    """A session folder that loaded without errors."""

    folder: Path
    team: TeamSessionFile
    team_raw: dict[str, Any]  # as read, unknown keys included; the projection starts here
    analysis: TaskAnalysisFile
    roles: dict[str, RoleEntry]
    role_specs: dict[str, RoleSpec]
    tasks: list[TaskSpec]
    warnings: list[Problem] = field(default_factory=list)

    @property
    def session_id(self) -> str:
        return self.team.session_id

    def task(self, task_id: str) -> TaskSpec:
        return self._index[task_id]

    def __post_init__(self) -> None:
        self._index = {task.id: task for task in self.tasks}


def json_path(loc: tuple[int | str, ...]) -> str:
    """Pydantic's ``("roles", 1, "name")`` -> ``$.roles[1].name``."""
    text = "$"
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else f".{part}"
    return text


def _fix_value(name: str) -> str:
    return f"correct the value of '{name}'"


_FIX_BY_ERROR_TYPE: dict[str, Callable[[str], str]] = {
    "missing": lambda name: f"add the required field '{name}'",
    "literal_error": lambda name: f"set '{name}' to one of the allowed values",
    "too_short": lambda name: f"'{name}' must not be empty",
    "string_too_short": lambda name: f"'{name}' must not be empty",
}


def _pydantic_problems(file: str, error: ValidationError) -> list[Problem]:
    problems = []
    for item in error.errors():
        loc = tuple(item["loc"])
        name = str(loc[-1]) if loc else "value"
        fix = _FIX_BY_ERROR_TYPE.get(item["type"], _fix_value)(name)
        problems.append(Problem(file=file, field=json_path(loc), message=item["msg"], fix=fix))
    return problems


def read_json_file(path: Path, display: str, duplicates: list[str] | None = None) -> tuple[Any, list[Problem]]:
    """Parse a JSON file; keys seen twice in one object are appended to ``duplicates``."""

    def pairs_hook(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        result: dict[str, Any] = {}
        for key, value in pairs:
            if key in result and duplicates is not None:
                duplicates.append(key)
            result[key] = value
        return result

    try:
        size = path.stat().st_size
        if size > MAX_JSON_BYTES:
            return None, [
                Problem(
                    file=display,
                    message=f"file is {size >> 20} MiB, over the {MAX_JSON_BYTES >> 20} MiB limit",
                    fix="this is not a session file the coordinator writes; restore it",
                )
            ]
        text = path.read_bytes().decode("utf-8-sig")
        return json.loads(text, object_pairs_hook=pairs_hook), []
    except FileNotFoundError:
        return None, [
            Problem(
                file=display,
                message="file not found",
                fix="point --session at a team session folder, or create one with `executor init`",
            )
        ]
    except IsADirectoryError:
        return None, [Problem(file=display, message="is a directory, not a file", fix="replace it with the JSON file")]
    except UnicodeDecodeError as error:
        return None, [
            Problem(
                file=display,
                message=f"not UTF-8 text ({error.reason} at byte {error.start})",
                fix="save the file as UTF-8 JSON",
            )
        ]
    except json.JSONDecodeError as error:
        return None, [
            Problem(
                file=display,
                message=f"not valid JSON: {error.msg} at line {error.lineno} column {error.colno}",
                fix="repair the JSON (a truncated write? restore it from the coordinator's output)",
            )
        ]
    except RecursionError:
        return None, [
            Problem(
                file=display,
                message="JSON is nested too deeply to read",
                fix="restore the file; session files are a few levels deep",
            )
        ]
    except OSError as error:
        return None, [
            Problem(file=display, message=f"cannot read: {error.strerror}", fix="check the file's permissions")
        ]


def _validate_model(model: type[BaseModel], data: Any, file: str) -> tuple[Any, list[Problem]]:
    if not isinstance(data, dict):
        return None, [
            Problem(
                file=file,
                field="$",
                message=f"must be a JSON object, got {type(data).__name__}",
                fix="the file must hold one JSON object { ... }",
            )
        ]
    try:
        return model.model_validate(data), []
    except ValidationError as error:
        return None, _pydantic_problems(file, error)


def _inside(folder: Path, relative: str) -> Path | None:
    if path_text_problem(relative) is not None:
        return None  # session_id_problems names it; it is no file to open
    try:
        candidate = (folder / relative).resolve()
        root = folder.resolve()
    except (OSError, RuntimeError, ValueError):
        return None
    return candidate if candidate == root or root in candidate.parents else None


def _check_roles(folder: Path, raw_roles: list[Any]) -> tuple[dict[str, RoleEntry], dict[str, RoleSpec], list[Problem]]:
    problems: list[Problem] = []
    roles: dict[str, RoleEntry] = {}
    specs: dict[str, RoleSpec] = {}
    prefixes: dict[str, str] = {}
    for index, raw in enumerate(raw_roles):
        if not isinstance(raw, dict):
            continue  # the model problems already say so
        try:
            entry = RoleEntry.model_validate(raw)
        except ValidationError:
            continue  # reported by the TeamSessionFile validation
        where = f"$.roles[{index}]"
        if entry.name in roles:
            problems.append(
                Problem(
                    file=SESSION_FILE,
                    field=f"{where}.name",
                    message=f"role '{entry.name}' is listed twice",
                    fix="remove the duplicate entry",
                )
            )
            continue
        if entry.prefix in prefixes:
            problems.append(
                Problem(
                    file=SESSION_FILE,
                    field=f"{where}.prefix",
                    message=f"prefix '{entry.prefix}' is used by roles '{prefixes[entry.prefix]}' and '{entry.name}'",
                    fix="give each role its own task-id prefix",
                )
            )
        prefixes.setdefault(entry.prefix, entry.name)
        roles[entry.name] = entry
        spec_path = _inside(folder, entry.role_spec)
        if spec_path is None and path_text_problem(entry.role_spec) is not None:
            continue  # session_id_problems says what is wrong with the text
        if spec_path is None:
            problems.append(
                Problem(
                    file=SESSION_FILE,
                    field=f"{where}.role_spec",
                    message=f"role-spec path '{entry.role_spec}' points outside the session folder",
                    fix=f"use a path inside the session, e.g. role-specs/{entry.name}.md",
                )
            )
            continue
        if is_private(folder, spec_path):
            problems.append(
                Problem(
                    file=SESSION_FILE,
                    field=f"{where}.role_spec",
                    message=f"role-spec path '{entry.role_spec}' points into the executor's private .executor/ folder",
                    fix=f"use a path inside the session, e.g. role-specs/{entry.name}.md",
                )
            )
            continue
        spec, spec_problems = parse_role_spec(spec_path, entry.role_spec)
        if spec_problems and spec_problems[0].message.startswith("Role-spec file not found"):
            problems.append(
                Problem(
                    file=SESSION_FILE,
                    field=f"{where}.role_spec",
                    message=f"Role-spec file not found: {entry.role_spec} (role '{entry.name}')",
                    fix=f"create {entry.role_spec} or correct roles[{index}].role_spec",
                )
            )
            continue
        problems.extend(spec_problems)
        if spec is None:
            continue
        if spec.meta.role != entry.name:
            problems.append(
                Problem(
                    file=entry.role_spec,
                    field="role",
                    message=f"role-spec says role '{spec.meta.role}' but team-session.json names it '{entry.name}'",
                    fix="make the two names agree",
                )
            )
        if spec.meta.prefix != entry.prefix:
            problems.append(
                Problem(
                    file=entry.role_spec,
                    field="prefix",
                    message=f"role-spec prefix '{spec.meta.prefix}' differs from team-session.json's '{entry.prefix}'",
                    fix="make the two prefixes agree",
                    severity="warning",
                )
            )
        specs[entry.name] = spec
    return roles, specs, problems


def _intake_role_problems(intake: object, roles: list[str]) -> list[Problem]:
    """``intake_role`` (who takes submitted tasks no role's words match) must name a role of the session."""
    if isinstance(intake, str) and intake in roles:
        return []
    return [
        Problem(
            file=SESSION_FILE,
            field="$.intake_role",
            message=f"intake_role {intake!r} is not a role of this session; "
            f"submitted tasks that match no role go to the first role ({roles[0]}) instead",
            fix="set it to one of: " + ", ".join(roles),
            severity="warning",
        )
    ]


def inspect_session(folder: Path) -> tuple[TeamSession | None, list[Problem]]:
    """Load ``folder``; return the session (when there are no errors) and every problem."""
    folder = Path(folder)
    if not folder.is_dir():
        what = "does not exist" if not folder.exists() else "is not a folder"
        return None, [
            Problem(
                file=str(folder),
                message=f"session folder {what}",
                fix="pass --session the path of a team session folder (it holds team-session.json)",
            )
        ]
    problems: list[Problem] = []

    team_raw, read_problems = read_json_file(folder / SESSION_FILE, SESSION_FILE)
    problems.extend(read_problems)
    team: TeamSessionFile | None = None
    raw_roles: list[Any] = []
    if team_raw is not None:
        roles_value = team_raw.get("roles") if isinstance(team_raw, dict) else None
        if isinstance(roles_value, list) and any(
            isinstance(r, dict) and "role_file" in r and "role_spec" not in r for r in roles_value
        ):
            problems.append(
                Problem(
                    file=SESSION_FILE,
                    field="$.roles[].role_file",
                    message="this is a v1 session (roles[].role_file and a roles/ folder); executor reads v2 sessions",
                    fix=(
                        "re-create the session with the current team-coordinate skill or `executor init`, "
                        "which write roles[].role_spec and role-specs/"
                    ),
                )
            )
            return None, problems
        team, model_problems = _validate_model(TeamSessionFile, team_raw, SESSION_FILE)
        problems.extend(model_problems)
        if team is not None:
            problems.extend(session_id_problems(team))
        raw_roles = roles_value if isinstance(roles_value, list) else []

    duplicate_keys: list[str] = []
    analysis_raw, read_problems = read_json_file(folder / ANALYSIS_FILE, ANALYSIS_FILE, duplicate_keys)
    problems.extend(read_problems)
    analysis: TaskAnalysisFile | None = None
    if analysis_raw is not None:
        analysis, model_problems = _validate_model(TaskAnalysisFile, analysis_raw, ANALYSIS_FILE)
        problems.extend(model_problems)
        if analysis is not None:
            problems.extend(analysis_id_problems(analysis))

    roles, specs, role_problems = _check_roles(folder, raw_roles)
    problems.extend(role_problems)
    if isinstance(team_raw, dict) and "intake_role" in team_raw and roles:
        problems.extend(_intake_role_problems(team_raw["intake_role"], list(roles)))

    tasks: list[TaskSpec] = []
    if analysis is not None and roles:
        graph_keys = set(analysis.dependency_graph)
        prefix_to_role: dict[str, str] = {}
        for name, entry in roles.items():
            prefix_to_role.setdefault(entry.prefix, name)
            if name in specs:
                for extra in specs[name].meta.additional_prefixes:
                    prefix_to_role.setdefault(extra, name)
        tasks, graph_problems = derive_tasks(
            analysis, roles, prefix_to_role, [k for k in dict.fromkeys(duplicate_keys) if k in graph_keys]
        )
        problems.extend(graph_problems)
        if not tasks:
            problems.append(
                Problem(
                    file=ANALYSIS_FILE,
                    field="$.dependency_graph",
                    message="the session defines no tasks",
                    fix="list the tasks in dependency_graph (or capabilities[].tasks[])",
                )
            )
        if team is not None:
            known = {task.id for task in tasks}
            for index, task_id in enumerate(team.completed_tasks):
                if task_id not in known:
                    problems.append(
                        Problem(
                            file=SESSION_FILE,
                            field=f"$.completed_tasks[{index}]",
                            message=f"completed task {task_id} is not in task-analysis.json",
                            fix="remove it, or restore the task in task-analysis.json",
                            severity="warning",
                        )
                    )

    errors = [p for p in problems if p.severity == "error"]
    if errors or team is None or analysis is None or team_raw is None:
        return None, problems
    session = TeamSession(
        folder=folder,
        team=team,
        team_raw=team_raw,
        analysis=analysis,
        roles=roles,
        role_specs=specs,
        tasks=tasks,
        warnings=problems,
    )
    return session, problems


def load_session(folder: Path) -> TeamSession:
    session, problems = inspect_session(folder)
    if session is None:
        raise SessionInvalid(str(folder), problems)
    return session
