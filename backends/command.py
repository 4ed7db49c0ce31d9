"""The ``command`` backend: run any program named by the role-spec's ``command`` key.

``command`` is an argv list whose elements may hold the placeholders
``{task_id}``, ``{prompt_file}``, ``{session}``, ``{artifacts}`` and ``{role}``::

    backend: command
    command: ["python", "agent.py", "--task", "{task_id}", "{prompt_file}"]

The program runs without a shell, in the work order's working directory, with the
allowlisted environment plus the ``TEAM_EXECUTOR_*`` variables; it may print
progress lines and write a JSON report (see ``backends.base``).
"""

from __future__ import annotations

import os
import re
import shutil
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import ClassVar

from backends._agent_process import run_agent_process
from backends.base import WorkerHooks
from protocol.ids import task_id_problem
from protocol.messages import AttemptResult, WorkOrder
from session.rolespec import RoleSpecFrontmatter
from session.safepath import UnsafePath

__all__ = ["PLACEHOLDERS", "CommandBackend", "order_argv", "substitute"]

PLACEHOLDERS = ("task_id", "prompt_file", "session", "artifacts", "role")
_PLACEHOLDER = re.compile(r"\{(" + "|".join(PLACEHOLDERS) + r")\}")
_EXAMPLE = 'command: ["python", "agent.py", "{prompt_file}"]'


def substitute(template: str, values: Mapping[str, str]) -> str:
    """Replace each ``{name}`` placeholder in ``template`` by ``values[name]``, literally.

    One pass, left to right: a value is never scanned again, so a session path that
    contains ``{role}`` stays as it is.  Nothing else is interpreted — other braces,
    ``$(...)``, quotes and backslashes pass through unchanged (this is not
    ``str.format``, and there is no shell).
    """
    return _PLACEHOLDER.sub(lambda match: values[match.group(1)], template)


def order_argv(order: WorkOrder) -> tuple[str, ...]:
    """``order.command`` with its placeholders filled in for this order.

    Each element stays one element.  The id and the role are checked against the id
    grammar (raises ``UnsafePath``): a command such as ``sh -c "agent {task_id}"`` puts
    them into shell text, where only a plain word is harmless."""
    for what, value in (("task id", order.task_id), ("role", order.role)):
        problem = task_id_problem(value)
        if problem is not None:
            raise UnsafePath(f"{what} {value!r} cannot go into a command: {problem}")
    values = {
        "task_id": order.task_id,
        "prompt_file": order.prompt_file,
        "session": order.session_dir,
        "artifacts": order.artifacts_dir,
        "role": order.role,
    }
    return tuple(substitute(element, values) for element in order.command)


class CommandBackend:
    """Runs the role-spec's ``command`` argv as the agent, one process per attempt."""

    name: ClassVar[str] = "command"

    def preflight(self, role: str, spec: RoleSpecFrontmatter) -> str | None:
        """Say what is wrong with the role's ``command``, or None.

        The program is looked up on PATH when it is a bare name, and checked to exist
        when it is an absolute path.  A relative path with a ``/`` is resolved against
        the work order's working directory at run time, so it is not checked here; a
        program holding a placeholder cannot be checked either.
        """
        where = f"role-specs/{role}.md"
        command = spec.command
        if not isinstance(command, list) or not command:
            return f"{where}: 'command' is missing; add e.g. {_EXAMPLE} or choose another backend"
        if not all(isinstance(element, str) for element in command) or not command[0].strip():
            return f"{where}: 'command' must be a list of strings starting with the program; e.g. {_EXAMPLE}"
        program = command[0]
        if _PLACEHOLDER.search(program):
            return None
        if Path(program).is_absolute():
            if not Path(program).is_file():
                return f"{where}: the command's program {program} does not exist; fix the path in 'command'"
            if not os.access(program, os.X_OK):
                return f"{where}: the command's program {program} is not executable; run chmod +x {program}"
            return None
        if "/" in program:
            return None
        if shutil.which(program) is None:
            return (
                f"{where}: the command's program '{program}' was not found on PATH; "
                "install it, give its full path in 'command', or choose another backend"
            )
        return None

    def inline_argv(self, order: WorkOrder) -> tuple[str, ...] | None:
        """The attempt's argv, for a caller that watches the process itself (the Executor's
        reactor); None when only :meth:`run` can say what is wrong.  Raises ``UnsafePath``
        as :func:`order_argv` does."""
        return order_argv(order) if order.command else None

    def run(self, order: WorkOrder, hooks: WorkerHooks, cancel: threading.Event) -> AttemptResult:
        """Run ``order.command`` (placeholders filled in) as described in ``run_agent_process``."""
        if not order.command:
            return AttemptResult(
                ok=False,
                error_kind="spawn_failed",
                error=f"role-specs/{order.role}.md: 'command' is missing; add e.g. {_EXAMPLE}",
            )
        return run_agent_process(order, order_argv(order), hooks, cancel)
