"""Messages of the Router actor (:mod:`actors.router`): which model a task runs on.

Asks and their replies:

- :class:`SelectModel` -> :class:`ModelChoice` | :class:`NoModel`
- :class:`ApproveCritical` -> :class:`protocol.messages.Ok`
- :class:`NextModel` -> :class:`ModelChoice` | :class:`NoModel`
- :class:`ForgetTask` -> :class:`protocol.messages.Ok`
- :class:`GetRegistry` -> :class:`Registry`
"""

from __future__ import annotations

from protocol._base import Message
from protocol.types import ErrorKind

__all__ = [
    "ApproveCritical",
    "ForgetTask",
    "GetRegistry",
    "GiveUp",
    "ModelChoice",
    "ModelInfo",
    "NextModel",
    "NoModel",
    "Registry",
    "SelectModel",
    "TryModel",
]


class SelectModel(Message, frozen=True):
    """Choose the model ``task_id`` starts on.

    ``complexity``: ``low``/``medium``/``high`` (task-analysis.json's
    ``complexity.level``), a tier name, or a number in 0..1.  ``budget_usd``: what
    the task may still spend (``None``: no limit).  ``force_model``: a registry
    model that wins over the rest.  Starts the task's routing state afresh, keeping
    an approval already given.
    """

    task_id: str
    complexity: float | str = "medium"
    budget_usd: float | None = None
    force_model: str | None = None
    backend: str | None = None  # only the models this backend runs (a key goes only where it may)


class ApproveCritical(Message, frozen=True):
    """The user approved CRITICAL models for ``task_id``; the next :class:`SelectModel` may choose one."""

    task_id: str


class NextModel(Message, frozen=True):
    """An attempt of ``task_id`` on ``current_model`` failed with ``error_kind``: where now?

    ``budget_usd``, when given, replaces the task's remaining budget first.
    """

    task_id: str
    current_model: str
    error_kind: ErrorKind
    budget_usd: float | None = None


class ForgetTask(Message, frozen=True):
    """Drop the routing state of ``task_id`` (it finished, or will not run again)."""

    task_id: str


class GetRegistry(Message, frozen=True):
    """Ask for the model registry and the fallback chain."""


class ModelChoice(Message, frozen=True):
    """Run ``task_id`` on ``model`` (via ``backend``) after ``delay_s`` seconds.

    ``needs_approval``: the task asked for CRITICAL, which the user has not
    approved; ``model`` is from a lower tier meanwhile.  Escalate, then send
    :class:`ApproveCritical` and :class:`SelectModel` again.
    """

    task_id: str
    model: str
    tier: str
    backend: str
    provider: str
    needs_approval: bool = False
    reason: str = ""
    delay_s: float = 0.0


class NoModel(Message, frozen=True):
    """Routing has nothing for ``task_id``; ``reason`` says why (and what to do).

    ``fallback_backend``: ``router.fallback_backend`` when the fallback chain was
    exhausted and the config names a backend to hand the task to.
    """

    task_id: str
    reason: str
    fallback_backend: str | None = None


class ModelInfo(Message, frozen=True):
    """One registry entry as the router reports it (a ``base_url`` without credentials)."""

    name: str
    provider: str
    backend: str
    tier: str
    input_per_mtok: float
    output_per_mtok: float
    cached_per_mtok: float | None
    context_window: int
    base_url: str | None = None


class Registry(Message, frozen=True):
    """The model registry, in registry order, and the ``[router]`` settings."""

    models: tuple[ModelInfo, ...]
    fallback: tuple[str, ...]
    critical_needs_approval: bool = True
    network_retries: int = 3
    fallback_backend: str | None = None


# --- what session.routing.next_after_failure decides (the Router acts on it) ---


class TryModel(Message, frozen=True):
    """Run the next attempt on ``model`` after waiting ``delay_s`` seconds."""

    model: str
    tier: str
    reason: str
    delay_s: float = 0.0


class GiveUp(Message, frozen=True):
    """Routing has nothing left to try for this failure.

    ``fallback_backend`` is ``router.fallback_backend`` when the chain was
    exhausted and the config names a backend to hand the task to.
    """

    reason: str
    fallback_backend: str | None = None
