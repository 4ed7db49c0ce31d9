"""The ``mcp`` backend: a task that is one tool call on an MCP server of ``[mcp_servers]``.

An infrastructure agent that already exists as an MCP server becomes a member of
the team without code: give its role ``backend: mcp`` (and, optionally,
``mcp_server:``/``mcp_tool:`` defaults in the role-spec), and give each task an
``"mcp": {"server": ..., "tool": ..., "arguments": {...}}`` in task-analysis.json.
The executor puts the call in ``WorkOrder.mcp_call`` (see :func:`mcp_call_for`).

Where the servers come from: the run registers the configuration's
``[mcp_servers]`` once with :func:`register_servers` before the backends are
checked (this module's instance in ``backends.registry`` is created at import,
before any config is read); a backend built with ``servers=`` uses those instead.

The answer: the text content goes to ``artifacts/<TASK-ID>.md`` and the structured
content, when the tool gives one, to ``artifacts/<TASK-ID>.json`` (both relative to
the session folder, as ``AttemptResult.artifacts``).  A tool that returns a plain
value gets it wrapped by the SDK as ``{"result": <text>}``: that repeats the text,
so no ``.json`` is written for it.  How a call ends:

- the tool answered: ``ok``; the tool failed (``is_error``): ``crash`` with its message;
- refused, reset, unreachable, a server that exits or does not finish the
  handshake in time: ``network``; the call itself past the timeout: ``timeout``;
- a stdio server that cannot be started, an unset ``${NAME}``/``token_env``
  variable, an unknown server, no call at all: ``spawn_failed`` (the message names the fix);
- HTTP 401/403: ``auth``; an answer that is not MCP: ``bad_output``; ``cancel`` set: ``interrupted``.

The timeout is the role-spec's ``timeout`` when set, else the server's ``timeout_s``.
The call, its outcome and a stdio server's stderr go to ``order.log_path``.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Collection, Iterable, Mapping
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, ClassVar

from backends.base import Backend, WorkerHooks, failed_attempt
from backends.conventions import relative_inside
from protocol.messages import AttemptResult, McpCall, WorkOrder
from protocol.types import ErrorKind
from session.config_mcp import McpServerConfig
from session.graph import TaskSpec
from session.redaction import redact, redact_data
from session.rolespec import RoleSpec, RoleSpecFrontmatter
from session.safepath import task_file

if TYPE_CHECKING:
    from session.mcp_client import McpFailure

__all__ = ["McpCallBackend", "mcp_call_for", "mcp_task_problems", "register_servers"]

_SUMMARY_CHARS = 200
_OUTPUT_TAIL_CHARS = 2000
_ERROR_CHARS = 1000

#: What the executor does with each way a call could not be made.
_ERROR_KINDS: dict[McpFailure, ErrorKind] = {
    "network": "network",
    "timeout": "timeout",
    "spawn_failed": "spawn_failed",
    "auth": "auth",
    "config": "spawn_failed",
    "protocol": "bad_output",
    "interrupted": "interrupted",
}

_registered: dict[str, McpServerConfig] = {}
_registered_lock = threading.Lock()


def register_servers(servers: Mapping[str, McpServerConfig]) -> None:
    """Make ``servers`` (the config's ``[mcp_servers]``) the ones the registry's ``mcp`` backend calls.

    Call once per run, before preflight; a later call replaces the earlier set.
    """
    global _registered  # noqa: PLW0603 - one run's settings for the import-time registry instance
    with _registered_lock:
        _registered = dict(servers)


def mcp_call_for(backend: str, spec: RoleSpecFrontmatter, task: TaskSpec) -> McpCall | None:
    """The call a task makes: its ``"mcp"`` entry, with the role-spec's ``mcp_server``/``mcp_tool``
    filling what it leaves out.  ``None`` when the role is not on the ``mcp`` backend, or when
    no server or no tool is named (the backend then fails the attempt, saying how to fix it).
    """
    if backend != McpCallBackend.name:
        return None
    given = task.mcp
    server = (given.server if given is not None else None) or spec.mcp_server
    tool = (given.tool if given is not None else None) or spec.mcp_tool
    if not server or not tool:
        return None
    return McpCall(server=server, tool=tool, arguments=dict(given.arguments) if given is not None else {})


def _no_call(task_id: str, role: str) -> str:
    return (
        f"task {task_id} (role '{role}', backend mcp) names no MCP tool call: add "
        '"mcp": {"server": "<name>", "tool": "<tool>", "arguments": {...}} to the task in task-analysis.json, '
        "or mcp_server: and mcp_tool: to the role-spec"
    )


def _unknown_server(name: str, servers: Mapping[str, McpServerConfig]) -> str:
    known = ", ".join(sorted(servers)) or "none"
    return (
        f"MCP server '{name}' is not configured (configured: {known}): add a table mcp_servers.{name} "
        'with command = [...] or url = "..." to executor.toml, or name a configured server'
    )


def mcp_task_problems(
    tasks: Iterable[TaskSpec],
    role_specs: Mapping[str, RoleSpec],
    backends: Mapping[str, Backend],
    servers: Mapping[str, McpServerConfig] | None = None,
    done: Collection[str] = (),
) -> list[str]:
    """For a run about to start: each task of a role on the ``mcp`` backend that names no call,
    or a server that is not configured; one message per task, naming the fix.

    ``backends`` maps role -> backend (``actors.run_request.resolve_backends``); ``servers``
    defaults to the registered ones; tasks in ``done`` (completed: they will not run) are skipped.
    """
    servers = _servers_now() if servers is None else servers
    problems: list[str] = []
    for task in tasks:
        if task.id in done:
            continue
        backend = backends.get(task.owner)
        spec = role_specs.get(task.owner)
        if backend is None or spec is None or backend.name != McpCallBackend.name:
            continue
        call = mcp_call_for(backend.name, spec.meta, task)
        if call is None:
            problems.append(_no_call(task.id, task.owner))
        elif call.server not in servers:
            problems.append(f"task {task.id}: {_unknown_server(call.server, servers)}")
    return problems


def _servers_now() -> dict[str, McpServerConfig]:
    with _registered_lock:
        return _registered


class McpCallBackend:
    """Makes the work order's one MCP tool call and saves the answer as the task's artifact."""

    name: ClassVar[str] = "mcp"

    def __init__(
        self, servers: Mapping[str, McpServerConfig] | None = None, environ: Mapping[str, str] | None = None
    ) -> None:
        self._servers = dict(servers) if servers is not None else None
        self.environ = environ  # None: the process environment, read at each call

    @property
    def servers(self) -> dict[str, McpServerConfig]:
        """The servers this backend calls: its own, else those of :func:`register_servers`."""
        return self._servers if self._servers is not None else _servers_now()

    # --- preflight ---------------------------------------------------------------------

    def preflight(self, role: str, spec: RoleSpecFrontmatter) -> str | None:
        """No server configured, or the role-spec's ``mcp_server`` unknown or missing a variable."""
        servers = self.servers
        if not servers:
            return (
                f"role '{role}' uses backend 'mcp', but no MCP server is configured: add a table "
                'mcp_servers.<name> with command = ["program", ...] or url = "http://..." '
                "to executor.toml (or your config.toml)"
            )
        if spec.mcp_server is None:
            return None
        server = servers.get(spec.mcp_server)
        if server is None:
            return f"role '{role}' has mcp_server: {spec.mcp_server} in its role-spec, but " + _unknown_server(
                spec.mcp_server, servers
            )
        missing = server.missing_variables(self.environ if self.environ is not None else os.environ)
        if missing:
            return (
                f"role '{role}' calls MCP server '{spec.mcp_server}', whose settings read the environment "
                f"variable(s) {', '.join(missing)}, which are not set: set them before the run"
            )
        return None

    # --- the Backend contract -------------------------------------------------------------

    def run(self, order: WorkOrder, hooks: WorkerHooks, cancel: threading.Event) -> AttemptResult:
        started = time.monotonic()
        failed = partial(failed_attempt, started)

        call = order.mcp_call
        if call is None:
            return failed("spawn_failed", _no_call(order.task_id, order.role))
        server = self.servers.get(call.server)
        if server is None:
            return failed("spawn_failed", _unknown_server(call.server, self.servers))
        if cancel.is_set():
            return failed("interrupted", "cancelled: the executor is stopping")
        # The MCP client (the SDK, anyio, httpx2) costs ~1 s to import: only when a call is made.
        from session import mcp_client  # noqa: PLC0415

        timeout = order.timeout_s if order.timeout_s is not None else server.timeout_s
        what = f"{call.server}.{call.tool}"
        hooks.progress(None, f"calling {what}")
        log_path = Path(order.log_path)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with log_path.open("a+b") as log:  # read too: a failure quotes the server's stderr from it
            _log(log, f"mcp: calling {what} on {server.transport} server {server.endpoint} (timeout {timeout:g}s)")
            try:
                answer = mcp_client.call_tool(
                    server,
                    call.tool,
                    call.arguments,
                    timeout,
                    cancel=cancel,
                    environ=self.environ,
                    errlog=log,
                    name=call.server,
                )
            except mcp_client.McpCallFailed as failure:
                _log(log, f"mcp: {failure.kind}: {failure.message}")
                return failed(_ERROR_KINDS[failure.kind], failure.message, summary=f"{what}: {failure.kind}")
            _log(log, f"mcp: {'tool error' if answer.is_error else 'ok'} in {answer.duration_s:.2f}s")
        text = redact(answer.text)  # a tool may echo a token it was sent
        tail = text[-_OUTPUT_TAIL_CHARS:]
        if answer.is_error:
            message = text.strip() or f"{what} failed without a message"
            return failed("crash", message[:_ERROR_CHARS], summary=f"{what}: tool error", output_tail=tail)
        try:
            artifacts = self._save(order, text, redact_data(answer.structured))
        except OSError as error:
            return failed("crash", f"cannot write the artifact of {order.task_id}: {error.strerror or error}")
        first = next((line.strip() for line in text.splitlines() if line.strip()), "")
        return AttemptResult(
            ok=True,
            summary=f"{what}: {first}"[:_SUMMARY_CHARS],
            artifacts=artifacts,
            output_tail=tail,
            duration_s=round(time.monotonic() - started, 3),
        )

    @staticmethod
    def _save(order: WorkOrder, text: str, structured: dict[str, Any] | None) -> tuple[str, ...]:
        """Write the answer under the artifacts folder; the paths relative to the session folder."""
        session = Path(order.session_dir)
        folder = Path(order.artifacts_dir)
        folder.mkdir(parents=True, exist_ok=True)
        files: list[tuple[Path, str]] = []
        if text or structured is None:
            files.append((task_file(folder, order.task_id, ".md"), text if text.endswith("\n") else text + "\n"))
        if structured is not None and structured != {"result": text}:  # the SDK's wrapping of a plain answer
            data = json.dumps(structured, indent=2, ensure_ascii=False)
            files.append((task_file(folder, order.task_id, ".json"), data + "\n"))
        saved: list[str] = []
        for path, content in files:
            relative = relative_inside(session, path)
            if relative is None:  # an artifacts folder (or a link in it) leading out of the session
                raise OSError(f"{path} is outside the session folder")
            path.write_text(content, encoding="utf-8")
            saved.append(relative)
        return tuple(saved)


def _log(log: BinaryIO, line: str) -> None:
    log.write((redact(line) + "\n").encode("utf-8", errors="replace"))
    log.flush()
