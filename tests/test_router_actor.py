"""The Router actor, started for real (pykka) and asked as the executor will ask it."""

from __future__ import annotations

import pytest

from actors.base import TreeActor, handles
from actors.router import RouterActor
from protocol.messages import ChildExited, Ok
from protocol.routing import (
    ApproveCritical,
    ForgetTask,
    GetRegistry,
    ModelChoice,
    NextModel,
    NoModel,
    Registry,
    SelectModel,
)
from session.config_models import DEFAULT_MODELS, Config
from session.routing_types import RoutingOptions

ASK = 5


#: A user's local server: nothing built in is an endpoint.
LOCAL = {
    "name": "local-llama",
    "provider": "openai-compatible",
    "backend": "openai",
    "tier": "FREE",
    "input_per_mtok": 0.0,
    "output_per_mtok": 0.0,
    "context_window": 32_768,
    "base_url": "http://127.0.0.1:8080/v1",
}


def make_config(**router) -> Config:
    return Config.model_validate({"models": [*(dict(m) for m in DEFAULT_MODELS), LOCAL], "router": router})


@pytest.fixture
def start_router():
    refs = []

    def start(config: Config | None = None, **kwargs):
        ref = RouterActor.start("router", None, 1, config or make_config(), **kwargs)
        refs.append(ref)
        return ref

    yield start
    for ref in refs:
        if ref.is_alive():
            ref.stop(timeout=ASK)


def test_select_model_replies_with_the_model_its_backend_and_provider(start_router):
    router = start_router()
    choice = router.ask(SelectModel(task_id="T-1", complexity="low"), timeout=ASK)
    assert choice == ModelChoice(
        task_id="T-1",
        model="gpt-5-mini",
        tier="STANDARD",
        backend="codex",
        provider="openai",
        needs_approval=False,
        reason=choice.reason,
    )
    assert "STANDARD" in choice.reason
    medium = router.ask(SelectModel(task_id="T-2", complexity=0.5), timeout=ASK)
    assert (medium.model, medium.backend, medium.provider) == ("claude-sonnet-4-5", "claude", "anthropic")


def test_critical_is_escalated_then_chosen_once_approved(start_router):
    router = start_router()
    waiting = router.ask(SelectModel(task_id="T-1", complexity="high"), timeout=ASK)
    assert (waiting.model, waiting.tier, waiting.needs_approval) == ("claude-sonnet-4-5", "PREMIUM", True)
    assert router.ask(ApproveCritical(task_id="T-1"), timeout=ASK) == Ok()
    approved = router.ask(SelectModel(task_id="T-1", complexity="high"), timeout=ASK)
    assert (approved.model, approved.tier, approved.needs_approval) == ("claude-opus-4-1", "CRITICAL", False)
    # The approval is for that task only.
    other = router.ask(SelectModel(task_id="T-2", complexity="high"), timeout=ASK)
    assert other.needs_approval is True


def test_an_approval_before_the_first_selection_counts(start_router):
    router = start_router()
    router.tell(ApproveCritical(task_id="T-9"))
    assert router.ask(SelectModel(task_id="T-9", complexity="critical"), timeout=ASK).model == "claude-opus-4-1"


def test_forget_task_drops_its_state_approval_included(start_router):
    router = start_router()
    router.ask(ApproveCritical(task_id="T-1"), timeout=ASK)
    assert router.ask(ForgetTask(task_id="T-1"), timeout=ASK) == Ok()
    assert router.ask(SelectModel(task_id="T-1", complexity="high"), timeout=ASK).needs_approval is True


def test_budget_and_force_model_reach_the_policy(start_router):
    router = start_router()
    assert router.ask(SelectModel(task_id="T-1", complexity="medium", budget_usd=0.05), timeout=ASK).model == "gpt-5"
    forced = router.ask(SelectModel(task_id="T-2", complexity="low", force_model="gemini-2.5-pro"), timeout=ASK)
    assert (forced.model, forced.backend, forced.provider) == ("gemini-2.5-pro", "gemini", "google")


def test_bad_requests_are_no_model_replies_and_the_actor_lives_on(start_router):
    router = start_router()
    unknown = router.ask(SelectModel(task_id="T-1", force_model="llama-9000"), timeout=ASK)
    assert isinstance(unknown, NoModel)
    assert unknown.task_id == "T-1"
    assert "'llama-9000' is not in the registry" in unknown.reason
    bad = router.ask(SelectModel(task_id="T-2", complexity="enormous"), timeout=ASK)
    assert isinstance(bad, NoModel)
    assert "complexity" in bad.reason
    assert router.is_alive()
    assert router.ask(SelectModel(task_id="T-3", complexity="low"), timeout=ASK).model == "gpt-5-mini"


