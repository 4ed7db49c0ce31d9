"""Prompts for workers: built on the worker's thread from the session and the task."""

from __future__ import annotations

import threading

from backends.prompt import build_prompt
from protocol.records import TaskRow
from session.graph import TaskSpec
from session.loader import TeamSession

__all__ = ["PromptSource"]


class PromptSource:
    """``source(task_id, attempt)`` -> the prompt.  Tasks created during a run are added with :meth:`add`."""

    def __init__(self, session: TeamSession) -> None:
        self.session = session
        self._extra: dict[str, TaskSpec] = {}
        self._feedback: dict[str, list[str]] = {}
        self._lock = threading.Lock()

    def add(self, row: TaskRow, goal: str) -> None:
        spec = TaskSpec(id=row.id, owner=row.owner, blocked_by=tuple(row.blocked_by), priority=row.priority, goal=goal)
        with self._lock:
            self._extra[row.id] = spec

    def attempt_failed(self, task_id: str, attempt: int, kind: str | None, error: str | None, tail: str) -> None:
        """Remember why an attempt failed: the next attempt's prompt says so."""
        text = f"Attempt {attempt} failed ({kind or 'error'}): {(error or '').strip()}"
        tail = tail.strip()
        if tail:
            text += "\nThe end of its output:\n" + tail[-1500:]
        with self._lock:
            self._feedback.setdefault(task_id, []).append(text)

    def spec(self, task_id: str) -> TaskSpec:
        with self._lock:
            extra = self._extra.get(task_id)
        return extra if extra is not None else self.session.task(task_id)

    def __call__(self, task_id: str, attempt: int) -> str:
        with self._lock:
            feedback = "\n\n".join(self._feedback.get(task_id, [])[-3:])
        return build_prompt(self.session, self.spec(task_id), attempt, feedback=feedback)
