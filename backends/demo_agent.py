"""The built-in demo agent: a deterministic stand-in for an AI coding agent.

Run as ``python -m backends.demo_agent`` by the ``demo`` backend, with everything
it needs in its environment (``TEAM_EXECUTOR_TASK_ID``, ``..._ROLE``,
``..._SESSION``, ``..._ARTIFACTS``, ``..._PROMPT_FILE``, ``..._REPORT``).  It:

1. prints progress lines (``{"type": "progress", ...}``);
2. reads the prompt file: the task description (PURPOSE / TASK / CONTEXT /
   EXPECTED / CONSTRAINTS) and the header's ``Depends on:`` / ``Unblocks:`` lines;
3. reads its upstream artifacts: the files in the artifacts folder named on the
   ``Upstream artifacts`` line, or whose names start with a dependency's task id;
4. writes one Markdown artifact (the EXPECTED path, else
   ``artifacts/<TASK-ID>-<slug>.md``), role-flavoured, derived only from the task
   text and the upstream artifacts: the same inputs give the same bytes;
5. writes the JSON report and prints an upstream-style final report.

In a session with a ``demo-story.json`` (``executor demo``'s), step 4 first plays the
task's part of the story (``backends.demo_story``): real edits to the project it works
in, or a review verdict, chosen by the task's feedback so far.

Standard library only, and nothing from the project's heavy modules, so it starts
in milliseconds.  Exit status: 0 done, 1 could not write its output, 2 not run by
the executor (environment or prompt missing).
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path, PurePosixPath

from backends.conventions import (
    DEPENDS_ON_LABEL,
    DESCRIPTION_HEADING,
    ENV_ARTIFACTS,
    ENV_PROMPT_FILE,
    ENV_REPORT,
    ENV_ROLE,
    ENV_SESSION,
    ENV_TASK_ID,
    PROGRESS_TYPE,
    STATUS_LINES,
    UNBLOCKS_LABEL,
    artifact_slug,
    belongs_to_task,
    default_artifact_path,
    relative_inside,
)
from backends.demo_story import StoryError, play

__all__ = ["TaskText", "Upstream", "main", "parse_prompt", "render_artifact"]

_MAX_READ = 256 * 1024
_TITLE_CHARS = 100
_PREVIEW_LINES = 3
_PREVIEW_CHARS = 160

_KINDS = {
    "plan": "Plan",
    "design": "Design",
    "impl": "Implementation note",
    "test-report": "Test report",
    "review": "Review",
    "redteam-report": "Red-team report",
    "output": "Output",
}


class DemoError(Exception):
    """The agent cannot do its job; the message says why, the code is the exit status."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


# --------------------------------------------------------------------------- input


def _progress(percent: int, note: str) -> None:
    print(json.dumps({"type": PROGRESS_TYPE, "percent": percent, "note": note}), flush=True)
    if _PACE_S > 0:
        time.sleep(_PACE_S / 3)  # three progress steps: the task takes about the pace


def _pace_from(argv: list[str]) -> float:
    """``--pace SECONDS`` (given by the demo backend for ``executor demo --pace``); 0 otherwise."""
    if "--pace" in argv[:-1]:
        try:
            return max(0.0, float(argv[argv.index("--pace") + 1]))
        except ValueError:
            return 0.0
    return 0.0


_PACE_S = _pace_from(sys.argv)


def _env(name: str) -> str:
    value = os.environ.get(name, "")
    if not value:
        raise DemoError(f"{name} is not set; the demo agent runs under team-executor's demo backend", 2)
    return value


def _split_list(value: str) -> list[str]:
    items = [item.strip() for item in value.split(",")]
    return [item for item in items if item and item.lower() != "none"]


class TaskText:
    """What the demo agent reads from its prompt (all single lines, as the description has them).

    A plain class, not a dataclass: importing ``dataclasses`` would double the start-up time.
    """

    def __init__(self, task_id: str = "") -> None:
        self.id = task_id
        self.goal = ""
        self.success = ""
        self.constraints = ""
        self.expected = ""
        self.steps: list[str] = []
        self.upstream: list[str] = []
        self.key_files: list[str] = []
        self.depends_on: list[str] = []
        self.unblocks: list[str] = []


