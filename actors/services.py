"""The Executor's service children: Session, Reconciler, and (when configured) Router,
KeyPool, Notifier and McpClients, each a permanent child restarted with backoff."""

from __future__ import annotations

import time
from collections.abc import Iterable
from pathlib import Path
from typing import IO, Any, cast

import msgspec
import pykka

from actors.keypool import KeyPoolActor
from actors.notices import NOTIFIER, notifier_callbacks
from actors.options import RunOptions
from actors.reconciler import Reconciler
from actors.router import RouterActor
from actors.session import EventSink, SessionActor
from actors.supervision import ChildSpec, RestartType, Supervisor
from protocol.keys import GetKeyStates, KeyStates, RefreshKeys
from protocol.mcp_client import GetMcpServers, McpServers
from session.loader import TeamSession
from session.store import STATE_DIR

__all__ = [
    "KEYPOOL",
    "MCP_CLIENTS",
    "NOTIFIER",
    "RECONCILER",
    "ROUTER",
    "SERVICES",
    "SESSION",
    "mcp_states",
    "snapshot_keys",
    "start_services",
]

from actors.session_link import SESSION, DirectLine

RECONCILER = "reconciler"
ROUTER = "router"
KEYPOOL = "keypool"
MCP_CLIENTS = "mcp-clients"
SERVICES = (SESSION, RECONCILER, ROUTER, KEYPOOL, MCP_CLIENTS, NOTIFIER)
NOTIFIER_GRACE_S = 5.0


def start_services(
    supervisor: Supervisor,
    me: pykka.ActorRef[Any],
    session: TeamSession,
    options: RunOptions,
    sinks: Iterable[EventSink],
    marker: str,
    folder: Path,
    direct: DirectLine | None = None,
) -> IO[str] | None:
    """Start the services; returns the notifications log the Notifier writes (to close at the end).
    ``direct``: the Session actor's handlers are called on the Executor's thread (see
    :class:`~actors.session_link.DirectLine`)."""
    sink_list = list(sinks)
    supervisor.start_child(
        ChildSpec(
            name=SESSION,
            start=lambda inc: SessionActor.start(
                SESSION, me, inc, session, sink_list, options.flush_interval_s, direct
            ),
            restart=RestartType.PERMANENT,
            backoff=options.service_backoff,
            shutdown_timeout_s=30.0,
        )
    )
    supervisor.start_child(
        ChildSpec(
            name=RECONCILER,
            start=lambda inc: Reconciler.start(RECONCILER, me, inc, session, marker, options.kill_grace_s),
            restart=RestartType.PERMANENT,
            backoff=options.service_backoff,
        )
    )
    routing = options.routing
    if routing is not None:
        supervisor.start_child(
            ChildSpec(
                name=ROUTER,
                start=lambda inc: RouterActor.start(ROUTER, me, inc, routing.config),
                restart=RestartType.PERMANENT,
                backoff=options.service_backoff,
            )
        )
        supervisor.start_child(
            ChildSpec(
                name=KEYPOOL,
                # The same pool object survives a restart: cooldowns and usage are kept.
                start=lambda inc: KeyPoolActor.start(
                    KEYPOOL, me, inc, routing.pool, routing.store, routing.store_path, routing.open_store
                ),
                restart=RestartType.PERMANENT,
                backoff=options.service_backoff,
            )
        )
    notify_log = None
    notify = options.notify
    if notify is not None:
        from actors.notifier import NotifierActor  # noqa: PLC0415 - only runs that notify pay for it

        # Its console channel writes to a log in the session: the terminal has its own lines.
        notify_log = (folder / STATE_DIR / "notifications.log").open("a", encoding="utf-8")
        callbacks = notifier_callbacks(me)
        stream = notify_log
        supervisor.start_child(
            ChildSpec(
                name=NOTIFIER,
                start=lambda inc: NotifierActor.start(
                    NOTIFIER,
                    me,
                    inc,
                    notify,
                    on_dropped=callbacks.on_dropped,
                    on_answer=callbacks.on_answer,
                    digest=callbacks.digest,
                    console_stream=stream,
                ),
                restart=RestartType.PERMANENT,
                backoff=options.service_backoff,
                shutdown_timeout_s=NOTIFIER_GRACE_S + 5,
            )
        )
    mcp_servers = options.mcp_servers
    if mcp_servers:
        # The MCP client SDK costs ~1 s to import: only runs with MCP servers pay for it.
        from actors.mcp_clients import McpClientsActor  # noqa: PLC0415

        supervisor.start_child(
            ChildSpec(
                name=MCP_CLIENTS,
                start=lambda inc: McpClientsActor.start(MCP_CLIENTS, me, inc, mcp_servers),
                restart=RestartType.PERMANENT,
                backoff=options.service_backoff,
            )
        )
    return notify_log


def snapshot_keys(keypool: pykka.ActorRef[Any] | None, last: bytes) -> bytes | None:
    """The key pool's states, encoded for the store (so `executor models --session` in another
    process shows them live), or None when unchanged since ``last`` or unavailable.
    Cooldowns are stored as a wall-clock end, so an unchanged pool writes nothing."""
    if keypool is None or keypool.actor_stopped.is_set():
        return None
    keypool.tell(RefreshKeys())  # keys added in another terminal join first
    try:
        states = cast(KeyStates, keypool.ask(GetKeyStates(), timeout=1.0))
    except (pykka.ActorDeadError, pykka.Timeout):
        return None
    wall = time.time()
    rows = [
        {
            **msgspec.structs.asdict(state),
            "cooling_for_s": 0.0,
            "cooling_until": round(wall + state.cooling_for_s, 1) if state.cooling_for_s else None,
        }
        for state in states.items
    ]
    encoded = msgspec.json.encode(rows)
    return None if encoded == last else encoded


def mcp_states(service: pykka.ActorRef[Any] | None) -> dict[str, tuple[str, tuple[str, ...]]] | None:
    """Each MCP server's (status, tools) from the McpClients service, or None when it is not there."""
    if service is None or service.actor_stopped.is_set():
        return None
    try:
        servers = cast(McpServers, service.ask(GetMcpServers(), timeout=1.0))
    except (pykka.ActorDeadError, pykka.Timeout):
        return None
    return {state.name: (state.status, tuple(state.tools)) for state in servers.items}
