"""The model registry as routing reads it.

Tiers and fallback chains, typical costs, the approval gate, and where a model's key may go.
"""

import math
from urllib.parse import urlsplit, urlunsplit

from protocol.routing import ModelInfo, Registry
from session.config_fields import TIERS
from session.config_models import Config, ModelSpec
from session.routing_types import DEFAULT_OPTIONS, BadComplexity, RoutingOptions

__all__ = [
    "COMPLEXITY_TIERS",
    "CRITICAL",
    "OFFICIAL_ENDPOINTS",
    "affordable",
    "chain_from",
    "fallback_tiers",
    "gated",
    "key_endpoint",
    "model_info",
    "public_url",
    "registry_of",
    "start_tier",
    "typical_cost",
    "usd",
]


#: ``complexity.level`` words (task-analysis.json) -> the tier routing starts from.
COMPLEXITY_TIERS: dict[str, str] = {
    "low": "STANDARD",
    "medium": "PREMIUM",
    "high": "CRITICAL",
    "critical": "CRITICAL",
}

CRITICAL = "CRITICAL"

#: The vendors' own OpenAI-compatible endpoints: the one place a vendor's key may go
#: when the user named no URL.  Only OpenAI's keys are sent to an endpoint by default.
OFFICIAL_ENDPOINTS: dict[str, str] = {"openai": "https://api.openai.com/v1"}


def key_endpoint(model: ModelSpec, user_base_url: str | None = None) -> str | None:
    """Where a call to ``model`` with its provider's key may go, or None: nowhere the user pointed it.

    The model's own ``base_url`` (only a user's ``[[models]]`` entry has one); else, for an
    ``openai`` model, the base URL the user set for the backend (``user_base_url``) or
    OpenAI's own endpoint.  Any other provider's model without a ``base_url`` has no
    OpenAI-compatible endpoint its key may be sent to."""
    if model.base_url:
        return model.base_url
    if model.provider == "openai":
        return user_base_url or OFFICIAL_ENDPOINTS["openai"]
    return None


def start_tier(complexity: float | str, options: RoutingOptions = DEFAULT_OPTIONS) -> str:
    """The tier routing starts from for ``complexity`` (see the module docstring)."""
    if isinstance(complexity, bool) or not isinstance(complexity, int | float | str):
        raise BadComplexity(
            f"complexity must be low, medium, high, a tier name or a number in 0..1, not {complexity!r}"
        )
    if isinstance(complexity, str):
        word = complexity.strip().lower()
        if word in COMPLEXITY_TIERS:
            return COMPLEXITY_TIERS[word]
        if word.upper() in TIERS:
            return word.upper()
        try:
            number = float(word)
        except ValueError:
            raise BadComplexity(
                f"unknown complexity {complexity!r}: use low, medium, high, a tier name "
                f"({', '.join(TIERS)}) or a number in 0..1"
            ) from None
    else:
        number = float(complexity)
    if not math.isfinite(number) or not 0.0 <= number <= 1.0:
        raise BadComplexity(f"a numeric complexity must be in 0..1, not {complexity!r}")
    if number < options.low_below:
        return COMPLEXITY_TIERS["low"]
    if number < options.high_from:
        return COMPLEXITY_TIERS["medium"]
    return COMPLEXITY_TIERS["high"]


def fallback_tiers(config: Config, tier: str) -> list[str]:
    """The tiers tried from ``tier`` on, in order.

    ``tier`` and the rest of ``router.fallback`` after it; a tier the fallback does
    not name is followed by the fallback's tiers cheaper than it, in fallback order.
    """
    tier = tier.upper()
    fallback = [str(name) for name in config.router.fallback]
    if tier in fallback:
        return fallback[fallback.index(tier) :]
    rank = TIERS.index(tier)
    return [tier, *(name for name in fallback if TIERS.index(name) < rank)]


def chain_from(config: Config, tier: str, backend: str | None = None) -> list[ModelSpec]:
    """Every registry model along :func:`fallback_tiers` from ``tier``; registry order within a tier.

    With ``backend``, only the models that backend runs."""
    return [
        model
        for name in fallback_tiers(config, tier)
        for model in config.models_in_tier(name)
        if backend is None or model.backend == backend
    ]


def typical_cost(model: ModelSpec, options: RoutingOptions = DEFAULT_OPTIONS) -> float:
    """USD of a typical call of ``model`` at registry prices."""
    return model.cost(options.typical_tokens_in, options.typical_tokens_out)


def gated(config: Config, model: ModelSpec, approved: bool) -> bool:
    """Whether ``model`` is held back by the CRITICAL approval gate."""
    return model.tier == CRITICAL and config.router.critical_needs_approval and not approved


def affordable(model: ModelSpec, budget_usd: float | None, options: RoutingOptions) -> bool:
    return budget_usd is None or typical_cost(model, options) <= budget_usd


def public_url(url: str | None) -> str | None:
    """``url`` safe to show: credentials (``user:password@``) and the query string masked."""
    if url is None:
        return None
    parts = urlsplit(url)
    host = parts.netloc
    if "@" in host:
        host = "***@" + host.rsplit("@", 1)[1]
    return urlunsplit((parts.scheme, host, parts.path, "***" if parts.query else "", ""))


def model_info(model: ModelSpec) -> ModelInfo:
    """``model`` as a :class:`ModelInfo` (its ``base_url`` without credentials)."""
    return ModelInfo(
        name=model.name,
        provider=model.provider,
        backend=model.backend,
        tier=model.tier,
        input_per_mtok=model.input_per_mtok,
        output_per_mtok=model.output_per_mtok,
        cached_per_mtok=model.cached_per_mtok,
        context_window=model.context_window,
        base_url=public_url(model.base_url),
    )


def registry_of(config: Config) -> Registry:
    """The registry and ``[router]`` settings of ``config`` as a :class:`Registry`."""
    return Registry(
        models=tuple(model_info(model) for model in config.models),
        fallback=tuple(config.router.fallback),
        critical_needs_approval=config.router.critical_needs_approval,
        network_retries=config.router.network_retries,
        fallback_backend=config.router.fallback_backend,
    )


def usd(value: float) -> str:
    return f"${value:.4f}".rstrip("0").rstrip(".") if value else "$0"
