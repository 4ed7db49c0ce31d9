"""The key pool: rotation, cooldown on 429, waiting when every key cools, auth, usage; and its actor."""

from __future__ import annotations

import inspect
from collections.abc import Iterator

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

import protocol.keys as keys_protocol
from actors.keypool import KeyPoolActor
from protocol._base import Message
from protocol.keys import (
    AcquireKey,
    AddKey,
    GetKeyStates,
    KeyAdded,
    KeyLease,
    KeyRejected,
    KeyRemoved,
    KeyStates,
    KeyUnavailable,
    KeyWait,
    RemoveKey,
    ReportKey,
    outcome_for_error,
)
from session.config_models import Config, KeysSettings
from session.keypool import KeyPool, Lease, PoolKey, Unavailable, Wait, key_id, pool_from_config
from session.keystore import KeyStore
from session.secret import Secret

KEYS = {
    "a": "sk-test-AAAAAAAAAAAAAAAAAAAA-aaaa",
    "b": "sk-test-BBBBBBBBBBBBBBBBBBBB-bbbb",
    "c": "sk-test-CCCCCCCCCCCCCCCCCCCC-cccc",
}


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def ids(provider: str = "openai", names: str = "abc") -> list[str]:
    return [key_id(Secret(provider, KEYS[name])) for name in names]


def make_pool(
    strategy: str = "round_robin", names: str = "abc", clock: Clock | None = None, rng=lambda: 0.0, **kwargs
) -> KeyPool:
    keys = [PoolKey.new("openai", KEYS[name], source=f"env:KEY_{name.upper()}") for name in names]
    return KeyPool(keys, strategy=strategy, default_cooldown_s=30.0, clock=clock or Clock(), rng=rng, **kwargs)


def lease(pool: KeyPool, provider: str = "openai") -> Lease:
    result = pool.acquire(provider)
    assert isinstance(result, Lease), result
    return result


# --- rotation -----------------------------------------------------------------------------


def test_key_ids_name_the_provider_and_never_the_key():
    for value in KEYS.values():
        ident = key_id(Secret("openai", value))
        assert ident.startswith("openai-")
        assert len(ident) == len("openai-") + 12
        assert value not in ident


def test_round_robin_cycles_through_the_keys():
    pool = make_pool("round_robin")
    a, b, c = ids()
    assert [lease(pool).key_id for _ in range(7)] == [a, b, c, a, b, c, a]


def test_round_robin_skips_a_cooling_key_and_comes_back_to_it():
    clock = Clock()
    pool = make_pool("round_robin", clock=clock)
    a, b, c = ids()
    pool.report(b, "rate_limited", retry_after_s=10)
    assert [lease(pool).key_id for _ in range(4)] == [a, c, a, c]
    clock.advance(10)
    assert [lease(pool).key_id for _ in range(3)] == [a, b, c]


def test_random_uses_the_injected_random_source():
    values = iter([0.0, 0.99, 0.5, 0.34])
    pool = make_pool("random", rng=lambda: next(values))
    a, b, c = ids()
    assert [lease(pool).key_id for _ in range(4)] == [a, c, b, b]


def test_least_used_balances_requests():
    pool = make_pool("least_used")
    for _ in range(30):
        lease(pool)
    assert [state.requests for state in pool.snapshot()] == [10, 10, 10]


def test_least_used_catches_a_recovered_key_up():
    clock = Clock()
    pool = make_pool("least_used", names="ab", clock=clock)
    a, b = ids(names="ab")
    for _ in range(4):
        lease(pool)
    pool.report(a, "rate_limited", retry_after_s=10)
    assert [lease(pool).key_id for _ in range(4)] == [b] * 4
    clock.advance(10)
    assert [lease(pool).key_id for _ in range(4)] == [a] * 4
    assert {state.key_id: state.requests for state in pool.snapshot()} == {a: 6, b: 6}


