"""The routing policy: starting tiers, the fallback chain, the CRITICAL gate, budgets, and every error kind."""

from __future__ import annotations

import math
from typing import Any

import msgspec
import pytest

from protocol.routing import GiveUp, TryModel
from protocol.types import ERROR_KINDS
from session.config_models import DEFAULT_MODELS, Config
from session.routing import next_after_failure, select_model, select_with_fallback
from session.routing_chain import chain_from, fallback_tiers, public_url, registry_of, start_tier, typical_cost
from session.routing_types import AttemptState, BadComplexity, NoModelAvailable, RoutingOptions, UnknownModel

# The built-in registry plus a user's local server, by tier (registry order within each):
#   CRITICAL  claude-opus-4-1
#   PREMIUM   claude-sonnet-4-5, gpt-5, gemini-2.5-pro
#   STANDARD  gpt-5-mini, gemini-2.5-flash, claude-haiku-4-5
#   FREE      local-llama (the user's [[models]] entry: nothing built in has an endpoint)
PREMIUM = ["claude-sonnet-4-5", "gpt-5", "gemini-2.5-pro"]
STANDARD = ["gpt-5-mini", "gemini-2.5-flash", "claude-haiku-4-5"]
ALL_BY_CHAIN = ["claude-opus-4-1", *PREMIUM, *STANDARD, "local-llama"]
LOCAL = {
    "name": "local-llama",
    "provider": "openai-compatible",
    "backend": "openai",
    "tier": "FREE",
    "input_per_mtok": 0.0,
    "output_per_mtok": 0.0,
    "cached_per_mtok": 0.0,
    "context_window": 32_768,
    "base_url": "http://127.0.0.1:8080/v1",
}


def make_config(models: list[dict[str, Any]] | None = None, **router: Any) -> Config:
    chosen = [*DEFAULT_MODELS, LOCAL] if models is None else models
    return Config.model_validate({"models": [dict(m) for m in chosen], "router": router})


def model(name: str, tier: str, window: int = 100_000, provider: str = "openai", price: float = 1.0) -> dict:
    return {
        "name": name,
        "provider": provider,
        "backend": "codex",
        "tier": tier,
        "input_per_mtok": price,
        "output_per_mtok": price,
        "context_window": window,
    }


@pytest.fixture
def config() -> Config:
    return make_config()


def names(models) -> list[str]:
    return [m.name for m in models]


# --------------------------------------------------------------------------- complexity -> tier


@pytest.mark.parametrize(
    ("complexity", "tier"),
    [
        ("low", "STANDARD"),
        ("medium", "PREMIUM"),
        ("high", "CRITICAL"),
        ("critical", "CRITICAL"),
        (" High ", "CRITICAL"),
        ("free", "FREE"),
        ("PREMIUM", "PREMIUM"),
        ("standard", "STANDARD"),
        (0, "STANDARD"),
        (0.0, "STANDARD"),
        (0.3499, "STANDARD"),
        (0.35, "PREMIUM"),
        (0.6999, "PREMIUM"),
        (0.7, "CRITICAL"),
        (1, "CRITICAL"),
        ("0.5", "PREMIUM"),
    ],
)
def test_complexity_maps_to_a_starting_tier(complexity, tier):
    assert start_tier(complexity) == tier


@pytest.mark.parametrize("bad", [True, None, -0.01, 1.01, math.nan, math.inf, "huge", "", "2", [0.5]])
def test_a_complexity_it_cannot_read_is_a_clear_error(bad):
    with pytest.raises(BadComplexity, match="complexity"):
        start_tier(bad)


def test_the_numeric_thresholds_are_options():
    options = RoutingOptions(low_below=0.1, high_from=0.95)
    assert start_tier(0.2, options) == "PREMIUM"
    assert start_tier(0.9, options) == "PREMIUM"
    assert start_tier(0.95, options) == "CRITICAL"


# --------------------------------------------------------------------------- the chain


