"""Shared vocabulary: task statuses, error kinds, priorities."""

from __future__ import annotations

from typing import Literal, get_args

__all__ = [
    "ERROR_KINDS",
    "PRIORITIES",
    "TASK_STATUSES",
    "ErrorKind",
    "Priority",
    "TaskStatus",
]

# "review": a claimed (manual) task its agent handed in for review; not done, so what
# depends on it waits, and not dispatched, because a person holds it.
TaskStatus = Literal["pending", "in_progress", "review", "completed", "failed"]
TASK_STATUSES: tuple[str, ...] = get_args(TaskStatus)

# Order matters: P0 is dispatched first.
Priority = Literal["P0", "P1", "P2"]
PRIORITIES: tuple[str, ...] = get_args(Priority)

# What went wrong with an attempt, in the terms the dispatcher, the router and
# the key pool act on.  Messages are for people; kinds are for code.
ErrorKind = Literal[
    "crash",  # the worker exited non-zero or died from a signal
    "timeout",  # it ran past its wall-clock limit
    "hang",  # it printed nothing for longer than its no-output limit
    "bad_output",  # it exited 0 but its report could not be read
    "no_work",  # it exited 0 but did nothing: no file changed, no artifact, no report, no model traffic
    "spawn_failed",  # the program could not be started at all
    "interrupted",  # the executor stopped it (shutdown); not the task's fault
    "worker_crashed",  # our own worker actor failed while running it
    "node_lost",  # the cluster node (or its Ray actor) running it died: its outcome is unknown
    "rate_limited",
    "overloaded",
    "network",  # the provider could not be reached (refused, reset, DNS, TLS)
    "auth",
    "context_too_long",
    "max_turns",
    "permission_denied",
    "needs_decision",  # the worker cannot go on without the user (consensus blocked twice)
    "gate_failed",  # the attempt finished but a quality gate (a role's verify command) failed
    "reported_failed",  # the person (or IDE agent) who claimed a manual task said it failed
    "over_budget",  # the task spent its budget: no more attempts
    "cancelled",  # someone cancelled the task (MCP cancel_task); never retried
]
ERROR_KINDS: tuple[str, ...] = get_args(ErrorKind)