def test_providers_are_separate():
    keys = [PoolKey.new("openai", KEYS["a"]), PoolKey.new("anthropic", KEYS["b"])]
    pool = KeyPool(keys, clock=Clock())
    assert lease(pool, "openai").secret.reveal() == KEYS["a"]
    assert lease(pool, "anthropic").secret.reveal() == KEYS["b"]
    assert isinstance(pool.acquire("google"), Unavailable)


def test_an_unknown_strategy_is_refused():
    with pytest.raises(ValueError, match="round_robin"):
        make_pool("fastest")


# --- 429 and cooldown ----------------------------------------------------------------------


def test_a_429_cools_that_key_for_its_retry_after_and_the_next_acquire_gets_another_key_at_once():
    clock = Clock()
    pool = make_pool("round_robin", names="ab", clock=clock)
    a, b = ids(names="ab")
    first = lease(pool)
    assert first.key_id == a
    state = pool.report(a, "rate_limited", retry_after_s=42)
    assert state is not None
    assert state.status == "cooling"
    assert state.cooling_for_s == pytest.approx(42)
    assert state.rate_limits == 1
    for _ in range(3):  # no waiting: the other key serves every request meanwhile
        assert lease(pool).key_id == b
    clock.advance(41.9)
    assert pool.state(a).status == "cooling"
    clock.advance(0.1)
    assert pool.state(a).status == "active"


def test_a_later_longer_retry_after_extends_the_cooldown():
    clock = Clock()
    pool = make_pool(names="a", clock=clock)
    (a,) = ids(names="a")
    pool.report(a, "rate_limited", retry_after_s=10)
    clock.advance(5)
    pool.report(a, "rate_limited", retry_after_s=60)
    assert pool.state(a).cooling_for_s == pytest.approx(60)
    result = pool.acquire("openai")
    assert isinstance(result, Wait)
    assert result.wait_s == pytest.approx(60)


def test_a_later_shorter_retry_after_never_shortens_the_cooldown():
    clock = Clock()
    pool = make_pool(names="a", clock=clock)
    (a,) = ids(names="a")
    pool.report(a, "rate_limited", retry_after_s=60)
    clock.advance(1)
    pool.report(a, "rate_limited", retry_after_s=2)
    assert pool.state(a).cooling_for_s == pytest.approx(59)
    clock.advance(2)
    assert isinstance(pool.acquire("openai"), Wait)


def test_every_key_cooling_gives_a_wait_until_the_first_recovers_then_a_lease():
    clock = Clock()
    pool = make_pool(names="abc", clock=clock)
    a, b, c = ids()
    pool.report(a, "rate_limited", retry_after_s=30)
    pool.report(b, "rate_limited", retry_after_s=12)
    pool.report(c, "rate_limited", retry_after_s=20)
    result = pool.acquire("openai")
    assert isinstance(result, Wait)
    assert result.key_id == b
    assert result.wait_s == pytest.approx(12)
    clock.advance(5)
    result = pool.acquire("openai")
    assert isinstance(result, Wait)
    assert result.wait_s == pytest.approx(7)
    clock.advance(7)
    assert lease(pool).key_id == b
    states = {state.key_id: state for state in pool.snapshot()}
    assert states[a].status == "cooling"
    assert states[a].cooling_for_s == pytest.approx(18)
    assert states[b].status == "active"


def test_without_retry_after_the_backoff_doubles_per_consecutive_429_and_success_resets_it():
    clock = Clock()
    pool = make_pool(names="a", clock=clock, rng=lambda: 0.0)
    (a,) = ids(names="a")
    seen = []
    for _ in range(3):
        seen.append(pool.report(a, "rate_limited").cooling_for_s)
        clock.advance(seen[-1])
    assert seen == [30, 60, 120]
    pool.report(a, "success", tokens_in=1, tokens_out=1)
    assert pool.report(a, "rate_limited").cooling_for_s == 30