def test_the_default_chain_runs_critical_premium_standard_free(config):
    assert fallback_tiers(config, "CRITICAL") == ["CRITICAL", "PREMIUM", "STANDARD", "FREE"]
    assert fallback_tiers(config, "premium") == ["PREMIUM", "STANDARD", "FREE"]
    assert fallback_tiers(config, "FREE") == ["FREE"]
    assert names(chain_from(config, "CRITICAL")) == ALL_BY_CHAIN
    assert names(chain_from(config, "STANDARD")) == [*STANDARD, "local-llama"]


def test_models_within_a_tier_keep_registry_order():
    config = make_config([model("b", "PREMIUM"), model("a", "STANDARD"), model("c", "PREMIUM"), model("z", "PREMIUM")])
    assert names(chain_from(config, "PREMIUM")) == ["b", "c", "z", "a"]


def test_a_custom_fallback_is_followed_and_a_tier_outside_it_falls_into_its_cheaper_tiers(config):
    custom = make_config(fallback=["premium", "FREE"])
    assert fallback_tiers(custom, "PREMIUM") == ["PREMIUM", "FREE"]
    assert fallback_tiers(custom, "STANDARD") == ["STANDARD", "FREE"]
    assert fallback_tiers(custom, "CRITICAL") == ["CRITICAL", "PREMIUM", "FREE"]
    assert names(chain_from(custom, "PREMIUM")) == [*PREMIUM, "local-llama"]


# --------------------------------------------------------------------------- select_model


def test_each_complexity_selects_the_first_model_of_its_tier(config):
    assert select_model(config, "low", None, None, False).model.name == "gpt-5-mini"
    medium = select_model(config, "medium", None, None, False)
    assert (medium.model.name, medium.tier, medium.start_tier, medium.needs_approval) == (
        "claude-sonnet-4-5",
        "PREMIUM",
        "PREMIUM",
        False,
    )
    assert select_model(config, 0.1, None, None, False).model.name == "gpt-5-mini"
    assert select_model(config, "free", None, None, False).model.name == "local-llama"


def test_critical_waits_for_approval_and_meanwhile_uses_the_next_tier_down(config):
    waiting = select_model(config, "high", None, None, approved_critical=False)
    assert waiting.model.name == "claude-sonnet-4-5"
    assert waiting.tier == "PREMIUM"
    assert waiting.start_tier == "CRITICAL"
    assert waiting.needs_approval is True
    assert "approval" in waiting.reason

    approved = select_model(config, "high", None, None, approved_critical=True)
    assert approved.model.name == "claude-opus-4-1"
    assert approved.needs_approval is False


def test_critical_needs_no_approval_when_the_config_says_so():
    config = make_config(critical_needs_approval=False)
    chosen = select_model(config, "critical", None, None, approved_critical=False)
    assert chosen.model.name == "claude-opus-4-1"
    assert chosen.needs_approval is False


def test_no_escalation_is_asked_for_a_critical_tier_the_registry_lacks():
    config = make_config([model("p", "PREMIUM"), model("s", "STANDARD")])
    chosen = select_model(config, "high", None, None, False)
    assert chosen.model.name == "p"
    assert chosen.needs_approval is False
    assert "fell back to PREMIUM" in chosen.reason


def test_an_empty_starting_tier_falls_down_the_chain():
    config = make_config([model("s", "STANDARD"), model("f", "FREE", price=0.0)])
    assert select_model(config, "medium", None, None, False).model.name == "s"


def test_the_budget_skips_models_whose_typical_call_costs_more(config):
    # Typical call: 20k in + 2k out.  sonnet $0.09, gpt-5 $0.045, gpt-5-mini $0.009, local-llama $0.
    assert typical_cost(config.find_model("claude-sonnet-4-5")) == pytest.approx(0.09)
    assert typical_cost(config.find_model("gpt-5")) == pytest.approx(0.045)
    chosen = select_model(config, "medium", 0.05, None, False)
    assert chosen.model.name == "gpt-5"
    assert "claude-sonnet-4-5" in chosen.reason
    assert "budget" in chosen.reason
    assert chosen.estimated_cost_usd == pytest.approx(0.045)
    assert select_model(config, "medium", 0.01, None, False).model.name == "gpt-5-mini"
    assert select_model(config, "medium", 0.0, None, False).model.name == "local-llama"
    assert select_model(config, "medium", None, None, False).model.name == "claude-sonnet-4-5"


