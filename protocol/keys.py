"""Messages of the KeyPool actor, and the shape of one key's visible state.

A key *value* never travels in a field that msgspec can encode.  Two messages
carry a key, both in memory only and both typed ``Any`` so that the encoder
refuses them (``TypeError: Encoding objects of type Secret is unsupported``)
instead of writing anything:

- :class:`KeyLease` (the reply to :class:`AcquireKey`): ``secret_ref`` is the
  :class:`session.secret.Secret` the caller hands to its backend;
- :class:`AddKey`: ``secret`` is the :class:`~session.secret.Secret` to add.

Neither is ever logged, recorded as an event, put on the message bus or sent
over MCP; with an ``enc_hook`` of ``str``/``repr`` they show ``provider…last4``.
Everything else here (:class:`KeyState` above all) holds ids and counters only.

Depends on nothing else in the project.
"""

from __future__ import annotations

from typing import Any, Literal, get_args

from protocol._base import Message

__all__ = [
    "KEY_OUTCOMES",
    "KEY_STATUSES",
    "AcquireKey",
    "AddKey",
    "GetKeyStates",
    "KeyAdded",
    "KeyLease",
    "KeyOutcome",
    "KeyRejected",
    "KeyRemoved",
    "KeyState",
    "KeyStates",
    "KeyStatus",
    "KeyUnavailable",
    "KeyWait",
    "RefreshKeys",
    "RemoveKey",
    "ReportKey",
    "outcome_for_error",
]

#: What one call made with a key came to, as far as the key is concerned.
#: ``success``: tokens and cost counted; ``rate_limited``: a 429 (the key cools down);
#: ``auth``: the provider refused the key (it is disabled until added again);
#: ``error``: anything else (counted, last error kept, no cooldown).
KeyOutcome = Literal["success", "rate_limited", "auth", "error"]
KEY_OUTCOMES: tuple[str, ...] = get_args(KeyOutcome)

#: ``active``: can be leased now; ``cooling``: rate limited, back in ``cooling_for_s``;
#: ``disabled``: refused by the provider, unusable until added again.
KeyStatus = Literal["active", "cooling", "disabled"]
KEY_STATUSES: tuple[str, ...] = get_args(KeyStatus)


def outcome_for_error(error_kind: str | None) -> KeyOutcome:
    """The key outcome of an attempt that ended with ``error_kind`` (``None``: it succeeded).

    Only a 429 and an auth failure say something about the key; every other kind
    (503, network, context too long, ...) is an ``error`` of the call.
    """
    if error_kind is None:
        return "success"
    if error_kind == "rate_limited":
        return "rate_limited"
    if error_kind == "auth":
        return "auth"
    return "error"


class KeyState(Message, frozen=True):
    """What anyone may see of one key: its id, provider, last 4 characters, status and usage. Never the key."""

    provider: str
    key_id: str
    last4: str  # "" for a key too short to show any
    status: KeyStatus
    cooling_for_s: float = 0.0  # seconds until a cooling key is usable again; 0 otherwise
    requests: int = 0  # leases handed out
    tokens_in: int = 0
    tokens_out: int = 0
    cost_usd: float = 0.0
    rate_limits: int = 0  # 429s reported, in all
    errors: int = 0  # other errors reported, in all (auth failures included)
    last_error: str | None = None
    disabled_reason: str | None = None
    tier: str | None = None
    source: str = ""  # where the key came from: env:NAME, a hydra_keys.json path, keystore, runtime


# --- asks ---------------------------------------------------------------------------


class AcquireKey(Message, frozen=True):
    """Ask for a key of ``provider``: the reply is a :class:`KeyLease`, :class:`KeyWait` or :class:`KeyUnavailable`."""

    provider: str


class KeyLease(Message, frozen=True):
    """A key to use for one call; report how it went with :class:`ReportKey` and ``key_id``.

    IN MEMORY ONLY, NEVER LOGGED: ``secret_ref`` is the key's
    :class:`~session.secret.Secret` (typed ``Any`` so that msgspec refuses
    to encode it).  Pass ``secret_ref.reveal()`` to the backend and nowhere else;
    record ``key_id`` in runs and events.
    """

    key_id: str
    provider: str
    secret_ref: Any


class KeyWait(Message, frozen=True):
    """Every usable key of ``provider`` is cooling down: ask again in ``wait_s`` seconds (``key_id`` recovers first).

    The caller waits; it does not fail the task.
    """

    provider: str
    wait_s: float
    key_id: str


class KeyUnavailable(Message, frozen=True):
    """``provider`` has no usable key at all (none configured, or every one disabled); waiting will not help."""

    provider: str
    reason: str
    disabled: bool = False  # the provider had keys and every one is disabled (none configured: False)


class ReportKey(Message, frozen=True):
    """How a call made with a leased key went.  Answered with :class:`KeyStates` (the key's state, or empty)."""

    key_id: str
    outcome: KeyOutcome
    retry_after_s: float | None = None  # a 429's Retry-After; None: back off from the configured cooldown
    tokens_in: int = 0
    tokens_out: int = 0
    cost_usd: float = 0.0
    error: str | None = None  # a short message for people; must not contain the key


class AddKey(Message, frozen=True):
    """Add a key to the pool at run time (and to the encrypted key store when the actor has one).

    IN MEMORY ONLY, NEVER LOGGED: ``secret`` is a :class:`~session.secret.Secret`
    (typed ``Any`` so that msgspec refuses to encode it).  Answered with :class:`KeyAdded`
    or :class:`KeyRejected`.
    """

    provider: str
    secret: Any
    tier: str | None = None
    persist: bool = True  # also write it to the key store (when there is one)


class KeyAdded(Message, frozen=True):
    """The key is in the pool (re-enabled if it had been disabled).

    ``persisted`` is False when it lives in this process's memory only; ``warning`` then says why.
    """

    key_id: str
    provider: str
    last4: str
    persisted: bool
    warning: str | None = None


class RemoveKey(Message, frozen=True):
    """Take a key out of the pool (and out of the key store).  Answered with :class:`KeyRemoved`."""

    key_id: str


class KeyRejected(Message, frozen=True):
    """The key was not added: ``reason`` says why (a bad provider name, key or tier).  Never holds the key."""

    provider: str
    reason: str


class KeyRemoved(Message, frozen=True):
    key_id: str
    found: bool


class RefreshKeys(Message, frozen=True):
    """A tell: pick up keys added to (or removed from) the key store by another process."""


class GetKeyStates(Message, frozen=True):
    """Ask for every key's state (of one provider, or all).  Answered with :class:`KeyStates`."""

    provider: str | None = None


class KeyStates(Message, frozen=True):
    items: tuple[KeyState, ...] = ()
