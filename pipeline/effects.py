"""What the pipeline core asks its host (the Executor actor) to do.

Plain frozen Structs that never leave the Executor's thread (they are the core's return
values, not messages between actors), so they live here rather than in ``protocol``;
what they carry to other actors (``Record.message``, ``OpenQuestion.question``) is a
``protocol`` message.

The host carries a turn's effects out in two phases: ``Record`` (and the other writes)
are told to the Session actor and committed together; only after that commit are
attempts started and ``Say``/``NotifyUser`` made visible.
"""

from __future__ import annotations

import msgspec

from protocol._base import Message
from protocol.messages import OpenEscalation, RunSummary
from protocol.notify import NoticeKind
from protocol.records import TaskRow

__all__ = [
    "AnswerByDefault",
    "ApproveCriticalModel",
    "CancelAttempt",
    "Effect",
    "Finish",
    "NotifyUser",
    "OpenQuestion",
    "Record",
    "ReleaseClaim",
    "RememberFailure",
    "RememberTask",
    "RetireWorker",
    "Say",
    "StartAttempt",
]


class Effect(msgspec.Struct, frozen=True, kw_only=True):
    """The base of every effect."""


class Record(Effect, frozen=True):
    """Tell the Session actor to write this (committed with the rest of the turn)."""

    message: Message


class StartAttempt(Effect, frozen=True):
    """Run ``attempt`` of ``task_id`` on worker ``worker_id`` (a new worker when ``new_worker``)."""

    worker_id: str
    new_worker: bool
    task_id: str
    attempt: int
    role: str
    run_row_id: int
    agent_id: str
    log_path: str


class CancelAttempt(Effect, frozen=True):
    """Stop the attempt running on ``worker_id`` (its result still comes back)."""

    worker_id: str


class RetireWorker(Effect, frozen=True):
    """Nothing left for ``worker_id``: stop it."""

    worker_id: str


class Say(Effect, frozen=True):
    """One line for the person at the terminal."""

    line: str


class NotifyUser(Effect, frozen=True):
    kind: NoticeKind
    title: str
    body: str = ""
    action: str | None = None
    escalation_id: str | None = None
    options: tuple[str, ...] = ()


class OpenQuestion(Effect, frozen=True):
    """Open this escalation in the store, then hand its row to ``Pipeline.question_opened``."""

    question: OpenEscalation


class AnswerByDefault(Effect, frozen=True):
    """A question's deadline passed: answer it with its default (if still open)."""

    escalation_id: str
    choice: str


class ReleaseClaim(Effect, frozen=True):
    """A person's claim went silent: release the task through the handoff path."""

    task_id: str
    reason: str


class ApproveCriticalModel(Effect, frozen=True):
    """The user approved the CRITICAL tier for ``task_id``: tell the Router."""

    task_id: str


class RememberTask(Effect, frozen=True):
    """A task created during the run: the prompt source learns its goal."""

    row: TaskRow
    goal: str


class RememberFailure(Effect, frozen=True):
    """Why an attempt failed: the next attempt's prompt names it."""

    task_id: str
    attempt: int
    kind: str | None
    error: str | None
    tail: str


class Finish(Effect, frozen=True):
    """The run is over: ``record`` says whether the end must be recorded now (stopped early)."""

    summary: RunSummary
    record: bool
    interrupted_tasks: tuple[str, ...] = ()