def test_the_budget_rules_out_critical_before_any_approval_is_asked_for(config):
    chosen = select_model(config, "high", 0.1, None, False)  # opus costs $0.45 a typical call
    assert chosen.model.name == "claude-sonnet-4-5"
    assert chosen.needs_approval is False
    assert "claude-opus-4-1 ($0.45 a typical call > budget)" in chosen.reason


def test_the_typical_call_is_an_option(config):
    big = RoutingOptions(typical_tokens_in=200_000, typical_tokens_out=20_000)
    assert select_model(config, "medium", 0.5, None, False, big).model.name == "gpt-5"  # sonnet: $0.90
    assert select_model(config, "medium", 0.5, None, False).model.name == "claude-sonnet-4-5"


def test_when_the_budget_rules_out_everything_the_error_says_why_and_what_to_do():
    config = make_config([model("p", "PREMIUM", price=10.0), model("s", "STANDARD", price=5.0)])
    with pytest.raises(NoModelAvailable) as caught:
        select_model(config, "medium", 0.01, None, False)
    message = str(caught.value)
    assert "PREMIUM -> STANDARD -> FREE" in message
    assert "p ($0.22 a typical call > budget)" in message
    assert "s ($0.11 a typical call > budget)" in message
    assert "Raise the budget" in message


def test_a_closed_gate_with_nothing_below_tells_to_approve():
    config = make_config([model("c", "CRITICAL")])
    with pytest.raises(NoModelAvailable, match=r"c \(CRITICAL, not approved\).*Approve CRITICAL"):
        select_model(config, "high", None, None, False)
    assert select_model(config, "high", None, None, True).model.name == "c"


def test_force_model_wins_over_complexity_budget_and_the_gate(config):
    forced = select_model(config, "low", 0.0001, "claude-opus-4-1", False)
    assert forced.model.name == "claude-opus-4-1"
    assert forced.forced is True
    assert forced.needs_approval is False
    assert forced.tier == "CRITICAL"
    assert "forced" in forced.reason
    assert "exceeds the remaining budget" in forced.reason


def test_force_model_accepts_what_find_model_accepts(config):
    assert select_model(config, "low", None, "anthropic/claude-sonnet-4-5-20250929", False).model.name == (
        "claude-sonnet-4-5"
    )
    assert select_model(config, "low", None, "GPT-5", False).model.name == "gpt-5"


def test_an_unknown_forced_model_is_a_clear_error(config):
    with pytest.raises(UnknownModel) as caught:
        select_model(config, "low", None, "llama-9000", False)
    message = str(caught.value)
    assert "'llama-9000' is not in the registry" in message
    assert "[[models]]" in message
    assert "claude-opus-4-1" in message


# --------------------------------------------------------------------------- select_with_fallback


def test_the_candidate_list_follows_the_chain_from_the_starting_tier(config):
    assert names(select_with_fallback(config, "high", None, None, True)) == ALL_BY_CHAIN
    assert names(select_with_fallback(config, "high", None, None, False)) == ALL_BY_CHAIN[1:]
    assert names(select_with_fallback(config, "medium")) == [*PREMIUM, *STANDARD, "local-llama"]
    assert names(select_with_fallback(config, "low")) == [*STANDARD, "local-llama"]


def test_the_candidate_list_drops_what_the_budget_rules_out(config):
    assert names(select_with_fallback(config, "medium", 0.05)) == ["gpt-5", "gemini-2.5-pro", *STANDARD, "local-llama"]


