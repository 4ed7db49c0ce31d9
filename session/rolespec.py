"""Role-spec files: YAML frontmatter between ``---`` lines, then Markdown.

The upstream required keys are ``role``, ``prefix``, ``inner_loop`` and
``message_types``; the body must hold ``## Phase 2``, ``## Phase 3`` and
``## Phase 4``.  Every other key is kept.  Our own extension keys (``backend``,
``command``, ``timeout``, ...) are optional and never required upstream.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from session.frontmatter import split_frontmatter
from session.problems import Problem

__all__ = [
    "REQUIRED_PHASES",
    "RoleSpec",
    "RoleSpecFrontmatter",
    "parse_role_spec",
]

REQUIRED_PHASES = (2, 3, 4)
_PHASE_HEADING = re.compile(r"^##[ \t]+Phase[ \t]+(\d+)\b.*$", re.MULTILINE)
_MAX_ROLE_SPEC_BYTES = 1 << 20


class RoleSpecFrontmatter(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)

    role: str = Field(min_length=1)
    prefix: str = Field(min_length=1)
    inner_loop: bool
    message_types: dict[str, Any]
    output_tag: str | None = None
    cli_tools: list[Any] | None = Field(default=None, alias="CLI tools")
    additional_prefixes: list[str] = Field(default_factory=list)
    # --- team-executor extensions ---
    backend: str | None = None
    command: list[str] | None = None
    timeout: float | None = Field(default=None, gt=0)  # seconds of wall clock per attempt
    hang_timeout: float | None = Field(default=None, gt=0)  # seconds without output
    max_attempts: int | None = Field(default=None, ge=1)
    model: str | None = None
    # The openai backend's endpoint (an OpenAI-compatible server), e.g. http://127.0.0.1:8000/v1.
    base_url: str | None = None
    tier: str | None = None
    skills: list[str] | None = None
    max_turns: int | None = Field(default=None, ge=1)
    permission: Literal["read-only", "workspace-write", "full"] | None = None
    isolate_home: bool | None = None
    # For the ``mcp`` backend: the server (a name in [mcp_servers]) and tool a task of this
    # role calls when its own ``"mcp"`` entry in task-analysis.json leaves them out.
    mcp_server: str | None = Field(default=None, min_length=1)
    mcp_tool: str | None = Field(default=None, min_length=1)
    # Stall: no progress report and no output for stall_after seconds is reported (and
    # notified); for stall_stop_after, the attempt is stopped and retried.
    stall_after: float | None = Field(default=None, gt=0)
    stall_stop_after: float | None = Field(default=None, gt=0)
    # A reviewer's changes_requested sends the work back at most this many times (default 3);
    # then the user decides.
    review_rounds: int | None = Field(default=None, ge=1, le=20)
    # Quality gates: commands (a string each, or an argv list) that must pass after an attempt;
    # the first that fails sends the task back with its output.  Never run through a shell.
    verify: str | list[str | list[str]] | None = None
    verify_timeout: float | None = Field(default=None, gt=0)
    # Manual roles: a claimed task whose agent shows no sign of life (no task command on it)
    # for this many seconds goes back to ready, for someone else to take.
    claim_idle_timeout: float | None = Field(default=None, gt=0)
    # "worktree": each task of the role works in a git worktree of its own, on branch
    # team-executor/<ID> (two writers at once never share a tree).
    isolation: Literal["none", "worktree"] | None = None

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"https?://[^/\s]+", value):
            raise ValueError("base_url must be an http:// or https:// URL with a host, e.g. http://127.0.0.1:8000/v1")
        return value


@dataclass(frozen=True)
class RoleSpec:
    path: Path
    meta: RoleSpecFrontmatter
    body: str
    phases: dict[int, str]  # phase number -> the section's text, heading included

    @property
    def name(self) -> str:
        return self.meta.role

    @property
    def prefixes(self) -> tuple[str, ...]:
        return (self.meta.prefix, *self.meta.additional_prefixes)


def _phases(body: str) -> dict[int, str]:
    matches = list(_PHASE_HEADING.finditer(body))
    sections: dict[int, str] = {}
    for position, match in enumerate(matches):
        end = matches[position + 1].start() if position + 1 < len(matches) else len(body)
        # A later "## Something" heading that is not a phase ends the section too.
        tail = body[match.end() : end]
        other = re.search(r"^##[ \t]+(?!Phase)", tail, re.MULTILINE)
        if other:
            end = match.end() + other.start()
        sections.setdefault(int(match.group(1)), body[match.start() : end].strip())
    return sections


def parse_role_spec(path: Path, display: str) -> tuple[RoleSpec | None, list[Problem]]:
    """Read one role-spec; return it, or ``None`` and every problem found.

    ``display`` is how the file is named in messages (relative to the session).
    Never raises for bad content.
    """
    try:
        if path.stat().st_size > _MAX_ROLE_SPEC_BYTES:
            return None, [
                Problem(
                    file=display,
                    message=f"file is larger than {_MAX_ROLE_SPEC_BYTES // 1024} KiB",
                    fix="a role-spec is a short Markdown file; remove the pasted content",
                )
            ]
        text = path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        return None, [
            Problem(
                file=display,
                message=f"Role-spec file not found: {display}",
                fix="create it (copy one from `executor init`'s role library) or fix roles[].role_spec",
            )
        ]
    except UnicodeDecodeError as error:
        return None, [
            Problem(
                file=display,
                message=f"not UTF-8 text ({error.reason} at byte {error.start})",
                fix="save the file as UTF-8",
            )
        ]
    except OSError as error:
        return None, [
            Problem(file=display, message=f"cannot read: {error.strerror}", fix="check the file's permissions")
        ]

    text = text.replace("\r\n", "\n").lstrip("\ufeff")
    split = split_frontmatter(text)
    if split is None:
        return None, [
            Problem(
                file=display,
                message="no YAML frontmatter (the file must start with a '---' line and close it with another)",
                fix="add a frontmatter block with role, prefix, inner_loop and message_types",
            )
        ]
    header, body = split
    problems: list[Problem] = []
    try:
        data = yaml.safe_load(header)
    except (yaml.YAMLError, RecursionError) as error:
        mark = getattr(error, "problem_mark", None)
        where = f" (line {mark.line + 2})" if mark is not None else ""
        return None, [
            Problem(
                file=display,
                field="frontmatter",
                message=f"frontmatter is not valid YAML{where}",
                fix="fix the YAML between the '---' lines",
            )
        ]
    if not isinstance(data, dict):
        return None, [
            Problem(
                file=display,
                field="frontmatter",
                message="frontmatter must be a mapping of keys to values",
                fix="write it as 'key: value' lines",
            )
        ]
    data = {str(key): value for key, value in data.items()}

    meta: RoleSpecFrontmatter | None = None
    try:
        meta = RoleSpecFrontmatter.model_validate(data)
    except ValidationError as error:
        for item in error.errors():
            key = ".".join(str(part) for part in item["loc"]) or "frontmatter"
            if item["type"] == "missing":
                problems.append(
                    Problem(
                        file=display,
                        field=key,
                        message=f"Invalid role-spec: missing required key '{key}'",
                        fix=f"add '{key}:' to the frontmatter",
                    )
                )
            else:
                problems.append(
                    Problem(
                        file=display,
                        field=key,
                        message=f"Invalid role-spec: {item['msg']}",
                        fix=f"correct the value of '{key}'",
                    )
                )

    phases = _phases(body)
    for number in REQUIRED_PHASES:
        if number not in phases:
            problems.append(
                Problem(
                    file=display,
                    field=f"## Phase {number}",
                    message=f"Invalid role-spec: missing Phase {number}",
                    fix=f"add a '## Phase {number}: <title>' section to the body",
                )
            )
    if problems or meta is None:
        return None, problems
    return RoleSpec(path=path, meta=meta, body=body, phases=phases), []
