"""``executor doctor``: is each configured backend usable from end to end, and if not, the fix.

For every backend a session's roles use (or every agent CLI and the ``openai``
backend, without a session), in order, stopping at the first failure of a backend
(the later checks would only repeat it):

1. ``program``: the agent CLI is installed (``$TEAM_EXECUTOR_AGENT_CLIS``, then PATH);
2. ``key``: a key variable (or a login file) is there — names only, never values;
   for the ``openai`` backend, the call plan of each role (:mod:`backends.openai_plan`);
3. ``endpoint``: the base URL the backend will call accepts a TCP connection;
4. ``call`` (only when asked): one tiny real request — the agent CLI run headless
   through the backend itself, or one chat completion — so a bad key, model or
   settings file shows here rather than in the middle of a run.

Before them, two rows about this machine (``(machine)``; never a failure, the fallbacks work):
how attempts start (the compiled spawn helper, or ``subprocess`` and a shell where it was not
built) and whether each attempt gets a cgroup of its own.

Every failed check carries a fix: the command, variable, role-spec key or
``[[models]]`` entry to set.  MCP clients start ``executor mcp`` without the
shell's environment, so key fixes also say where such a client takes them.
"""

from __future__ import annotations

import os
import socket
import tempfile
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import msgspec

from backends import spawn
from backends.agent_cli import AGENT_CLIS_ENV, AgentCliBackend, locate_program
from backends.base import Backend
from backends.containment import DISABLE_ENV, cgroups_available
from backends.openai_http import KEY_ENV, OpenAIHttpBackend
from backends.openai_plan import Direct, plan_calls
from protocol.messages import WorkOrder
from session.config_models import Config
from session.rolespec import RoleSpecFrontmatter
from session.routing_chain import key_endpoint

__all__ = ["MCP_ENV_NOTE", "DoctorCheck", "check_backend", "machine_checks"]

#: Where a CLI's calls go unless a variable says otherwise: (variable, default URL).
_ENDPOINTS: dict[str, tuple[str, str]] = {
    "claude": ("ANTHROPIC_BASE_URL", "https://api.anthropic.com"),
    "codex": ("OPENAI_BASE_URL", "https://api.openai.com/v1"),
    "gemini": ("GOOGLE_GEMINI_BASE_URL", "https://generativelanguage.googleapis.com"),
}
_CONNECT_TIMEOUT_S = 5.0
_CALL_TIMEOUT_S = 120.0
_CALL_PROMPT = "This is a connectivity check. Reply with the single word OK and do nothing else.\n"

MCP_ENV_NOTE = (
    "an MCP client starts `executor mcp` without your shell's environment: put the variable in the "
    'client config\'s "env" block too'
)


class DoctorCheck(msgspec.Struct, frozen=True, kw_only=True):
    backend: str
    check: str  # program | key | plan | endpoint | call | backend
    ok: bool
    detail: str
    roles: list[str] = msgspec.field(default_factory=list)
    fix: str | None = None


def machine_checks() -> list[DoctorCheck]:
    """How this machine starts and contains attempts.  Both rows are ok either way (a run works
    with the fallbacks); the detail says what the weaker way costs and how to get the other."""
    if spawn.HELPER is not None:
        start = (
            "the compiled helper: no shell per attempt; each agent in a process group of its own, "
            "without a terminal, ranked below the executor by [run].agent_nice"
        )
    else:
        start = (
            "subprocess: backends/_spawn.c was not compiled at install (no C compiler or Python headers "
            "then), so each attempt also runs a /bin/sh, and each agent gets a session of its own, where "
            "the kernel groups scheduling by session [run].agent_nice does not rank it below the executor; "
            "install a C compiler and the Python headers and reinstall team-executor to get the helper"
        )
    if cgroups_available():
        contain = "each attempt runs in a cgroup of its own: all it starts is stopped with it"
        born = spawn.born_in_cgroups()
        if born:
            contain += "; each is created in it (clone3)"
        elif born is False:
            contain += (
                "; each joins it just after its start, as this kernel refuses clone3 into a cgroup "
                "(before Linux 5.7, a cgroup v1 hierarchy, or a seccomp filter such as a container's): "
                "the kernel holds every fork and exit on the machine while a process changes cgroup"
            )
    else:
        why = (
            f"cgroups are turned off ({DISABLE_ENV} is set)"
            if os.environ.get(DISABLE_ENV)
            else "no cgroup can be made here (no root and no delegated cgroup)"
        )
        contain = (
            f"{why}: what an attempt starts is followed by its descendants and its marker, "
            "and a process that escapes both outlives it"
        )
    return [
        DoctorCheck(backend="(machine)", check="process start", ok=True, detail=start),
        DoctorCheck(backend="(machine)", check="containment", ok=True, detail=contain),
    ]


