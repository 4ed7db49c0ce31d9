"""Agent CLIs on the run's key pool: each process gets a key leased from the pool, and how it went
goes back to the pool.

A run's KeyPool holds every key the user gave for a provider (the ``[keys.env]`` variables,
``hydra_keys.json`` files, ``executor keys add``).  An agent CLI (claude: anthropic, codex:
openai, gemini: google) takes one key per process, in the variable it reads.  When the provider
refuses the key (``auth``: the pool disables it) or limits it (``rate_limited``: it cools down),
the same attempt runs the CLI again with the pool's next key — the agent's log goes on.  When
every key cools, the attempt ends as ``rate_limited`` (the pipeline retries it after its backoff;
the next attempt waits for the first key to cool).  When every key is disabled, the user is asked
for one (the same question the HTTP backend asks) and the attempt goes on once a key is added.

With no pooled key for the provider, the CLI runs as it always did: its own login or the
environment's key.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import msgspec

from backends.base import RoutingServices, WorkerHooks
from backends.key_wait import lease_when_cool, wait_for_added_key
from protocol.keys import KeyLease, KeyUnavailable, KeyWait
from protocol.messages import AttemptResult, WorkOrder
from session.redaction import redact

__all__ = ["MAX_KEY_TURNS", "run_on_pooled_keys"]

MAX_KEY_TURNS = 8  # processes one attempt may start, one per key the pool hands out

#: Runs the CLI once; the argument is the key to put in its key variable (None: its own credentials).
RunOnce = Callable[[str | None], AttemptResult]


def run_on_pooled_keys(
    provider: str | None, order: WorkOrder, hooks: WorkerHooks, cancel: threading.Event, run_once: RunOnce
) -> AttemptResult:
    """Run the attempt on keys of ``provider`` from the pool (see the module's docstring)."""
    routing: RoutingServices | None = getattr(hooks, "routing", None) if provider else None
    if routing is None or provider is None:
        return run_once(None)
    deadline = time.monotonic() + (order.timeout_s or 3600.0)

    def note(line: str) -> None:
        hooks.progress(None, line)

    result: AttemptResult | None = None
    for _ in range(MAX_KEY_TURNS):
        if result is None:
            lease = lease_when_cool(routing, provider, cancel, deadline, note)
        else:  # after a refusal: another key now, or the attempt ends (the pipeline's backoff waits)
            lease = routing.acquire_key(provider)
            if isinstance(lease, KeyWait):
                return result
        if isinstance(lease, KeyUnavailable):
            if not lease.disabled and result is None:
                return run_once(None)  # no pooled key at all: the CLI's own login or key
            found = wait_for_added_key(order.task_id, provider, lease, routing, cancel, deadline, note)
            if isinstance(found, str):  # the user answered `fail`
                return AttemptResult(ok=False, error_kind="auth", error=found)
            lease = found if found is not None else lease
        if not isinstance(lease, KeyLease):
            return _no_key(provider, lease, cancel, result)
        key = lease.secret_ref.reveal()
        result = msgspec.structs.replace(run_once(key), key_id=lease.key_id)
        routing.report_key(
            lease.key_id,
            None if result.ok else result.error_kind,
            result.retry_after_s,
            result.tokens_in or 0,
            result.tokens_out or 0,
            result.cost_usd or 0.0,
            redact(result.error or "") or None,
        )
        if result.ok or cancel.is_set() or result.error_kind not in ("auth", "rate_limited"):
            return result
        # The pool has disabled the key (auth) or cools it (rate_limited): the next turn takes another.
        note(f"{provider} key {lease.key_id}: {result.error_kind}; going on with the pool's next key")
    assert result is not None  # noqa: S101 - the loop ran at least once
    return result


def _no_key(
    provider: str, lease: KeyWait | KeyUnavailable, cancel: threading.Event, last: AttemptResult | None
) -> AttemptResult:
    """The attempt ends without a key: stopped, out of time while keys cooled, or none was added."""
    if cancel.is_set():
        return AttemptResult(ok=False, error_kind="interrupted", error="stopped by the executor")
    if isinstance(lease, KeyWait):
        return AttemptResult(
            ok=False,
            error_kind="rate_limited",
            error=f"every {provider} key was still cooling down when the attempt's time ran out",
            retry_after_s=lease.wait_s,
        )
    return last or AttemptResult(
        ok=False, error_kind="auth", error=f"no usable {provider} key was added in time: {lease.reason}"
    )