def test_backoff_is_jittered_and_capped():
    clock = Clock()
    pool = make_pool(names="a", clock=clock, rng=lambda: 1.0, jitter=0.2, max_backoff_s=100)
    (a,) = ids(names="a")
    assert pool.report(a, "rate_limited").cooling_for_s == pytest.approx(36)
    for _ in range(10):
        clock.advance(1000)
        last = pool.report(a, "rate_limited").cooling_for_s
    assert last == pytest.approx(120)  # the cap (100) plus at most 20 % of jitter


@given(st.lists(st.tuples(st.floats(0, 100), st.floats(0, 1000)), min_size=1, max_size=12))
def test_a_cooldown_ends_at_the_latest_end_any_retry_after_asked_for(steps):
    clock = Clock()
    pool = make_pool(names="a", clock=clock)
    (a,) = ids(names="a")
    latest = 0.0
    for pause, retry_after in steps:
        clock.advance(pause)
        latest = max(latest, clock.now + retry_after)
        pool.report(a, "rate_limited", retry_after_s=retry_after)
        assert pool.state(a).cooling_for_s == pytest.approx(max(0.0, latest - clock.now), abs=1e-3)


def test_a_zero_or_nonsense_retry_after_is_handled():
    clock = Clock()
    pool = make_pool(names="a", clock=clock, rng=lambda: 0.0)
    (a,) = ids(names="a")
    assert pool.report(a, "rate_limited", retry_after_s=0).status == "active"
    assert pool.report(a, "rate_limited", retry_after_s=float("nan")).cooling_for_s == 60  # backoff, 2nd 429
    assert pool.report(a, "rate_limited", retry_after_s=-5).cooling_for_s == 60  # never shortened


# --- auth, other errors, usage -----------------------------------------------------------


def test_auth_disables_the_key_until_it_is_added_again():
    pool = make_pool(names="ab")
    a, b = ids(names="ab")
    state = pool.report(a, "auth", error="401 invalid api key")
    assert state.status == "disabled"
    assert state.disabled_reason == "401 invalid api key"
    assert [lease(pool).key_id for _ in range(3)] == [b, b, b]
    pool.report(b, "auth")
    result = pool.acquire("openai")
    assert isinstance(result, Unavailable)
    assert a in result.reason
    assert "401 invalid api key" in result.reason
    pool.add(PoolKey.new("openai", KEYS["a"]))
    assert pool.state(a).status == "active"
    assert pool.state(a).disabled_reason is None
    assert lease(pool).key_id == a


def test_other_errors_are_counted_without_cooldown():
    pool = make_pool(names="a")
    (a,) = ids(names="a")
    pool.report(a, "error", error="503 overloaded")
    state = pool.report(a, "error", error="connection reset")
    assert state.status == "active"
    assert state.errors == 2
    assert state.last_error == "connection reset"
    assert lease(pool).key_id == a


def test_usage_is_counted_per_key():
    pool = make_pool(names="ab")
    a, b = ids(names="ab")
    lease(pool)
    lease(pool)
    lease(pool)
    pool.report(a, "success", tokens_in=100, tokens_out=20, cost_usd=0.5)
    pool.report(a, "success", tokens_in=50, tokens_out=5, cost_usd=0.25)
    states = {state.key_id: state for state in pool.snapshot()}
    assert (states[a].requests, states[a].tokens_in, states[a].tokens_out) == (2, 150, 25)
    assert states[a].cost_usd == pytest.approx(0.75)
    assert states[b].requests == 1
    assert states[a].source == "env:KEY_A"
    assert states[a].last4 == KEYS["a"][-4:]


def test_no_key_at_all_is_unavailable_with_the_fix():
    result = KeyPool([], clock=Clock()).acquire("openai")
    assert isinstance(result, Unavailable)
    assert "executor keys add openai" in result.reason


def test_remove_and_reports_about_unknown_keys():
    pool = make_pool(names="ab")
    a, b = ids(names="ab")
    assert pool.remove(a)
    assert not pool.remove(a)
    assert pool.report(a, "success") is None
    assert [lease(pool).key_id for _ in range(2)] == [b, b]
    with pytest.raises(ValueError, match="outcome"):
        pool.report(b, "exploded")  # type: ignore[arg-type]


