"""``executor init``: a new session folder from a playbook, and ``--playbook list``."""

from __future__ import annotations

from typing import Annotated

import typer

from cli.options import TeamSessionOption, role_backends_of, stdout_console
from cli.options import fail as _fail
from cli.render import next_line

__all__ = ["init"]


def _print_playbooks() -> None:
    from session.playbooks import describe_playbooks  # noqa: PLC0415 - only init needs it

    console = stdout_console()
    for line in describe_playbooks():
        console.print(line, markup=False)


def _list_playbooks_flag(value: bool) -> bool:
    """``--list-playbooks``: eager, so it works without ``--session`` and a goal."""
    if value:
        _print_playbooks()
        raise typer.Exit(0)
    return value


def _playbook_list_value(value: str | None) -> str | None:
    """``--playbook list``: print the playbooks instead (it is read before ``--session`` is required)."""
    if value == "list":
        _print_playbooks()
        raise typer.Exit(0)
    return value


def init(
    session: TeamSessionOption,
    goal: Annotated[str, typer.Argument(help="What the team should achieve.")],
    playbook: Annotated[
        str | None,
        typer.Option(
            "--playbook",
            "-p",
            metavar="NAME",
            callback=_playbook_list_value,
            show_default=False,
            help="A built-in playbook (collaboration pattern); `--playbook list` shows them all."
            " [default: pm_architect_coder_qa]",
        ),
    ] = None,
    template: Annotated[
        str | None,
        typer.Option(
            "--template",
            "-t",
            metavar="NAME",
            callback=_playbook_list_value,
            show_default=False,
            help="The older name of --playbook (e.g. pm-architect-coder-qa).",
        ),
    ] = None,
    backend: Annotated[
        str | None,
        typer.Option("--backend", metavar="BACKEND", help="Write `backend: NAME` into every role-spec (e.g. demo)."),
    ] = None,
    writer: Annotated[
        str | None,
        typer.Option("--writer", metavar="BACKEND", help="Backend of the writer roles (coder, and alt-coder)."),
    ] = None,
    reviewer: Annotated[
        str | None, typer.Option("--reviewer", metavar="BACKEND", help="Backend of the reviewer role.")
    ] = None,
    redteam: Annotated[
        str | None, typer.Option("--redteam", metavar="BACKEND", help="Backend of the redteam role.")
    ] = None,
    adjudicator: Annotated[
        str | None, typer.Option("--adjudicator", metavar="BACKEND", help="Backend of the adjudicator role.")
    ] = None,
    role_backend: Annotated[
        list[str] | None,
        typer.Option(
            "--role-backend",
            metavar="ROLE=BACKEND",
            help="Backend of one role, by name; repeatable. Wins over every other backend option.",
        ),
    ] = None,
    list_playbooks: Annotated[
        bool,
        typer.Option(
            "--list-playbooks",
            is_eager=True,
            callback=_list_playbooks_flag,
            help="Print the playbooks, their tasks and default backends, and exit.",
        ),
    ] = False,
) -> None:
    """Create a new, valid session folder from a built-in playbook.

    Example: executor init --session work/login --playbook write_review "Add a login page"

    Backends, weakest first: the playbook's defaults, --backend (every role),
    --writer/--reviewer/--redteam/--adjudicator, --role-backend ROLE=BACKEND.
    `executor init --playbook list` prints the playbooks.
    """
    from backends.registry import backend_names  # noqa: PLC0415
    from session.playbooks import DEFAULT_PLAYBOOK, InitError, find_playbook  # noqa: PLC0415 - only init needs it
    from session.report import build_report  # noqa: PLC0415 - the session loader: keeps `executor --help` fast
    from session.templates import init_session, parse_role_backends  # noqa: PLC0415 - only init needs it

    del list_playbooks  # handled by its callback
    try:
        if playbook is not None and template is not None and playbook != template:
            raise InitError(f"--playbook {playbook} and --template {template} disagree; give one of them")
        chosen = find_playbook(
            playbook or template or DEFAULT_PLAYBOOK, noun="playbook" if playbook is not None else "template"
        )
        session_id = init_session(
            session,
            chosen,
            goal,
            backend=backend,
            role_flags={"writer": writer, "reviewer": reviewer, "redteam": redteam, "adjudicator": adjudicator},
            role_backends=parse_role_backends(role_backend or []),
            known_backends=backend_names(),
        )
    except InitError as error:
        raise _fail(str(error), 2) from None
    console = stdout_console()
    console.print(f"created {session_id} in {session} (playbook {chosen.name})")
    console.print(next_line(build_report(session, role_backends_of(session))), markup=False)