class _QuietHooks:
    """The worker callbacks for a doctor's call: nothing to record."""

    routing = None

    def started(self, pid: int, create_time: float | None) -> None:
        pass

    def progress(self, percent: int | None, note: str) -> None:
        pass


def _reachable(url: str) -> str | None:
    """None when ``url``'s host accepts a TCP connection, else why not."""
    parts = urlsplit(url)
    host = parts.hostname
    if not host or parts.scheme not in ("http", "https"):
        return f"{url!r} is not an http:// or https:// URL"
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        with socket.create_connection((host, port), timeout=_CONNECT_TIMEOUT_S):
            return None
    except OSError as error:
        return f"cannot connect to {host}:{port}: {error.strerror or error}"


def _public(url: str) -> str:
    parts = urlsplit(url)
    netloc = parts.netloc.rsplit("@", 1)[-1]
    return f"{parts.scheme}://{netloc}{parts.path}"


def _tiny_order(folder: Path, backend: str, spec: RoleSpecFrontmatter | None) -> WorkOrder:
    (folder / "artifacts").mkdir(parents=True, exist_ok=True)
    prompt = folder / "prompt.md"
    prompt.write_text(_CALL_PROMPT, encoding="utf-8")
    return WorkOrder(
        task_id="DOCTOR-001",
        attempt=1,
        role="doctor",
        backend=backend,
        session_dir=str(folder),
        artifacts_dir=str(folder / "artifacts"),
        workdir=str(folder),
        prompt_file=str(prompt),
        report_file=str(folder / "report.json"),
        log_path=str(folder / "doctor.log"),
        run_id="doctor",
        marker="executor-doctor",
        timeout_s=_CALL_TIMEOUT_S,
        hang_timeout_s=_CALL_TIMEOUT_S,
        model=spec.model if spec else None,
        base_url=spec.base_url if spec else None,
        permission="read-only",
        max_turns=2,
        isolate_home=bool(spec.isolate_home) if spec else False,
    )


def _call(backend: Backend, spec: RoleSpecFrontmatter | None) -> str | None:
    """One tiny attempt through the backend itself; None when it answered, else the error."""
    with tempfile.TemporaryDirectory(prefix="executor-doctor-") as folder:
        order = _tiny_order(Path(folder), backend.name, spec)
        result = backend.run(order, _QuietHooks(), threading.Event())
    if result.ok or str(result.error_kind) == "no_work":  # an answer without work is what was asked for
        return None
    return f"{result.error_kind}: {result.error or 'the call failed'}"


def _key_fix(names: Sequence[str], program: str | None) -> str:
    login = f" (or log in once with `{program}`)" if program else ""
    return f"export {' or '.join(names)}=...{login}; {MCP_ENV_NOTE}"


def _agent_cli(
    backend: AgentCliBackend, roles: list[str], spec: RoleSpecFrontmatter | None, call: bool
) -> list[DoctorCheck]:
    def row(check: str, ok: bool, detail: str, fix: str | None = None) -> DoctorCheck:
        return DoctorCheck(backend=backend.name, check=check, ok=ok, detail=detail, roles=roles, fix=fix)

    path = locate_program(backend.program)
    if path is None:
        fix = f"{backend.install_hint}, or set {AGENT_CLIS_ENV} to the folder that holds `{backend.program}`"
        return [row("program", False, f"`{backend.program}` is not installed", fix)]
    checks = [row("program", True, path)]
    variables = [name for name in backend.key_variables if backend.environ.get(name)]
    if not backend.has_credentials():
        names = list(backend.key_variables) or ["its key"]
        checks.append(row("key", False, "no key variable and no login file", _key_fix(names, backend.program)))
        return checks
    checks.append(row("key", True, ", ".join(variables) if variables else "login files"))
    if backend.name in _ENDPOINTS:
        variable, default = _ENDPOINTS[backend.name]
        url = backend.environ.get(variable) or default
        problem = _reachable(url)
        if problem is not None:
            fix = f"check the network or proxy (HTTPS_PROXY), or set {variable} to a reachable server"
            checks.append(row("endpoint", False, problem, fix))
            return checks
        checks.append(row("endpoint", True, _public(url)))
    if call:
        problem = _call(backend, spec)
        fix = "read the error above: a wrong key, model or base URL; `executor probe` shows the CLI's flags"
        checks.append(row("call", problem is None, problem or "answered", fix if problem else None))
    return checks


