"""Build session folders on disk for tests and benchmarks (real files, both shapes)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
DEMO = REPO / "examples" / "demo"

PHASES = "\n## Phase 2: Work\nDo it.\n\n## Phase 3: Check\nCheck it.\n\n## Phase 4: Report\nSay it.\n"


def role_spec_text(role: str, prefix: str, inner_loop: bool = False, extra: str = "") -> str:
    return (
        f"---\nrole: {role}\nprefix: {prefix}\ninner_loop: {str(inner_loop).lower()}\n"
        f"message_types:\n  success: {role}_complete\n  error: error\n{extra}---\n# {role}\n{PHASES}"
    )


def write_session(
    folder: Path,
    roles: dict[str, str],
    graph: dict[str, Any],
    *,
    shape: str = "b",
    inner_loop: frozenset[str] = frozenset(),
    role_extra: dict[str, str] | None = None,
    team_extra: dict[str, Any] | None = None,
    analysis_extra: dict[str, Any] | None = None,
    capabilities: list[dict[str, Any]] | None = None,
) -> Path:
    """``roles`` maps role name -> prefix; ``graph`` is written as given."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "role-specs").mkdir(exist_ok=True)
    for sub in ("artifacts", "wisdom", ".msg"):
        (folder / sub).mkdir(exist_ok=True)
    for role, prefix in roles.items():
        (folder / "role-specs" / f"{role}.md").write_text(
            role_spec_text(role, prefix, role in inner_loop, (role_extra or {}).get(role, ""))
        )
    team = {
        "session_id": f"TC-{folder.name}",
        "task_description": "test session",
        "status": "active",
        "team_name": "test",
        "roles": [
            {"name": r, "prefix": p, "role_spec": f"role-specs/{r}.md", "inner_loop": r in inner_loop}
            for r, p in roles.items()
        ],
        "completed_tasks": [],
        "completion_action": "auto_keep",
        **(team_extra or {}),
    }
    if shape == "a":
        caps = capabilities or [{"name": r, "description": f"{r} work", "artifact_type": "md"} for r in roles]
    else:
        caps = capabilities or [{"name": r, "prefix": p, "tasks": []} for r, p in roles.items()]
    analysis = {
        "capabilities": caps,
        "dependency_graph": graph,
        "roles": [{"name": r, "prefix": p, "role_spec_metadata": {}} for r, p in roles.items()],
        "complexity_score": 1,
        **(analysis_extra or {}),
    }
    (folder / "team-session.json").write_text(json.dumps(team, indent=1))
    (folder / "task-analysis.json").write_text(json.dumps(analysis, indent=1))
    return folder


def chain_session(folder: Path, ids: list[str], roles: dict[str, str] | None = None, **kwargs: Any) -> Path:
    """A serial chain ids[0] -> ids[1] -> ... in shape (b)."""
    roles = roles or {"worker": ids[0].rsplit("-", 1)[0]}
    graph = {task_id: ([ids[i - 1]] if i else []) for i, task_id in enumerate(ids)}
    return write_session(folder, roles, graph, **kwargs)


def layered_session(folder: Path, layers: int, width: int, fan_in: int = 2, **kwargs: Any) -> Path:
    """``layers`` x ``width`` tasks, each blocked by ``fan_in`` tasks of the layer before."""
    graph: dict[str, list[str]] = {}
    for layer in range(layers):
        for index in range(width):
            task_id = f"T-{layer * width + index + 1:06d}"
            deps = []
            if layer:
                deps = [f"T-{(layer - 1) * width + (index + k) % width + 1:06d}" for k in range(fan_in)]
            graph[task_id] = deps
    return write_session(folder, {"worker": "T"}, graph, **kwargs)


def copy_demo(target: Path) -> Path:
    shutil.copytree(DEMO, target)
    return target


def edit_json(path: Path, change: Any) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data, indent=1))


AGENT_SCRIPT = Path(__file__).resolve().parent / "agent_script.py"


def command_role_extra(python: str) -> str:
    """Role-spec lines that run tests/agent_script.py through the `command` backend."""
    return f'backend: command\ncommand: ["{python}", "{AGENT_SCRIPT}", "{{task_id}}"]\n'


def scripted_session(
    folder: Path,
    graph: dict[str, list[str]],
    behaviors: dict[str, Any],
    *,
    python: str,
    roles: dict[str, str] | None = None,
    inner_loop: frozenset[str] = frozenset(),
    **kwargs: Any,
) -> Path:
    """A session whose every role runs the scripted agent; ``behaviors`` per task id."""
    roles = roles or {"worker": next(iter(graph)).rsplit("-", 1)[0]}
    extra = command_role_extra(python)
    write_session(folder, roles, graph, role_extra=dict.fromkeys(roles, extra), inner_loop=inner_loop, **kwargs)
    (folder / "behaviors.json").write_text(json.dumps(behaviors))
    return folder
