"""The routing policy: which model a task starts on, and where it goes after a failure.

Pure functions of the :class:`~session.config_models.Config` (its ``[[models]]``
registry and ``[router]`` settings) and of a task's :class:`AttemptState`.  No
actors, no I/O and no clock: a delay is *returned* (``TryModel.delay_s``), never
slept, so every decision is deterministic and testable without waiting.  The
Router actor (:mod:`actors.router`) holds one :class:`AttemptState` per task and
calls these.

Choosing a model (:func:`select_model`, :func:`select_with_fallback`):

- ``complexity`` gives the starting tier: ``low`` -> STANDARD, ``medium`` ->
  PREMIUM, ``high``/``critical`` -> CRITICAL (the words of task-analysis.json's
  ``complexity.level``); a number in 0..1 is cut at :attr:`RoutingOptions.low_below`
  and :attr:`RoutingOptions.high_from`; a tier name (``free``, ``PREMIUM``) starts
  at that tier.
- The candidates run along the fallback chain (``[router] fallback``, default
  CRITICAL -> PREMIUM -> STANDARD -> FREE) from the starting tier; within a tier,
  registry order.
- A CRITICAL model needs the user's approval when ``router.critical_needs_approval``:
  until then the selection comes from the next tier down and carries
  ``needs_approval=True`` so the caller can escalate.
- With a budget, a model whose typical call (:attr:`RoutingOptions.typical_tokens_in`
  / ``typical_tokens_out`` at its registry prices) costs more than the remaining
  budget is skipped.
- ``force_model`` wins over complexity and budget when the registry knows it
  (:meth:`Config.find_model`); naming a model is choosing it, so a forced CRITICAL
  model needs no further approval.  An unknown name is :class:`UnknownModel`.

After a failure (:func:`next_after_failure`), by :data:`protocol.types.ErrorKind`:

- ``overloaded`` (503/529/"no capacity"): the next model of the chain, same tier
  first, then lower tiers; the overloaded model is not tried again for this task.
- ``network``: the same model again after a backoff, ``router.network_retries``
  times; then the first model of the next tier down.
- ``context_too_long``: the model with the smallest context window larger than
  the current one's, from any tier (approval and budget permitting); among equal
  windows, the one earliest in the chain from the current tier, then the
  cheapest.  None -> give up, saying so.
- ``rate_limited``: the same model at once (the key pool moves to another key or
  waits; changing model would not help).
- ``auth``: the next model of the chain from another provider.
- anything else: give up; the executor's attempt budget decides what follows.

Unlike LiteLLM's fallbacks (see the notes on model routing), moving on never
restarts a cycle: models ruled out for a task stay ruled out, and network
retries are counted per model for the whole task.

Keys go only where the user pointed them.  A task of a backend is routed only
among the registry models *that backend runs* (``backend`` of the selection,
kept in :attr:`AttemptState.backend`), and :func:`~session.routing_chain.key_endpoint` says where a
model's key may be sent: the ``base_url`` the user configured for it, or the
vendor's own endpoint for the vendor's key.  No built-in registry entry carries
an endpoint, so nothing built in ever receives a key.

The pieces: :mod:`session.routing_types` (options, selections, state, errors) and
:mod:`session.routing_chain` (tiers, chains, costs, key endpoints); this module decides.
"""

from __future__ import annotations

from collections.abc import Iterable

from protocol.routing import GiveUp, TryModel
from protocol.types import ERROR_KINDS
from session.config_models import Config, ModelSpec
from session.routing_chain import CRITICAL, affordable, chain_from, fallback_tiers, gated, start_tier, typical_cost, usd
from session.routing_types import (
    DEFAULT_OPTIONS,
    AttemptState,
    Decision,
    NoModelAvailable,
    RoutingOptions,
    Selection,
    UnknownModel,
)

__all__ = [
    "next_after_failure",
    "select_model",
    "select_with_fallback",
]


# --------------------------------------------------------------------------- choosing the first model


def _forced(config: Config, force_model: str, budget_usd: float | None, options: RoutingOptions) -> Selection:
    model = config.find_model(force_model)
    if model is None:
        known = ", ".join(spec.name for spec in config.models) or "none"
        raise UnknownModel(
            f"model '{force_model}' is not in the registry; add a [[models]] entry for it or choose one of: {known}"
        )
    cost = typical_cost(model, options)
    reason = f"forced: {model.name}"
    if budget_usd is not None and cost > budget_usd:
        reason += f" (its typical call, {usd(cost)}, exceeds the remaining budget of {usd(budget_usd)})"
    return Selection(
        model=model, tier=model.tier, start_tier=model.tier, reason=reason, estimated_cost_usd=cost, forced=True
    )


