"""Waiting for a usable key of the run's key pool: while every key cools, and while the user is
asked for a new one.  Shared by every backend that takes its keys from the pool (the OpenAI-compatible
HTTP backend per call, the agent CLIs per process).

Both waits run on the worker's thread in short steps, so a key added meanwhile (`executor keys add`,
the ``add_api_key`` MCP tool) is taken at once and a stop (``cancel``) ends them at once.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from backends.base import RoutingServices
from protocol.keys import KeyLease, KeyUnavailable, KeyWait

__all__ = ["KEY_ASK_NOTE_S", "KEY_WAIT_STEP_S", "lease_when_cool", "wait_for_added_key"]

KEY_ASK_NOTE_S = 60.0  # while the user is asked for a key, the log says so this often (the run sees life)
KEY_WAIT_STEP_S = 2.0  # while every key cools, look for a usable (or newly added) key this often

Note = Callable[[str], None]


def lease_when_cool(
    routing: RoutingServices, provider: str, cancel: threading.Event, deadline: float, note: Note
) -> KeyLease | KeyWait | KeyUnavailable:
    """A key of ``provider``, waiting (within ``deadline``) while every one cools down.

    A :class:`KeyWait` comes back only when the deadline passed or ``cancel`` was set."""
    lease = routing.acquire_key(provider)
    if isinstance(lease, KeyWait):  # every key of the provider is cooling: wait, do not fail
        note(f"all {provider} keys are cooling; waiting {lease.wait_s:.1f}s for {lease.key_id}")
    while isinstance(lease, KeyWait) and not cancel.is_set() and time.monotonic() < deadline:
        cancel.wait(max(0.0, min(lease.wait_s, KEY_WAIT_STEP_S, deadline - time.monotonic())))
        lease = routing.acquire_key(provider)
    return lease


def wait_for_added_key(
    task_id: str,
    provider: str,
    missing: KeyUnavailable,
    routing: RoutingServices,
    cancel: threading.Event,
    deadline: float,
    note: Note,
) -> KeyLease | str | None:
    """No usable key of ``provider``: ask the user (one question per provider) and wait, within
    ``deadline``, for a key to join the pool.  The new key's lease; the reason when the user
    answered ``fail``; None when the time ran out or the attempt was stopped."""
    note(f"no usable {provider} key ({missing.reason}); asking the user for one and waiting")
    seen = routing.ask_for_key(task_id, provider, missing.reason)
    noted = time.monotonic()
    while not cancel.is_set() and time.monotonic() < deadline:
        cancel.wait(max(0.0, min(KEY_WAIT_STEP_S, deadline - time.monotonic())))
        if time.monotonic() - noted >= KEY_ASK_NOTE_S:  # a line now and then: waiting on a person is no stall
            note(f"still waiting for a {provider} key (`executor keys add {provider}`)")
            noted = time.monotonic()
        lease = routing.acquire_key(provider)
        if isinstance(lease, KeyLease):
            note(f"a {provider} key was added: {lease.key_id}")
            routing.key_found(provider)
            return lease
        given_up = routing.key_given_up(provider, seen)
        if given_up is not None:
            return given_up
    return None
