"""The routing relay between an attempt on a node and the head (cluster/relay.py), in one process."""

from __future__ import annotations

import pickle
import threading

from cluster.relay import HandedKey, RelayedRouting, RoutingRequest, answer_request
from protocol.keys import KeyLease, KeyUnavailable
from protocol.routing import NoModel
from session.redaction import redact
from session.secret import Secret

VALUE = "sk-test-relayed-key-0123456789abcdef"


class _HeadRouting:
    def __init__(self) -> None:
        self.reports: list[tuple[object, ...]] = []

    def acquire_key(self, provider: str) -> KeyLease:
        return KeyLease(key_id="k1", provider=provider, secret_ref=Secret(provider, VALUE))

    def report_key(self, *args: object) -> None:
        self.reports.append(args)

    def select_model(self, *args: object) -> NoModel:
        raise RuntimeError("a bug in routing")


def _serve(relay: RelayedRouting, head: object, stop: threading.Event) -> threading.Thread:
    """The head's side of the polls: take the node's requests, answer each."""

    def loop() -> None:
        while not stop.is_set():
            with relay.changed:
                relay.changed.wait_for(lambda: bool(relay.pending) or stop.is_set(), timeout=0.05)
                requests = relay.take_requests()
            for request in requests:
                # What crosses to the node is pickled, as Ray would.
                crossed = pickle.loads(pickle.dumps(answer_request(head, request)))  # noqa: S301 - our own bytes
                relay.answer(request.id, crossed)

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    return thread


def test_a_leased_key_crosses_as_a_handed_key_and_is_a_secret_again_on_the_node():
    head = _HeadRouting()
    relay = RelayedRouting(threading.Condition())
    stop = threading.Event()
    _serve(relay, head, stop)
    try:
        lease = relay.acquire_key("openai")
        relay.report_key("k1", None, None, 10, 20, 0.01, None)
    finally:
        stop.set()
    assert isinstance(lease, KeyLease)
    assert lease.key_id == "k1"
    assert lease.secret_ref.reveal() == VALUE
    assert VALUE not in redact(f"the agent printed {VALUE}")
    assert head.reports == [("k1", None, None, 10, 20, 0.01, None)]


def test_a_handed_key_never_shows_its_value():
    handed = answer_request(_HeadRouting(), RoutingRequest(0, "acquire_key", ("openai",)))
    assert isinstance(handed, HandedKey)
    assert VALUE not in repr(handed)
    assert VALUE not in f"{handed}"


def test_a_routing_call_the_head_cannot_answer_gives_the_backends_nothing_case():
    relay = RelayedRouting(threading.Condition(), wait_s=0.1)
    unanswered = relay.acquire_key("openai")
    assert isinstance(unanswered, KeyUnavailable)
    assert "did not answer" in unanswered.reason
    assert relay.pending == [], "a request the head never took is withdrawn"
    failing = answer_request(_HeadRouting(), RoutingRequest(1, "select_model", ("T-001", "medium", None)))
    assert isinstance(failing, NoModel)
    assert answer_request(_HeadRouting(), RoutingRequest(2, "__class__", ())) is None, "only routing methods"
    assert isinstance(answer_request(None, RoutingRequest(3, "next_model", ("T-001", "m", "crash"))), NoModel)
