"""The key pool: API keys per provider, rotation, cooldown after a 429, usage per key.

Pure and single-threaded (the KeyPool actor owns one and is its only user); the
clock and the random source are injected, so tests drive time by hand.

- A key is known by an id, ``<provider>-<12 hex of its SHA-256>`` (:func:`key_id`),
  and shown as its last 4 characters; its value is reachable only through the
  :class:`~session.secret.Secret` in a :class:`Lease`.
- :meth:`KeyPool.acquire` picks a usable key of a provider by the strategy
  (``round_robin``, ``random``, ``least_used`` by requests) and counts the request.
  When every usable key is cooling it returns :class:`Wait` with the time until
  the *first* recovers — the caller waits, it does not fail.  Only a provider
  with no usable key at all (none, or all disabled) gives :class:`Unavailable`.
- :meth:`KeyPool.report` says how a call went.  ``rate_limited`` cools the key:
  for its Retry-After when given, else an exponential backoff from
  ``default_cooldown_s`` per consecutive 429 of that key, jittered.  A cooldown is
  only ever extended: a later, longer Retry-After moves the end further out, a
  shorter one leaves it.  ``auth`` disables the key until it is added again;
  ``error`` is counted (last error kept) with no cooldown; ``success`` adds tokens
  and cost and ends the run of consecutive 429s.
- :meth:`KeyPool.snapshot` is what anyone may see: :class:`protocol.keys.KeyState`
  structs, never a key.

Every call is linear in the number of keys (of the provider, for acquire).
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from protocol.keys import KEY_OUTCOMES, KeyOutcome, KeyState, KeyStatus
from session.backoff import exponential_delay
from session.config_fields import Rotation
from session.config_models import Config
from session.secret import ApiKey, Secret

__all__ = [
    "ROTATIONS",
    "KeyPool",
    "Lease",
    "PoolKey",
    "Unavailable",
    "Wait",
    "key_id",
    "pool_from_config",
    "scrub",
]

ROTATIONS: tuple[str, ...] = ("round_robin", "random", "least_used")
#: Longest backoff (before jitter) after repeated 429s without a Retry-After, unless the
#: configured cooldown is longer still.
MAX_BACKOFF_S = 900.0
_MAX_ERROR_CHARS = 300


def key_id(secret: Secret) -> str:
    """The stable id of a key: ``<provider>-<fingerprint>`` (12 hex digits of its SHA-256); never the value."""
    return f"{secret.provider}-{secret.fingerprint}"


def scrub(text: str | None, secret: Secret) -> str | None:
    """``text`` with every occurrence of the key replaced by ``provider…last4``, cut to 300 characters.

    Providers sometimes echo the key they refused; what we keep must not.
    """
    if text is None:
        return None
    value = secret.reveal()
    if value:
        text = text.replace(value, repr(secret))
    return text if len(text) <= _MAX_ERROR_CHARS else text[: _MAX_ERROR_CHARS - 1] + "…"


@dataclass(frozen=True)
class PoolKey:
    """One key for the pool: provider, the secret, its tier when known, and where it came from."""

    provider: str
    secret: Secret
    tier: str | None = None
    source: str = ""

    @classmethod
    def of(cls, key: ApiKey) -> PoolKey:
        """From a configured :class:`~session.secret.ApiKey` (environment, hydra_keys.json, key store)."""
        return cls(provider=key.provider, secret=key.secret, tier=key.tier, source=key.origin)

    @classmethod
    def new(cls, provider: str, value: str, tier: str | None = None, source: str = "runtime") -> PoolKey:
        return cls(provider=provider, secret=Secret(provider, value), tier=tier, source=source)

    @property
    def id(self) -> str:
        return key_id(self.secret)


@dataclass(frozen=True)
class Lease:
    """A key to use for one call.  ``repr`` shows the id and ``provider…last4`` only."""

    key_id: str
    provider: str
    secret: Secret


@dataclass(frozen=True)
class Wait:
    """Every usable key of ``provider`` is cooling: the first (``key_id``) recovers in ``wait_s`` seconds."""

    provider: str
    wait_s: float
    key_id: str


@dataclass(frozen=True)
class Unavailable:
    """``provider`` has no usable key (none, or every one disabled); waiting will not help."""

    provider: str
    reason: str
    disabled: bool = False  # it had keys and every one is disabled


@dataclass(eq=False)
class _Entry:
    key: PoolKey
    id: str
    requests: int = 0
    tokens_in: int = 0
    tokens_out: int = 0
    cost_usd: float = 0.0
    rate_limits: int = 0
    consecutive_429: int = 0
    errors: int = 0
    last_error: str | None = None
    cooling_until: float | None = None
    disabled_reason: str | None = None

    def cooling(self, now: float) -> bool:
        return self.cooling_until is not None and self.cooling_until > now


class KeyPool:
    """Keys per provider with rotation, cooldown and usage.  Not thread-safe: one owner."""

    def __init__(
        self,
        keys: Iterable[PoolKey],
        strategy: Rotation | str = "round_robin",
        default_cooldown_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
        rng: Callable[[], float] = random.random,
        jitter: float = 0.2,
        max_backoff_s: float = MAX_BACKOFF_S,
    ) -> None:
        if strategy not in ROTATIONS:
            raise ValueError(f"unknown rotation strategy {strategy!r}; use one of {', '.join(ROTATIONS)}")
        if not (math.isfinite(default_cooldown_s) and default_cooldown_s >= 0):
            raise ValueError("default_cooldown_s must be a finite number >= 0")
        self.strategy = strategy
        self.default_cooldown_s = float(default_cooldown_s)
        self.jitter = jitter
        self.max_backoff_s = max(max_backoff_s, self.default_cooldown_s)
        self._clock = clock
        self._rng = rng
        self._by_provider: dict[str, list[_Entry]] = {}
        self._by_id: dict[str, _Entry] = {}
        self._cursor: dict[str, int] = {}
        for key in keys:
            self.add(key)

    # --- keys ------------------------------------------------------------------------

    def add(self, key: PoolKey) -> str:
        """Add a key (or add it again: a disabled key is enabled, its usage kept); returns its id."""
        ident = key.id
        entry = self._by_id.get(ident)
        if entry is not None:
            entry.disabled_reason = None
            if key.tier is not None and entry.key.tier != key.tier:
                entry.key = PoolKey(entry.key.provider, entry.key.secret, key.tier, entry.key.source)
            return ident
        entry = _Entry(key=key, id=ident)
        self._by_id[ident] = entry
        self._by_provider.setdefault(key.provider, []).append(entry)
        return ident

    def remove(self, key_id: str) -> bool:
        """Take a key out of the pool; False when there is no such key."""
        entry = self._by_id.pop(key_id, None)
        if entry is None:
            return False
        entries = self._by_provider[entry.key.provider]
        position = next(index for index, item in enumerate(entries) if item is entry)
        entries.pop(position)
        cursor = self._cursor.get(entry.key.provider, 0)
        if position < cursor:
            self._cursor[entry.key.provider] = cursor - 1
        if not entries:
            del self._by_provider[entry.key.provider]
            self._cursor.pop(entry.key.provider, None)
        return True

    def providers(self) -> list[str]:
        """Providers that have at least one key (usable or not)."""
        return list(self._by_provider)

    def __contains__(self, key_id: object) -> bool:
        return key_id in self._by_id

    def __len__(self) -> int:
        return len(self._by_id)

    # --- leasing -----------------------------------------------------------------------

    def acquire(self, provider: str) -> Lease | Wait | Unavailable:
        """A key of ``provider`` to use now, else how long to wait for one, else why there is none."""
        entries = self._by_provider.get(provider, [])
        now = self._clock()
        usable: list[int] = []
        first: _Entry | None = None
        for position, entry in enumerate(entries):
            if entry.disabled_reason is not None:
                continue
            if entry.cooling(now):
                # cooling() is true only while cooling_until is set, which mypy cannot see.
                if first is None or entry.cooling_until < first.cooling_until:  # type: ignore[operator]
                    first = entry
                continue
            usable.append(position)
        if not usable:
            if first is not None:
                # first was chosen above only while cooling: its cooling_until is set.
                return Wait(provider=provider, wait_s=first.cooling_until - now, key_id=first.id)  # type: ignore[operator]
            return Unavailable(provider=provider, reason=self._why_none(provider, entries), disabled=bool(entries))
        entry = entries[self._choose(provider, usable, entries)]
        entry.requests += 1
        return Lease(key_id=entry.id, provider=provider, secret=entry.key.secret)

    def _choose(self, provider: str, usable: list[int], entries: list[_Entry]) -> int:
        if self.strategy == "random":
            return usable[min(len(usable) - 1, int(self._rng() * len(usable)))]
        if self.strategy == "least_used":
            return min(usable, key=lambda position: entries[position].requests)
        cursor = self._cursor.get(provider, 0) % len(entries)
        chosen = next((position for position in usable if position >= cursor), usable[0])
        self._cursor[provider] = (chosen + 1) % len(entries)
        return chosen

    @staticmethod
    def _why_none(provider: str, entries: list[_Entry]) -> str:
        if not entries:
            return (
                f"no key for {provider}: set one of the environment variables that [keys.env] names for it, "
                f"or add one with `executor keys add {provider} --from-env VAR`"
            )
        disabled = "; ".join(f"{entry.id} ({entry.disabled_reason})" for entry in entries)
        return f"every key of {provider} is disabled: {disabled}; add a working key with `executor keys add {provider}`"

    # --- reporting -----------------------------------------------------------------------

    def report(
        self,
        key_id: str,
        outcome: KeyOutcome,
        *,
        retry_after_s: float | None = None,
        tokens_in: int = 0,
        tokens_out: int = 0,
        cost_usd: float = 0.0,
        error: str | None = None,
    ) -> KeyState | None:
        """Record how a call with ``key_id`` went; returns the key's new state (None for an unknown key)."""
        if outcome not in KEY_OUTCOMES:
            raise ValueError(f"unknown key outcome {outcome!r}; use one of {', '.join(KEY_OUTCOMES)}")
        entry = self._by_id.get(key_id)
        if entry is None:
            return None
        now = self._clock()
        entry.tokens_in += max(0, tokens_in)
        entry.tokens_out += max(0, tokens_out)
        if math.isfinite(cost_usd) and cost_usd > 0:
            entry.cost_usd += cost_usd
        message = scrub(error, entry.key.secret)
        if outcome == "success":
            entry.consecutive_429 = 0
        elif outcome == "rate_limited":
            entry.rate_limits += 1
            entry.consecutive_429 += 1
            cooldown = self._cooldown(entry, retry_after_s)
            until = now + cooldown
            if entry.cooling_until is None or until > entry.cooling_until:
                entry.cooling_until = until
            entry.last_error = message or f"rate limited (429); cooling for {cooldown:.1f} s"
        elif outcome == "auth":
            entry.errors += 1
            entry.disabled_reason = message or "the provider refused the key (auth)"
            entry.last_error = entry.disabled_reason
        else:
            entry.errors += 1
            entry.last_error = message or "error"
        return self._state(entry, now)

    def _cooldown(self, entry: _Entry, retry_after_s: float | None) -> float:
        if retry_after_s is not None and math.isfinite(retry_after_s):
            return max(0.0, float(retry_after_s))
        return exponential_delay(
            self.default_cooldown_s, self.max_backoff_s, entry.consecutive_429 - 1, self.jitter, self._rng
        )

    # --- what anyone may see ------------------------------------------------------------

    def snapshot(self, provider: str | None = None) -> list[KeyState]:
        """Every key's state (of ``provider``, or all), in the order keys were added per provider."""
        now = self._clock()
        if provider is not None:
            return [self._state(entry, now) for entry in self._by_provider.get(provider, [])]
        return [self._state(entry, now) for entries in self._by_provider.values() for entry in entries]

    def state(self, key_id: str) -> KeyState | None:
        entry = self._by_id.get(key_id)
        return None if entry is None else self._state(entry, self._clock())

    @staticmethod
    def _state(entry: _Entry, now: float) -> KeyState:
        status: KeyStatus
        if entry.disabled_reason is not None:
            status, cooling_for = "disabled", 0.0
        elif entry.cooling(now):
            status, cooling_for = "cooling", entry.cooling_until - now  # type: ignore[operator]
        else:
            status, cooling_for = "active", 0.0
        return KeyState(
            provider=entry.key.provider,
            key_id=entry.id,
            last4=entry.key.secret.last4,
            status=status,
            cooling_for_s=round(cooling_for, 3),
            requests=entry.requests,
            tokens_in=entry.tokens_in,
            tokens_out=entry.tokens_out,
            cost_usd=round(entry.cost_usd, 6),
            rate_limits=entry.rate_limits,
            errors=entry.errors,
            last_error=entry.last_error,
            disabled_reason=entry.disabled_reason,
            tier=entry.key.tier,
            source=entry.key.source,
        )


def pool_from_config(
    config: Config,
    environ: Mapping[str, str],
    stored: Iterable[ApiKey] = (),
    clock: Callable[[], float] = time.monotonic,
    rng: Callable[[], float] = random.random,
) -> KeyPool:
    """The pool of a loaded :class:`~session.config_models.Config`: its ``[keys.env]`` and
    hydra_keys.json keys (:meth:`~session.config_models.Config.collect_keys`), then ``stored``
    (from :meth:`session.keystore.KeyStore.secrets`); ``keys.rotation`` and ``keys.cooldown_s``.
    A key found twice is kept once.
    """
    keys = [PoolKey.of(key) for key in (*config.collect_keys(environ), *stored)]
    return KeyPool(keys, strategy=config.keys.rotation, default_cooldown_s=config.keys.cooldown_s, clock=clock, rng=rng)
