"""Options and argument checks shared by the commands that read the configuration."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.markup import escape

if TYPE_CHECKING:
    from session.config_models import Config
    from session.problems import Problem
    from session.run_choices import RoleBackend

__all__ = [
    "ConfigOpt",
    "JsonOpt",
    "SessionFolder",
    "SessionOpt",
    "TeamSessionOption",
    "command_group",
    "existing_session",
    "fail",
    "load_config_args",
    "role_backends_of",
    "stderr_console",
    "stdout_console",
]

SessionOpt = Annotated[
    Path | None,
    typer.Option("--session", "-s", help="A session folder: its executor.toml is read too.", show_default=False),
]
ConfigOpt = Annotated[
    Path | None,
    typer.Option("--config", "-c", help="A TOML file that overrides every other source.", show_default=False),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object instead of text.")]
#: The session of the commands that read or run one (validate, check, run, resume, mcp, ...).
TeamSessionOption = Annotated[
    Path,
    typer.Option("--session", "-s", help="The team session folder (it holds team-session.json).", show_default=False),
]


def stdout_console() -> Console:
    return Console(highlight=False, soft_wrap=True)


def stderr_console() -> Console:
    return Console(stderr=True, highlight=False, soft_wrap=True)


def command_group(name: str, help: str) -> typer.Typer:
    """A command (or group) with the executor's settings: help when called bare, no shell
    completion, and no rich tracebacks or markup (messages are plain text)."""
    return typer.Typer(
        name=name,
        help=help,
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
        rich_markup_mode=None,
        context_settings={"max_content_width": 120},  # examples stay on one line where the terminal allows
    )


def fail(message: str, code: int = 1) -> typer.Exit:
    """Print ``error: <message>`` on stderr; raise the returned Exit (1: a bad state, 2: a usage error)."""
    # Escaped: messages name config keys like [mcp_servers.x], which rich would take for markup.
    Console(stderr=True, highlight=False, soft_wrap=True).print(f"[red]error:[/] {escape(message)}", markup=True)
    return typer.Exit(code)


def existing_session(folder: Path) -> Path:
    """An option callback: ``--session`` must be a session folder, else exit 1 (as validate/check do)."""
    if not (folder / "team-session.json").is_file():
        raise fail(
            f"--session {folder} is not a session folder (no team-session.json); "
            f'`executor init --session {folder} "goal"` creates one',
            1,
        )
    return folder


#: ``--session`` where the command needs a session folder (a missing one exits 1).
SessionFolder = Annotated[
    Path,
    typer.Option("--session", "-s", help="The team session folder.", show_default=False, callback=existing_session),
]


def load_config_args(session: Path | None, config: Path | None) -> tuple[Config | None, list[Problem]]:
    """Check ``--session``/``--config`` (usage errors exit 2), then inspect the configuration."""
    from backends.registry import backend_names  # noqa: PLC0415 - keeps `executor --help` fast
    from session.config import inspect_config  # noqa: PLC0415

    if session is not None and not session.is_dir():
        raise fail(f"--session {session} is not a folder", 1)
    if config is not None and not config.is_file():
        raise fail(f"--config {config} does not exist or is not a file", 2)
    return inspect_config(session, config, known_backends=backend_names())


def role_backends_of(folder: Path) -> list[RoleBackend] | None:
    """Each role's backend as a run without ``--backend`` would choose it; ``None`` when the
    session or its configuration is not valid (``check``/``validate`` report those)."""
    from backends.registry import backend_names  # noqa: PLC0415 - keeps `executor --help` fast
    from session.config import inspect_config  # noqa: PLC0415
    from session.loader import inspect_session  # noqa: PLC0415
    from session.run_choices import role_backends  # noqa: PLC0415

    session, _ = inspect_session(folder)
    if session is None:
        return None
    config, _ = inspect_config(folder, None, known_backends=backend_names())
    return None if config is None else role_backends(session, config, None)
