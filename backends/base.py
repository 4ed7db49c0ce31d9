"""The backend contract: a work order in, protocol events out.

A backend runs one attempt of one task.  It is called on the TeamWorker's
thread, must honour ``cancel`` (set when the executor shuts down), reports
the process it started and any progress through ``hooks`` as they happen, and
returns an :class:`AttemptResult` — never raises for anything the agent does.

Workers talk back in two optional ways, both documented in the README:

- progress: a stdout line holding a JSON object ``{"type": "progress",
  "percent": 40, "note": "..."}``;
- the report: a JSON object written to the file named by the environment
  variable ``TEAM_EXECUTOR_REPORT``: ``{"status": "completed" | "failed" |
  "consensus_blocked" | "capability_gap", "summary": "...", "artifacts": [...],
  "files_modified": [...], "severity": "HIGH", "detail": "...", "tokens_in": 1200,
  "tokens_out": 300, "cost_usd": 0.02, "model": "..."}`` (usage and cost count
  towards the budgets).
"""

from __future__ import annotations

import threading
import time
from typing import Any, ClassVar, Protocol

from protocol.keys import KeyLease, KeyUnavailable, KeyWait
from protocol.messages import AttemptResult, WorkOrder
from protocol.routing import ModelChoice, NoModel
from protocol.types import ErrorKind
from session.config_models import ModelSpec
from session.rolespec import RoleSpecFrontmatter

__all__ = ["Backend", "RoutingServices", "WorkerHooks", "failed_attempt"]


class WorkerHooks(Protocol):
    """Callbacks a backend uses while it runs (on the worker's thread)."""

    def started(self, pid: int, create_time: float | None) -> None:
        """The agent process exists: record it before anything else happens."""

    def progress(self, percent: int | None, note: str) -> None:
        """The agent said how far it is."""


class RoutingServices(Protocol):
    """Model and key choices for backends that can switch them within one attempt.

    Offered as ``hooks.routing`` when the run has a Router and a KeyPool; a
    backend that finds no ``routing`` attribute (or None) uses its own settings.
    Every method blocks briefly (an ask to a service actor) and never raises.
    """

    def select_model(
        self, task_id: str, complexity: str, force_model: str | None, backend: str | None = None
    ) -> ModelChoice | NoModel:
        """The model for this task, or why there is none; with ``backend``, one of the models it runs."""

    def next_model(self, task_id: str, current_model: str, error_kind: str) -> ModelChoice | NoModel:
        """After a failure: a ``ModelChoice`` to try next, or ``NoModel``."""

    def base_url(self, model: str) -> str | None:
        """The registry's base URL for ``model`` (for OpenAI-compatible servers), or None."""

    def model_spec(self, model: str) -> ModelSpec | None:
        """The registry's entry for ``model``, or None."""

    def acquire_key(self, provider: str) -> KeyLease | KeyWait | KeyUnavailable:
        """A key to use now, how long to wait for one, or why there is none."""

    def ask_for_key(self, task_id: str, provider: str, reason: str) -> frozenset[str]:
        """Ask the user for a key of ``provider``; the ids :meth:`key_given_up` ignores."""

    def key_given_up(self, provider: str, seen: frozenset[str]) -> str | None:
        """Why to stop waiting for a key (the user gave up), or None."""

    def key_found(self, provider: str) -> None:
        """A key joined the pool after :meth:`ask_for_key`: close the question."""

    def report_key(
        self,
        key_id: str,
        error_kind: str | None,
        retry_after_s: float | None,
        tokens_in: int,
        tokens_out: int,
        cost_usd: float,
        error: str | None,
    ) -> None:
        """How a call with a leased key went (``error_kind`` None: it worked)."""


class Backend(Protocol):
    name: ClassVar[str]

    def preflight(self, role: str, spec: RoleSpecFrontmatter) -> str | None:
        """Why this backend cannot run ``role`` (a message naming the fix), or None."""

    def run(self, order: WorkOrder, hooks: WorkerHooks, cancel: threading.Event) -> AttemptResult:
        """Run one attempt.  Returns how it ended; never raises for agent behaviour."""


def failed_attempt(started: float, kind: ErrorKind, error: str, **fields: Any) -> AttemptResult:
    """A failed attempt that began at ``started`` (``time.monotonic()``); ``fields`` add to the result."""
    return AttemptResult(
        ok=False,
        error_kind=kind,
        error=error,
        outcome="failed",
        duration_s=round(time.monotonic() - started, 3),
        **fields,
    )