class Upstream:
    """One upstream artifact as the demo agent summarizes it."""

    __slots__ = ("path", "preview", "title")

    def __init__(self, path: str, title: str, preview: tuple[str, ...]) -> None:
        self.path = path  # relative to the session folder
        self.title = title
        self.preview = preview


def parse_prompt(text: str, task_id: str = "") -> TaskText:
    """The task fields of a prompt written by ``backends.prompt.build_prompt``.

    The description is read from the ``# Task description`` section when there is
    one, else from the whole text; the ``Depends on:`` / ``Unblocks:`` labels from
    the lines before it (their first occurrence).
    """
    lines = text.splitlines()
    start = lines.index(DESCRIPTION_HEADING) if DESCRIPTION_HEADING in lines else -1
    header = lines[:start] if start >= 0 else lines
    body: list[str] = []
    for line in lines[start + 1 :]:
        if line.startswith("# "):
            break
        body.append(line)

    task = TaskText(task_id)
    depends = next((line for line in header if line.startswith(DEPENDS_ON_LABEL)), "")
    unblocks = next((line for line in header if line.startswith(UNBLOCKS_LABEL)), "")
    task.depends_on = _split_list(depends[len(DEPENDS_ON_LABEL) :])
    task.unblocks = _split_list(unblocks[len(UNBLOCKS_LABEL) :])

    section = ""
    for line in body:
        if line.startswith("PURPOSE:"):
            goal, _, success = line[len("PURPOSE:") :].partition(" | Success:")
            task.goal, task.success, section = goal.strip(), success.strip(), ""
        elif line.startswith(("TASK:", "CONTEXT:")):
            section = line.rstrip(":")
        elif line.startswith("EXPECTED:"):
            task.expected, section = line[len("EXPECTED:") :].strip(), ""
        elif line.startswith("CONSTRAINTS:"):
            task.constraints, section = line[len("CONSTRAINTS:") :].strip(), ""
        elif line.strip() == "---":
            break
        elif line.startswith("  - ") and section == "TASK":
            step = line[4:].strip()
            if step and step != "(no steps given)":
                task.steps.append(step)
        elif line.startswith("  - ") and section == "CONTEXT":
            key, _, value = line[4:].partition(":")
            if key.strip() == "Upstream artifacts":
                task.upstream = _split_list(value)
            elif key.strip() == "Key files":
                task.key_files = _split_list(value)
    return task


def _read_text(path: Path) -> str:
    with path.open("rb") as handle:
        return handle.read(_MAX_READ).decode("utf-8", errors="replace")


def _summarize(path: Path) -> tuple[str, list[str]]:
    """An upstream artifact's title (its first heading) and its first few content lines."""
    try:
        text = _read_text(path)
    except OSError:
        return path.name, ["(could not be read)"]
    title = ""
    preview: list[str] = []
    in_fence = False
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("```"):
            in_fence = not in_fence
            continue
        if not line or in_fence:
            continue
        if line.startswith("#"):
            if not title:
                title = line.lstrip("#").strip()
            continue
        if not title:
            title = line
            continue
        preview.append(line[:_PREVIEW_CHARS])
        if len(preview) >= _PREVIEW_LINES:
            break
    return _short(title or path.name), preview


def _upstream_files(artifacts: Path, task_id: str, names: list[str], deps: list[str]) -> list[Path]:
    wanted = {PurePosixPath(name).name for name in names}
    try:
        entries = sorted(os.scandir(artifacts), key=lambda entry: entry.name)
    except OSError:
        return []
    chosen = []
    for entry in entries:
        if not entry.is_file(follow_symlinks=False) or belongs_to_task(entry.name, task_id):
            continue
        if entry.name in wanted or any(belongs_to_task(entry.name, dep) for dep in deps):
            chosen.append(Path(entry.path))
    return chosen


def _artifact_path(expected: str, task_id: str, role: str, session: Path, artifacts: Path) -> str:
    """EXPECTED if it names a file inside the artifacts folder, else the conventional name."""
    candidate = PurePosixPath(expected) if expected else None
    if (
        candidate is not None
        and not candidate.is_absolute()
        and len(candidate.parts) >= 2
        and candidate.parts[0] == "artifacts"
        and ".." not in candidate.parts
        and relative_inside(artifacts, session / candidate) is not None
    ):
        return candidate.as_posix()
    return default_artifact_path(task_id, role)