def _openai(
    backend: OpenAIHttpBackend,
    roles: Mapping[str, RoleSpecFrontmatter | None],
    config: Config,
    call: bool,
) -> list[DoctorCheck]:
    checks: list[DoctorCheck] = []
    for role, spec in roles.items() or {"(any)": None}.items():
        model, base = backend.role_endpoint(spec.model if spec else None, spec.base_url if spec else None)
        has_models = any(entry.backend == backend.name for entry in config.models)
        plan = plan_calls(role, model, base, config.find_model, has_models, backend.name)
        who = [role] if spec is not None else []

        def row(check: str, ok: bool, detail: str, fix: str | None = None, who: list[str] = who) -> DoctorCheck:
            return DoctorCheck(backend=backend.name, check=check, ok=ok, detail=detail, roles=who, fix=fix)

        if isinstance(plan, str):
            checks.append(row("plan", False, plan, "see the message: it names the role-spec key or variable"))
            continue
        if isinstance(plan, Direct):
            urls = [plan.base_url]
            checks.append(row("plan", True, f"model {plan.model} at {_public(plan.base_url)} (no registry entry)"))
        else:
            candidates = [entry for entry in config.models if entry.backend == backend.name]
            if plan.force_model:
                forced = config.find_model(plan.force_model)
                candidates = [forced] if forced is not None else candidates
            urls = sorted({url for entry in candidates if (url := key_endpoint(entry, base)) is not None})
            names = ", ".join(entry.name for entry in candidates)
            checks.append(row("plan", True, f"routed among the registry's {names}"))
        loopback = all((urlsplit(url).hostname or "") in ("127.0.0.1", "localhost", "::1") for url in urls)
        if not backend.environ.get(KEY_ENV) and not loopback and isinstance(plan, Direct):
            checks.append(row("key", False, f"no {KEY_ENV} for {_public(plan.base_url)}", _key_fix([KEY_ENV], None)))
            continue
        failed = False
        for url in urls:
            problem = _reachable(url)
            fix = "start the server, or correct base_url (role-spec, OPENAI_BASE_URL or [[models]])"
            checks.append(row("endpoint", problem is None, problem or _public(url), fix if problem else None))
            failed = failed or problem is not None
        if call and not failed:
            problem = _call(backend, spec) if isinstance(plan, Direct) else None
            if isinstance(plan, Direct):
                fix = "a wrong key, model name or base URL: the error says which"
                checks.append(row("call", problem is None, problem or "answered", fix if problem else None))
            else:
                checks.append(row("call", True, "skipped: routed calls need a run's key pool"))
    return checks


def check_backend(
    backend: Backend,
    roles: Mapping[str, RoleSpecFrontmatter | None],
    config: Config,
    call: bool = False,
) -> list[DoctorCheck]:
    """The checks of one backend used by ``roles`` (role -> its role-spec; {} without a session)."""
    if isinstance(backend, OpenAIHttpBackend):
        return _openai(backend, roles, config, call)
    names = sorted(roles)
    first: Any = next(iter(roles.values()), None)
    if isinstance(backend, AgentCliBackend):
        return _agent_cli(backend, names, first, call)
    problems = [problem for role, spec in roles.items() if spec and (problem := backend.preflight(role, spec))]
    if problems:
        return [
            DoctorCheck(backend=backend.name, check="backend", ok=False, detail=p, roles=names, fix="see the message")
            for p in problems
        ]
    return [DoctorCheck(backend=backend.name, check="backend", ok=True, detail="needs no program or key", roles=names)]
