"""The KeyPool service actor: leases API keys, takes reports, adds and removes keys at run time.

It wraps one :class:`session.keypool.KeyPool` (and, when given, the encrypted
:class:`session.keystore.KeyStore` that run-time keys are saved in).  Give every
incarnation the *same* pool object (the supervisor's start function captures it):
cooldowns and usage then survive a restart of the actor.

Replies to :class:`~protocol.keys.AcquireKey`:

- :class:`~protocol.keys.KeyLease` — use ``secret_ref`` for one call, then tell a
  :class:`~protocol.keys.ReportKey`.  The lease is an in-memory reply: never log it;
- :class:`~protocol.keys.KeyWait` — every key of the provider is cooling; ask again
  after ``wait_s`` (the task waits, it does not fail);
- :class:`~protocol.keys.KeyUnavailable` — no usable key at all (the router moves on).

No reply of this actor but a KeyLease holds a key; handlers never raise for bad
input (a ``tell`` that raises would stop the actor).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pykka

from actors.base import TreeActor, handles
from protocol.keys import (
    AcquireKey,
    AddKey,
    GetKeyStates,
    KeyAdded,
    KeyLease,
    KeyRejected,
    KeyRemoved,
    KeyState,
    KeyStates,
    KeyUnavailable,
    KeyWait,
    RefreshKeys,
    RemoveKey,
    ReportKey,
)
from protocol.notify import Notice, Notify
from session.keypool import KeyPool, Lease, PoolKey, Wait
from session.keystore import InvalidKey, KeyStore, KeyStoreError, validate_key
from session.secret import Secret

__all__ = ["KeyPoolActor"]

log = logging.getLogger("executor.actors.keypool")


class KeyPoolActor(TreeActor):
    """A permanent service: the only owner of its :class:`KeyPool` while it runs."""

    def __init__(
        self,
        name: str,
        parent: Any,
        incarnation: int,
        pool: KeyPool,
        store: KeyStore | None = None,
        store_path: Path | None = None,
        open_store: Callable[[], KeyStore] | None = None,
    ) -> None:
        super().__init__(name, parent, incarnation)
        self.pool = pool
        self.store = store
        self.store_path = store_path  # the key store's file: watched for keys added elsewhere
        self.open_store = open_store  # opens the store when it appears after the run started
        self.store_seen = _mtime(store_path)

    @handles(RefreshKeys)
    def refresh(self, message: RefreshKeys) -> None:
        """`executor keys add/remove` in another terminal changed the store: follow it.

        Only keys the pool does not hold are added (adding one again would re-enable a key
        the provider refused); keys that came from the store and left it are removed.
        """
        seen = _mtime(self.store_path)
        if seen == self.store_seen:
            return
        self.store_seen = seen
        if seen is None:
            return
        try:
            if self.store is None:
                if self.open_store is None:
                    return
                self.store = self.open_store()
            stored = self.store.secrets()
        except KeyStoreError as error:
            log.warning("%s: the key store changed but cannot be read: %s", self.name, error)
            return
        ids = set()
        for api_key in stored:
            key = PoolKey.of(api_key)
            ids.add(key.id)
            if key.id not in self.pool:
                self.pool.add(key)
                log.info("%s: key %s added from the key store", self.name, key.id)
        for state in self.pool.snapshot():
            if state.source == "keystore" and state.key_id not in ids:
                self.pool.remove(state.key_id)
                log.info("%s: key %s left the key store", self.name, state.key_id)

    @handles(AcquireKey)
    def acquire(self, message: AcquireKey) -> KeyLease | KeyWait | KeyUnavailable:
        result = self.pool.acquire(message.provider)
        if isinstance(result, Lease):
            return KeyLease(key_id=result.key_id, provider=result.provider, secret_ref=result.secret)
        if isinstance(result, Wait):
            return KeyWait(provider=result.provider, wait_s=result.wait_s, key_id=result.key_id)
        return KeyUnavailable(provider=result.provider, reason=result.reason, disabled=result.disabled)

    @handles(ReportKey)
    def report(self, message: ReportKey) -> KeyStates:
        before = self.pool.state(message.key_id)
        try:
            state = self.pool.report(
                message.key_id,
                message.outcome,
                retry_after_s=message.retry_after_s,
                tokens_in=message.tokens_in,
                tokens_out=message.tokens_out,
                cost_usd=message.cost_usd,
                error=message.error,
            )
        except ValueError as error:
            log.warning("%s: ignored a key report: %s", self.name, error)
            state = None
        if state is not None and state.status != "active":
            log.info("%s: key %s is %s (%s)", self.name, state.key_id, state.status, state.last_error)
        if state is not None and state.status == "disabled" and (before is None or before.status != "disabled"):
            self._tell_owner(state)
        return KeyStates(items=() if state is None else (state,))

    def _tell_owner(self, state: KeyState) -> None:
        """A key the provider refused is out of the pool until someone adds it again: say so, once."""
        notice = Notice(
            kind="key_disabled",
            title=f"API key {state.key_id} ({state.provider}, …{state.last4}) disabled: the provider refused it",
            body=(state.disabled_reason or state.last_error or "authentication failed")[:1000],
            action=f"check the key, then add a working one: executor keys add {state.provider}",
        )
        # Looked up by name: the Notifier runs only when notifications are configured.
        for ref in pykka.ActorRegistry.get_by_class_name("NotifierActor"):
            ref.tell(Notify(notice=notice))

    @handles(AddKey)
    def add(self, message: AddKey) -> KeyAdded | KeyRejected:
        secret = message.secret
        if not isinstance(secret, Secret):
            return KeyRejected(provider=message.provider, reason="the key must be given as a Secret")
        try:
            provider, value, tier = validate_key(message.provider, secret.reveal(), message.tier)
        except InvalidKey as error:
            return KeyRejected(provider=message.provider, reason=str(error))
        key = PoolKey.new(provider, value, tier, source="runtime")
        persisted, warning = False, None
        if message.persist and self.store is not None:
            try:
                self.store.add(provider, value, tier)
            except KeyStoreError as error:
                warning = f"the key is in use but was not saved: {error}"
            else:
                persisted = self.store.persistent
                warning = self.store.warning
                key = PoolKey.new(provider, value, tier, source="keystore" if persisted else "memory")
        elif message.persist:
            warning = "no key store: the key is held in memory for this process only"
        ident = self.pool.add(key)
        return KeyAdded(key_id=ident, provider=provider, last4=key.secret.last4, persisted=persisted, warning=warning)

    @handles(RemoveKey)
    def remove(self, message: RemoveKey) -> KeyRemoved:
        found = self.pool.remove(message.key_id)
        if self.store is not None:
            try:
                found = self.store.remove(message.key_id) or found
            except KeyStoreError as error:
                log.warning("%s: could not remove %s from the key store: %s", self.name, message.key_id, error)
        return KeyRemoved(key_id=message.key_id, found=found)

    @handles(GetKeyStates)
    def states(self, message: GetKeyStates) -> KeyStates:
        return KeyStates(items=tuple(self.pool.snapshot(message.provider)))


def _mtime(path: Path | None) -> int | None:
    if path is None:
        return None
    try:
        return path.stat().st_mtime_ns
    except OSError:
        return None
