"""What a caller asks of a run, and how it is refused.

:class:`RunRequest`, :class:`RunRefused`, the bridge a run may attach, and which
backend each role gets (:func:`resolve_backends`).
"""

from __future__ import annotations

import dataclasses
import difflib
import sys
from collections.abc import Callable, Collection
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeGuard

import pykka

from backends.base import Backend
from backends.registry import UnknownBackend, backend_names, get_backend
from session.config_models import Config
from session.loader import TeamSession
from session.run_choices import RoleBackend

if TYPE_CHECKING:
    from backends.agent_cli import AgentCliBackend
    from backends.openai_http import OpenAIHttpBackend

__all__ = [
    "BridgeOpener",
    "RunBridge",
    "RunRefused",
    "RunRequest",
    "resolve_backends",
]


class RunRefused(Exception):
    """The run cannot start; the message says why and what to do."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class RunBridge(Protocol):
    """The MCP bridge and dashboard a run serves (``bridge.serve.BridgeRuntime``)."""

    @property
    def worker_endpoint(self) -> tuple[str, str]: ...

    def attach(self, executor: pykka.ActorRef[Any], session: Callable[[], pykka.ActorRef[Any] | None]) -> None:
        """The run has loaded its session into the store: serve it, and tell the address.
        ``session`` finds the run's Session actor, which keeps queued writes."""

    def serve_stdio(self, outcome: Future[Any], request_stop: Callable[[str], None]) -> None: ...

    def close(self) -> None: ...


class BridgeOpener(Protocol):
    """Opens the run's bridge; raises :class:`RunRefused`.  The command line composes it
    (bridge/ and web/ sit above actors/, so a run never imports them)."""

    def __call__(
        self, folder: Path, console: Callable[[str], None], terminal: Callable[[str], None] | None
    ) -> RunBridge: ...


def _stdin_is_terminal() -> bool:
    return sys.stdin is not None and sys.stdin.isatty()


@dataclass
class RunRequest:
    """What the command line asked for; ``None`` means "the config's value"."""

    session_dir: Path
    command: str = "run"
    backend: str | None = None
    config_file: Path | None = None
    max_workers: int | None = None
    workdir: Path | None = None
    json_events: bool = False
    export_dir: Path | None = None
    task_timeout_s: float | None = None
    hang_timeout_s: float | None = None
    max_attempts: int | None = None
    shutdown_grace_s: float | None = None
    retry_backoff_s: float | None = None
    interactive: bool = field(default_factory=_stdin_is_terminal)
    bridge: BridgeOpener | None = None  # --http or `executor mcp`: dashboard, API and the MCP bridge
    mcp_stdio: bool = False  # `executor mcp`: the bridge on stdin/stdout
    exit_when_done: bool = False  # with the bridge: end when the pipeline is done instead of serving on
    retry_failed: bool = False  # resume --retry-failed: failed tasks start again with fresh attempts
    cluster: str | None = None  # --cluster ADDRESS: attempts run as Ray actors there


def _is_openai(backend: Backend) -> TypeGuard[OpenAIHttpBackend]:
    # Asked of sys.modules: only a loaded module can have made an instance of its class, and a
    # run whose roles use neither kind does not load them (the registry loads backends on demand).
    module = sys.modules.get("backends.openai_http")
    return module is not None and isinstance(backend, module.OpenAIHttpBackend)


def _is_agent_cli(backend: Backend) -> TypeGuard[AgentCliBackend]:
    module = sys.modules.get("backends.agent_cli")  # see _is_openai
    return module is not None and isinstance(backend, module.AgentCliBackend)


def resolve_backends(
    session: TeamSession,
    chosen: list[RoleBackend],
    config: Config | None = None,
    pooled_providers: Collection[str] = (),
) -> dict[str, Backend]:
    """The backend of every role (``chosen`` by :func:`session.run_choices.role_backends`), or
    :class:`RunRefused` with one line per problem and the list of backends once.

    ``pooled_providers``: providers the run's key pool holds keys of; an agent CLI of one of
    them needs no key or login of its own."""
    problems: list[str] = []
    missing: list[str] = []
    backends: dict[str, Backend] = {}
    for entry in chosen:
        role, spec = entry.role, session.role_specs[entry.role]
        where = session.roles[role].role_spec
        if entry.backend is None:
            missing.append(role)
            continue
        try:
            backend = get_backend(entry.backend)
        except UnknownBackend:
            origin = {"flag": "--backend", "remembered": "[remembered].backend in executor.toml"}.get(
                entry.source, where
            )
            close = difflib.get_close_matches(entry.backend, backend_names(), n=1)
            problem = f"{origin}: unknown backend '{entry.backend}'" + (f" (did you mean {close[0]}?)" if close else "")
            if entry.source not in ("flag", "remembered"):
                problem += f" (role {role})"
            if problem not in problems:  # --backend names it once for every role
                problems.append(problem)
            continue
        # The choice made here is the one the workers use: the role-spec they read says so.
        if spec.meta.backend != entry.backend:
            session.role_specs[role] = dataclasses.replace(
                spec, meta=spec.meta.model_copy(update={"backend": entry.backend})
            )
            spec = session.role_specs[role]
        # Runs have a Router and a KeyPool: the openai backend's model, base URL and key
        # may come from the registry and the pool rather than the role-spec.
        if _is_openai(backend):
            refusal = backend.preflight_routed(role, spec.meta, config)
        elif _is_agent_cli(backend):
            refusal = backend.preflight(role, spec.meta, pooled_providers=pooled_providers)
        else:
            refusal = backend.preflight(role, spec.meta)
        if refusal:
            problems.append(refusal)
            continue
        backends[role] = backend
    if missing:
        specs = ", ".join(session.roles[role].role_spec for role in missing)
        problems.insert(
            0,
            f"no backend for role(s) {', '.join(missing)}: pass --backend NAME (e.g. --backend demo: no key "
            f"needed; it is remembered for resume) or add `backend: NAME` to {specs}",
        )
    if problems:
        unknown = any("unknown backend" in problem for problem in problems) or missing
        choices = f"\n  backends: {', '.join(backend_names())}" if unknown else ""
        raise RunRefused("cannot run this session:\n  " + "\n  ".join(problems) + choices, exit_code=2)
    return backends
