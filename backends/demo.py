"""The ``demo`` backend: the built-in deterministic agent, no API key, no network.

Runs ``python -I -m backends.demo_agent`` with the same environment, limits, progress
and report handling as the ``command`` backend.  ``-I`` (isolated mode) keeps the
working directory off ``sys.path``, so a ``backends`` package in the project the
agents work on cannot shadow ours, and ignores ``PYTHON*`` variables.
"""

from __future__ import annotations

import sys
import threading
from typing import ClassVar

from backends._agent_process import run_agent_process
from backends.base import WorkerHooks
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

    def run(self, order: WorkOrder, hooks: WorkerHooks, cancel: threading.Event) -> AttemptResult:
        """Run the demo agent for ``order`` (see ``backends._agent_process.run_agent_process``)."""
        return run_agent_process(order, DEMO_AGENT_ARGV, hooks, cancel)
