"""RayRunner: "start this attempt" as a Ray actor placed by resources.

It replaces the local process start for one attempt and nothing else: the TeamWorker's
thread still runs it, writes the prompt first, reports to the Executor and commits the
worktree.  What changes is where the agent's process runs — inside an AttemptHost actor on
a node that offers the role's resources — and one new way for an attempt to end: the
actor (its node) died, so the outcome is unknown, and the attempt ends ``node_lost``.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from backends.base import Backend, WorkerHooks
from cluster.connect import import_ray
from cluster.head_git import Outgoing, pack, receive
from cluster.host import AttemptHost, HostReport
from cluster.relay import answer_request
from cluster.shipping import Returned, ShipError
from protocol.messages import AttemptResult, WorkOrder

__all__ = ["ClusterSetup", "RayRunner", "actor_name"]

log = logging.getLogger("executor.cluster")
POLL_S = 0.5


@dataclass(frozen=True)
class ClusterSetup:
    address: str
    namespace: str
    resources: Mapping[str, Mapping[str, float]] = field(default_factory=dict)  # role -> labels
    num_cpus: float = 0.0
    shared_filesystem: bool = True  # False: the project goes to each node by git (cluster.head_git)

    def resources_of(self, role: str) -> dict[str, float]:
        return dict(self.resources.get(role, {}))


def actor_name(order: WorkOrder) -> str:
    """Unique per attempt, so a resumed executor can find (and stop) what a dead one left."""
    return f"attempt:{order.task_id}:{order.attempt}:{order.run_id}"


class RayRunner:
    def __init__(
        self, setup: ClusterSetup, backends: Mapping[str, Backend], prepare: Callable[[WorkOrder], None]
    ) -> None:
        self.setup = setup
        self.backends = backends
        self.prepare = prepare  # writes the prompt file (shipped with the project if the folder is not shared)
        self.ray = import_ray()
        self.host_class = self.ray.remote(AttemptHost)

    def __call__(self, order: WorkOrder, hooks: WorkerHooks, cancel: threading.Event) -> AttemptResult:
        self.prepare(order)
        ray = self.ray
        outgoing: Outgoing | None = None
        if not self.setup.shared_filesystem:
            hooks.progress(None, "packing the project for the node (git bundle)")
            try:
                outgoing = pack(order)
            except ShipError as error:
                return AttemptResult(ok=False, error_kind="spawn_failed", error=f"cannot ship the project: {error}")
        host = self.host_class.options(
            name=actor_name(order),
            namespace=self.setup.namespace,
            lifetime="detached",  # outlives a killed executor; the next resume reaps it
            num_cpus=self.setup.num_cpus,
            resources=self.setup.resources_of(order.role),
            max_restarts=0,  # retries are the pipeline's
            max_task_retries=0,
            max_concurrency=4,  # cancel is heard while a poll waits
        ).remote()
        try:
            result, returned = self._follow(host, order, hooks, cancel, outgoing)
        finally:
            with contextlib.suppress(Exception):
                ray.kill(host, no_restart=True)
        if outgoing is not None and returned is not None:
            result = receive(outgoing, order, result, returned)
        return result

    def _follow(
        self, host: Any, order: WorkOrder, hooks: WorkerHooks, cancel: threading.Event, outgoing: Outgoing | None
    ) -> tuple[AttemptResult, Returned | None]:
        ray = self.ray
        errors = ray.exceptions
        backend = self.backends[order.role]
        routing = getattr(hooks, "routing", None)  # the head's Router and KeyPool, if the run has them
        if outgoing is None:
            where = host.start.remote(order, backend, routed=routing is not None)
        else:  # the bundle goes through the object store, resolved to bytes on the node
            bundle = ray.put(outgoing.bundle)
            where = host.start.remote(order, backend, outgoing.shipment, bundle, routed=routing is not None)
        placed = False
        cancel_sent = False
        poll: Any = None
        while True:
            if cancel.is_set() and not cancel_sent:
                if not placed:  # still waiting for a node: nothing ran
                    stopped = AttemptResult(ok=False, error_kind="interrupted", error="stopped before a node took it")
                    return stopped, None
                host.cancel.remote()
                cancel_sent = True
            try:
                if not placed:
                    node_id, node_host = ray.get(where, timeout=POLL_S)
                    placed = True
                    node = f"{node_host} ({node_id[:12]})"
                    place = getattr(hooks, "placed", None)  # the worker's hooks record it with the start
                    if place is not None:
                        place(node)
                    hooks.progress(None, f"on node {node}")
                    continue
                if poll is None:
                    poll = host.poll.remote(POLL_S)
                report: HostReport = ray.get(poll, timeout=POLL_S * 4)
                poll = None
            except errors.GetTimeoutError:
                continue
            except errors.ActorUnavailableError:
                poll = None  # a transient loss of contact; the actor may come back
                continue
            except (errors.RayActorError, errors.NodeDiedError, errors.OwnerDiedError) as error:
                return _node_lost(order, error), None
            if report.started is not None:
                hooks.started(*report.started)
            for percent, note in report.progress:
                hooks.progress(percent, note)
            for request in report.requests:
                host.answer.remote(request.id, answer_request(routing, request))
            if report.result is not None:
                return report.result, report.returned


def _node_lost(order: WorkOrder, error: BaseException) -> AttemptResult:
    first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    log.warning("attempt %s of %s lost with its node: %s", order.attempt, order.task_id, first_line)
    return AttemptResult(
        ok=False,
        error_kind="node_lost",
        outcome="failed",
        error=f"the cluster node running it was lost ({first_line[:300]}); what it did is unknown",
    )
