"""Prompts for workers: built on the worker's thread from the session and the task.

Skills are discovered once per run (session, user config folder, built-in)
and resolved per role: the role-spec's ``skills:``, else the default table.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from pathlib import Path

from backends.prompt import build_prompt, dependants_index
from protocol.records import TaskRow
from session.feedback import prompt_feedback
from session.graph import TaskSpec
from session.loader import TeamSession
from session.skills import Skill, discover_skills, resolve_role_skills, skills_for_role

__all__ = ["PromptSource"]


class PromptSource:
    """``source(task_id, attempt)`` -> the prompt.  Tasks created during a run are added with :meth:`add`."""

    def __init__(
        self,
        session: TeamSession,
        user_dir: Path | None = None,
        skills_by_role: Mapping[str, list[str]] | None = None,
    ) -> None:
        self.session = session
        available, self.skill_problems = discover_skills(Path(session.folder), user_dir)
        self._skills: dict[str, list[Skill]] = {}
        for role, spec in session.role_specs.items():
            names = skills_for_role(role, spec.meta.skills, skills_by_role)
            found, _missing = resolve_role_skills(names, available)
            self._skills[role] = found
        self._extra: dict[str, TaskSpec] = {}
        # Who waits for whom, once: each prompt names the tasks it unblocks (a pass over every
        # task per prompt made a run's prompts cost the square of its task count).
        self._unblocks = dependants_index(session.tasks)
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
        # A reviewer's requested changes live in a file (they survive a crash and people read them).
        review = prompt_feedback(Path(self.session.folder), task_id)
        if review:
            feedback = (
                review
                + "\n\nAddress every unchecked item above; say in your report how each was resolved."
                + (f"\n\n{feedback}" if feedback else "")
            )
        spec = self.spec(task_id)
        return build_prompt(
            self.session,
            spec,
            attempt,
            feedback=feedback,
            skills=self._skills.get(spec.owner, ()),
            unblocks=self._unblocks.get(task_id, ()),
        )