def test_outcome_for_error_kinds():
    assert outcome_for_error(None) == "success"
    assert outcome_for_error("rate_limited") == "rate_limited"
    assert outcome_for_error("auth") == "auth"
    assert outcome_for_error("overloaded") == "error"


def test_pool_from_config_reads_env_keys_and_stored_keys(tmp_path):
    config = Config(keys=KeysSettings(env={"openai": ["KEY_ONE", "KEY_TWO"]}, rotation="least_used", cooldown_s=5))
    store = KeyStore.open(tmp_path, {}, keyring_backend=None)
    store.add("anthropic", KEYS["c"], "PREMIUM")
    pool = pool_from_config(config, {"KEY_ONE": KEYS["a"], "KEY_TWO": KEYS["b"]}, stored=store.secrets())
    assert pool.strategy == "least_used"
    assert pool.default_cooldown_s == 5
    states = pool.snapshot()
    assert [(state.provider, state.source) for state in states] == [
        ("openai", "env:KEY_ONE"),
        ("openai", "env:KEY_TWO"),
        ("anthropic", "memory"),
    ]
    assert states[2].tier == "PREMIUM"


# --- never a key ------------------------------------------------------------------------------


def test_snapshot_and_reports_never_contain_a_key():
    clock = Clock()
    pool = make_pool(names="abc", clock=clock)
    a, b, c = ids()
    for _ in range(5):
        lease(pool)
    pool.report(a, "success", tokens_in=5, tokens_out=5, cost_usd=0.01)
    pool.report(b, "rate_limited", error=f"429 for key {KEYS['b']}")  # a provider echoing the key
    pool.report(c, "auth", error=f"Incorrect API key provided: {KEYS['c']}")
    encoded = [
        msgspec.json.encode(pool.snapshot()),
        msgspec.msgpack.encode(pool.snapshot()),
        repr(pool.snapshot()).encode(),
        repr(pool.acquire("openai")).encode(),
        pool.acquire("openai").__class__.__name__.encode(),
    ]
    for blob in encoded:
        for value in KEYS.values():
            assert value.encode() not in blob
    assert pool.state(c).disabled_reason == f"Incorrect API key provided: openai…{KEYS['c'][-4:]}"


def protocol_messages(secret: Secret) -> Iterator[Message]:
    """One instance of every Message class in protocol/keys.py, with the secret wherever a field takes one."""
    samples = {
        "provider": "openai",
        "key_id": key_id(secret),
        "last4": secret.last4,
        "status": "cooling",
        "outcome": "rate_limited",
        "reason": "because",
        "wait_s": 1.5,
        "secret_ref": secret,
        "secret": secret,
        "error": "oops",
        "persisted": True,
        "found": True,
        "items": (),
    }
    classes = [
        value
        for value in vars(keys_protocol).values()
        if inspect.isclass(value) and issubclass(value, Message) and value.__module__ == keys_protocol.__name__
    ]
    assert len(classes) >= 12
    for cls in classes:
        fields = {name: samples[name] for name in cls.__struct_fields__ if name in samples}
        yield cls(**fields)


def test_no_protocol_keys_message_encodes_a_key():
    secret = Secret("openai", KEYS["a"])
    value = KEYS["a"].encode()
    for message in protocol_messages(secret):
        for encode in (msgspec.json.encode, msgspec.msgpack.encode):
            try:
                blob = encode(message)
            except TypeError:  # the encoder refuses a Secret: nothing is written at all
                assert any(isinstance(getattr(message, f), Secret) for f in message.__struct_fields__)
            else:
                assert value not in blob, type(message).__name__
            # and with a permissive hook, as a careless logger might use
            assert value not in encode(message, enc_hook=str), type(message).__name__
            assert value not in encode(message, enc_hook=repr), type(message).__name__
        assert value not in repr(message).encode()
    lease_message = KeyLease(key_id="x", provider="openai", secret_ref=secret)
    with pytest.raises(TypeError):
        msgspec.json.encode(lease_message)


