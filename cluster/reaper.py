"""After a crash: stop the attempt actors a dead executor left on the cluster.

Attempt actors are detached and named in the session's namespace (see
:func:`cluster.runner.actor_name`), so the next ``executor resume`` finds every one of them.
Each is asked to stop its agent's process tree, then killed; the reconciler has meanwhile
put their tasks back to pending (at least once), so nothing is lost and none runs twice
unseen.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any

__all__ = ["live_attempts", "reap"]

log = logging.getLogger("executor.cluster")


def live_attempts(ray: Any) -> list[str]:
    """Names of the attempt actors alive in the connected namespace."""
    return sorted(
        entry["name"] if isinstance(entry, dict) else str(entry)
        for entry in ray.util.list_named_actors()
        if str(entry["name"] if isinstance(entry, dict) else entry).startswith("attempt:")
    )


def reap(ray: Any, grace_s: float = 5.0) -> list[str]:
    """Stop and kill every attempt actor of this session; return their names."""
    reaped: list[str] = []
    for name in live_attempts(ray):
        try:
            host = ray.get_actor(name)
        except ValueError:
            continue  # it ended meanwhile
        with contextlib.suppress(Exception):
            ray.get(host.stop.remote(grace_s), timeout=grace_s + 10)
        with contextlib.suppress(Exception):
            ray.kill(host, no_restart=True)
        log.warning("stopped %s, left running by an executor that did not stop cleanly", name)
        reaped.append(name)
    return reaped
