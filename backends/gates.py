"""Running quality gates: each gate a process under the same rules as an agent.

A gate runs the project's tests, and the tests run code an agent wrote: a hostile or careless
agent's code must not see what the agent itself may not.  So a gate is started like an
agent (:func:`backends.process.run_process`): argv only, the environment allowlist (no
provider key, no bridge token), its own process group and session, the agents' niceness,
the attempt's cgroup where the machine has one, stopped with all it started when its time is
over or the run stops.  Its output goes to the attempt's log (capped) as it comes, only tails
are kept in memory whatever it prints, and the tail that reaches the feedback file (and from
there the next prompt) is redacted.
"""

from __future__ import annotations

import os
import shlex
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from backends.conventions import ENV_ATTEMPT, ENV_MARKER, ENV_ROLE, ENV_SESSION, ENV_TASK_ID
from backends.output_capture import ends_within
from backends.process import run_process
from backends.process_types import ProcessLimits, ProcessOutcome, ProcessSpec
from backends.sandbox import DEFAULT_ENV_ALLOW, allowlisted_env
from protocol.messages import WorkOrder
from session.gates import DEFAULT_GATE_TIMEOUT_S, GateOutcome
from session.redaction import redact
from session.safepath import open_new_file, write_all

__all__ = ["GateRun", "gate_run_for", "gate_tail", "run_gates"]

#: How much of a failing gate's output reaches the feedback file (the end of it).
OUTPUT_TAIL_BYTES = 4000
#: A gate's output kept in memory while it runs, per stream (the log holds the rest).
_TAIL_BYTES = 64 * 1024


@dataclass(frozen=True)
class GateRun:
    """Where and how the gates of one attempt (or one pre-commit check) run.

    ``log_path`` receives every gate's output after a line naming the gate (appended to:
    an attempt's gates follow its own output in its log).  ``allow`` is the environment
    allowlist (the agents', plus ``[run].gate_env``); ``extra_env`` is laid over it (the
    ``TEAM_EXECUTOR_*`` variables saying which task it checks; the marker, which lets a
    crashed run's leftovers be found).
    """

    cwd: Path
    log_path: Path
    timeout_s: float = DEFAULT_GATE_TIMEOUT_S
    extra_env: Mapping[str, str] | None = None
    allow: tuple[str, ...] = DEFAULT_ENV_ALLOW
    nice: int = 0
    grace_s: float = 5.0
    cancel: threading.Event | None = None


def gate_run_for(order: WorkOrder, cancel: threading.Event | None) -> GateRun:
    """How the gates of ``order``'s attempt run: in its working folder, into its log, with its
    niceness, grace and timeout; told which task they check, never given its prompt, report,
    key or bridge token."""
    return GateRun(
        cwd=Path(order.workdir),
        log_path=Path(order.log_path),
        timeout_s=order.gate_timeout_s,
        extra_env={
            ENV_TASK_ID: order.task_id,
            ENV_ATTEMPT: str(order.attempt),
            ENV_ROLE: order.role,
            ENV_SESSION: order.session_dir,
            ENV_MARKER: order.marker,
        },
        allow=(*DEFAULT_ENV_ALLOW, *order.gate_env),
        nice=order.nice,
        grace_s=order.grace_s,
        cancel=cancel,
    )


def run_gates(commands: Sequence[tuple[str, ...]], how: GateRun) -> GateOutcome:
    """Run each gate in turn; the first failure is the outcome (all pass: ok).

    A gate stopped by ``how.cancel`` (the run is stopping) is a failure whose ``why`` says
    so; the caller tells it from a real failure by the event.
    """
    env = allowlisted_env(extra=how.extra_env, allow=how.allow)
    for argv in commands:
        outcome = _run_one(argv, env, how)
        if not outcome.ok:
            return outcome
    return GateOutcome(ok=True)


def _run_one(argv: tuple[str, ...], env: dict[str, str], how: GateRun) -> GateOutcome:
    try:
        _announce(how.log_path, argv)
    except OSError as error:
        return GateOutcome(ok=False, argv=argv, why=f"cannot write its log {how.log_path}: {error.strerror or error}")
    outcome = run_process(
        ProcessSpec(argv=argv, cwd=str(how.cwd), env=env, log_path=str(how.log_path)),
        ProcessLimits(wall_timeout_s=how.timeout_s, grace_s=how.grace_s, tail_bytes=_TAIL_BYTES, nice=how.nice),
        cancel=how.cancel,
    )
    return GateOutcome(
        ok=outcome.error_kind is None,
        argv=argv,
        exit_code=outcome.exit_code,
        output_tail=gate_tail(outcome),
        duration_s=round(outcome.duration_s, 3),
        why=_why(argv, outcome, how.timeout_s),
    )


def _announce(log_path: Path, argv: tuple[str, ...]) -> None:
    """A line before the gate's output, so the log says where the agent ends and which gate speaks."""
    fd = open_new_file(log_path, os.O_WRONLY | os.O_APPEND)
    try:
        # The command comes from the role-spec (the user's), but redact it all the same: a
        # verify line may carry a token (`--token=...`), and the log is shown to anyone who asks.
        write_all(fd, f"\n--- quality gate: {redact(shlex.join(argv))} ---\n".encode("utf-8", "replace"))
    finally:
        os.close(fd)


def _why(argv: tuple[str, ...], outcome: ProcessOutcome, timeout_s: float) -> str:
    """Why a gate failed when its exit code does not say it; empty when it ran and exited."""
    kind = outcome.error_kind
    if kind is None or (kind == "crash" and outcome.signal is None):
        return ""
    if kind == "spawn_failed":
        if outcome.error and outcome.error.startswith("program not found"):
            return f"{argv[0]}: no such program (check the role's verify:)"
        return outcome.error or "cannot run it"
    if kind == "timeout":
        return f"timed out after {timeout_s:g}s"
    if kind == "interrupted":
        return "stopped: the run is stopping"
    return outcome.error or kind


def gate_tail(outcome: ProcessOutcome) -> str:
    """About the last :data:`OUTPUT_TAIL_BYTES` of the gate's output, redacted: the end of stdout
    (a test runner's verdict), then the end of stderr (a crash's traceback), which keeps at least
    half when it has that much (:func:`ends_within`)."""
    out, err = ends_within(outcome.stdout_tail, outcome.stderr_tail, OUTPUT_TAIL_BYTES)
    return redact((out + err).decode("utf-8", errors="replace"))