def test_network_errors_are_retried_with_backoff_then_the_next_tier(start_router):
    router = start_router()
    router.ask(SelectModel(task_id="T-1", complexity="medium"), timeout=ASK)
    delays = []
    for _ in range(3):
        retry = router.ask(
            NextModel(task_id="T-1", current_model="claude-sonnet-4-5", error_kind="network"), timeout=ASK
        )
        assert retry.model == "claude-sonnet-4-5"
        delays.append(retry.delay_s)
    assert delays == [1.0, 2.0, 4.0]
    moved = router.ask(NextModel(task_id="T-1", current_model="claude-sonnet-4-5", error_kind="network"), timeout=ASK)
    assert (moved.model, moved.tier, moved.delay_s) == ("gpt-5-mini", "STANDARD", 0.0)
    # Another task's counters are its own.
    fresh = router.ask(NextModel(task_id="T-2", current_model="claude-sonnet-4-5", error_kind="network"), timeout=ASK)
    assert (fresh.model, fresh.delay_s) == ("claude-sonnet-4-5", 1.0)


def test_a_new_selection_starts_the_counters_afresh(start_router):
    router = start_router(make_config(network_retries=1))
    router.ask(SelectModel(task_id="T-1", complexity="medium"), timeout=ASK)
    ask = NextModel(task_id="T-1", current_model="claude-sonnet-4-5", error_kind="network")
    assert router.ask(ask, timeout=ASK).model == "claude-sonnet-4-5"
    assert router.ask(ask, timeout=ASK).model == "gpt-5-mini"
    router.ask(SelectModel(task_id="T-1", complexity="medium"), timeout=ASK)
    assert router.ask(ask, timeout=ASK).model == "claude-sonnet-4-5"


def test_overloaded_context_and_rate_limits_follow_the_policy(start_router):
    router = start_router()
    router.ask(SelectModel(task_id="T-1", complexity="medium"), timeout=ASK)
    over = router.ask(NextModel(task_id="T-1", current_model="claude-sonnet-4-5", error_kind="overloaded"), timeout=ASK)
    assert (over.model, over.backend) == ("gpt-5", "codex")
    limited = router.ask(NextModel(task_id="T-1", current_model="gpt-5", error_kind="rate_limited"), timeout=ASK)
    assert (limited.model, limited.delay_s) == ("gpt-5", 0.0)
    longer = router.ask(NextModel(task_id="T-1", current_model="gpt-5", error_kind="context_too_long"), timeout=ASK)
    assert (longer.model, longer.provider) == ("gemini-2.5-pro", "google")
    none = router.ask(
        NextModel(task_id="T-1", current_model="gemini-2.5-pro", error_kind="context_too_long"), timeout=ASK
    )
    assert isinstance(none, NoModel)
    assert "larger" in none.reason


def test_the_budget_can_be_updated_with_a_failure(start_router):
    router = start_router()
    router.ask(SelectModel(task_id="T-1", complexity="medium"), timeout=ASK)
    cheap = router.ask(
        NextModel(task_id="T-1", current_model="claude-sonnet-4-5", error_kind="overloaded", budget_usd=0.0),
        timeout=ASK,
    )
    assert cheap.model == "local-llama"


def test_an_exhausted_chain_is_no_model_with_the_fallback_backend(start_router):
    router = start_router(make_config(fallback_backend="claude"))
    reply = router.ask(NextModel(task_id="T-1", current_model="local-llama", error_kind="overloaded"), timeout=ASK)
    assert reply == NoModel(task_id="T-1", reason=reply.reason, fallback_backend="claude")
    given_up = router.ask(NextModel(task_id="T-1", current_model="gpt-5", error_kind="crash"), timeout=ASK)
    assert isinstance(given_up, NoModel)
    assert given_up.fallback_backend is None


def test_get_registry_reports_the_models_and_the_chain(start_router):
    router = start_router(make_config(fallback=["PREMIUM", "STANDARD"], network_retries=2))
    registry = router.ask(GetRegistry(), timeout=ASK)
    assert isinstance(registry, Registry)
    assert [info.name for info in registry.models] == [*(m["name"] for m in DEFAULT_MODELS), "local-llama"]
    assert registry.fallback == ("PREMIUM", "STANDARD")
    assert registry.network_retries == 2
    assert registry.critical_needs_approval is True
    llama = registry.models[-1]
    assert (llama.name, llama.tier, llama.context_window, llama.base_url) == (
        "local-llama",
        "FREE",
        32_768,
        "http://127.0.0.1:8080/v1",
    )


def test_routing_options_are_passed_at_start(start_router):
    router = start_router(options=RoutingOptions(network_backoff_s=0.25))
    reply = router.ask(NextModel(task_id="T-1", current_model="gpt-5", error_kind="network"), timeout=ASK)
    assert reply.delay_s == 0.25


class Parent(TreeActor):
    def __init__(self, seen: list) -> None:
        super().__init__("parent")
        self.seen = seen

    @handles(ChildExited)
    def exited(self, message: ChildExited) -> None:
        self.seen.append(message)


def test_it_tells_its_parent_when_it_stops():
    seen: list[ChildExited] = []
    parent = Parent.start(seen)
    try:
        router = RouterActor.start("router", parent, 3, make_config())
        router.stop(timeout=ASK)
    finally:
        parent.stop(timeout=ASK)  # queued after the child's ChildExited, so that is handled first
    assert seen == [ChildExited(name="router", incarnation=3, abnormal=False, error=None)]