def _candidates(
    config: Config,
    tier: str,
    approved: bool,
    budget_usd: float | None,
    options: RoutingOptions,
    backend: str | None = None,
) -> tuple[list[ModelSpec], list[str]]:
    """The usable models along the chain from ``tier``, and a note for each one skipped."""
    usable: list[ModelSpec] = []
    skipped: list[str] = []
    for model in chain_from(config, tier, backend):
        if not affordable(model, budget_usd, options):
            skipped.append(f"{model.name} ({usd(typical_cost(model, options))} a typical call > budget)")
        elif gated(config, model, approved):
            skipped.append(f"{model.name} (CRITICAL, not approved)")
        else:
            usable.append(model)
    return usable, skipped


def select_with_fallback(
    config: Config,
    complexity: float | str = "medium",
    budget_usd: float | None = None,
    force_model: str | None = None,
    approved_critical: bool = False,
    options: RoutingOptions = DEFAULT_OPTIONS,
    backend: str | None = None,
) -> list[ModelSpec]:
    """Every model the task may use, best first: the fallback chain from the starting tier,
    less the models the approval gate or the budget rule out (with ``backend``, only its models).

    With ``force_model``, the forced model comes first, then the chain from its tier.
    May be empty; raises :class:`UnknownModel` and :class:`BadComplexity`.
    """
    if force_model is not None:
        forced = _forced(config, force_model, budget_usd, options).model
        rest, _ = _candidates(config, forced.tier, approved_critical, budget_usd, options, backend)
        return [forced, *(model for model in rest if model.name != forced.name)]
    start = start_tier(complexity, options)
    usable, _ = _candidates(config, start, approved_critical, budget_usd, options, backend)
    return usable


def select_model(
    config: Config,
    complexity: float | str = "medium",
    budget_usd: float | None = None,
    force_model: str | None = None,
    approved_critical: bool = False,
    options: RoutingOptions = DEFAULT_OPTIONS,
    backend: str | None = None,
) -> Selection:
    """The model a task starts on (see the module docstring for the rules); with ``backend``,
    one of the models that backend runs (a forced model is taken as named).

    Raises :class:`UnknownModel` for a ``force_model`` the registry lacks,
    :class:`BadComplexity`, and :class:`NoModelAvailable` when every candidate is
    ruled out (the message lists each and why).
    """
    if force_model is not None:
        return _forced(config, force_model, budget_usd, options)
    tier = start_tier(complexity, options)
    # The gate matters only when a CRITICAL model would otherwise be chosen: an
    # escalation for a tier the registry lacks, or the budget rules out, is pointless.
    gate_closed = (
        tier == CRITICAL
        and config.router.critical_needs_approval
        and not approved_critical
        and any(
            affordable(model, budget_usd, options)
            for model in config.models_in_tier(CRITICAL)
            if backend is None or model.backend == backend
        )
    )
    usable, skipped = _candidates(config, tier, approved_critical, budget_usd, options, backend)
    if not usable:
        tiers = " -> ".join(fallback_tiers(config, tier))
        whose = f" for backend '{backend}'" if backend else ""
        detail = (
            f"; ruled out: {', '.join(skipped)}"
            if skipped
            else f"; the registry has no model{whose} in those tiers (add a [[models]] entry with "
            f'backend = "{backend or "..."}")'
        )
        fix = ""
        if gate_closed:
            fix = " Approve CRITICAL for this task, or raise the budget."
        elif budget_usd is not None:
            fix = " Raise the budget, or add a cheaper model to [[models]]."
        raise NoModelAvailable(f"no usable model along {tiers}{detail}.{fix}")
    model = usable[0]
    parts = [f"complexity {complexity!r} starts at {tier}"]
    if gate_closed:
        parts.append("CRITICAL needs the user's approval, so a lower tier until then")
    elif model.tier != tier:
        parts.append(f"no usable {tier} model, fell back to {model.tier}")
    if skipped:
        parts.append(f"skipped {', '.join(skipped)}")
    return Selection(
        model=model,
        tier=model.tier,
        start_tier=tier,
        reason="; ".join(parts),
        needs_approval=gate_closed,
        estimated_cost_usd=typical_cost(model, options),
    )


# --------------------------------------------------------------------------- after a failure


def _first_usable(
    config: Config, models: Iterable[ModelSpec], state: AttemptState, options: RoutingOptions, current: str
) -> ModelSpec | None:
    for model in models:
        if model.name == current or model.name in state.excluded:
            continue
        if state.backend is not None and model.backend != state.backend:
            continue
        if gated(config, model, state.approved_critical) or not affordable(model, state.budget_usd, options):
            continue
        return model
    return None


