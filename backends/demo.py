"""The ``demo`` backend: the built-in deterministic agent, no API key, no network.

Runs ``python -I -m backends.demo_agent`` with the same environment, limits, progress
and report handling as the ``command`` backend.  ``TEAM_EXECUTOR_DEMO_PACE_S`` in the
executor's environment (``executor demo --pace``) makes each task take that long, so a
person can watch the graph fill in.  ``-I`` (isolated mode) keeps the
working directory off ``sys.path``, so a ``backends`` package in the project the
agents work on cannot shadow ours, and ignores ``PYTHON*`` variables.
"""

from __future__ import annotations

import os
import sys
import threading
from typing import ClassVar

from backends._agent_process import run_agent_process
from backends.base import WorkerHooks
from backends.conventions import ENV_DEMO_PACE
from protocol.messages import AttemptResult, WorkOrder
from session.rolespec import RoleSpecFrontmatter

__all__ = ["DEMO_AGENT_ARGV", "DemoBackend"]

DEMO_AGENT_ARGV: tuple[str, ...] = (sys.executable, "-I", "-m", "backends.demo_agent")


class DemoBackend:
    """Runs the built-in demo agent (``backends.demo_agent``) for every role."""

    name: ClassVar[str] = "demo"

    def preflight(self, role: str, spec: RoleSpecFrontmatter) -> str | None:
        """The demo agent runs any role: never a problem."""
        return None

    def inline_argv(self, order: WorkOrder) -> tuple[str, ...] | None:
        """The attempt's argv, for a caller that watches the process itself (the Executor's reactor)."""
        return (*DEMO_AGENT_ARGV, *demo_pace_args())

    def run(self, order: WorkOrder, hooks: WorkerHooks, cancel: threading.Event) -> AttemptResult:
        """Run the demo agent for ``order`` (see ``backends._agent_process.run_agent_process``)."""
        return run_agent_process(order, (*DEMO_AGENT_ARGV, *demo_pace_args()), hooks, cancel)


def demo_pace_args() -> tuple[str, ...]:
    """``--pace S`` when the executor was asked to slow the demo down (a bad value is ignored)."""
    try:
        pace = float(os.environ.get(ENV_DEMO_PACE, "") or 0)
    except ValueError:
        return ()
    return ("--pace", f"{min(pace, 600.0):g}") if pace > 0 else ()