def test_a_forced_model_heads_the_candidate_list_then_its_tier_and_lower(config):
    assert names(select_with_fallback(config, "low", None, "gemini-2.5-pro")) == [
        "gemini-2.5-pro",
        "claude-sonnet-4-5",
        "gpt-5",
        *STANDARD,
        "local-llama",
    ]
    with pytest.raises(UnknownModel):
        select_with_fallback(config, "low", None, "nope")


def test_the_first_candidate_is_the_selection(config):
    for complexity in ("low", "medium", "high", 0.2, 0.9):
        for approved in (False, True):
            for budget in (None, 0.05, 0.0):
                chosen = select_model(config, complexity, budget, None, approved)
                assert select_with_fallback(config, complexity, budget, None, approved)[0] == chosen.model


# --------------------------------------------------------------------------- after a failure


def test_rate_limited_stays_on_the_same_model_at_once(config):
    state = AttemptState()
    for _ in range(5):
        decision = next_after_failure(config, "gpt-5", "rate_limited", state)
        assert decision == TryModel(model="gpt-5", tier="PREMIUM", delay_s=0.0, reason=decision.reason)
        assert "key pool" in decision.reason
    assert state.excluded == set()


def test_overloaded_walks_the_chain_same_tier_first_then_lower_tiers_then_gives_up(config):
    state = AttemptState()
    current = "claude-sonnet-4-5"
    visited = [current]
    while True:
        decision = next_after_failure(config, current, "overloaded", state)
        if isinstance(decision, GiveUp):
            break
        assert decision.delay_s == 0.0
        current = decision.model
        visited.append(current)
    assert visited == [*PREMIUM, *STANDARD, "local-llama"]
    assert "exhausted" in decision.reason
    assert decision.fallback_backend is None
    assert state.tried == visited[1:]


def test_overloaded_tries_an_untried_model_of_the_same_tier_before_going_lower(config):
    decision = next_after_failure(config, "gemini-2.5-pro", "overloaded", AttemptState())
    assert decision.model == "claude-sonnet-4-5"
    assert "same tier" in decision.reason


def test_overloaded_never_goes_back_to_a_model_ruled_out_for_the_task(config):
    state = AttemptState()
    assert next_after_failure(config, "claude-sonnet-4-5", "overloaded", state).model == "gpt-5"
    assert next_after_failure(config, "gpt-5", "overloaded", state).model == "gemini-2.5-pro"
    decision = next_after_failure(config, "gemini-2.5-pro", "overloaded", state)
    assert (decision.model, decision.tier) == ("gpt-5-mini", "STANDARD")
    assert "next tier, STANDARD" in decision.reason


def test_an_exhausted_chain_names_the_fallback_backend():
    config = make_config([model("p", "PREMIUM")], fallback_backend="claude")
    decision = next_after_failure(config, "p", "overloaded", AttemptState())
    assert isinstance(decision, GiveUp)
    assert decision.fallback_backend == "claude"
    assert "fallback backend 'claude'" in decision.reason


def test_network_errors_retry_the_same_model_with_backoff_then_move_a_tier_down(config):
    state = AttemptState()
    delays = []
    for _ in range(3):
        decision = next_after_failure(config, "gpt-5", "network", state)
        assert (decision.model, decision.tier) == ("gpt-5", "PREMIUM")
        delays.append(decision.delay_s)
    assert delays == [1.0, 2.0, 4.0]
    assert "retry 3 of 3" in decision.reason
    decision = next_after_failure(config, "gpt-5", "network", state)
    assert (decision.model, decision.tier, decision.delay_s) == ("gpt-5-mini", "STANDARD", 0.0)
    assert "next tier" in decision.reason
    assert state.network_failures == {"gpt-5": 4}
    assert "gpt-5" in state.excluded


