"""What the executor and its workers agree on: names, labels, artifact naming.

Standard library only, and nothing heavy at import time: the built-in demo agent
(``python -m backends.demo_agent``) imports this module in every worker process,
and must start in a few milliseconds.

- Environment: every worker process gets the ``ENV_*`` variables below (on top of
  the allowlisted parent environment).
- Progress: a stdout line holding ``{"type": "progress", "percent": 40, "note": "..."}``.
- Report: a JSON object written to ``$TEAM_EXECUTOR_REPORT`` (see ``backends.base``).
- Artifacts: ``artifacts/<TASK-ID>-<slug>.md`` in the session folder, the slug named
  by the role (:func:`artifact_slug`); a file (or folder) under ``artifacts/`` belongs
  to a task when its name starts with the task id (:func:`belongs_to_task`).
"""

from __future__ import annotations

import bisect
import os
from pathlib import Path

from backends.folder_listing import listing
from protocol.messages import WorkOrder

__all__ = [
    "DEFAULT_ARTIFACT_SLUG",
    "DEPENDS_ON_LABEL",
    "DESCRIPTION_HEADING",
    "ENV_AGENT_ID",
    "ENV_ARTIFACTS",
    "ENV_ATTEMPT",
    "ENV_MARKER",
    "ENV_MCP_TOKEN",
    "ENV_MCP_URL",
    "ENV_MODEL",
    "ENV_PROMPT_FILE",
    "ENV_REPORT",
    "ENV_ROLE",
    "ENV_SESSION",
    "ENV_TASK_ID",
    "PROGRESS_TYPE",
    "REPORT_STATUSES",
    "ROLE_ARTIFACT_SLUGS",
    "STATUS_LINES",
    "UNBLOCKS_LABEL",
    "artifact_slug",
    "belongs_to_task",
    "default_artifact_path",
    "relative_inside",
    "task_artifact_files",
]

ENV_TASK_ID = "TEAM_EXECUTOR_TASK_ID"
ENV_ATTEMPT = "TEAM_EXECUTOR_ATTEMPT"
ENV_ROLE = "TEAM_EXECUTOR_ROLE"
ENV_SESSION = "TEAM_EXECUTOR_SESSION"  # absolute path of the session folder
ENV_ARTIFACTS = "TEAM_EXECUTOR_ARTIFACTS"  # absolute path of <session>/artifacts
ENV_PROMPT_FILE = "TEAM_EXECUTOR_PROMPT_FILE"
ENV_REPORT = "TEAM_EXECUTOR_REPORT"  # where the worker may write its JSON report
ENV_MARKER = "TEAM_EXECUTOR_MARKER"  # finds orphaned workers after a crash
ENV_MODEL = "TEAM_EXECUTOR_MODEL"  # only set when the work order names a model
# Only set when the run serves the MCP bridge: where to report, with which token, as whom.
ENV_MCP_URL = "TEAM_EXECUTOR_MCP_URL"
ENV_MCP_TOKEN = "TEAM_EXECUTOR_MCP_TOKEN"  # noqa: S105 - the variable's name, not a secret
ENV_AGENT_ID = "TEAM_EXECUTOR_AGENT_ID"
#: Read by the executor (not the agent): seconds each demo task takes, so people can watch a run.
ENV_DEMO_PACE = "TEAM_EXECUTOR_DEMO_PACE_S"

PROGRESS_TYPE = "progress"
#: ``changes_requested`` is a reviewer's verdict: its ``feedback`` items go back to the work it reviewed.
REPORT_STATUSES = ("completed", "failed", "consensus_blocked", "capability_gap", "changes_requested")

#: The three lines a worker's final report may end with (upstream wording).
STATUS_LINES = (
    "Tasks unblocked: {tasks}. Ready for next stage.",
    "All my tasks done. Other tasks still running.",
    "All my tasks done. Pipeline may be complete.",
)

#: Prompt landmarks the demo agent reads back (see ``backends.prompt``).
DESCRIPTION_HEADING = "# Task description"
DEPENDS_ON_LABEL = "Depends on:"
UNBLOCKS_LABEL = "Unblocks:"

