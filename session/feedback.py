"""Feedback files: what a task must fix on its next attempt, kept at ``<session>/feedback/<ID>.md``.

A reviewer's ``changes_requested`` appends a round here.  The file is for
people and IDE agents as much as for the next prompt, and it survives a
crash: the round count and the text a resumed run puts in the prompt come
from it, not from memory.
"""

from __future__ import annotations

import re
from pathlib import Path

from session.safepath import task_file

__all__ = ["FEEDBACK_DIR", "append_round", "feedback_path", "read_feedback", "rounds_so_far"]

FEEDBACK_DIR = "feedback"
_ROUND = re.compile(r"^## Round (\d+)\b", re.MULTILINE)
PROMPT_CHARS = 6000


def feedback_path(folder: Path, task_id: str) -> Path:
    """``<session>/feedback/<ID>.md``; raises ``UnsafePath`` for an id outside the grammar."""
    return task_file(Path(folder), task_id, ".md", FEEDBACK_DIR)


def rounds_so_far(folder: Path, task_id: str) -> int:
    """How many review rounds have sent ``task_id`` back (0: none yet)."""
    text = read_feedback(folder, task_id)
    return max((int(number) for number in _ROUND.findall(text)), default=0)


def read_feedback(folder: Path, task_id: str) -> str:
    try:
        return feedback_path(folder, task_id).read_text(encoding="utf-8")
    except (FileNotFoundError, NotADirectoryError):
        return ""


def append_round(folder: Path, task_id: str, round_number: int, reviewer: str, at: str, items: tuple[str, ...]) -> Path:
    """Add one round (its items as a checklist) to the task's feedback file; create it if needed."""
    path = feedback_path(folder, task_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [] if path.exists() else [f"# Review feedback for {task_id}", ""]
    lines += [f"## Round {round_number} — changes requested by {reviewer} ({at})", ""]
    lines += [f"- [ ] {item}" for item in items] or ["- [ ] (the reviewer gave no items; see its artifact)"]
    with path.open("a", encoding="utf-8") as handle:
        handle.write("\n".join(lines) + "\n\n")
    return path


def prompt_feedback(folder: Path, task_id: str) -> str:
    """The newest rounds of feedback, short enough for a prompt."""
    text = read_feedback(folder, task_id).strip()
    return text if len(text) <= PROMPT_CHARS else "…\n" + text[-PROMPT_CHARS:]
