"""``executor doctor``: check each configured backend end to end and print the fix.

A thin layer over :mod:`backends.doctor`: it finds the backends (a session's roles,
or every agent CLI and the openai backend), runs the checks, and renders them.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import msgspec
import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from session.problems import format_problems

if TYPE_CHECKING:
    from backends.doctor import DoctorCheck
    from session.config_models import Config
    from session.rolespec import RoleSpecFrontmatter

__all__ = ["doctor"]


def _stdout() -> Console:
    return Console(highlight=False, soft_wrap=True)


def _fail(message: str, code: int) -> typer.Exit:
    Console(stderr=True, highlight=False, soft_wrap=True).print(f"[red]error:[/] {escape(message)}", markup=True)
    return typer.Exit(code)


def _session_backends(
    folder: Path, default: str | None, config_file: Path | None
) -> tuple[Config, dict[str, dict[str, RoleSpecFrontmatter | None]], list[DoctorCheck]]:
    from backends.doctor import DoctorCheck  # noqa: PLC0415 - backends load only for this command
    from backends.registry import backend_names  # noqa: PLC0415
    from session.config import ConfigInvalid, apply_role_defaults, load_config  # noqa: PLC0415 - see doctor()
    from session.loader import inspect_session  # noqa: PLC0415

    session, problems = inspect_session(folder)
    if session is None:
        raise _fail(f"{folder} is not a valid session:\n{format_problems(problems)}", 2)
    try:
        config = load_config(Path(session.folder), config_file, known_backends=backend_names())
    except ConfigInvalid as error:
        raise _fail("the configuration is not valid:\n" + format_problems(error.problems), 2) from None
    apply_role_defaults(session, config)
    used: dict[str, dict[str, RoleSpecFrontmatter | None]] = {}
    unnamed: list[DoctorCheck] = []
    for role, spec in session.role_specs.items():
        name = spec.meta.backend or default or config.run.default_backend
        if name is None:
            where = session.roles[role].role_spec
            unnamed.append(
                DoctorCheck(
                    backend="(none)",
                    check="backend",
                    ok=False,
                    detail=f"role '{role}' names no backend",
                    roles=[role],
                    fix=f"add `backend: <name>` to {where}, or pass --backend (choices: {', '.join(backend_names())})",
                )
            )
            continue
        used.setdefault(name, {})[role] = spec.meta
    return config, used, unnamed


def doctor(
    session: Annotated[
        Path | None,
        typer.Option("--session", "-s", help="Check the backends of this session's roles (default: every agent CLI)."),
    ] = None,
    backend: Annotated[
        str | None, typer.Option("--backend", help="Backend for roles whose role-spec names none.")
    ] = None,
    config: Annotated[Path | None, typer.Option("--config", help="A config TOML file on top of the others.")] = None,
    call: Annotated[
        bool, typer.Option("--call", help="Also make one tiny real request per backend (costs a few tokens).")
    ] = False,
    json: Annotated[bool, typer.Option("--json", help="Print one JSON list instead of a table.")] = False,
) -> None:
    """Check each configured backend end to end: CLI present, key present, endpoint reachable, and with
    --call one tiny request; print the fix for each failure.

    Keys are never printed, only the variables that hold them. Exit code 1 when a check failed.
    Example: executor doctor --session work/login --call
    """
    # Every backend, the config models and the session loader load only for this command:
    # cli.main imports this module, and the others start faster without them.
    from backends.doctor import DoctorCheck, check_backend, machine_checks  # noqa: PLC0415
    from backends.registry import UnknownBackend, agent_backends, backend_names, get_backend  # noqa: PLC0415
    from session.config import ConfigInvalid, load_config  # noqa: PLC0415

    checks: list[DoctorCheck] = machine_checks()
    if session is not None:
        loaded, used, unnamed = _session_backends(session, backend, config)
        checks.extend(unnamed)
    else:
        try:
            loaded = load_config(None, config, known_backends=backend_names())
        except ConfigInvalid as error:
            raise _fail("the configuration is not valid:\n" + format_problems(error.problems), 2) from None
        used = {cli.name: {} for cli in agent_backends()}
        used["openai"] = {}
    for name, roles in used.items():
        try:
            chosen = get_backend(name)
        except UnknownBackend as error:
            checks.append(DoctorCheck(backend=name, check="backend", ok=False, detail=str(error), roles=sorted(roles)))
            continue
        checks.extend(check_backend(chosen, roles, loaded, call))
    failed = [check for check in checks if not check.ok]
    if json:
        sys.stdout.write(msgspec.json.encode(checks).decode() + "\n")
        raise typer.Exit(1 if failed else 0)
    table = Table("backend", "roles", "check", "", "detail", box=None, pad_edge=False)
    for check in checks:
        table.add_row(  # Text: details name keys like [[models]], which rich would take for markup
            check.backend, ", ".join(check.roles) or "-", check.check, "ok" if check.ok else "FAIL", Text(check.detail)
        )
    console = _stdout()
    console.print(table)
    for check in failed:
        if check.fix:
            console.print(f"fix {check.backend} {check.check}: {check.fix}", markup=False)
    console.print("all backends are ready" if not failed else f"{len(failed)} problem(s) found", markup=False)
    raise typer.Exit(1 if failed else 0)
