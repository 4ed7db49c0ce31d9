"""What a ``run()`` of the openai backend says and keeps.

Its system message, the artifact path it writes, the final report line it reads
from the answer, and the progress notes it sends while the answer streams.
"""

from __future__ import annotations

import re
import time
from pathlib import Path, PurePosixPath
from typing import TextIO

from backends.base import WorkerHooks
from backends.conventions import (
    DESCRIPTION_HEADING,
    belongs_to_task,
    default_artifact_path,
    relative_inside,
)
from protocol.messages import WorkOrder

__all__ = ["Progress", "expected_artifact_in", "report_line", "system_message"]


def system_message(artifact: str) -> str:
    """The system message of a run(): the answer itself is the deliverable."""
    return (
        "You are a worker in a team of agents. You cannot run tools or write files: "
        f"your whole answer is saved as the task's deliverable, {artifact}. "
        "Answer with the complete deliverable in Markdown, then end with the final report the task asks for."
    )


def expected_artifact_in(prompt: str, order: WorkOrder) -> str:
    """The artifact the prompt's ``EXPECTED:`` line names, relative to the session folder.

    The line is read from the ``# Task description`` section when there is one (skills
    and upstream artifacts elsewhere in the prompt may hold lines of their own), else
    from the whole prompt.  It
    is used when it names a file under ``artifacts/`` inside the session folder that
    belongs to the task; else ``artifacts/<TASK-ID>-<slug>.md`` by the role's slug
    (``-output.md`` for a role without one).
    """
    lines = prompt.splitlines()
    if DESCRIPTION_HEADING in lines:
        section: list[str] = []
        for line in lines[lines.index(DESCRIPTION_HEADING) + 1 :]:
            if line.startswith("# "):
                break
            section.append(line)
        lines = section
    candidates = [line for line in lines if line.startswith("EXPECTED:")]
    session = Path(order.session_dir)
    for line in candidates:
        value = line[len("EXPECTED:") :].strip()
        path = PurePosixPath(value)
        if (
            value
            and not path.is_absolute()
            and len(path.parts) >= 2
            and path.parts[0] == "artifacts"
            and ".." not in path.parts
            and belongs_to_task(path.parts[1], order.task_id)
            and relative_inside(session, Path(value)) is not None
        ):
            return path.as_posix()
    return default_artifact_path(order.task_id, order.role)


_REPORT_LINE = re.compile(r"^\[[^\]\n]{1,60}\]\s+(?P<task>\S+)\s+(?P<how>complete|error):\s*(?P<rest>.*)$")


def report_line(text: str, task_id: str) -> tuple[str, bool] | None:
    """``(line, failed)`` for the answer's last ``[tag] TASK complete|error: ...`` line, if any."""
    found = None
    for line in text.splitlines():
        match = _REPORT_LINE.match(line.strip())
        if match and match.group("task") == task_id:
            found = (line.strip(), match.group("how") == "error")
    return found


class Progress:
    """Deltas to progress notes and the log, at most one note per ``interval_s``."""

    def __init__(self, hooks: WorkerHooks, log: TextIO | None, model: str, interval_s: float) -> None:
        self.hooks = hooks
        self.log = log
        self.model = model
        self.interval_s = interval_s
        self.chars = 0
        self.last = time.monotonic()  # the first note comes a full interval in: no note for a quick answer

    def __call__(self, delta: str) -> None:
        self.chars += len(delta)
        if self.log is not None:
            self.log.write(delta)
        now = time.monotonic()
        if now - self.last >= self.interval_s:
            self.last = now
            if self.log is not None:
                self.log.flush()
            self.hooks.progress(None, f"{self.model}: {self.chars} characters received")
