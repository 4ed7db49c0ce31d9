"""The common part of every agent-CLI backend (claude, codex, gemini, ...).

A subclass says how to find its program, which variables carry its key and
base URL, how to build the argv for a work order, and how to read its
output — a JSON line at a time while it runs (progress, its own session id,
usage, errors) and once at the end.  This class runs it with the safe process
runner and turns everything into one :class:`AttemptResult`:

- final text, usage (input/output/cached tokens), cost (reported, or
  estimated from the price table), the agent's session id, the files it
  changed (git), the git HEAD before and after;
- an error kind the router can act on; the exit code alone is never trusted
  (a failed turn with exit 0, a "successful" empty turn, permission denials).

How its output is read is :mod:`backends.agent_stream`; how it reaches the MCP
bridge, :mod:`backends.agent_bridge`.
"""

from __future__ import annotations

import os
import shutil
import threading
import time
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any, ClassVar

import msgspec

from backends._agent_process import order_env, result_from_outcome, verdict_in_text
from backends.agent_bridge import bridge_problem, forget_bridge
from backends.agent_stream import StreamState
from backends.base import WorkerHooks
from backends.cli_keys import run_on_pooled_keys
from backends.evidence import NETWORK_ERROR, NETWORK_ERROR_BYTES, NETWORK_ERRORS_TO_STOP, event_text, outside_session
from backends.git_state import changed_files, executor_paths, moved, snapshot, touched_since
from backends.pricing import estimate_cost
from backends.process import run_process
from backends.process_types import ProcessLimits, ProcessOutcome, ProcessSpec
from backends.prompt import bridge_note
from protocol.messages import AttemptResult, BridgeEndpoint, WorkOrder
from session.rolespec import RoleSpecFrontmatter
from session.safepath import task_file

__all__ = [
    "AGENT_CLIS_ENV",
    "AgentCliBackend",
    "locate_program",
]

AGENT_CLIS_ENV = "TEAM_EXECUTOR_AGENT_CLIS"  # a folder (e.g. node_modules/.bin) searched before PATH

_DEFAULT_HANG_S = 900.0  # an agent silent for 15 minutes is stuck, whatever its wall-clock budget


def locate_program(name: str) -> str | None:
    """``name`` in ``$TEAM_EXECUTOR_AGENT_CLIS`` first, then on PATH."""
    folder = os.environ.get(AGENT_CLIS_ENV)
    if folder:
        candidate = Path(folder) / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return shutil.which(name)


