"""``executor init``: write a valid session folder from a built-in template.

A template names its roles (taken from the built-in role library) and its
tasks; the user's goal is woven into every task so the folder is ready to run.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from session.graph import id_prefix
from session.loader import ANALYSIS_FILE, SESSION_FILE
from session.resources import builtin_path
from session.rolespec import parse_role_spec

__all__ = ["TEMPLATES", "InitError", "Template", "TemplateTask", "init_session"]

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
    "qa": "validation",
    "reviewer": "review",
    "redteam": "review",
}


class InitError(Exception):
    """The session cannot be created as asked; the message says why and what to do."""


@dataclass(frozen=True)
class TemplateTask:
    id: str
    role: str
    goal: str  # "{goal}" is replaced by the user's goal
    steps: tuple[str, ...] = ()
    depends_on: tuple[str, ...] = ()
    priority: str = "P1"
    artifact: str = ""


@dataclass(frozen=True)
class Template:
    name: str
    description: str
    tasks: tuple[TemplateTask, ...]

    @property
    def roles(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(task.role for task in self.tasks))


TEMPLATES: dict[str, Template] = {
    template.name: template
    for template in (
        Template(
            name="pm-architect-coder-qa",
            description="plan, design, implement and test: the classic four-role pipeline",
            tasks=(
                TemplateTask(
                    id="PLAN-001",
                    role="pm",
                    goal="Write the plan for: {goal}",
                    steps=("Clarify scope and non-goals", "Split the work into milestones", "List acceptance criteria"),
                    priority="P0",
                    artifact="artifacts/PLAN-001-plan.md",
                ),
                TemplateTask(
                    id="ARCH-001",
                    role="architect",
                    goal="Design the solution for: {goal}",
                    steps=("Read the plan", "Choose modules and interfaces", "Record decisions and risks"),
                    depends_on=("PLAN-001",),
                    artifact="artifacts/ARCH-001-design.md",
                ),
                TemplateTask(
                    id="IMPL-001",
                    role="coder",
                    goal="Implement: {goal}",
                    steps=("Follow the design", "Write tests first", "Keep changes small and reviewed"),
                    depends_on=("ARCH-001",),
                    artifact="artifacts/IMPL-001-changes.md",
                ),
                TemplateTask(
                    id="QA-001",
                    role="qa",
                    goal="Verify the implementation of: {goal}",
                    steps=("Run the tests", "Check the acceptance criteria", "Report defects with reproductions"),
                    depends_on=("IMPL-001",),
                    artifact="artifacts/QA-001-report.md",
                ),
            ),
        ),
    )
}


def _slug(text: str) -> str:
    words = re.findall(r"[a-z0-9]+", text.lower())
    return "-".join(words)[:40].strip("-") or "session"


def _with_backend(role_spec_text: str, backend: str) -> str:
    lines = role_spec_text.split("\n")
    lines.insert(1, f"backend: {backend}")
    return "\n".join(lines)


def init_session(folder: Path, template_name: str, goal: str, backend: str | None = None) -> str:
    """Create the session folder; return its session id.  Raises :class:`InitError`."""
    template = TEMPLATES.get(template_name)
    if template is None:
        raise InitError(f"unknown template '{template_name}'; choose one of: {', '.join(sorted(TEMPLATES))}")
    if not goal.strip():
        raise InitError('the goal is empty; say what the team should do, e.g. executor init ... "Add login"')
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
                        dep_task.artifact for dep_task in template.tasks if dep_task.id in task.depends_on
                    ],
                    "success_criteria": f"{task.artifact} written and complete",
                    "constraints": "Stay within the session's scope",
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
            "parallel_tracks": 1,
            "serial_depth": len(template.tasks),
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
        if backend:
            text = _with_backend(text, backend)
        (folder / "role-specs" / f"{role}.md").write_text(text, encoding="utf-8")
    for name, text in _WISDOM_FILES.items():
        (folder / "wisdom" / name).write_text(text, encoding="utf-8")
    (folder / "explorations" / "cache-index.json").write_text('{"entries": []}\n', encoding="utf-8")
    (folder / ".msg" / "messages.jsonl").write_text("", encoding="utf-8")
    (folder / ".msg" / "meta.json").write_text('{"role_state": {}}\n', encoding="utf-8")
    (folder / SESSION_FILE).write_text(json.dumps(team_session, indent=2) + "\n", encoding="utf-8")
    (folder / ANALYSIS_FILE).write_text(json.dumps(analysis, indent=2) + "\n", encoding="utf-8")
    return session_id
