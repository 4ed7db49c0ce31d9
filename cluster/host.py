"""AttemptHost: one attempt's process, run on whichever node Ray placed the actor.

The head calls :meth:`start` once, then :meth:`poll` until the result is there; each poll
carries what the backend reported since the last one (the process id, progress notes, and
the routing calls the head answers with :meth:`answer`, see :mod:`cluster.relay`).
Cancelling is a method call too.  Without a shared filesystem the attempt runs in a
private clone on the node (:mod:`cluster.node_git`) and its branch comes back with the
result.  The actor is created with ``max_restarts=0`` and
``max_task_retries=0``: if its node dies the head sees the actor dead and the pipeline,
not Ray, decides about another attempt.
"""

from __future__ import annotations

import socket
import threading
from typing import Any

import msgspec

from backends.process_tree import stop_tree
from cluster.node_git import NodeCheckout
from cluster.relay import RelayedRouting, RoutingRequest
from cluster.shipping import Returned, ShipError, Shipment
from protocol.messages import AttemptResult, WorkOrder

__all__ = ["AttemptHost", "HostReport"]


class HostReport(msgspec.Struct, frozen=True):
    node_id: str
    node_host: str
    started: tuple[int, float | None] | None = None
    progress: tuple[tuple[int | None, str], ...] = ()
    result: AttemptResult | None = None
    returned: Returned | None = None  # with the result of a git-shipped attempt
    requests: tuple[RoutingRequest, ...] = ()  # routing calls waiting for the head's answer


class _LocalHooks:
    """The backend's callbacks on the node, kept until the head's next poll."""

    def __init__(self, changed: threading.Condition) -> None:
        self.changed = changed
        # Model and key routing stays with the head's services; set when the head offers it.
        self.routing: RelayedRouting | None = None
        self.started_as: tuple[int, float | None] | None = None
        self.reported_start = False
        self.notes: list[tuple[int | None, str]] = []

    def started(self, pid: int, create_time: float | None) -> None:
        with self.changed:
            self.started_as = (pid, create_time)
            self.changed.notify_all()

    def progress(self, percent: int | None, note: str) -> None:
        with self.changed:
            self.notes.append((percent, note[:500]))
            self.changed.notify_all()


class AttemptHost:
    def __init__(self) -> None:
        self.changed = threading.Condition()
        self.hooks = _LocalHooks(self.changed)
        self.cancel_event = threading.Event()
        self.result: AttemptResult | None = None
        self.returned: Returned | None = None
        self.checkout: NodeCheckout | None = None
        self.thread: threading.Thread | None = None
        self.node_id, self.node_host = _where()

    def start(
        self,
        order: WorkOrder,
        backend: Any,
        shipment: Shipment | None = None,
        bundle: bytes = b"",
        routed: bool = False,
    ) -> tuple[str, str]:
        """Run ``backend`` for ``order`` on a thread of this actor; return where it runs.

        With a ``shipment`` (the head shares no filesystem with this node) the attempt runs in a
        private clone of ``bundle`` (Ray hands the bytes over from its object store).  With
        ``routed``, the backend's ``hooks.routing`` calls go to the head (:mod:`cluster.relay`)."""
        if self.thread is None:
            if routed:
                self.hooks.routing = RelayedRouting(self.changed)
            if shipment is not None:
                self.checkout = NodeCheckout(order, shipment, bundle)
            self.thread = threading.Thread(target=self._run, args=(order, backend), name="attempt", daemon=True)
            self.thread.start()
        return self.node_id, self.node_host

    def _run(self, order: WorkOrder, backend: Any) -> None:
        checkout = self.checkout
        returned: Returned | None = None
        try:
            if checkout is None:
                result = backend.run(order, self.hooks, self.cancel_event)
            else:
                try:
                    local = checkout.prepare()
                except ShipError as error:
                    result = AttemptResult(ok=False, error_kind="spawn_failed", error=f"no clone on the node: {error}")
                else:
                    result = backend.run(local, self.hooks, self.cancel_event)
                    result, returned = checkout.finish(local, result)
        except Exception as error:  # noqa: BLE001 - the head gets every failure as a result
            result = AttemptResult(ok=False, error_kind="crash", error=f"the attempt's host failed: {error}")
        finally:
            if checkout is not None:
                checkout.remove()
        with self.changed:
            self.result, self.returned = result, returned
            self.changed.notify_all()

    def poll(self, wait_s: float) -> HostReport:
        """What happened since the last poll, waiting up to ``wait_s`` for something to."""
        hooks = self.hooks
        with self.changed:
            routing = hooks.routing

            def fresh() -> bool:
                asked = routing is not None and bool(routing.pending)
                begun = hooks.started_as is not None and not hooks.reported_start
                return self.result is not None or bool(hooks.notes) or begun or asked

            self.changed.wait_for(fresh, timeout=wait_s)
            started = None
            if hooks.started_as is not None and not hooks.reported_start:
                started, hooks.reported_start = hooks.started_as, True
            notes, hooks.notes = tuple(hooks.notes), []
            requests = routing.take_requests() if routing is not None else ()
            return HostReport(self.node_id, self.node_host, started, notes, self.result, self.returned, requests)

    def answer(self, request_id: int, value: Any) -> None:
        """The head's answer to a routing request (a leased key comes this way, to this attempt only)."""
        if self.hooks.routing is not None:
            self.hooks.routing.answer(request_id, value)

    def where(self) -> tuple[str, str]:
        """The node this actor (and its attempt) runs on."""
        return self.node_id, self.node_host

    def cancel(self) -> None:
        self.cancel_event.set()

    def stop(self, grace_s: float) -> bool:
        """Stop the attempt (a resumed executor reaping what its dead predecessor left); True once stopped."""
        self.cancel_event.set()
        if self.thread is not None:
            self.thread.join(grace_s)
        started = self.hooks.started_as
        if started is not None and self.result is None:
            stop_tree(started[0], started[1], grace_s=1.0)
        if self.checkout is not None and self.result is None:
            self.checkout.remove()
        return self.result is not None or started is None


def _where() -> tuple[str, str]:
    try:
        import ray  # noqa: PLC0415 - only inside a Ray worker

        return ray.get_runtime_context().get_node_id(), socket.gethostname()
    except Exception:  # noqa: BLE001 - outside Ray (a unit test) there is no node
        return "local", socket.gethostname()
