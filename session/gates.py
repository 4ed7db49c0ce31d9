"""Quality gates: the commands a role declares (``verify:`` in its role-spec) that must pass.

After an attempt of a task of that role completes, its gates run in the
working directory, one after another, each an argv list (never a shell); the
first that fails sends the task back to its implementer with the failing
output in ``feedback/<ID>.md`` and in the next prompt.  The pre-commit hook
runs the gates of the tasks in progress the same way.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from session.feedback import feedback_path

__all__ = ["DEFAULT_GATE_TIMEOUT_S", "GateOutcome", "gate_commands", "record_gate_failure", "run_gates"]

DEFAULT_GATE_TIMEOUT_S = 600.0
OUTPUT_TAIL_CHARS = 4000


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


def run_gates(commands: list[tuple[str, ...]], cwd: Path, timeout_s: float = DEFAULT_GATE_TIMEOUT_S) -> GateOutcome:
    """Run each gate in turn; the first failure is the outcome (all pass: ok)."""
    for argv in commands:
        outcome = _run_one(argv, cwd, timeout_s)
        if not outcome.ok:
            return outcome
    return GateOutcome(ok=True)


def _run_one(argv: tuple[str, ...], cwd: Path, timeout_s: float) -> GateOutcome:
    started = time.monotonic()
    try:
        # A process group of its own: a gate that runs past its time is stopped with everything
        # it started (a test runner's workers, a server it launched), not only its first process.
        process = subprocess.Popen(
            argv,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    except FileNotFoundError:
        return GateOutcome(ok=False, argv=argv, why=f"{argv[0]}: no such program (check the role's verify:)")
    except OSError as error:
        return GateOutcome(ok=False, argv=argv, why=f"cannot run it: {error.strerror or error}")
    try:
        out, _ = process.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired as expired:
        _stop_group(process)
        tail = (expired.output or b"").decode("utf-8", errors="replace")[-OUTPUT_TAIL_CHARS:]
        return GateOutcome(ok=False, argv=argv, output_tail=tail, why=f"timed out after {timeout_s:g}s")
    except BaseException:
        _stop_group(process)
        raise
    output = out.decode("utf-8", errors="replace")
    return GateOutcome(
        ok=process.returncode == 0,
        argv=argv,
        exit_code=process.returncode,
        output_tail=output[-OUTPUT_TAIL_CHARS:],
        duration_s=round(time.monotonic() - started, 3),
    )


def _stop_group(process: subprocess.Popen[bytes]) -> None:
    """SIGKILL the gate's process group, then reap its leader.  The leader is not reaped before
    the signal, so its group id cannot have been given to anyone else meanwhile."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    if process.stdout is not None:  # a member that left the group may still hold the pipe
        process.stdout.close()


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