class AgentCliBackend:
    """Base class: subclasses fill in the class attributes and the three ``_`` hooks."""

    name: ClassVar[str]
    program: ClassVar[str]
    install_hint: ClassVar[str]
    key_variables: ClassVar[tuple[str, ...]] = ()  # any one of them authenticates
    passthrough_variables: ClassVar[tuple[str, ...]] = ()  # base URLs and the like, passed when set
    credential_files: ClassVar[tuple[str, ...]] = ()  # under HOME: a logged-in CLI needs no key
    prompt_on_stdin: ClassVar[bool] = True
    help_commands: ClassVar[tuple[tuple[str, ...], ...]] = (("--help",),)  # for `executor probe`
    probe_flags: ClassVar[tuple[str, ...]] = ()  # the flags we pass, checked against --help
    speaks_mcp: ClassVar[bool] = False  # the CLI is pointed at the executor's MCP bridge (order.bridge)
    base_url_variable: ClassVar[str | None] = None  # names the endpoint in a `network` error
    network_errors_to_stop: ClassVar[int] = NETWORK_ERRORS_TO_STOP
    default_base_url: ClassVar[str] = ""
    key_provider: ClassVar[str | None] = None  # whose keys in the run's key pool it takes (backends.cli_keys)
    #: Set (``b"{"``) by CLIs whose stdout events are JSON lines: ``_on_line`` then sees only
    #: those and the lines about the network, so a flood of other output costs no call per line.
    stdout_line_prefix: ClassVar[bytes | None] = None

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        self._environ = environ

    @property
    def environ(self) -> Mapping[str, str]:
        return os.environ if self._environ is None else self._environ

    # --- preflight -----------------------------------------------------------------

    def has_credentials(self) -> bool:
        if any(self.environ.get(name) for name in self.key_variables):
            return True
        home = Path(self.environ.get("HOME", "~")).expanduser()
        return any((home / relative).exists() for relative in self.credential_files)

    def preflight(self, role: str, spec: RoleSpecFrontmatter, pooled_providers: Collection[str] = ()) -> str | None:
        """Why the role cannot run on this CLI, or None.  ``pooled_providers``: providers the
        run's key pool holds keys of — the CLI takes its key from there (backends.cli_keys)."""
        if locate_program(self.program) is None:
            return (
                f"role '{role}' uses backend '{self.name}', but `{self.program}` is not installed "
                f"(install it: {self.install_hint}; or set {AGENT_CLIS_ENV} to the folder that holds it)"
            )
        if not self.has_credentials() and self.key_provider not in pooled_providers:
            keys = " or ".join(self.key_variables) or "its credentials"
            pool = f", or add one to the key pool: executor keys add {self.key_provider}" if self.key_provider else ""
            return (
                f"role '{role}' uses backend '{self.name}', but no key was found: set {keys} "
                f"in the environment (or log in with `{self.program}` once{pool})"
            )
        return None

    # --- what subclasses provide ----------------------------------------------------

    def _argv(self, program: str, order: WorkOrder, prompt: str) -> list[str]:
        raise NotImplementedError

    def _on_line(self, line: bytes, state: StreamState, hooks: WorkerHooks) -> None:
        raise NotImplementedError

    def _finish(self, outcome: ProcessOutcome, state: StreamState) -> None:
        """Look at the end of the run (exit code, stderr) and record any failure in ``state``."""

    def _prepare_home(self, home: Path, order: WorkOrder) -> None:
        """Write whatever the CLI needs in a fresh HOME (settings, trust)."""

    def _extra_env(self, order: WorkOrder) -> dict[str, str]:
        return {}

    def _prepare_bridge(self, order: WorkOrder, bridge: BridgeEndpoint, env: Mapping[str, str]) -> None:
        """Write the files the CLI reads to reach the bridge (see :func:`bridge_path`, :func:`write_private`).

        Called only when ``speaks_mcp`` and the order has a bridge, after :meth:`_environment`
        (``env`` is the agent's environment) and before the agent starts.
        """

    # --- running -------------------------------------------------------------------------

    def _environment(self, order: WorkOrder) -> dict[str, str]:
        env = order_env(order)
        for name in (*self.key_variables, *self.passthrough_variables):
            value = self.environ.get(name)
            if value:
                env[name] = value
        env["TERM"] = "dumb"
        if order.isolate_home:
            # One HOME per task, kept across its attempts: the CLI's own session lives
            # there, and a retry resumes it.  TMPDIR is fresh for each attempt.
            home = task_file(Path(order.session_dir), order.task_id, "", ".executor", "homes")
            tmp = home / "tmp" / f"a{order.attempt}"
            tmp.mkdir(parents=True, exist_ok=True)
            env["HOME"] = str(home)
            env["TMPDIR"] = str(tmp)
            self._prepare_home(home, order)
        env.update(self._extra_env(order))
        return env

    def base_url(self) -> str:
        """The model endpoint the CLI talks to, as a `network` error names it."""
        names = [self.base_url_variable] if self.base_url_variable else []
        names += [name for name in self.passthrough_variables if name.endswith("_BASE_URL")]
        for name in names:
            if self.environ.get(name):
                return f"{self.environ[name]} ({name})"
        return self.default_base_url or f"{self.program}'s default endpoint"

    def _network_line(self, line: bytes, state: StreamState) -> None:
        """Count a line of the CLI's own output that says the endpoint cannot be reached."""
        if not state.saw_model() and NETWORK_ERROR.search(line[:2000].decode("utf-8", "replace")):
            text = line.decode("utf-8", "replace").strip()
            event = self._json(line)
            if event is not None:  # a JSON event: its message, not the whole object
                text = event_text(event) or text
            state.network_error(text)

    def _unreachable_error(self, state: StreamState, fallback: str | None) -> str:
        said = fallback or state.network_line or "network error"  # the CLI's own last word first
        return f"cannot reach the model at {self.base_url()}: {said}"

    @staticmethod
    def _json(line: bytes) -> dict[str, Any] | None:
        stripped = line.strip()
        if not stripped.startswith(b"{"):
            return None
        try:
            value = msgspec.json.decode(stripped)
        except msgspec.DecodeError:
            return None
        return value if isinstance(value, dict) else None

    def run(self, order: WorkOrder, hooks: WorkerHooks, cancel: threading.Event) -> AttemptResult:
        program = locate_program(self.program)
        if program is None:
            return AttemptResult(
                ok=False, error_kind="spawn_failed", error=f"`{self.program}` is not installed ({self.install_hint})"
            )
        bridge = order.bridge if self.speaks_mcp else None
        problem = bridge_problem(bridge) if bridge is not None else None
        if problem is not None:
            return AttemptResult(ok=False, error_kind="spawn_failed", error=problem)
        prompt = Path(order.prompt_file).read_text(encoding="utf-8")
        if bridge is not None:
            prompt += bridge_note(order)

        def run_once(key: str | None) -> AttemptResult:
            return self._run_with_key(program, order, prompt, bridge, key, hooks, cancel)

        return run_on_pooled_keys(self.key_provider, order, hooks, cancel, run_once)

    def pool_variable(self) -> str:
        """The variable a pooled key goes in: the one of :attr:`key_variables` the user set, else the first."""
        return next((name for name in self.key_variables if self.environ.get(name)), self.key_variables[0])

    def _run_with_key(
        self,
        program: str,
        order: WorkOrder,
        prompt: str,
        bridge: BridgeEndpoint | None,
        key: str | None,
        hooks: WorkerHooks,
        cancel: threading.Event,
    ) -> AttemptResult:
        env = self._environment(order)
        if key is not None:  # a key from the pool, and no other: the CLI must not pick another one
            for name in self.key_variables:
                env.pop(name, None)
            env[self.pool_variable()] = key
        try:
            if bridge is not None:
                try:
                    self._prepare_bridge(order, bridge, env)
                except OSError as error:
                    return AttemptResult(
                        ok=False,
                        error_kind="spawn_failed",
                        error=f"cannot write the MCP bridge configuration: {error.strerror or error}",
                    )
            return self._run_agent(program, order, prompt, env, hooks, cancel)
        finally:
            if bridge is not None:
                forget_bridge(order)

    def _run_agent(
        self,
        program: str,
        order: WorkOrder,
        prompt: str,
        env: dict[str, str],
        hooks: WorkerHooks,
        cancel: threading.Event,
    ) -> AttemptResult:
        argv = self._argv(program, order, prompt)
        workdir = Path(order.workdir)
        before = snapshot(workdir)
        started = time.time()
        state = StreamState(model=order.model)

        def on_line(line: bytes) -> None:
            try:
                self._on_line(line, state, hooks)
            except (KeyError, TypeError, ValueError, AttributeError):
                state.bad_lines += 1  # an event shape we do not know: never fatal
            self._network_line(line, state)

        def on_error_line(line: bytes) -> None:
            self._network_line(line, state)

        def stop_check() -> tuple[str, str] | None:
            # A CLI left alone retries a dead endpoint until the wall timeout (codex: forever).
            if not state.unreachable(self.network_errors_to_stop):
                return None
            return "network", self._unreachable_error(state, None)

        Path(order.report_file).unlink(missing_ok=True)
        outcome = run_process(
            ProcessSpec(
                argv=tuple(argv),
                cwd=order.workdir,
                env=env,
                log_path=order.log_path,
                stdin_data=prompt.encode() if self.prompt_on_stdin else None,
            ),
            ProcessLimits(
                wall_timeout_s=order.timeout_s,
                hang_timeout_s=order.hang_timeout_s or _DEFAULT_HANG_S,
                grace_s=order.grace_s,
                nice=order.nice,
            ),
            cancel=cancel,
            on_start=hooks.started,
            on_stdout_line=on_line,
            on_stderr_line=on_error_line,
            stop_check=stop_check,
            stdout_line_prefix=self.stdout_line_prefix,
            stdout_line_pattern=NETWORK_ERROR_BYTES if self.stdout_line_prefix else None,
            stderr_line_pattern=NETWORK_ERROR_BYTES,  # on_error_line looks for nothing else
        )
        if outcome.error_kind in (None, "crash"):  # it ended by itself: let the CLI's own words explain
            self._finish(outcome, state)
        after = snapshot(workdir)
        if before is not None:
            touched = moved(before, after)
        else:  # no git repository: look at the files' times
            touched = touched_since(workdir, started, skip=executor_paths(Path(order.session_dir)))
        return self._result(order, outcome, state, before, after, workdir, touched)

    def _result(
        self,
        order: WorkOrder,
        outcome: ProcessOutcome,
        state: StreamState,
        before: Any,
        after: Any,
        workdir: Path,
        touched: bool = False,
    ) -> AttemptResult:
        base = result_from_outcome(order, outcome)  # process failures, report file, artifacts
        text = state.final_text if state.final_text is not None else "".join(state.texts)
        cost, estimated = state.cost_usd, False
        if cost is None and state.model and (state.tokens_in or state.tokens_out):
            cost = estimate_cost(state.model, state.tokens_in or 0, state.tokens_out or 0, state.tokens_cached or 0)
            estimated = cost is not None
        fields: dict[str, Any] = {
            "summary": (text.strip().split("\n", 1)[0][:300] if text.strip() else base.summary),
            "tokens_in": state.tokens_in,
            "tokens_out": state.tokens_out,
            "tokens_cached": state.tokens_cached,
            "cost_usd": cost,
            "cost_estimated": estimated,
            "model": state.model,
            "agent_session_id": state.session_id,
            "git_head_before": before.head if before else None,
            "git_head_after": after.head if after else None,
            "files_modified": changed_files(workdir, before, after) or base.files_modified,
        }
        if not base.ok:
            kind = base.error_kind
            error = base.error
            if kind == "crash" and state.error_kind is not None:  # the CLI said why it exited non-zero
                kind, error = state.error_kind, state.error
            if kind == "crash" and state.unreachable(1):
                kind = "network"
            if kind == "network" and not (error or "").startswith("cannot reach"):
                error = self._unreachable_error(state, error)
            return msgspec.structs.replace(
                base, error_kind=kind, error=error, retry_after_s=state.retry_after_s, **fields
            )
        if state.error_kind is not None:
            error = state.error
            if state.error_kind == "network":
                error = self._unreachable_error(state, error)
            return msgspec.structs.replace(
                base,
                ok=False,
                error_kind=state.error_kind,
                error=error,
                retry_after_s=state.retry_after_s,
                outcome="failed",
                **fields,
            )
        if state.permission_denials:
            return msgspec.structs.replace(
                base,
                ok=False,
                error_kind="permission_denied",
                outcome="failed",
                error="the agent was refused: "
                + "; ".join(state.permission_denials[:5])
                + " — the work was not done (widen the role's `permission`)",
                **fields,
            )
        work = outside_session(Path(order.session_dir), workdir, fields["files_modified"])
        if not state.saw_model() and not work and not base.artifacts and not touched:
            said = " ".join(text.split())[:300]
            return msgspec.structs.replace(
                base,
                ok=False,
                error_kind="no_work",
                outcome="failed",
                error=f"{self.program} exited 0 but did no work: no model traffic (no tokens, no tool call), "
                f"no file changed in {workdir}, no artifact" + (f"; it said: {said}" if said else ""),
                **fields,
            )
        if not text.strip() and not state.tokens_out:
            return msgspec.structs.replace(
                base,
                ok=False,
                error_kind="bad_output",
                outcome="failed",
                error=f"{self.program} exited 0 without reporting a result (an empty turn)",
                **fields,
            )
        verdict = verdict_in_text(text) if base.outcome == "completed" else None
        if verdict is not None:  # a read-only reviewer's verdict, in its final message
            fields |= {"outcome": "changes_requested", "feedback": verdict[0], "reviewed_task": verdict[1]}
        return msgspec.structs.replace(base, **fields)
