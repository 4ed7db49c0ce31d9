"""``executor validate`` and ``executor check``: is the session folder valid, and where does its pipeline stand."""

from __future__ import annotations

import os
import sys
from typing import Annotated

import msgspec
import typer

from cli.options import JsonOpt, TeamSessionOption, role_backends_of, stdout_console
from cli.options import fail as _fail
from cli.render import render_check, render_problems
from session.store import StoreError

__all__ = ["check", "validate"]


def validate(session: TeamSessionOption, json: JsonOpt = False) -> None:
    """Check a session folder and list every problem, each with its file, field and fix.

    Example: executor validate --session work/login   (an upstream one: .workflow/.team/TC-auth-2026-02-27)

    Exit code 0 when valid, 1 when not.
    """
    # The loader (pydantic models, yaml) loads only for the commands that read a session:
    # cli.main imports this module, so `executor --help` would pay for it.
    from session.loader import inspect_session  # noqa: PLC0415

    loaded, problems = inspect_session(session)
    if loaded is not None:
        from session.skills import check_role_skills, discover_skills  # noqa: PLC0415 - only validate needs it

        available, skill_problems = discover_skills(loaded.folder)
        problems = [*problems, *skill_problems, *check_role_skills(loaded, available)]
    if json:
        sys.stdout.write(
            msgspec.json.encode(
                {
                    "valid": loaded is not None,
                    "session_id": loaded.session_id if loaded else None,
                    "tasks": len(loaded.tasks) if loaded else 0,
                    "problems": problems,
                }
            ).decode()
            + "\n"
        )
    else:
        console = stdout_console()
        render_problems(console, str(session), problems)
        if loaded is not None:
            console.print(
                f"[green]valid[/]: {loaded.session_id} — {len(loaded.roles)} roles, {len(loaded.tasks)} tasks"
            )
    raise typer.Exit(0 if loaded is not None else 1)


def check(
    session: TeamSessionOption,
    json: JsonOpt = False,
    full: Annotated[bool, typer.Option("--full", help="List every task of every layer.")] = False,
) -> None:
    """Show where a pipeline stands: progress, the execution graph, workers, what is ready or failed.

    Read-only: safe to run from another terminal while `executor run` works.
    Exit code 0, or 1 when the folder is not a valid session.
    Example: executor check --session work/login --json
    """
    from session.report import build_report  # noqa: PLC0415 - see validate

    try:
        report = build_report(session, role_backends_of(session))
    except StoreError as error:
        raise _fail(str(error)) from None
    if json:
        from session.redaction import redact, register_environment  # noqa: PLC0415 - keeps `executor --help` fast

        register_environment(os.environ)  # the keys this shell holds; stored text was redacted when written
        sys.stdout.write(redact(msgspec.json.encode(report).decode()) + "\n")
    else:
        render_check(stdout_console(), report, full=full)
    raise typer.Exit(0 if report.valid else 1)
