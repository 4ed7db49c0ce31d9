"""Quality gates: the commands a role declares (``verify:`` in its role-spec) that must pass.

After an attempt of a task of that role completes, its gates run in the
working directory, one after another, each an argv list (never a shell); the
first that fails sends the task back to its implementer with the failing
output in ``feedback/<ID>.md`` and in the next prompt.  The pre-commit hook
runs the gates of the tasks in progress the same way.  Here: what a gate is and
what a failing one leaves; running them is :mod:`backends.gates`.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path

from session.feedback import feedback_path

__all__ = ["DEFAULT_GATE_TIMEOUT_S", "GateOutcome", "gate_commands", "record_gate_failure"]

DEFAULT_GATE_TIMEOUT_S = 600.0


@dataclass(frozen=True)
class GateOutcome:
    ok: bool
    argv: tuple[str, ...] = ()
    exit_code: int | None = None
    output_tail: str = ""
    duration_s: float = 0.0
    why: str = ""  # for a gate that could not run at all (missing program, timeout)

    @property
    def command(self) -> str:
        return shlex.join(self.argv)


def gate_commands(verify: str | list[str | list[str]] | None) -> list[tuple[str, ...]]:
    """The role-spec's ``verify``: one command, or a list of commands; each command is a
    string (split like a shell would, but never run by one) or an argv list."""
    if verify is None:
        return []
    items = [verify] if isinstance(verify, str) else verify
    commands: list[tuple[str, ...]] = []
    for item in items:
        argv = tuple(shlex.split(item)) if isinstance(item, str) else tuple(str(part) for part in item)
        if argv:
            commands.append(argv)
    return commands


def record_gate_failure(folder: Path, task_id: str, outcome: GateOutcome, at: str, where: str) -> Path:
    """Append the failing gate (command, exit, trimmed output) to the task's feedback file."""
    path = feedback_path(folder, task_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    result = outcome.why or f"exit {outcome.exit_code}"
    lines = [] if path.exists() else [f"# Review feedback for {task_id}", ""]
    lines += [f"## Gate failed — `{outcome.command}` ({result}, {where}, {at})", ""]
    lines += ["- [ ] make this command pass", "", "```", outcome.output_tail.rstrip() or "(no output)", "```"]
    with path.open("a", encoding="utf-8") as handle:
        handle.write("\n".join(lines) + "\n\n")
    return path