def test_network_retries_come_from_the_config():
    config = make_config(network_retries=1)
    state = AttemptState()
    assert next_after_failure(config, "claude-opus-4-1", "network", state).model == "claude-opus-4-1"
    assert next_after_failure(config, "claude-opus-4-1", "network", state).model == "claude-sonnet-4-5"
    none = make_config(network_retries=0)
    assert next_after_failure(none, "gpt-5-mini", "network", AttemptState()).model == "local-llama"


def test_network_retries_are_counted_per_model_for_the_whole_task(config):
    state = AttemptState()
    for _ in range(3):
        next_after_failure(config, "gpt-5", "network", state)
    next_after_failure(config, "gpt-5", "rate_limited", state)  # something else in between does not reset it
    assert next_after_failure(config, "gpt-5", "network", state).model == "gpt-5-mini"
    assert next_after_failure(config, "gpt-5-mini", "network", state).model == "gpt-5-mini"  # its own count


def test_the_network_backoff_doubles_up_to_a_cap():
    options = RoutingOptions(network_backoff_s=0.5, network_backoff_max_s=3.0)
    config = make_config(network_retries=5)
    state = AttemptState()
    delays = [next_after_failure(config, "gpt-5", "network", state, options).delay_s for _ in range(5)]
    assert delays == [0.5, 1.0, 2.0, 3.0, 3.0]


def test_network_errors_with_no_lower_tier_give_up():
    config = make_config([model("a", "FREE", price=0), model("b", "FREE", price=0)], network_retries=0)
    decision = next_after_failure(config, "a", "network", AttemptState())
    assert isinstance(decision, GiveUp)
    assert "no lower tier" in decision.reason


def test_context_too_long_moves_to_the_smallest_larger_window(config):
    # local-llama (32k): the 200k models are the smallest larger; opus waits for approval,
    # sonnet and haiku are outside FREE's chain, and haiku is the cheaper.
    decision = next_after_failure(config, "local-llama", "context_too_long", AttemptState())
    assert (decision.model, decision.tier) == ("claude-haiku-4-5", "STANDARD")
    assert "32,768" in decision.reason
    assert "200,000" in decision.reason
    # gpt-5-mini (400k): gemini-2.5-flash (1M, its own tier) before gemini-2.5-pro (1M, PREMIUM).
    assert next_after_failure(config, "gpt-5-mini", "context_too_long", AttemptState()).model == "gemini-2.5-flash"
    assert next_after_failure(config, "gpt-5", "context_too_long", AttemptState()).model == "gemini-2.5-pro"
    # claude-sonnet-4-5 (200k): the smallest larger window is 400k, not 1M.
    assert next_after_failure(config, "claude-sonnet-4-5", "context_too_long", AttemptState()).model == "gpt-5"


def test_context_too_long_with_no_larger_window_gives_up_with_the_reason(config):
    decision = next_after_failure(config, "gemini-2.5-pro", "context_too_long", AttemptState())
    assert isinstance(decision, GiveUp)
    assert "no model in the registry has a context window larger than gemini-2.5-pro's 1,048,576 tokens" in (
        decision.reason
    )


def test_context_too_long_respects_the_gate_and_the_budget():
    config = make_config([model("small", "PREMIUM", window=1000), model("big", "CRITICAL", window=9000, price=50)])
    held = next_after_failure(config, "small", "context_too_long", AttemptState())
    assert isinstance(held, GiveUp)
    assert "big (CRITICAL, not approved)" in held.reason
    approved = next_after_failure(config, "small", "context_too_long", AttemptState(approved_critical=True))
    assert approved.model == "big"
    poor = next_after_failure(config, "small", "context_too_long", AttemptState(approved_critical=True, budget_usd=0.1))
    assert isinstance(poor, GiveUp)
    assert "big (budget)" in poor.reason


def test_context_too_long_skips_a_larger_model_already_ruled_out():
    config = make_config([model("a", "STANDARD", 1000), model("b", "STANDARD", 2000), model("c", "STANDARD", 3000)])
    state = AttemptState(excluded={"b"})
    assert next_after_failure(config, "a", "context_too_long", state).model == "c"