ROLE_ARTIFACT_SLUGS: dict[str, str] = {
    "pm": "plan",
    "architect": "design",
    "coder": "impl",
    "qa": "test-report",
    "reviewer": "review",
    "redteam": "redteam-report",
}
DEFAULT_ARTIFACT_SLUG = "output"

#: Discovery stops after this many files: a runaway agent must not make it slow.
_MAX_DISCOVERED_FILES = 1000


def artifact_slug(role: str) -> str:
    """``"architect"`` -> ``"design"``; a role without a known slug gets ``"output"``."""
    return ROLE_ARTIFACT_SLUGS.get(role, DEFAULT_ARTIFACT_SLUG)


def default_artifact_path(task_id: str, role: str) -> str:
    """``artifacts/ARCH-001-design.md``: relative to the session folder, ``/``-separated."""
    return f"artifacts/{task_id}-{artifact_slug(role)}.md"


def belongs_to_task(name: str, task_id: str) -> bool:
    """True if a file name starts with ``task_id`` followed by a non-alphanumeric character.

    ``IMPL-001-impl.md`` and ``IMPL-001.md`` belong to ``IMPL-001``; ``IMPL-0010-x.md``
    does not.
    """
    if not task_id or not name.startswith(task_id):
        return False
    rest = name[len(task_id) :]
    return not rest or not rest[0].isalnum()


def relative_inside(root: Path, path: Path) -> str | None:
    """``path`` relative to ``root`` (``/``-separated) if it lies strictly inside ``root``, else None.

    Both are resolved first (symbolic links followed), so ``..`` or a link cannot
    lead out.  A relative ``path`` is taken relative to ``root``.
    """
    try:
        base = root.resolve()
        resolved = (base / path).resolve()
    except (OSError, RuntimeError, ValueError):
        return None
    if resolved == base or not resolved.is_relative_to(base):
        return None
    return resolved.relative_to(base).as_posix()


def dirs_outside_workdir(order: WorkOrder) -> tuple[str, ...]:
    """The session's ``artifacts/`` when the agent works elsewhere (a task's worktree, or a
    ``--workdir`` that does not hold the session): an agent CLI must be told it may use it,
    or it cannot write the artifact it is asked for (sandboxes keep to the working directory).
    Never ``.executor/``: that stays out of every agent's reach."""
    artifacts = Path(order.artifacts_dir)
    workdir = Path(order.workdir).resolve()
    try:
        resolved = artifacts.resolve()
    except (OSError, RuntimeError):
        return ()
    if resolved == workdir or resolved.is_relative_to(workdir):
        return ()
    resolved.mkdir(parents=True, exist_ok=True)
    return (str(resolved),)


def task_artifact_files(artifacts_dir: Path, task_id: str) -> list[Path]:
    """The files under ``artifacts_dir`` that belong to ``task_id``, sorted.

    A top-level file whose name belongs to the task counts, and so does every file
    inside a top-level folder whose name does. Symbolic links are skipped (an agent
    must not be able to point the executor at files outside the session). A missing
    folder gives ``[]``; at most 1000 files are returned.
    """
    found: list[Path] = []
    if not task_id:
        return found
    entries = listing(artifacts_dir)  # kept current, not listed again per question
    # The listing is sorted and every name that belongs to the task starts with its id: look
    # there, not at every entry (a prompt asks once per dependency; over a run of N tasks each
    # with an artifact, a pass over the listing per ask was quadratic).
    index = bisect.bisect_left(entries, (task_id, ""))
    while index < len(entries) and entries[index][0].startswith(task_id):
        name, kind = entries[index]
        index += 1
        if not belongs_to_task(name, task_id):
            continue
        path = os.path.join(artifacts_dir, name)
        if kind == "file":
            found.append(Path(path))
        elif kind == "dir":
            for root, dirs, files in os.walk(path):
                dirs.sort()
                found.extend(Path(root, name) for name in sorted(files) if not Path(root, name).is_symlink())
                if len(found) >= _MAX_DISCOVERED_FILES:
                    break
        if len(found) >= _MAX_DISCOVERED_FILES:
            break
    return found[:_MAX_DISCOVERED_FILES]
