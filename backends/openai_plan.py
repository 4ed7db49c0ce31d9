"""Where the ``openai`` backend sends a role's calls, decided before the run starts.

Pure: the role-spec's (or the environment's) model and base URL, and what the
model registry knows of the model, give one of

- :class:`Direct`: the role names a model and a base URL the registry does not
  describe — call that endpoint with that model (the registry, when it knows the
  model, still gives its prices);
- :class:`Routed`: the Router and the KeyPool choose among the registry models
  the ``openai`` backend runs (``force_model`` first when the role names one), each
  call going only where :func:`session.routing_chain.key_endpoint` allows;
- a problem (a string naming the role-spec key, the variable or the ``[[models]]``
  entry that fixes it): the run is refused before it starts.

A model the registry lacks never falls through to a built-in endpoint.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

from session.config_models import ModelSpec
from session.routing_chain import key_endpoint

__all__ = ["MODEL_ENV", "Direct", "Plan", "Routed", "plan_calls", "valid_base_url"]

#: The model of roles whose role-spec names none (with OPENAI_BASE_URL: no registry entry needed).
MODEL_ENV = "OPENAI_MODEL"
_BASE_URL_ENV = "OPENAI_BASE_URL"


@dataclass(frozen=True)
class Direct:
    model: str
    base_url: str


@dataclass(frozen=True)
class Routed:
    force_model: str | None


Plan = Direct | Routed


def valid_base_url(url: str) -> bool:
    parts = urlsplit(url)
    return parts.scheme in ("http", "https") and bool(parts.hostname)


def plan_calls(
    role: str,
    model: str | None,
    base_url: str | None,
    find_model: Callable[[str], ModelSpec | None],
    has_backend_models: bool,
    backend: str = "openai",
) -> Plan | str:
    """How role ``role`` of ``backend`` makes its calls (see the module docstring), or why it cannot.

    ``model`` and ``base_url``: the role-spec's, else ``OPENAI_MODEL`` / ``OPENAI_BASE_URL``;
    ``find_model``: the registry lookup; ``has_backend_models``: the registry has a model
    whose ``backend`` is ``backend``."""
    where = f"role '{role}' uses backend '{backend}'"
    fix_both = f"set `model:` and `base_url:` in its role-spec (or {MODEL_ENV} and {_BASE_URL_ENV})"
    if base_url is not None and not valid_base_url(base_url):
        return f"{where}, but its base URL must be an http:// or https:// URL with a host"
    if model is None:
        if has_backend_models:
            return Routed(force_model=None)
        return (
            f"{where} but names no model, and the model registry has none that backend runs: {fix_both}, "
            f'or add a [[models]] entry with backend = "{backend}" and its base_url to executor.toml'
        )
    entry = find_model(model)
    if entry is not None and key_endpoint(entry, base_url) is not None:
        return Routed(force_model=model)
    if base_url is not None:
        return Direct(model=model, base_url=base_url)
    if entry is not None:
        return (
            f"{where} with model '{model}', a {entry.provider} model that has no OpenAI-compatible endpoint "
            f"in the registry: set `base_url:` in its role-spec (or {_BASE_URL_ENV}) to the server that "
            f"serves it, or give its [[models]] entry a base_url"
        )
    return (
        f"{where} with model '{model}', which is not in the model registry, and names no base URL: "
        f"set `base_url:` in its role-spec (or {_BASE_URL_ENV}) to the server's OpenAI-compatible "
        f"endpoint, or add a [[models]] entry for '{model}' (name, provider, backend, tier, prices, "
        "context_window, base_url) to executor.toml"
    )
