"""``executor init``: write a valid session folder from a built-in playbook.

A playbook (also called a template, the table is :mod:`session.playbooks`) is a
named collaboration pattern: its roles (taken from the built-in role library), its
tasks and their order, and the backend each role uses unless the user says
otherwise.  The user's goal is woven into every task so the folder is ready to run.
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection, Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from session.graph import id_prefix
from session.loader import ANALYSIS_FILE, SESSION_FILE
from session.playbooks import ROLE_FLAGS, InitError, Template, find_playbook
from session.resources import builtin_path
from session.rolespec import parse_role_spec

__all__ = [
    "init_session",
    "parse_role_backends",
    "resolve_backends",
]

_WISDOM_FILES = {
    "learnings.md": "# Learnings\n\nWhat the team learned while working on this session.\n",
    "decisions.md": "# Decisions\n\nDecisions taken, with their reasons.\n",
    "issues.md": "# Issues\n\nKnown problems and open risks.\n",
    "conventions.md": "# Conventions\n\nCoding and documentation conventions the team follows.\n",
}
_RESPONSIBILITY = {
    "pm": "planning",
    "architect": "design",
    "coder": "code-gen",
    "alt-coder": "code-gen",
    "qa": "validation",
    "reviewer": "review",
    "redteam": "review",
    # Not "review": the adjudicator applies the chosen implementation, so it needs to write.
    "adjudicator": "adjudication",
}


def parse_role_backends(values: Iterable[str]) -> dict[str, str]:
    """``["coder=codex", ...]`` (repeated ``--role-backend``) -> ``{"coder": "codex"}``.  Raises InitError."""
    parsed: dict[str, str] = {}
    for value in values:
        role, sep, backend = (part.strip() for part in value.partition("="))
        if not sep or not role or not backend:
            raise InitError(f"--role-backend '{value}' is not ROLE=BACKEND; e.g. --role-backend reviewer=gemini")
        if parsed.get(role, backend) != backend:
            raise InitError(f"--role-backend gives role '{role}' two backends ({parsed[role]}, {backend}); give one")
        parsed[role] = backend
    return parsed


def resolve_backends(
    template: Template,
    backend: str | None = None,
    role_flags: Mapping[str, str | None] | None = None,
    role_backends: Mapping[str, str] | None = None,
    *,
    known_backends: Collection[str],
) -> dict[str, str]:
    """The backend each role of ``template`` gets.  Raises :class:`InitError` naming the bad option.

    Precedence, weakest first: the playbook's defaults, ``backend`` (every role),
    ``role_flags`` (``{"writer": "claude", ...}``, see :data:`ROLE_FLAGS`), ``role_backends``
    (``{"alt-coder": "codex"}``).  A role without an entry keeps the run's choice.
    ``known_backends``: the names a role may get (``backends.registry.backend_names()``, passed
    in: session/ sits below backends/).
    """

    def _check_backend(option: str, name: str) -> None:
        if name not in known_backends:
            raise InitError(f"{option}: unknown backend '{name}'; choose one of: {', '.join(known_backends)}")

    roles = template.roles
    their_roles = f"playbook {template.name} has roles: {', '.join(roles)}"
    resolved = {role: name for role, name in template.default_backends.items() if role in roles}
    if backend is not None:
        _check_backend("--backend", backend)
        resolved = dict.fromkeys(roles, backend)
    for flag, name in (role_flags or {}).items():
        if name is None:
            continue
        targets = [role for role in ROLE_FLAGS[flag] if role in roles]
        if not targets:
            raise InitError(f"--{flag} {name}: no {'/'.join(ROLE_FLAGS[flag])} role to apply it to; {their_roles}")
        _check_backend(f"--{flag}", name)
        resolved.update(dict.fromkeys(targets, name))
    for role, name in (role_backends or {}).items():
        if role not in roles:
            raise InitError(f"--role-backend {role}={name}: no role '{role}'; {their_roles}")
        _check_backend(f"--role-backend {role}", name)
        resolved[role] = name
    return resolved


def _layers(template: Template) -> list[list[str]]:
    """The tasks by depth: each task one layer below its deepest dependency."""
    depth: dict[str, int] = {}
    for task in template.tasks:  # dependencies always come earlier in a template
        depth[task.id] = 1 + max((depth[dep] for dep in task.depends_on), default=-1)
    layers: list[list[str]] = [[] for _ in range(max(depth.values()) + 1)]
    for task_id, level in depth.items():
        layers[level].append(task_id)
    return layers


def _slug(text: str) -> str:
    words = re.findall(r"[a-z0-9]+", text.lower())
    return "-".join(words)[:40].strip("-") or "session"


def _with_backend(role_spec_text: str, backend: str) -> str:
    lines = role_spec_text.split("\n")
    lines.insert(1, f"backend: {backend}")
    return "\n".join(lines)


def init_session(
    folder: Path,
    template_name: str | Template,
    goal: str,
    backend: str | None = None,
    *,
    role_flags: Mapping[str, str | None] | None = None,
    role_backends: Mapping[str, str] | None = None,
    known_backends: Collection[str],
) -> str:
    """Create the session folder; return its session id.  Raises :class:`InitError`.

    ``template_name`` is a playbook name (or alias) or a :class:`Template`; ``backend``,
    ``role_flags`` and ``role_backends`` choose each role's backend among ``known_backends``
    (see :func:`resolve_backends`).
    """
    template = template_name if isinstance(template_name, Template) else find_playbook(template_name, noun="template")
    if not goal.strip():
        raise InitError('the goal is empty; say what the team should do, e.g. executor init ... "Add login"')
    backends = resolve_backends(template, backend, role_flags, role_backends, known_backends=known_backends)
    folder = Path(folder)
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise InitError(f"{folder} already exists and is not empty; choose a new --session path")

    library = builtin_path("role-specs")
    specs = {}
    for role in template.roles:
        spec, problems = parse_role_spec(library / f"{role}.md", f"{role}.md")
        if spec is None:  # a packaging defect, not a user error
            raise InitError(f"built-in role-spec {role}.md is invalid: {problems[0]}; reinstall team-executor")
        specs[role] = spec

    now = datetime.now(UTC)
    session_id = f"TC-{_slug(goal)}-{now.date().isoformat()}"
    graph = {task.id: list(task.depends_on) for task in template.tasks}
    layers = _layers(template)
    roles: list[dict[str, Any]] = [
        {
            "name": role,
            "prefix": specs[role].meta.prefix,
            "role_spec": f"role-specs/{role}.md",
            "responsibility_type": _RESPONSIBILITY.get(role, "general"),
            "inner_loop": specs[role].meta.inner_loop,
        }
        for role in template.roles
    ]
    team_session = {
        "session_id": session_id,
        "task_description": goal,
        "status": "active",
        "team_name": template.name,
        "roles": roles,
        "pipeline": {"dependency_graph": graph, "tasks_total": len(template.tasks), "tasks_completed": 0},
        "active_workers": [],
        "completed_tasks": [],
        "completion_action": "interactive",
        "created_at": now.isoformat(timespec="seconds"),
    }
    capabilities = [
        {
            "name": role,
            "prefix": specs[role].meta.prefix,
            "responsibility_type": _RESPONSIBILITY.get(role, "general"),
            "tasks": [
                {
                    "id": task.id,
                    "goal": task.goal.format(goal=goal),
                    "steps": list(task.steps),
                    "key_files": [],
                    "upstream_artifacts": [
                        other.artifact for other in template.tasks if other.id in (*task.depends_on, *task.reads)
                    ],
                    "success_criteria": task.success or f"{task.artifact} written and complete",
                    "constraints": task.constraints,
                    "priority": task.priority,
                }
                for task in template.tasks
                if task.role == role
            ],
            "artifacts": [task.artifact for task in template.tasks if task.role == role],
        }
        for role in template.roles
    ]
    analysis = {
        "task_description": goal,
        "capabilities": capabilities,
        "dependency_graph": graph,
        "roles": [
            {
                "name": role,
                "prefix": specs[role].meta.prefix,
                "task_count": sum(1 for task in template.tasks if task.role == role),
                "inner_loop": specs[role].meta.inner_loop,
                "role_spec_metadata": {"source": "built-in", "template": template.name},
            }
            for role in template.roles
        ],
        "complexity": {
            "capability_count": len(template.roles),
            "cross_domain_factor": 1,
            "parallel_tracks": max(len(layer) for layer in layers),
            "serial_depth": len(layers),
            "total_score": len(template.tasks),
            "level": "low",
        },
        "needs_research": False,
        "artifacts": [
            {"name": Path(task.artifact).name, "producer": task.role, "path": task.artifact} for task in template.tasks
        ],
    }
    assert all(id_prefix(task.id) == specs[task.role].meta.prefix for task in template.tasks)  # noqa: S101

    (folder / "role-specs").mkdir(parents=True, exist_ok=True)
    for sub in ("artifacts", "wisdom", "discussions", "explorations", ".msg"):
        (folder / sub).mkdir(exist_ok=True)
    for role in template.roles:
        text = (library / f"{role}.md").read_text(encoding="utf-8")
        if role in backends:
            text = _with_backend(text, backends[role])
        for line in reversed(template.role_settings.get(role, ())):
            lines = text.split("\n")
            lines.insert(1, line)
            text = "\n".join(lines)
        (folder / "role-specs" / f"{role}.md").write_text(text, encoding="utf-8")
    for name, text in _WISDOM_FILES.items():
        (folder / "wisdom" / name).write_text(text, encoding="utf-8")
    (folder / "explorations" / "cache-index.json").write_text('{"entries": []}\n', encoding="utf-8")
    (folder / ".msg" / "messages.jsonl").write_text("", encoding="utf-8")
    (folder / ".msg" / "meta.json").write_text('{"role_state": {}}\n', encoding="utf-8")
    (folder / SESSION_FILE).write_text(json.dumps(team_session, indent=2) + "\n", encoding="utf-8")
    (folder / ANALYSIS_FILE).write_text(json.dumps(analysis, indent=2) + "\n", encoding="utf-8")
    return session_id
