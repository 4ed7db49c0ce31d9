"""The demo agent's story mode: real edits to a real project, for ``executor demo``.

A session that holds ``demo-story.json`` (the one ``executor demo`` ships in
examples/story) gives the demo agent, per task id, what to do in each situation:

- a writer task (``"edits"``) looks at the newest heading of its feedback file
  (``feedback/<ID>.md``, written by the executor): none yet -> ``first``; a failed
  quality gate (``## Gate failed``) -> ``gate_failed``; a review round (``## Round N``)
  -> ``changes_requested``; and copies that step's files from the session into the
  project (its working directory);
- a review task (``"review"``) reads a project file and asks for changes while the
  file lacks what it ``needs``, else passes.

So the same run tells the same story every time, and every step is a file edit that
``git diff`` shows.  Paths are checked: files are read from inside the session folder
and written inside the working directory only.  Standard library only (the agent
starts in milliseconds).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from backends.conventions import relative_inside

__all__ = ["STORY_FILE", "StoryError", "StoryTurn", "play"]

STORY_FILE = "demo-story.json"
# The headings the executor appends to feedback/<ID>.md (session.feedback, session.gates).
_HEADING = re.compile(r"^## (Gate failed|Round \d+)", re.MULTILINE)
_MAX_FILE = 256 * 1024


class StoryError(Exception):
    """The story file is unusable; the message names the field."""


class StoryTurn:
    """What one task does in the story: the edits made, and what goes into its report."""

    def __init__(self, note: str, situation: str) -> None:
        self.note = note
        self.situation = situation
        self.files: list[str] = []  # project paths written, relative to the working directory
        self.status = "completed"
        self.feedback: list[dict[str, object]] = []
        self.reviewed_task = ""

    def report_fields(self) -> dict[str, object]:
        """The JSON report's fields for this turn (on top of summary and artifacts)."""
        fields: dict[str, object] = {"status": self.status}
        if self.files:
            fields["files_modified"] = self.files
        if self.status == "changes_requested":
            fields["feedback"] = self.feedback
            fields["reviewed_task"] = self.reviewed_task
        return fields

    @property
    def progress(self) -> str:
        """One progress note for the watchers."""
        if self.situation == "review":
            return f"reviewed: {self.status}"
        return f"{self.situation}: edited {', '.join(self.files) or 'no file'}"

    def markdown(self) -> list[str]:
        """The artifact's story section."""
        lines = ["## What this attempt did", "", f"Situation: `{self.situation}`. {self.note}"]
        if self.files:
            lines += ["", *(f"- edited `{name}`" for name in self.files)]
        if self.situation == "review":
            verdict = "changes_requested" if self.status == "changes_requested" else "pass"
            lines += ["", "## Verdict", "", verdict]
        for number, item in enumerate(self.feedback, 1):
            where = f"{item.get('file')}:{item.get('line')}"
            lines += [f"{number}. `{where}`: {item.get('issue')} (suggestion: {item.get('suggestion')})"]
        return lines


def _load(session: Path) -> dict[str, object] | None:
    path = session / STORY_FILE
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError as error:
        raise StoryError(f"cannot read {path}: {error.strerror or error}") from error
    try:
        story = json.loads(text)
    except ValueError as error:
        raise StoryError(f"{path} is not valid JSON: {error}") from error
    if not isinstance(story, dict):
        raise StoryError(f"{path}: expected an object of task ids")
    return story


def _situation(session: Path, task_id: str) -> str:
    """``first``, ``gate_failed`` or ``changes_requested``: what the newest feedback heading says."""
    try:
        text = (session / "feedback" / f"{task_id}.md").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return "first"
    headings = _HEADING.findall(text)
    if not headings:
        return "first"
    return "gate_failed" if headings[-1] == "Gate failed" else "changes_requested"


def _inside(root: Path, name: object, what: str) -> Path:
    relative = relative_inside(root, Path(str(name))) if isinstance(name, str) and name else None
    if relative is None or ".git" in Path(relative).parts:  # a story edits the project, never git's own files
        raise StoryError(f"{STORY_FILE}: {what} {name!r} is not a path inside {root}")
    return root / relative


def _edit(session: Path, workdir: Path, step: dict[str, object], situation: str) -> StoryTurn:
    turn = StoryTurn(str(step.get("note", "")), situation)
    files = step.get("write")
    if not isinstance(files, dict):
        raise StoryError(f"{STORY_FILE}: step {situation!r} needs a `write` object (project path -> story file)")
    for target, source in sorted(files.items()):
        destination = _inside(workdir, target, "project path")
        origin = _inside(session, source, "story file")
        with origin.open("rb") as handle:
            content = handle.read(_MAX_FILE)
        destination.parent.mkdir(parents=True, exist_ok=True)
        temporary = destination.with_name(f".{destination.name}.{os.getpid()}.tmp")
        temporary.write_bytes(content)
        os.replace(temporary, destination)
        turn.files.append(relative_inside(workdir, destination) or str(target))
    return turn


def _review(workdir: Path, check: dict[str, object]) -> StoryTurn:
    name, needs = check.get("file"), check.get("needs")
    if not isinstance(needs, str) or not needs:
        raise StoryError(f"{STORY_FILE}: a review needs `needs` (the text the file must contain)")
    path = _inside(workdir, name, "reviewed file")
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        text = ""
    if needs in text:
        return StoryTurn(f"`{name}` has `{needs}`: {check.get('pass_note', 'the review passes')}", "review")
    turn = StoryTurn(f"`{name}` has no `{needs}` yet: one change requested.", "review")
    anchor = str(check.get("anchor", ""))
    line = next((n for n, row in enumerate(text.splitlines(), 1) if anchor and anchor in row), 1)
    turn.status = "changes_requested"
    turn.reviewed_task = str(check.get("reviewed_task", ""))
    turn.feedback = [
        {
            "file": name,
            "line": line,
            "issue": str(check.get("issue", "")),
            "suggestion": str(check.get("suggestion", "")),
        }
    ]
    return turn


def play(session: Path, workdir: Path, task_id: str) -> StoryTurn | None:
    """Do this task's part of the session's story; None when the session has none for it.

    Raises :class:`StoryError` on a broken story file, ``OSError`` when a file cannot be written.
    """
    story = _load(session)
    part = story.get(task_id) if story else None
    if not isinstance(part, dict):
        return None
    if "review" in part:
        review = part["review"]
        if not isinstance(review, dict):
            raise StoryError(f"{STORY_FILE}: {task_id}.review must be an object")
        return _review(workdir, review)
    situation = _situation(session, task_id)
    step = part.get(situation)
    if not isinstance(step, dict):
        return StoryTurn(f"The story has no `{situation}` step for {task_id}: nothing edited.", situation)
    return _edit(session, workdir, step, situation)