# --- the actor ------------------------------------------------------------------------------


@pytest.fixture
def actor(tmp_path):
    clock = Clock()
    pool = make_pool(names="ab", clock=clock)
    ref = KeyPoolActor.start("keypool", None, 1, pool, KeyStore.open(tmp_path, {}, keyring_backend=None))
    yield ref, clock
    ref.stop(block=True, timeout=5)


def ask(ref, message):
    return ref.ask(message, timeout=5)


def test_actor_leases_cools_waits_and_reports_states(actor):
    ref, clock = actor
    a, b = ids(names="ab")
    first = ask(ref, AcquireKey(provider="openai"))
    assert isinstance(first, KeyLease)
    assert first.key_id == a
    assert first.secret_ref.reveal() == KEYS["a"]
    reported = ask(ref, ReportKey(key_id=a, outcome="rate_limited", retry_after_s=20))
    assert isinstance(reported, KeyStates)
    assert reported.items[0].status == "cooling"
    assert ask(ref, AcquireKey(provider="openai")).key_id == b
    ask(ref, ReportKey(key_id=b, outcome="rate_limited", retry_after_s=5))
    wait = ask(ref, AcquireKey(provider="openai"))
    assert isinstance(wait, KeyWait)
    assert wait.key_id == b
    assert wait.wait_s == pytest.approx(5)
    clock.advance(5)
    assert ask(ref, AcquireKey(provider="openai")).key_id == b
    assert isinstance(ask(ref, AcquireKey(provider="google")), KeyUnavailable)
    states = ask(ref, GetKeyStates())
    assert [state.status for state in states.items] == ["cooling", "active"]
    assert ask(ref, GetKeyStates(provider="google")).items == ()
    assert ask(ref, ReportKey(key_id="openai-unknown", outcome="success")).items == ()


def test_actor_adds_and_removes_keys_at_run_time(actor):
    ref, _ = actor
    secret = Secret("anthropic", KEYS["c"])
    added = ask(ref, AddKey(provider="anthropic", secret=secret, tier="premium"))
    assert isinstance(added, KeyAdded)
    assert added.key_id == key_id(secret)
    assert added.last4 == KEYS["c"][-4:]
    assert not added.persisted  # this store has no master secret
    assert "memory" in added.warning
    assert KEYS["c"] not in msgspec.json.encode(added).decode()
    got = ask(ref, AcquireKey(provider="anthropic"))
    assert got.secret_ref == secret
    assert isinstance(ask(ref, AddKey(provider="anthropic", secret=KEYS["c"])), KeyRejected)
    rejected = ask(ref, AddKey(provider="anthropic", secret=Secret("anthropic", "xq7z")))
    assert isinstance(rejected, KeyRejected)
    assert "xq7z" not in rejected.reason
    removed = ask(ref, RemoveKey(key_id=added.key_id))
    assert removed == KeyRemoved(key_id=added.key_id, found=True)
    assert isinstance(ask(ref, AcquireKey(provider="anthropic")), KeyUnavailable)
    assert not ask(ref, RemoveKey(key_id=added.key_id)).found


def test_a_restarted_actor_keeps_cooldowns_when_given_the_same_pool():
    clock = Clock()
    pool = make_pool(names="a", clock=clock)
    (a,) = ids(names="a")
    first = KeyPoolActor.start("keypool", None, 1, pool)
    first.ask(ReportKey(key_id=a, outcome="rate_limited", retry_after_s=9), timeout=5)
    first.stop(block=True, timeout=5)
    second = KeyPoolActor.start("keypool", None, 2, pool)
    try:
        assert isinstance(second.ask(AcquireKey(provider="openai"), timeout=5), KeyWait)
    finally:
        second.stop(block=True, timeout=5)
