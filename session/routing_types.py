"""What routing takes and gives: its options, a selection, the per-task attempt state, its errors."""

from dataclasses import dataclass, field

from protocol.routing import GiveUp, TryModel
from session.backoff import exponential_delay
from session.config_models import ModelSpec

__all__ = [
    "DEFAULT_OPTIONS",
    "AttemptState",
    "BadComplexity",
    "Decision",
    "NoModelAvailable",
    "RoutingError",
    "RoutingOptions",
    "Selection",
    "UnknownModel",
]


@dataclass(frozen=True)
class RoutingOptions:
    """Knobs of the policy that the configuration file does not (yet) carry."""

    typical_tokens_in: int = 20_000
    """Input tokens of a typical call, for the budget check."""
    typical_tokens_out: int = 2_000
    """Output tokens of a typical call, for the budget check."""
    low_below: float = 0.35
    """A numeric complexity below this is ``low`` (STANDARD)."""
    high_from: float = 0.7
    """A numeric complexity from this up is ``high`` (CRITICAL); between the two, ``medium`` (PREMIUM)."""
    network_backoff_s: float = 1.0
    """Delay before the first network retry; it doubles with each retry."""
    network_backoff_max_s: float = 30.0
    """The longest delay between network retries."""

    def network_delay(self, retry: int) -> float:
        """Seconds to wait before network retry number ``retry`` (1-based)."""
        return exponential_delay(self.network_backoff_s, self.network_backoff_max_s, retry - 1)


DEFAULT_OPTIONS = RoutingOptions()


class RoutingError(Exception):
    """No model can be chosen; the message says why and what to do."""


class UnknownModel(RoutingError):
    """``force_model`` names a model the registry does not have."""


class NoModelAvailable(RoutingError):
    """Every candidate was ruled out (budget, approval, an empty chain)."""


class BadComplexity(RoutingError, ValueError):
    """``complexity`` is neither a level word, a tier name, nor a number in 0..1."""


@dataclass(frozen=True)
class Selection:
    """The model a task starts on, and why."""

    model: ModelSpec
    tier: str
    """The selected model's tier."""
    start_tier: str
    """The tier the complexity asked for (the forced model's tier when forced)."""
    reason: str
    needs_approval: bool = False
    """The complexity asked for CRITICAL but it is not approved: ``model`` is from a
    lower tier, and the caller should ask the user (then select again, approved)."""
    estimated_cost_usd: float = 0.0
    """The model's typical call at registry prices (see :class:`RoutingOptions`)."""
    forced: bool = False


Decision = TryModel | GiveUp


@dataclass
class AttemptState:
    """What routing remembers about one task between its attempts.

    :func:`next_after_failure` updates it in place: it records the failure
    (network retries per model, models ruled out) and the model it moves to.
    """

    approved_critical: bool = False
    budget_usd: float | None = None
    """The task's remaining budget in USD; ``None`` is no limit."""
    network_failures: dict[str, int] = field(default_factory=dict)
    """Model name -> network errors seen on it for this task."""
    excluded: set[str] = field(default_factory=set)
    """Models ruled out for this task (overloaded, its provider failed auth, too small a window)."""
    tried: list[str] = field(default_factory=list)
    """Every model the task was sent to, in order (repeats for retries)."""
    backend: str | None = None
    """Only models this backend runs (registry ``backend``) are candidates; None: any."""
