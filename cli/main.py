"""The ``executor`` command line: a thin layer over the library.

Commands parse arguments, call ``session``/``actors``, and turn their named
exceptions into one clear message and an exit code.  Exit codes: 0 success,
1 the session (or run) is not in a good state, 2 usage error.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import msgspec
import typer
from rich.console import Console

from cli.render import render_check, render_problems
from session.loader import inspect_session
from session.report import build_report
from session.store import StoreError

__all__ = ["app", "main"]

app = typer.Typer(
    name="executor",
    help="Run a team of AI coding agents as a supervised, crash-safe pipeline.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)

SessionOption = Annotated[
    Path,
    typer.Option("--session", "-s", help="The team session folder (it holds team-session.json).", show_default=False),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print one JSON object instead of text.")]


def _stdout() -> Console:
    return Console(highlight=False, soft_wrap=True)


def _stderr() -> Console:
    return Console(stderr=True, highlight=False, soft_wrap=True)


def _fail(message: str, code: int = 1) -> typer.Exit:
    _stderr().print(f"[red]error:[/] {message}", markup=True)
    return typer.Exit(code)


@app.command()
def validate(session: SessionOption, json: JsonOption = False) -> None:
    """Check a session folder and list every problem, each with its file, field and fix.

    Example: executor validate --session .workflow/.team/TC-auth-2026-02-27

    Exit code 0 when valid, 1 when not.
    """
    loaded, problems = inspect_session(session)
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
        console = _stdout()
        render_problems(console, str(session), problems)
        if loaded is not None:
            console.print(
                f"[green]valid[/]: {loaded.session_id} — {len(loaded.roles)} roles, {len(loaded.tasks)} tasks"
            )
    raise typer.Exit(0 if loaded is not None else 1)


@app.command()
def check(
    session: SessionOption,
    json: JsonOption = False,
    full: Annotated[bool, typer.Option("--full", help="List every task of every layer.")] = False,
) -> None:
    """Show where a pipeline stands: progress, the execution graph, workers, what is ready or failed.

    Read-only: safe to run from another terminal while `executor run` works.
    Example: executor check --session demo-run --json
    """
    try:
        report = build_report(session)
    except StoreError as error:
        raise _fail(str(error)) from None
    if json:
        sys.stdout.write(msgspec.json.encode(report).decode() + "\n")
    else:
        render_check(_stdout(), report, full=full)
    raise typer.Exit(0 if report.valid else 1)


@app.command()
def init(
    session: SessionOption,
    goal: Annotated[str, typer.Argument(help="What the team should achieve.")],
    template: Annotated[
        str, typer.Option("--template", "-t", help="A built-in template, e.g. pm-architect-coder-qa.")
    ] = "pm-architect-coder-qa",
    backend: Annotated[
        str | None, typer.Option("--backend", help="Write `backend: NAME` into every role-spec (e.g. demo).")
    ] = None,
) -> None:
    """Create a new, valid session folder from a built-in template.

    Example: executor init --session work/login --template pm-architect-coder-qa "Add a login page"
    """
    from session.templates import InitError, init_session  # noqa: PLC0415 - only init needs it

    try:
        session_id = init_session(session, template, goal, backend=backend)
    except InitError as error:
        raise _fail(str(error), 2) from None
    console = _stdout()
    console.print(f"created {session_id} in {session}")
    console.print(f"next: executor run --session {session}")


@app.command()
def demo() -> None:
    """Run the built-in demo session (pm -> architect -> coder -> qa) on the demo agent.

    Example: executor demo
    """
    _stdout().print("not yet: `executor run` is being built (issue 3); try `executor check --session examples/demo`")


def main() -> None:
    """Console-script entry point."""
    try:
        app()
    except KeyboardInterrupt:
        _stderr().print("interrupted")
        sys.exit(130)
    except Exception as error:
        if os.environ.get("EXECUTOR_DEBUG"):
            raise
        _stderr().print(
            f"[red]internal error:[/] {type(error).__name__}: {error}\n"
            "This is a bug in team-executor; run again with EXECUTOR_DEBUG=1 for the traceback and report it."
        )
        sys.exit(70)
