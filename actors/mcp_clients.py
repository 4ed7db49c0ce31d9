"""The McpClients service actor: the health of the MCP servers in ``[mcp_servers]``.

At start, and every ``health_interval_s`` of each server after its last check
ended, it checks the server (connect, initialize, list the tools; see
:func:`session.mcp_client.probe`) and keeps an :class:`~protocol.mcp_client.McpServerState`.

Timing: the actor runs its own timer thread, which tells it a
:class:`~protocol.messages.Tick` every ``tick_s``; on a Tick the actor starts the
checks that are due.  A Tick from anyone else (the parent's ticker) does the
same, so a parent may drive it too; the timer keeps it independent of the
Executor's tick rate.

A check runs on a short-lived thread of its own, one per server at a time, and
tells its result back as :class:`~protocol.mcp_client.McpProbeDone`: the inbox
is never blocked by a slow or dead server, and a stdio server that hangs holds
one thread, not the actor.  When the actor stops, running checks are cancelled.

Replies: :class:`~protocol.mcp_client.GetMcpServers` and
:class:`~protocol.mcp_client.CheckMcpServers` are answered with
:class:`~protocol.mcp_client.McpServers`.  Nothing in memory here is the only
copy of anything: a restarted incarnation starts from ``unknown`` and checks at once.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Mapping
from typing import Any

import msgspec
import pykka

from actors.base import TreeActor, handles
from protocol.mcp_client import CheckMcpServers, GetMcpServers, McpProbeDone, McpServers, McpServerState
from protocol.messages import Tick
from session.config_mcp import McpServerConfig
from session.mcp_client import ServerHealth, probe

__all__ = ["McpClientsActor"]

log = logging.getLogger("executor.actors.mcp_clients")

_MAX_TICK_S = 1.0


class McpClientsActor(TreeActor):
    """A permanent service: checks each configured MCP server and answers what it found."""

    def __init__(
        self,
        name: str,
        parent: Any,
        incarnation: int,
        servers: Mapping[str, McpServerConfig],
        *,
        tick_s: float | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(name, parent, incarnation)
        self.servers = dict(servers)
        shortest = min((server.health_interval_s for server in self.servers.values()), default=_MAX_TICK_S)
        # Ticks a few times per shortest interval, so a check is late by a fraction of it at most.
        self.tick_s = tick_s if tick_s is not None else min(_MAX_TICK_S, shortest / 4)
        self.environ = environ  # None: the process environment, read at each check
        self.states = {
            key: McpServerState(name=key, transport=server.transport, endpoint=server.endpoint)
            for key, server in self.servers.items()
        }
        self.due = dict.fromkeys(self.servers, 0.0)  # monotonic time each server's next check is due
        self.checking: set[str] = set()
        self._halt = threading.Event()  # ends the timer and cancels running checks

    # --- life -------------------------------------------------------------------------

    def started(self) -> None:
        if not self.servers:
            return  # nothing to check: no timer thread either
        self._start_due()
        threading.Thread(target=self._timer, name=f"{self.name}-timer", daemon=True).start()

    def stopping(self) -> None:
        self._halt.set()

    def _timer(self) -> None:
        me = self.actor_ref
        while not self._halt.wait(self.tick_s):
            try:
                me.tell(Tick())
            except pykka.ActorDeadError:
                return

    # --- messages ------------------------------------------------------------------------

    @handles(Tick)
    def tick(self, message: Tick) -> None:
        self._start_due()

    @handles(GetMcpServers)
    def get_servers(self, message: GetMcpServers) -> McpServers:
        return self._snapshot(message.names)

    @handles(CheckMcpServers)
    def check_now(self, message: CheckMcpServers) -> McpServers:
        for key in message.names or tuple(self.servers):
            if key in self.due:
                self.due[key] = 0.0
        self._start_due()
        return self._snapshot(message.names)

    @handles(McpProbeDone)
    def probe_done(self, message: McpProbeDone) -> None:
        self.checking.discard(message.name)
        server = self.servers.get(message.name)
        before = self.states.get(message.name)
        if server is None or before is None:
            return
        self.due[message.name] = time.monotonic() + server.health_interval_s
        if message.ok:
            state = msgspec.structs.replace(
                before,
                status="online",
                tools=message.tools,
                last_error=None,
                last_checked=message.checked_at,
                latency_ms=message.latency_ms,
                failures=0,
            )
            if before.status != "online":
                log.info("MCP server '%s' is online (%d tools)", message.name, len(message.tools))
        else:
            state = msgspec.structs.replace(
                before,
                status="offline",
                last_error=message.error,
                last_checked=message.checked_at,
                failures=before.failures + 1,
            )
            if before.status != "offline":
                log.warning("MCP server '%s' is offline: %s", message.name, message.error)
        self.states[message.name] = state

    # --- checks ----------------------------------------------------------------------------

    def _start_due(self) -> None:
        now = time.monotonic()
        for key, server in self.servers.items():
            if key in self.checking or self.due[key] > now:
                continue
            self.checking.add(key)
            threading.Thread(
                target=self._check, args=(key, server), name=f"{self.name}-probe-{key}", daemon=True
            ).start()

    def _check(self, key: str, server: McpServerConfig) -> None:
        """Runs on a probe thread: one check, its result told to the actor."""
        try:
            health = probe(server, name=key, environ=self.environ, cancel=self._halt)
        except Exception as error:  # noqa: BLE001 - probe() does not raise; if it ever did, the server must not stay "checking" forever
            health = ServerHealth(ok=False, error=f"the check itself failed: {type(error).__name__}: {error}")
        done = McpProbeDone(
            name=key,
            ok=health.ok,
            tools=health.tools,
            latency_ms=health.latency_ms,
            error=health.error,
            checked_at=time.time(),
        )
        with contextlib.suppress(pykka.ActorDeadError):  # the actor stopped meanwhile: nobody to tell
            self.actor_ref.tell(done)

    def _snapshot(self, names: tuple[str, ...]) -> McpServers:
        keys = [key for key in self.states if not names or key in names]
        return McpServers(items=tuple(self.states[key] for key in keys))