# --------------------------------------------------------------------------- rendering


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def _short(text: str, limit: int = _TITLE_CHARS) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3].rstrip() + "..."


def _ident(task_id: str) -> str:
    return re.sub(r"[^0-9a-zA-Z]+", "_", task_id).strip("_").lower() or "task"


def _files(task: TaskText) -> list[str]:
    return [f"- `{name}`" for name in task.key_files] or ["- (no key files named)"]


def _pm(task: TaskText, steps: list[str], upstream: list[Upstream]) -> list[str]:
    checker = ", ".join(task.unblocks) or "the reviewer"
    lines = ["## Scope", "", "In scope:", "", *(f"- {step}" for step in steps), "", "Out of scope:", ""]
    lines += [f"- Anything the constraints exclude: {task.constraints or 'none given'}", ""]
    lines += ["## Requirements and acceptance criteria", ""]
    lines += ["| Id | Requirement | Acceptance criterion |", "|----|-------------|----------------------|"]
    for number, step in enumerate(steps, 1):
        lines.append(f'| R{number} | {_cell(step)} | {_cell(checker)} can check: "{_cell(_short(step, 60))}" |')
    lines += ["", f"Definition of done: {task.success or 'every requirement above is met'}"]
    return lines


def _architect(task: TaskText, steps: list[str], upstream: list[Upstream]) -> list[str]:
    basis = f'It builds on "{upstream[0].title}".' if upstream else "No upstream artifact was given."
    lines = ["## Overview", "", f"Design for: {task.goal} {basis}", "", "## Components", ""]
    lines += [f"- C{number}: {step}" for number, step in enumerate(steps, 1)]
    lines += ["", "## Flow", "", "```mermaid", "flowchart LR", f'  T["{task.id}"]']
    for number, item in enumerate(upstream, 1):
        lines.append(f'  U{number}["{_short(item.title, 60).replace(chr(34), chr(39))}"] --> T')
    lines += [f'  T --> D{number}["{dependant}"]' for number, dependant in enumerate(task.unblocks, 1)]
    lines += ["```", "", "## File plan", "", *_files(task), "", "## Decisions", ""]
    lines.append(f"- D1: {task.constraints or 'follow the existing conventions'}")
    return lines


def _coder(task: TaskText, steps: list[str], upstream: list[Upstream]) -> list[str]:
    lines = ["## Implementation notes", "", *(f"{n}. {step}" for n, step in enumerate(steps, 1))]
    lines += ["", "## Files", "", *_files(task), "", "## Code sketch", "", "```python"]
    doc = _short(task.goal or task.id, 80).replace("\\", "/").replace('"', "'")
    lines += [f"def {_ident(task.id)}() -> None:", f'    """{doc}"""']
    lines += [f"    # {n}. {_short(step, 70)}" for n, step in enumerate(steps, 1)]
    lines += ["    return None", "```"]
    return lines


def _qa(task: TaskText, steps: list[str], upstream: list[Upstream]) -> list[str]:
    lines = ["## Verdict", "", "passed", "", "## Checklist", ""]
    lines += [f"- [x] {step}" for step in steps]
    lines += [f"- [x] Upstream artifact read: {item.title}" for item in upstream]
    total = len(steps) + len(upstream)
    lines += ["", f"Checks: {total}, passed: {total}, failed: 0."]
    return lines


def _reviewer(task: TaskText, steps: list[str], upstream: list[Upstream]) -> list[str]:
    lines = ["## Verdict", "", "pass", "", "## Items", ""]
    lines += [f"{n}. [ok] {step}" for n, step in enumerate(steps, 1)]
    lines += [f"- [ok] {item.title}" for item in upstream]
    return lines


def _redteam(task: TaskText, steps: list[str], upstream: list[Upstream]) -> list[str]:
    lines = ["## Findings", "", "| Id | Severity | Area | Finding |", "|----|----------|------|---------|"]
    for number, area in enumerate(steps, 1):
        finding = "No exploitable weakness found by the demo probe"
        lines.append(f"| F{number} | LOW | {_cell(_short(area, 60))} | {finding} |")
    lines += ["", "## Verdict", "", "No HIGH or MEDIUM findings."]
    return lines


def _generic(task: TaskText, steps: list[str], upstream: list[Upstream]) -> list[str]:
    return ["## Output", "", *(f"- Done: {step}" for step in steps)]