def test_auth_moves_to_the_next_provider(config):
    state = AttemptState()
    first = next_after_failure(config, "gpt-5", "auth", state)
    assert (first.model, first.tier) == ("claude-sonnet-4-5", "PREMIUM")
    assert "openai" in first.reason
    second = next_after_failure(config, "claude-sonnet-4-5", "auth", state)
    assert second.model == "gemini-2.5-pro"
    third = next_after_failure(config, "gemini-2.5-pro", "auth", state)
    assert third.model == "local-llama"  # every STANDARD model is openai's, google's or anthropic's
    last = next_after_failure(config, "local-llama", "auth", state)
    assert isinstance(last, GiveUp)
    assert "no other provider" in last.reason


ROUTED = {"rate_limited", "overloaded", "network", "auth", "context_too_long"}


@pytest.mark.parametrize("kind", sorted(set(ERROR_KINDS) - ROUTED))
def test_every_other_error_kind_gives_up_to_the_executors_attempt_budget(config, kind):
    state = AttemptState()
    decision = next_after_failure(config, "gpt-5", kind, state)
    assert isinstance(decision, GiveUp)
    assert kind in decision.reason
    assert "attempt budget" in decision.reason
    assert state == AttemptState()


@pytest.mark.parametrize("kind", ERROR_KINDS)
def test_every_error_kind_gets_a_decision_that_encodes(config, kind):
    decision = next_after_failure(config, "claude-sonnet-4-5", kind, AttemptState())
    assert isinstance(decision, TryModel | GiveUp)
    assert decision.reason
    wire = msgspec.json.encode(decision)
    assert msgspec.json.decode(wire, type=TryModel | GiveUp) == decision


def test_an_unknown_model_or_error_kind_gives_up(config):
    assert "not in the registry" in next_after_failure(config, "mystery", "overloaded", AttemptState()).reason
    assert "unknown error kind" in next_after_failure(config, "gpt-5", "sunspots", AttemptState()).reason


def test_the_gate_holds_along_the_fallback_chain_too():
    config = make_config(fallback=["PREMIUM", "CRITICAL"])
    held = next_after_failure(
        config, "gemini-2.5-pro", "overloaded", AttemptState(excluded={"claude-sonnet-4-5", "gpt-5"})
    )
    assert isinstance(held, GiveUp)
    approved = next_after_failure(
        config,
        "gemini-2.5-pro",
        "overloaded",
        AttemptState(excluded={"claude-sonnet-4-5", "gpt-5"}, approved_critical=True),
    )
    assert approved.model == "claude-opus-4-1"


def test_the_budget_holds_along_the_fallback_chain_too(config):
    decision = next_after_failure(config, "claude-sonnet-4-5", "overloaded", AttemptState(budget_usd=0.01))
    assert decision.model == "gpt-5-mini"  # gpt-5 and gemini-2.5-pro cost $0.045 a typical call


# --------------------------------------------------------------------------- the registry as the router reports it


def test_public_url_hides_credentials_and_queries():
    assert public_url(None) is None
    assert public_url("http://127.0.0.1:8080/v1") == "http://127.0.0.1:8080/v1"
    assert public_url("https://user:pw@gw.example/v1?key=abc") == "https://***@gw.example/v1?***"


def test_registry_of_reports_every_model_in_registry_order():
    config = make_config(
        [*DEFAULT_MODELS, {**model("gw", "STANDARD"), "base_url": "https://u:secret@gw.example/v1"}],
        fallback=["PREMIUM", "FREE"],
        fallback_backend="claude",
    )
    registry = registry_of(config)
    assert [info.name for info in registry.models] == [m["name"] for m in DEFAULT_MODELS] + ["gw"]
    assert registry.fallback == ("PREMIUM", "FREE")
    assert registry.fallback_backend == "claude"
    assert registry.models[-1].base_url == "https://***@gw.example/v1"
    assert b"secret" not in msgspec.json.encode(registry)
