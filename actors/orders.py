"""From the session and the run's options to what the pipeline core and the workers need:
the core's :class:`PipelineConfig`, the review rounds already on disk, and the
:class:`WorkOrder` for an attempt the core started."""

from __future__ import annotations

import os
import random
import secrets
from collections.abc import Callable
from pathlib import Path

import msgspec

from actors.options import RunOptions
from actors.prompting import PromptSource
from actors.runner import default_permission
from backends.base import Backend
from backends.mcp_call import mcp_call_for
from pipeline.effects import StartAttempt
from pipeline.policy import PipelineConfig, RetryPolicy, RolePolicy
from protocol.messages import BridgeEndpoint, McpCall, WorkOrder
from session.feedback import FEEDBACK_DIR, rounds_so_far
from session.gates import DEFAULT_GATE_TIMEOUT_S, gate_commands
from session.loader import TeamSession
from session.safepath import UnsafePath, task_file_text
from session.store import STATE_DIR

__all__ = ["McpStates", "pipeline_config", "review_rounds", "work_order"]

McpStates = dict[str, tuple[str, tuple[str, ...]]]  # MCP server -> (status, its tools)


def pipeline_config(
    session: TeamSession, options: RunOptions, backends: dict[str, Backend], run_id: str, folder: Path
) -> PipelineConfig:
    roles = {}
    for name, entry in session.roles.items():
        spec = session.role_specs[name].meta
        backend = backends.get(name)
        roles[name] = RolePolicy(
            backend=backend.name if backend is not None else "",
            max_attempts=spec.max_attempts,
            review_rounds=spec.review_rounds,
            stall_after_s=spec.stall_after,
            stall_stop_after_s=spec.stall_stop_after,
            claim_idle_timeout_s=spec.claim_idle_timeout,
            inner_loop=bool(entry.inner_loop),
            manual=backend is not None and backend.name == "manual",
        )
    backoff = options.retry_backoff
    return PipelineConfig(
        run_id=run_id,
        folder=str(folder),
        state_dir=str(folder / STATE_DIR),
        roles=roles,
        secret=secrets.token_bytes(32),
        max_workers=options.max_workers,
        max_attempts=options.max_attempts,
        retry=RetryPolicy(min_s=backoff.min_s, max_s=backoff.max_s, jitter=backoff.jitter),
        shutdown_grace_s=options.shutdown_grace_s,
        kill_grace_s=options.kill_grace_s,
        session_budget_usd=options.session_budget_usd,
        task_budget_usd=options.task_budget_usd,
        budget_warn_at=options.budget_warn_at,
        keep_alive=options.keep_alive,
        random=random.random,
    )


def review_rounds(folder: Path) -> dict[str, int]:
    """Review rounds that already sent each task back (from the feedback files, the record of them)."""
    directory = folder / FEEDBACK_DIR
    if not directory.is_dir():
        return {}
    found = {path.stem: rounds_so_far(folder, path.stem) for path in directory.glob("*.md")}
    return {task_id: rounds for task_id, rounds in found.items() if rounds}


def _reassign_offline(
    task_id: str, call: McpCall | None, states: McpStates, say: Callable[[str], None]
) -> McpCall | None:
    """A call to an MCP server its health check found offline goes to an online server that
    offers the same tool, when there is one (else it is tried as it is, and retried)."""
    if call is None or states.get(call.server, ("unknown", ()))[0] != "offline":
        return call
    for name, (status, tools) in sorted(states.items()):
        if status == "online" and call.tool in tools:
            say(f"⇄ {task_id}: MCP server {call.server} is offline; calling {call.tool} on {name}")
            return msgspec.structs.replace(call, server=name)
    return call


def work_order(
    start: StartAttempt,
    *,
    session: TeamSession,
    options: RunOptions,
    backends: dict[str, Backend],
    prompts: PromptSource,
    folder: Path,
    marker: str,
    run_id: str,
    resume_session: str | None,
    mcp_states: McpStates,
    say: Callable[[str], None],
) -> WorkOrder:
    task_id, attempt, role = start.task_id, start.attempt, start.role
    state = os.path.join(folder, STATE_DIR)
    spec = session.role_specs[role].meta
    backend = backends[role]
    # task_file checks the id and keeps each file inside .executor/ (UnsafePath otherwise): the
    # loader already refused ids outside the grammar, this is the last line before a path exists.
    prompt_file = task_file_text(state, task_id, f"-a{attempt}.md", "prompts")
    report_file = task_file_text(state, task_id, f"-a{attempt}.json", "reports")
    log_file = task_file_text(state, task_id, f"-a{attempt}.log", "logs")
    if start.log_path != log_file and Path(start.log_path) != Path(log_file):
        raise UnsafePath(f"the log of {task_id} attempt {attempt} would be {start.log_path}, not in {state}/logs")
    bridge = None
    if options.worker_bridge is not None:
        url, token = options.worker_bridge
        bridge = BridgeEndpoint(url=url, token=token, agent_id=start.agent_id)
    call = mcp_call_for(backend.name, spec, prompts.spec(task_id))
    return WorkOrder(
        task_id=task_id,
        attempt=attempt,
        role=role,
        backend=backend.name,
        session_dir=str(folder),
        artifacts_dir=str(folder / "artifacts"),
        workdir=str(options.workdir),
        prompt_file=prompt_file,
        report_file=report_file,
        log_path=start.log_path,
        run_id=run_id,
        marker=marker,
        command=tuple(spec.command or ()),
        timeout_s=spec.timeout or options.task_timeout_s,
        hang_timeout_s=spec.hang_timeout or options.hang_timeout_s,
        grace_s=options.kill_grace_s,
        nice=options.agent_nice,
        gate_env=options.gate_env,
        model=spec.model,
        base_url=spec.base_url,
        permission=spec.permission or default_permission(role, session.roles[role].responsibility_type),
        max_turns=spec.max_turns,
        isolate_home=bool(spec.isolate_home),
        resume_session=resume_session if attempt > 1 else None,
        bridge=bridge,
        complexity=spec.tier or "medium",  # the role's tier is where the Router starts
        mcp_call=_reassign_offline(task_id, call, mcp_states, say),
        gates=tuple(gate_commands(spec.verify)),
        worktree=spec.isolation == "worktree",
        gate_timeout_s=spec.verify_timeout or DEFAULT_GATE_TIMEOUT_S,
    )