_RENDERERS: dict[str, Callable[[TaskText, list[str], list[Upstream]], list[str]]] = {
    "plan": _pm,
    "design": _architect,
    "impl": _coder,
    "test-report": _qa,
    "review": _reviewer,
    "redteam-report": _redteam,
}


def render_artifact(task: TaskText, role: str, upstream: list[Upstream], story: list[str] | None = None) -> str:
    """The artifact's Markdown: a pure function of the task text, the role, the upstream summaries
    and, in story mode, what this attempt did to the project."""
    slug = artifact_slug(role)
    goal = task.goal or f"Task {task.id}"
    steps = task.steps or [goal]
    lines = [f"# {task.id} {_KINDS.get(slug, 'Output')}: {_short(goal)}", "", "## Goal", "", goal]
    if task.success:
        lines += ["", f"Success: {task.success}"]
    lines.append("")
    if story:
        lines += story
    else:
        lines += _RENDERERS.get(slug, _generic)(task, steps, upstream)
    lines += ["", "## Upstream artifacts", ""]
    if not upstream:
        lines.append("- none (this task starts from the task description alone)")
    for item in upstream:
        lines.append(f"- `{item.path}`: **{item.title}**")
        lines += [f"  > {line}" for line in item.preview]
    lines += ["", "## Constraints", "", task.constraints or "none"]
    lines += ["", f"_Written by the team-executor demo agent for role `{role}`; no model was called._", ""]
    return "\n".join(lines)


# --------------------------------------------------------------------------- main


def _write_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_text(text, encoding="utf-8")
    os.replace(temporary, path)


def _run() -> list[str]:
    task_id = _env(ENV_TASK_ID)
    role = _env(ENV_ROLE)
    session = Path(_env(ENV_SESSION))
    artifacts = Path(os.environ.get(ENV_ARTIFACTS) or session / "artifacts")
    prompt_file = Path(_env(ENV_PROMPT_FILE))
    _progress(10, f"reading the prompt for {task_id}")
    try:
        prompt = _read_text(prompt_file)
    except OSError as error:
        raise DemoError(f"cannot read the prompt file {prompt_file}: {error.strerror or error}", 2) from error
    task = parse_prompt(prompt, task_id)

    upstream = []
    for path in _upstream_files(artifacts, task_id, task.upstream, task.depends_on):
        title, preview = _summarize(path)
        upstream.append(Upstream(path=f"artifacts/{path.name}", title=title, preview=tuple(preview)))
    _progress(50, f"read {len(upstream)} upstream artifact(s)")

    relative = _artifact_path(task.expected, task_id, role, session, artifacts)
    done = f"wrote {relative} from {len(task.steps)} step(s) and {len(upstream)} upstream artifact(s)"
    try:
        turn = play(session, Path.cwd(), task_id)
    except StoryError as error:
        raise DemoError(str(error), 1) from error
    except OSError as error:
        raise DemoError(f"cannot edit {error.filename}: {error.strerror or error}", 1) from error
    fields: dict[str, object] = {"status": "completed"}
    if turn is not None:
        done = f"{turn.note} Wrote {relative}"
        fields = turn.report_fields()
        _progress(75, turn.progress)
    try:
        _write_atomically(session / relative, render_artifact(task, role, upstream, turn.markdown() if turn else None))
        report = os.environ.get(ENV_REPORT)
        if report:
            document = {**fields, "summary": f"{task_id}: {done}", "artifacts": [relative]}
            _write_atomically(Path(report), json.dumps(document, indent=2) + "\n")
    except OSError as error:
        raise DemoError(f"cannot write {error.filename or relative}: {error.strerror or error}", 1) from error
    _progress(100, f"wrote {relative}")

    status = STATUS_LINES[0].format(tasks=", ".join(task.unblocks)) if task.unblocks else STATUS_LINES[2]
    if turn is not None and turn.status == "changes_requested":
        status = f"verdict: changes_requested on {turn.reviewed_task}"
    return [
        f"[{role}] {task_id} done: {done}",
        f"Artifact: {relative}",
        f"Upstream read: {', '.join(item.path for item in upstream) or 'none'}",
        status,
    ]


def main() -> int:
    try:
        report = _run()
    except DemoError as error:
        print(f"demo agent: {error}", file=sys.stderr, flush=True)
        return error.code
    print("\n".join(report), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
