"""Reaching the cluster: importing Ray (an optional dependency) and joining it."""

from __future__ import annotations

import logging
import os
import socket
from types import ModuleType
from typing import Any


def _unreachable(address: str, timeout_s: float = 3.0) -> str | None:
    """Why ``host:port`` (also ``ray://host:port``) takes no connection, or None (``auto``: Ray looks)."""
    target = address.removeprefix("ray://")
    host, _, port = target.rpartition(":")
    if not host or not port.isdigit():
        return None
    try:
        socket.create_connection((host, int(port)), timeout=timeout_s).close()
    except OSError as error:
        return error.strerror or str(error)
    return None


__all__ = ["INSTALL", "ClusterUnavailable", "connect", "import_ray", "namespace_of"]

INSTALL = "pip install 'team-executor[ray]'"
log = logging.getLogger("executor.cluster")


class ClusterUnavailable(Exception):
    """Ray is missing or the cluster cannot be reached; the message says what to do."""


def import_ray() -> ModuleType:
    try:
        import ray  # noqa: PLC0415 - optional dependency, only imported when a cluster is asked for
    except ImportError:
        raise ClusterUnavailable(f"running on a cluster needs Ray, which is not installed; run: {INSTALL}") from None
    return ray


def namespace_of(marker: str) -> str:
    """The Ray namespace of one session's attempt actors: a resumed run finds its predecessors' there."""
    return f"team-executor-{marker}"


def connect(address: str, namespace: str) -> Any:
    """Join the cluster at ``address`` (``auto``, ``ray://host:10001``, ``host:port``) in ``namespace``."""
    ray = import_ray()
    if ray.is_initialized():
        return ray
    problem = _unreachable(address)
    if problem is not None:  # Ray itself retries an absent head for minutes
        raise ClusterUnavailable(
            f"cannot reach the Ray cluster at {address!r}: {problem}. Start it (`ray start --head`) or fix "
            "--cluster / [cluster].address in executor.toml"
        )
    # Ray's own logs go to its session folder, not to the user's terminal.
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    try:
        ray.init(address=address, namespace=namespace, log_to_driver=False, logging_level=logging.WARNING)
    except (ConnectionError, RuntimeError, ValueError) as error:
        raise ClusterUnavailable(
            f"cannot reach the Ray cluster at {address!r}: {error}. Start it (`ray start --head`) or fix "
            "--cluster / [cluster].address in executor.toml"
        ) from None
    log.info("connected to the Ray cluster at %s (namespace %s)", address, namespace)
    return ray
