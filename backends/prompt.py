"""The prompt a worker gets: role-spec phases, skills, the task, upstream artifacts, wisdom, feedback.

DESIGN.md section 4: the prompt carries the context forward so nobody copies and
pastes between agents.  :func:`task_description` renders the upstream
line-oriented task description (``PURPOSE: ... | Success: ...``, ``TASK:``,
``CONTEXT:``, ``EXPECTED:``, ``CONSTRAINTS:``, ``---``, ``InnerLoop:``,
``RoleSpec:``); :func:`build_prompt` wraps it into one Markdown document.

Both are pure functions of the session folder on disk and their arguments: file
lists are sorted and nothing depends on the clock, so the same inputs give the
same prompt byte for byte.  Files are read only inside the session folder.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from backends.conventions import (
    DEPENDS_ON_LABEL,
    DESCRIPTION_HEADING,
    ENV_REPORT,
    PROGRESS_TYPE,
    STATUS_LINES,
    UNBLOCKS_LABEL,
    belongs_to_task,
    default_artifact_path,
    relative_inside,
    task_artifact_files,
)
from backends.folder_listing import listing
from protocol.messages import WorkOrder
from session.graph import TaskSpec
from session.loader import TeamSession
from session.safepath import is_private
from session.skills import Skill

__all__ = ["bridge_note", "build_prompt", "expected_artifact", "task_description"]

_NOT_INLINED = "(not inlined: over the size budget)"
_FENCE_INFO = {".md": "markdown", ".py": "python", ".json": "json", ".yaml": "yaml", ".yml": "yaml", ".txt": "text"}
_BACKTICK_RUN = re.compile(r"`{3,}")
_FENCE_LINE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
_ATX_HEADING = re.compile(r"^ {0,3}(#{1,6})(?=[ \t]|$)")


def _one_line(text: str) -> str:
    """Collapse whitespace and newlines: the upstream description is line-oriented."""
    return " ".join(str(text).split())


def _comma_list(items: tuple[str, ...] | list[str]) -> str:
    cleaned = [_one_line(item) for item in items if _one_line(item)]
    return ", ".join(cleaned) if cleaned else "none"


def _declared_artifacts(session: TeamSession) -> list[str]:
    """Artifact paths task-analysis.json declares (``capabilities[].artifacts``, ``artifacts[]``)."""
    declared: list[Any] = []
    for capability in session.analysis.capabilities:
        value = (capability.model_extra or {}).get("artifacts")
        if isinstance(value, list):
            declared.extend(value)
    value = (session.analysis.model_extra or {}).get("artifacts")
    if isinstance(value, list):
        declared.extend(value)
    paths: list[str] = []
    for item in declared:
        path = item.get("path") or item.get("name") if isinstance(item, dict) else item
        if isinstance(path, str) and path.strip():
            paths.append(path.strip())
    return paths


def expected_artifact(session: TeamSession, task: TaskSpec) -> str:
    """The artifact ``task`` should write, relative to the session folder.

    The one task-analysis.json declares for this task id, if any (``artifacts/`` is
    prefixed to a bare file name); else ``artifacts/<TASK-ID>-<slug>.md`` with the
    slug named by the owner role (``backends.conventions.artifact_slug``).
    """
    for declared in _declared_artifacts(session):
        path = PurePosixPath(declared)
        if path.is_absolute() or ".." in path.parts or not belongs_to_task(path.name, task.id):
            continue
        return declared if path.parts[0] == "artifacts" else f"artifacts/{path.name}"
    return default_artifact_path(task.id, task.owner)


@functools.lru_cache(maxsize=64)
def _resolved(folder: Path) -> Path:
    """``folder`` resolved, once per process: every prompt names the session folder, and
    resolving it is a system call per component (two resolutions were a tenth of the system
    calls of a worker's attempt, each a GIL hand-off).  The session folder is the one the run
    was started on; a link swapped into its path later is not followed."""
    return folder.resolve()


def _role_spec_path(session: TeamSession, task: TaskSpec) -> str:
    entry = session.roles.get(task.owner)
    relative = entry.role_spec if entry is not None else f"role-specs/{task.owner}.md"
    return str(_resolved(session.folder) / relative)


def _inner_loop(session: TeamSession, task: TaskSpec) -> bool:
    spec = session.role_specs.get(task.owner)
    if spec is not None:
        return spec.meta.inner_loop
    entry = session.roles.get(task.owner)
    return bool(entry and entry.inner_loop)


def task_description(session: TeamSession, task: TaskSpec) -> str:
    """The task as the upstream coordinator describes it, one field per line."""
    goal = _one_line(task.goal) or f"Do task {task.id} for role {task.owner} (task-analysis.json gives no goal)"
    success = _one_line(task.success_criteria) or f"{expected_artifact(session, task)} is written and complete"
    steps = [_one_line(step) for step in task.steps if _one_line(step)] or ["(no steps given)"]
    lines = [
        f"PURPOSE: {goal} | Success: {success}",
        "TASK:",
        *(f"  - {step}" for step in steps),
        "CONTEXT:",
        f"  - Session: {_resolved(session.folder)}",
        f"  - Upstream artifacts: {_comma_list(task.upstream_artifacts)}",
        f"  - Key files: {_comma_list(task.key_files)}",
        f"EXPECTED: {expected_artifact(session, task)}",
        f"CONSTRAINTS: {_one_line(task.constraints) or 'none'}",
        "---",
        f"InnerLoop: {'true' if _inner_loop(session, task) else 'false'}",
        f"RoleSpec: {_role_spec_path(session, task)}",
    ]
    return "\n".join(lines)


# --------------------------------------------------------------------------- file sections


@dataclass
class _Budget:
    left: int


def _fence(text: str, info: str = "") -> str:
    """Fence ``text`` with more backticks than any run inside it, so it cannot break out."""
    longest = max((len(run) for run in _BACKTICK_RUN.findall(text)), default=2)
    ticks = "`" * max(3, longest + 1)
    body = text if text.endswith("\n") or not text else text + "\n"
    return f"{ticks}{info}\n{body}{ticks}"


def _file_section(root: Path, relative: str, budget: _Budget) -> str:
    """``## <relative>`` and the file's content, or a line saying why it is not here."""
    path = root / relative
    heading = f"## {relative}"
    if relative_inside(root, path) is None:
        return f"{heading} (outside the session folder: not read)"
    if is_private(root, path):  # the resolved target: a link into .executor/ counts
        return f"{heading} (the executor's private state: not read)"
    try:
        size = path.stat().st_size
        if not path.is_file():
            return f"{heading} (not a file)"
    except FileNotFoundError:
        return f"{heading} (missing)\n\nExpected at {path}; it does not exist yet."
    except OSError as error:
        return f"{heading} (cannot be read: {error.strerror or error})"
    if size > budget.left:
        return f"{heading} {_NOT_INLINED}\n\nRead it from {path} ({size} bytes)."
    try:
        with path.open("rb") as handle:
            data = handle.read(budget.left + 1)
    except OSError as error:
        return f"{heading} (cannot be read: {error.strerror or error})"
    if len(data) > budget.left:  # it grew since stat()
        return f"{heading} {_NOT_INLINED}\n\nRead it from {path}."
    if b"\0" in data:
        return f"{heading} (not inlined: binary file)\n\nIt is at {path} ({size} bytes)."
    budget.left -= len(data)
    text = data.decode("utf-8", errors="replace")
    return f"{heading}\n\n{_fence(text, _FENCE_INFO.get(path.suffix.lower(), ''))}"


def _relative_name(root: Path, declared: str) -> str:
    """A declared upstream path as shown and read: relative to the session, ``/``-separated.

    A bare file name that is not in the session folder but is in ``artifacts/`` is
    taken to mean that one (upstream lists artifacts both ways).
    """
    text = declared.strip()
    path = Path(text)
    if path.is_absolute():
        return relative_inside(root, path) or text
    if len(path.parts) == 1 and not (root / text).exists() and (root / "artifacts" / text).exists():
        return f"artifacts/{text}"
    return PurePosixPath(text).as_posix()


def _upstream_paths(task: TaskSpec, root: Path) -> list[str]:
    names = {_relative_name(root, declared) for declared in task.upstream_artifacts if declared.strip()}
    artifacts = root / "artifacts"
    for dep in task.blocked_by:
        for path in task_artifact_files(artifacts, dep):
            names.add(path.relative_to(root).as_posix())
    return sorted(names)


def _wisdom_paths(root: Path) -> list[str]:
    """``wisdom/*.md`` that are files (a link counts by what it names), sorted.  From the
    folder's kept listing: a glob per prompt listed the folder again for every attempt."""
    folder = root / "wisdom"
    return [
        f"wisdom/{name}"
        for name, kind in listing(folder)
        if name.endswith(".md") and (kind == "file" or (kind == "other" and (folder / name).is_file()))
    ]


def _demote_headings(markdown: str, levels: int = 2) -> str:
    """Push every ATX heading outside code fences ``levels`` deeper (at most ``######``).

    A skill's ``# Title`` then sits under its ``## <name>`` in the prompt instead of
    reading as one of the prompt's own top-level sections.
    """
    lines = markdown.split("\n")
    fence = ""
    for index, line in enumerate(lines):
        if fence:
            closing = line.strip()
            if len(closing) >= len(fence) and closing == fence[0] * len(closing):
                fence = ""
            continue
        opening = _FENCE_LINE.match(line)
        if opening:
            fence = opening.group(1)
            continue
        heading = _ATX_HEADING.match(line)
        if heading:
            depth = min(6, len(heading.group(1)) + levels)
            lines[index] = "#" * depth + line[heading.end() :]
    return "\n".join(lines)


def _skill_section(skill: Skill, budget: _Budget) -> str:
    """``## <name>``, the description and the body, or the description and where to read the rest."""
    body = _demote_headings(skill.body) if skill.body else ""
    size = len(body.encode("utf-8"))
    if size > budget.left:
        return (
            f"## {skill.name} {_NOT_INLINED}\n\n{skill.description}\n\n"
            f"Read it from {skill.path} ({size} bytes) when it applies."
        )
    budget.left -= size
    return f"## {skill.name}\n\n{skill.description}" + (f"\n\n{body}" if body else "")


def _dependants(session: TeamSession, task: TaskSpec) -> list[str]:
    return sorted(other.id for other in session.tasks if task.id in other.blocked_by)


def dependants_index(tasks: Iterable[TaskSpec]) -> dict[str, list[str]]:
    """Task id -> the ids of the tasks blocked by it, in one pass over every dependency."""
    index: dict[str, list[str]] = {}
    for other in tasks:
        for needed in dict.fromkeys(other.blocked_by):
            index.setdefault(needed, []).append(other.id)
    return index


# --------------------------------------------------------------------------- the prompt


def build_prompt(
    session: TeamSession,
    task: TaskSpec,
    attempt: int,
    feedback: str = "",
    artifact_budget_bytes: int = 48_000,
    skills: Sequence[Skill] = (),
    unblocks: Sequence[str] | None = None,
) -> str:
    """The whole prompt for one attempt of ``task``, as Markdown.

    Sections, in order: a header (task, role, attempt, ``Depends on:``,
    ``Unblocks:``); the role-spec's ``## Phase N`` sections in phase order; when
    ``skills`` is not empty, a ``# Skills`` section with each skill's name,
    description and body (its headings pushed two levels down); the task
    description (:func:`task_description`); the upstream artifacts — every path in
    ``task.upstream_artifacts`` and every file under ``artifacts/`` that belongs
    to a task in ``task.blocked_by`` — then the ``wisdom/*.md`` files, each
    inlined in a fence.  Skill bodies, then artifacts, then wisdom share one
    budget: the total inlined bytes stay within ``artifact_budget_bytes``, and
    whatever does not fit is named with "(not inlined: over the size budget)" and
    its path (missing files are named as missing); ``feedback`` when non-empty; a
    note when ``attempt > 1``; the required final report format.

    ``unblocks``: the ids of the tasks that wait for this one, when the caller keeps them
    (:func:`dependants_index`); else they are found by a pass over every task, which a
    run that builds one prompt per task must not pay each time.
    """
    root = _resolved(session.folder)
    role = task.owner
    spec = session.role_specs.get(role)
    tag = (spec.meta.output_tag if spec is not None else None) or f"[{role}]"
    depends = list(task.blocked_by)
    unblocks = sorted(unblocks) if unblocks is not None else _dependants(session, task)
    budget = _Budget(left=max(0, artifact_budget_bytes))
    parts: list[str] = []

    parts.append(
        "\n".join(
            [
                f"# {task.id}: {_one_line(task.subject)}",
                "",
                f"You are the `{role}` worker of team `{session.team.team_name}` "
                f"(session `{session.session_id}`). Do task {task.id} as the role instructions say, "
                'then end with the report described under "Final report".',
                "",
                f"Task: {task.id}",
                f"Role: {role}",
                f"Attempt: {attempt}",
                f"{DEPENDS_ON_LABEL} {', '.join(depends) or 'none'}",
                f"{UNBLOCKS_LABEL} {', '.join(unblocks) or 'none'}",
            ]
        )
    )

    if spec is not None:
        phases = "\n\n".join(spec.phases[number] for number in sorted(spec.phases))
        parts.append(f"# Role instructions ({_role_spec_path(session, task)})\n\n{phases}")
    else:
        parts.append(f"# Role instructions\n\n(no role-spec was loaded for role `{role}`)")

    if skills:
        parts.append(
            "# Skills\n\nGuidance for the kind of work this task needs. Use each skill where it applies; "
            "the role instructions and the task come first where they disagree.\n\n"
            + "\n\n".join(_skill_section(skill, budget) for skill in skills)
        )

    parts.append(f"{DESCRIPTION_HEADING}\n\n{task_description(session, task)}")

    upstream = _upstream_paths(task, root)
    sections = [_file_section(root, relative, budget) for relative in upstream]
    parts.append(
        "# Upstream artifacts\n\n"
        + (
            "The outputs of earlier tasks, inlined while they fit the prompt's size budget; "
            "read the others from disk.\n\n" + "\n\n".join(sections)
            if sections
            else "(none)"
        )
    )

    wisdom = [_file_section(root, relative, budget) for relative in _wisdom_paths(root)]
    parts.append(
        "# Wisdom\n\n"
        + (
            "What the team has learned so far. Follow it, and append what you learn "
            "(one line each, with your task id).\n\n" + "\n\n".join(wisdom)
            if wisdom
            else "(none)"
        )
    )

    if feedback.strip():
        parts.append(
            "# Feedback from earlier attempts\n\n"
            "Address every point below, or say in your report why not.\n\n" + _fence(feedback.strip(), "text")
        )

    if attempt > 1:
        reason = (
            'see "Feedback from earlier attempts" above'
            if feedback.strip()
            else "the reasons were not recorded; check what they left in the artifacts folder"
        )
        parts.append(
            f"# Attempt {attempt}\n\nThis is attempt {attempt}; earlier attempts failed: {reason}. "
            "Files they wrote may already exist: fix and finish them rather than starting over."
        )

    unblocked = STATUS_LINES[0].format(tasks=", ".join(unblocks) or "<ids>")
    parts.append(
        "\n".join(
            [
                "# Final report",
                "",
                "End your output with this report (plain lines, no code fence):",
                "",
                f"    {tag} {task.id} complete: <one-line summary>",
                f"    Artifact: {expected_artifact(session, task)}",
                "    <a few lines: files changed, decisions, open issues>",
                "    <status line>",
                "",
                f"The first line starts with `{tag}`; on failure it is `{tag} {task.id} error: <reason>`.",
                "The last line is exactly one of:",
                "",
                f"- `{unblocked}`",
                f"- `{STATUS_LINES[1]}`",
                f"- `{STATUS_LINES[2]}`",
                "",
                f"You may also write a JSON report to the file named by ${ENV_REPORT}: "
                '`{"status": "completed" | "failed" | "consensus_blocked" | "capability_gap", '
                '"summary": "...", "artifacts": ["artifacts/..."], "files_modified": [...], '
                '"severity": "HIGH" | "MEDIUM" | "LOW", "detail": "..."}`, '
                f'and show progress with stdout lines like `{{"type": "{PROGRESS_TYPE}", "percent": 40, '
                '"note": "..."}`. A reviewer whose verdict is not a pass reports '
                '`{"status": "changes_requested", "reviewed_task": "<the task id you reviewed>", '
                '"feedback": [{"file": "...", "line": 12, "issue": "...", "suggestion": "..."}]}`: '
                "the work goes back to its author with your feedback, and your review runs again after it "
                "(a reviewer that cannot write files ends its final message with a line `verdict: "
                "changes_requested` followed by one `- ` line per item).",
            ]
        )
    )
    return "\n\n".join(parts) + "\n"


def bridge_note(order: WorkOrder) -> str:
    """What an agent connected to the executor's MCP bridge is told: its agent id and the tools
    that report back while it works (empty without ``order.bridge``).

    Appended by the agent-CLI backend to the prompt it sends, not written into the prompt
    file: the agent id is per attempt and authorises the reports.
    """
    if order.bridge is None:
        return ""
    server, task, agent = order.bridge.server_name, order.task_id, order.bridge.agent_id
    return "\n".join(
        [
            "",
            "# Reporting to the executor",
            "",
            f"Your agent id is `{agent}`. The MCP server `{server}` has tools to tell the executor how "
            f"task {task} goes while you work; each answers at once, then carry on:",
            "",
            "- `report_progress(task_id, pct, note, agent_id)`: pct is 0-100, note one short line.",
            "- `report_blocker(task_id, detail, severity, agent_id)`: what stops you; severity is "
            "`low`, `medium`, `high` or `critical` (high and critical ask the user).",
            "",
            f'Always pass task_id "{task}" and agent_id "{agent}".',
            "",
        ]
    )
