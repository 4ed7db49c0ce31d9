"""Pydantic models of the JSON files in a session folder.

Every model keeps unknown keys (``extra="allow"``): folders written by the
team-coordinate workflow must load unchanged, and keys we do not know today are
written back untouched when we project team-session.json.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, cast

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from protocol.types import PRIORITIES, Priority

__all__ = [
    "AnalysisCapability",
    "CapabilityTask",
    "GraphEntry",
    "PipelineInfo",
    "RoleEntry",
    "TaskAnalysisFile",
    "TeamSessionFile",
    "normalize_priority",
]

SessionStatus = Literal["active", "paused", "completed"]
CompletionAction = Literal["interactive", "auto_archive", "auto_keep"]


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)


def normalize_priority(value: object) -> Priority | None:
    """``"p0"``, ``"P0"`` -> ``"P0"``; anything else that is not a priority raises."""
    if value is None:
        return None
    text = str(value).strip().upper()
    if text not in PRIORITIES:
        raise ValueError(f"priority must be one of {', '.join(PRIORITIES)}, got {value!r}")
    return cast(Priority, text)  # checked against PRIORITIES just above


PriorityField = Annotated[Priority | None, BeforeValidator(normalize_priority)]


class RoleEntry(_Open):
    name: str = Field(min_length=1)
    prefix: str = Field(min_length=1)
    role_spec: str = Field(min_length=1)
    responsibility_type: str | None = None
    inner_loop: bool = False


class PipelineInfo(_Open):
    dependency_graph: dict[str, Any] | None = None
    tasks_total: int | None = None
    tasks_completed: int | None = None


class TeamSessionFile(_Open):
    session_id: str = Field(min_length=1)
    task_description: str
    status: SessionStatus
    team_name: str
    roles: list[RoleEntry] = Field(min_length=1)
    pipeline: PipelineInfo | None = None
    active_workers: list[Any] = Field(default_factory=list)
    completed_tasks: list[str] = Field(default_factory=list)
    completion_action: CompletionAction = "interactive"
    created_at: str | None = None


class CapabilityTask(_Open):
    id: str = Field(min_length=1)
    goal: str = ""
    steps: list[str] = Field(default_factory=list)
    key_files: list[str] = Field(default_factory=list)
    upstream_artifacts: list[str] = Field(default_factory=list)
    success_criteria: str | list[str] = ""
    constraints: str | list[str] = ""
    priority: PriorityField = None
    role: str | None = None
    # {"server": ..., "tool": ..., "arguments": {...}}: the task is one MCP tool call.
    # Checked by session.graph, which names the offending key and the fix.
    mcp: Any = None


class AnalysisCapability(_Open):
    name: str = Field(min_length=1)
    description: str = ""
    artifact_type: str | None = None
    prefix: str | None = None
    responsibility_type: str | None = None
    tasks: list[CapabilityTask] = Field(default_factory=list)


class GraphEntry(_Open):
    """Shape (a) of a dependency-graph entry: ``{"depends_on": [...], "role": ...}``."""

    depends_on: list[str] = Field(default_factory=list)
    role: str | None = None
    priority: PriorityField = None


class TaskAnalysisFile(_Open):
    capabilities: list[AnalysisCapability]
    # Shape (b) is a plain adjacency list, shape (a) a mapping per task; the
    # entries are read by session.graph, which names the offending entry.
    dependency_graph: dict[str, Any]
    roles: list[dict[str, Any] | str] = Field(min_length=1)
    task_description: str | None = None