def _exhausted(config: Config, reason: str) -> GiveUp:
    backend = config.router.fallback_backend
    if backend is not None:
        reason += f"; hand the task to the fallback backend '{backend}'"
    return GiveUp(reason=reason, fallback_backend=backend)


def _move(state: AttemptState, model: ModelSpec, reason: str, delay_s: float = 0.0) -> TryModel:
    state.tried.append(model.name)
    return TryModel(model=model.name, tier=model.tier, delay_s=delay_s, reason=reason)


def _larger_window(config: Config, spec: ModelSpec, state: AttemptState, options: RoutingOptions) -> TryModel | GiveUp:
    state.excluded.add(spec.name)
    chain = chain_from(config, spec.tier)
    rank = {model.name: index for index, model in enumerate(chain)}
    order = {model.name: index for index, model in enumerate(config.models)}
    larger = sorted(
        (
            model
            for model in config.models
            if model.context_window > spec.context_window and (state.backend is None or model.backend == state.backend)
        ),
        key=lambda model: (
            model.context_window,
            rank.get(model.name, len(chain)),
            typical_cost(model, options),
            order[model.name],
        ),
    )
    if not larger:
        return GiveUp(
            reason=f"context too long: no model in the registry has a context window larger than "
            f"{spec.name}'s {spec.context_window:,} tokens"
        )
    pick = _first_usable(config, larger, state, options, spec.name)
    if pick is None:
        held = [
            f"{model.name} ({'CRITICAL, not approved' if gated(config, model, state.approved_critical) else 'budget'})"
            for model in larger
            if model.name not in state.excluded
        ]
        detail = f": {', '.join(held)}" if held else " (all already ruled out for this task)"
        return GiveUp(
            reason=f"context too long: every model with a window larger than {spec.name}'s is ruled out{detail}"
        )
    return _move(
        state,
        pick,
        f"context too long for {spec.name} ({spec.context_window:,} tokens): {pick.name} has {pick.context_window:,}",
    )


def next_after_failure(
    config: Config,
    current: str,
    error_kind: str,
    state: AttemptState,
    options: RoutingOptions = DEFAULT_OPTIONS,
) -> Decision:
    """What to try after an attempt on ``current`` failed with ``error_kind`` (see the module docstring).

    ``state`` is updated in place.  Never raises for an unknown model or error kind:
    it gives up with the reason.
    """
    if error_kind not in ERROR_KINDS:
        return GiveUp(reason=f"unknown error kind '{error_kind}'")
    spec = config.find_model(current)
    if spec is None:
        return GiveUp(reason=f"{error_kind} on '{current}', which is not in the registry: no chain to follow")
    name = spec.name

    if error_kind == "rate_limited":
        return _move(state, spec, f"rate limited on {name}: same model, the key pool moves to another key or waits")

    if error_kind == "network":
        failures = state.network_failures.get(name, 0) + 1
        state.network_failures[name] = failures
        retries = config.router.network_retries
        if failures <= retries:
            return _move(
                state,
                spec,
                f"network error on {name}: retry {failures} of {retries}",
                delay_s=options.network_delay(failures),
            )
        state.excluded.add(name)
        lower = [model for model in chain_from(config, spec.tier) if model.tier != spec.tier]
        pick = _first_usable(config, lower, state, options, name)
        if pick is None:
            return _exhausted(config, f"network errors on {name} after {retries} retries, and no lower tier is left")
        return _move(state, pick, f"network errors on {name} after {retries} retries: next tier, {pick.tier}")

    if error_kind == "overloaded":
        state.excluded.add(name)
        pick = _first_usable(config, chain_from(config, spec.tier), state, options, name)
        if pick is None:
            return _exhausted(config, f"{name} is overloaded and the fallback chain is exhausted")
        where = "same tier" if pick.tier == spec.tier else f"next tier, {pick.tier}"
        return _move(state, pick, f"{name} is overloaded: {where}")

    if error_kind == "auth":
        state.excluded.update(model.name for model in config.models if model.provider == spec.provider)
        pick = _first_usable(config, chain_from(config, spec.tier), state, options, name)
        if pick is None:
            return _exhausted(config, f"authentication failed for {spec.provider} and no other provider is left")
        return _move(state, pick, f"authentication failed for {spec.provider}: {pick.provider}'s {pick.name}")

    if error_kind == "context_too_long":
        return _larger_window(config, spec, state, options)

    return GiveUp(reason=f"{error_kind} is not a routing matter; the executor's attempt budget decides")
