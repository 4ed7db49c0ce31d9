"""Model and key routing for an attempt on a node: ``hooks.routing`` answered by the head.

The Router and the KeyPool stay with the head's services.  On the node, a backend's
routing call becomes a :class:`RoutingRequest` that the head collects with its next poll;
the head asks its own routing and sends the answer to that attempt's actor alone
(:meth:`cluster.host.AttemptHost.answer`).  A leased key therefore reaches exactly the
node process that runs the attempt that asked for it, as an argument of one call, never
through Ray's runtime environment, and only while the attempt runs.  On the node it
becomes a :class:`session.secret.Secret` again, which registers it for redaction there.
"""

from __future__ import annotations

import contextlib
import threading
from typing import Any

import msgspec

from protocol.keys import KeyLease, KeyUnavailable
from protocol.routing import NoModel
from session.secret import Secret

__all__ = ["HandedKey", "RelayedRouting", "RoutingRequest", "answer_request"]

ANSWER_WAIT_S = 120.0
_METHODS = frozenset(
    {
        "select_model",
        "next_model",
        "base_url",
        "model_spec",
        "acquire_key",
        "ask_for_key",
        "key_given_up",
        "key_found",
        "report_key",
    }
)


class RoutingRequest(msgspec.Struct, frozen=True):
    id: int
    method: str
    args: tuple[Any, ...] = ()


class HandedKey:
    """A leased key on its way to one node.  Its repr names the key's id, never its value."""

    __slots__ = ("key_id", "provider", "value")

    def __init__(self, key_id: str, provider: str, value: str) -> None:
        self.key_id = key_id
        self.provider = provider
        self.value = value

    def __repr__(self) -> str:
        return f"HandedKey({self.key_id})"

    def lease(self) -> KeyLease:
        return KeyLease(key_id=self.key_id, provider=self.provider, secret_ref=Secret(self.provider, self.value))


def _fallback(method: str, args: tuple[Any, ...], why: str) -> Any:
    """What a routing call gives when the head cannot answer: the backend's "nothing here" case."""
    if method in ("select_model", "next_model"):
        return NoModel(task_id=str(args[0]) if args else "", reason=why)
    if method == "acquire_key":
        return KeyUnavailable(provider=str(args[0]) if args else "", reason=why)
    if method == "ask_for_key":
        return frozenset()
    return None


def answer_request(routing: Any, request: RoutingRequest) -> Any:
    """The head's answer to one request from a node (runs on the head's worker thread).

    Only the routing methods are called; a leased key travels as a :class:`HandedKey`
    (a :class:`~session.secret.Secret` refuses to be pickled)."""
    if routing is None or request.method not in _METHODS:
        return _fallback(request.method, request.args, "the executor has no routing for this")
    try:
        value = getattr(routing, request.method)(*request.args)
    except Exception:  # noqa: BLE001 - routing "never raises"; a node must not hang on a bug here
        return _fallback(request.method, request.args, "the executor's routing failed")
    if isinstance(value, KeyLease):
        return HandedKey(value.key_id, value.provider, value.secret_ref.reveal())
    return value


class RelayedRouting:
    """``hooks.routing`` inside an AttemptHost: each call waits for the head's answer."""

    def __init__(self, changed: threading.Condition, wait_s: float = ANSWER_WAIT_S) -> None:
        self.changed = changed
        self.wait_s = wait_s
        self.pending: list[RoutingRequest] = []
        self.answers: dict[int, Any] = {}
        self.next_id = 0

    def take_requests(self) -> tuple[RoutingRequest, ...]:
        """The requests not yet sent to the head (call holding ``changed``)."""
        taken, self.pending = tuple(self.pending), []
        return taken

    def answer(self, request_id: int, value: Any) -> None:
        with self.changed:
            self.answers[request_id] = value
            self.changed.notify_all()

    def _call(self, method: str, *args: Any) -> Any:
        with self.changed:
            request_id, self.next_id = self.next_id, self.next_id + 1
            self.pending.append(RoutingRequest(request_id, method, args))
            self.changed.notify_all()
            if not self.changed.wait_for(lambda: request_id in self.answers, timeout=self.wait_s):
                with contextlib.suppress(ValueError):
                    self.pending.remove(RoutingRequest(request_id, method, args))
                return _fallback(method, args, "the executor did not answer")
            value = self.answers.pop(request_id)
        return value.lease() if isinstance(value, HandedKey) else value

    def select_model(self, task_id: str, complexity: str, force_model: str | None, backend: str | None = None) -> Any:
        return self._call("select_model", task_id, complexity, force_model, backend)

    def next_model(self, task_id: str, current_model: str, error_kind: str) -> Any:
        return self._call("next_model", task_id, current_model, error_kind)

    def base_url(self, model: str) -> Any:
        return self._call("base_url", model)

    def model_spec(self, model: str) -> Any:
        return self._call("model_spec", model)

    def acquire_key(self, provider: str) -> Any:
        return self._call("acquire_key", provider)

    def ask_for_key(self, task_id: str, provider: str, reason: str) -> Any:
        return self._call("ask_for_key", task_id, provider, reason)

    def key_given_up(self, provider: str, seen: frozenset[str]) -> Any:
        return self._call("key_given_up", provider, seen)

    def key_found(self, provider: str) -> None:
        self._call("key_found", provider)

    def report_key(
        self,
        key_id: str,
        error_kind: str | None,
        retry_after_s: float | None,
        tokens_in: int,
        tokens_out: int,
        cost_usd: float,
        error: str | None,
    ) -> None:
        self._call("report_key", key_id, error_kind, retry_after_s, tokens_in, tokens_out, cost_usd, error)
