"""What a run is started with: the options the command line resolved, and the routing setup.

Objects, not messages: they stay in this process (the KeyPool object outlives a restart of
its actor, so cooldowns and usage are kept).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from actors.supervision import Backoff, Intensity

if TYPE_CHECKING:  # the types only: the key store pulls in cryptography, notify pulls in apprise
    from cluster.runner import ClusterSetup
    from notify.setup import NotifySetup
    from session.config_mcp import McpServerConfig
    from session.config_models import Config
    from session.keypool import KeyPool
    from session.keystore import KeyStore

__all__ = ["RoutingSetup", "RunOptions"]


@dataclass(frozen=True)
class RoutingSetup:
    """What the Router and KeyPool services start from."""

    config: Config
    pool: KeyPool
    store: KeyStore | None = None  # for keys added while the run goes on
    store_path: Path | None = None  # its file, watched for keys added by `executor keys add`
    open_store: Callable[[], KeyStore] | None = None  # opens the store when it appears during the run


@dataclass(frozen=True)
class RunOptions:
    command: str = "run"  # or "resume"
    max_workers: int = 4
    workdir: Path = Path()
    max_attempts: int = 3
    task_timeout_s: float | None = None
    hang_timeout_s: float | None = None
    kill_grace_s: float = 5.0
    shutdown_grace_s: float = 10.0
    agent_nice: int = 5  # niceness of every agent process (``[run].agent_nice``)
    gate_env: tuple[str, ...] = ()  # variables the quality gates get besides the allowlist (``[run].gate_env``)
    retry_backoff: Backoff = field(default_factory=lambda: Backoff(min_s=2.0, max_s=300.0, jitter=0.2))
    service_backoff: Backoff = field(default_factory=lambda: Backoff(min_s=0.1, max_s=5.0, jitter=0.2))
    intensity: Intensity = field(default_factory=lambda: Intensity(max_restarts=10, period_s=60.0))
    tick_s: float = 0.1
    flush_interval_s: float = 0.5
    session_budget_usd: float | None = None
    task_budget_usd: float | None = None
    budget_warn_at: float = 0.8
    routing: RoutingSetup | None = None
    # Serve: with an MCP bridge, the run stays up when every task is done, waiting
    # for submitted tasks, until it is told to stop.
    keep_alive: bool = False
    # Where workers that speak MCP reach the bridge (url, worker token); None: no bridge.
    worker_bridge: tuple[str, str] | None = None
    # [mcp_servers] of the config; with any, an McpClients service health-checks them.
    mcp_servers: dict[str, McpServerConfig] = field(default_factory=dict)
    # What the Notifier sends and where; None: no Notifier.
    notify: NotifySetup | None = None
    # Where attempts run: None in this process, else on the Ray cluster it names.
    cluster: ClusterSetup | None = None
