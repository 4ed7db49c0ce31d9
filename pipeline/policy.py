"""What the core decides by: per-role policy, retry rules by error kind, budgets, limits.

All data, built once by the host from the session and the run options; the core only
reads it.  Retrying is decided by the error kind (:data:`NEVER_RETRIED`), so a new kind
that must not be retried is one more entry, not one more branch.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

__all__ = [
    "DEFAULT_REVIEW_ROUNDS",
    "DEFAULT_STALL_AFTER_S",
    "DEFAULT_STALL_STOP_AFTER_S",
    "NEVER_RETRIED",
    "PipelineConfig",
    "RetryPolicy",
    "RolePolicy",
]

DEFAULT_STALL_AFTER_S = 1800.0
DEFAULT_STALL_STOP_AFTER_S = 3600.0
DEFAULT_REVIEW_ROUNDS = 3

# Error kinds whose failure is final at once: another attempt cannot help.  ``auth``: the
# provider refused the key (the key pool disables it and says so); a retry would be refused too.
NEVER_RETRIED: frozenset[str] = frozenset({"over_budget", "auth"})


@dataclass(frozen=True)
class RetryPolicy:
    """``delay = min(max_s, min_s * 2**(attempt-1)) * (1 + random * jitter)``, for kinds
    not in ``never``, while attempts remain."""

    min_s: float = 2.0
    max_s: float = 300.0
    jitter: float = 0.2
    never: frozenset[str] = NEVER_RETRIED

    def delay(self, attempt: int, kind: str | None, max_attempts: int, random: Callable[[], float]) -> float | None:
        """Seconds until ``attempt + 1`` may start, or None: the task has failed for good."""
        if attempt >= max_attempts or (kind or "") in self.never:
            return None
        if kind == "node_lost":  # not the task's fault: re-dispatched at once (still within the budget)
            return 0.0
        base = min(self.max_s, self.min_s * (2.0 ** min(attempt - 1, 32)))
        return base * (1.0 + random() * self.jitter)


@dataclass(frozen=True)
class RolePolicy:
    """One role's settings (from its role-spec), as far as scheduling needs them."""

    backend: str = ""
    max_attempts: int | None = None
    review_rounds: int | None = None
    stall_after_s: float | None = None
    stall_stop_after_s: float | None = None
    claim_idle_timeout_s: float | None = None
    inner_loop: bool = False
    manual: bool = False

    def stall_limits(self) -> tuple[float, float]:
        """(report after, stop after) seconds of silence."""
        report = self.stall_after_s or DEFAULT_STALL_AFTER_S
        return report, self.stall_stop_after_s or max(DEFAULT_STALL_STOP_AFTER_S, 2 * report)


@dataclass(frozen=True)
class PipelineConfig:
    run_id: str
    folder: str  # the session folder, for the commands named in messages
    state_dir: str  # <folder>/.executor, for attempt log paths
    roles: Mapping[str, RolePolicy]
    secret: bytes  # makes agent ids unguessable (they authorise a worker's reports)
    max_workers: int = 4
    max_attempts: int = 3
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    shutdown_grace_s: float = 10.0
    kill_grace_s: float = 5.0
    session_budget_usd: float | None = None
    task_budget_usd: float | None = None
    budget_warn_at: float = 0.8
    keep_alive: bool = False  # serve: stay up when everything is done
    stall_check_s: float = 1.0
    random: Callable[[], float] = field(default=lambda: 0.5)  # the retry jitter's source

    def role(self, name: str) -> RolePolicy:
        return self.roles.get(name) or RolePolicy()

    def max_attempts_of(self, role: str) -> int:
        return self.role(role).max_attempts or self.max_attempts

    def command(self, verb: str) -> str:
        return f"executor {verb} --session {self.folder}"
