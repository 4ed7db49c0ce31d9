"""The ``executor`` command line: a thin layer over the library.

Commands parse arguments, call ``session``/``actors``, and turn their named
exceptions into one clear message and an exit code.  Exit codes: 0 success,
1 the session (or run) is not in a good state, 2 usage error.
"""

from __future__ import annotations

import atexit
import contextlib
import copy
import functools
import importlib
import os
import sys
import threading
from pathlib import Path
from typing import Annotated, Any, NoReturn

import msgspec
import typer
from rich.markup import escape

from cli.options import JsonOpt, TeamSessionOption, command_group, existing_session, stderr_console, stdout_console
from cli.options import fail as _fail
from cli.render import render_check
from cli.run_cmd import HttpOption, mcp_command, resume_command, run_command
from session.store import StoreError

__all__ = ["main"]  # and `app`, made on first use (`__getattr__`)

# The group, its callback and the commands defined in this module; `app` (the whole command line,
# every module's commands) is made on first use: see `__getattr__` and `only_command`.
_app = command_group(
    name="executor",
    help="Run a team of AI coding agents as a supervised, crash-safe pipeline.",
)


def _version_flag(value: bool) -> None:
    if value:
        from importlib.metadata import version  # noqa: PLC0415

        stdout_console().print(f"executor (team-executor) {version('team-executor')}", markup=False)
        raise typer.Exit(0)


@_app.callback()
def _options(
    version: Annotated[
        bool, typer.Option("--version", is_eager=True, callback=_version_flag, help="Print the version and exit.")
    ] = False,
) -> None:
    """Run a team of AI coding agents as a supervised, crash-safe pipeline.

    Exit codes: 0 success; 1 the session is missing or invalid, or the run ended with
    failed tasks; 2 a usage error (a bad argument, an unknown backend or playbook).
    """
    del version  # handled by its callback


# Command groups and commands that live in modules of their own, by name: a module is imported
# only for its command (or for the whole app: `executor`, `--help`, a name that is no command).
# `executor check`, which agents call in loops, then skips the backup, cluster, doctor... modules.
_GROUPS: tuple[tuple[str, str, str], ...] = (
    ("config", "cli.config_cmd", "config_app"),
    ("keys", "cli.keys_cmd", "keys_app"),
    ("task", "cli.task_cmd", "task_app"),
    ("hook", "cli.hook_cmd", "hook_app"),
    ("cluster", "cli.cluster_cmd", "cluster_app"),
)
_COMMANDS: tuple[tuple[str, str, str], ...] = (
    ("models", "cli.models_cmd", "models"),
    ("doctor", "cli.doctor_cmd", "doctor"),
    ("diff", "cli.diff_cmd", "diff_command"),
    ("logs", "cli.logs_cmd", "logs_command"),
    ("rollback", "cli.rollback_cmd", "rollback_command"),
    ("backup", "cli.backup_cmd", "backup_command"),
    ("restore", "cli.backup_cmd", "restore_command"),
    ("validate", "cli.check_cmd", "validate"),
    ("check", "cli.check_cmd", "check"),
    ("init", "cli.init_cmd", "init"),
)


def _group_info(name: str, module: str, attribute: str) -> typer.models.TyperInfo:
    scratch = typer.Typer()
    scratch.add_typer(getattr(importlib.import_module(module), attribute), name=name)
    return scratch.registered_groups[0]


def _command_info(name: str, module: str, attribute: str) -> typer.models.CommandInfo:
    scratch = typer.Typer()
    scratch.command(name)(getattr(importlib.import_module(module), attribute))
    return scratch.registered_commands[0]


_app.command("run")(run_command)
_app.command("resume")(resume_command)
_app.command("mcp")(mcp_command)


@_app.command()
def watch(
    session: TeamSessionOption,
    interval: Annotated[float, typer.Option("--interval", min=0.2, help="Seconds between frames.")] = 1.0,
    once: Annotated[bool, typer.Option("--once", help="Print one frame and exit.")] = False,
    json: Annotated[
        bool,
        typer.Option("--json", help="One JSON object per frame (the check report, events, questions), a line each."),
    ] = False,
) -> None:
    """A live view of a session: progress, running workers, failures, questions, keys, latest events.

    Read-only and lock-free: run it in another terminal while `executor run` works. Ctrl-C ends it.
    Piped, it prints plain lines: the state whenever it changes and each new event.
    Exit code 0, or 1 when the folder is not a valid session.
    Example: executor watch --session work/login
    """
    from cli.watch_cmd import watch as watch_session  # noqa: PLC0415

    try:
        code = watch_session(session, interval, once, stdout_console(), as_json=json)
    except StoreError as error:
        raise _fail(str(error)) from None
    raise typer.Exit(code)


@_app.command()
def answer(
    session: TeamSessionOption,
    escalation_id: Annotated[str | None, typer.Argument(metavar="ID", help="The question, e.g. ESC-001.")] = None,
    choice: Annotated[str | None, typer.Argument(help="One of its options.")] = None,
    json: JsonOpt = False,
) -> None:
    """Answer a question the pipeline asked you; without ID, list the open ones.

    Works while a run goes on (it takes the answer within a second) and when none does
    (the next run finds it answered). Only the tasks waiting on the question move.
    Example: executor answer ESC-001 approve --session work/login
    """
    from cli.answer_cmd import answer_question, list_questions  # noqa: PLC0415

    existing_session(session)
    if escalation_id is None:
        raise typer.Exit(list_questions(session, json, stdout_console()))
    if choice is None:
        raise _fail(f"answer {escalation_id}: give the choice too, e.g. `executor answer {escalation_id} yes`", 2)
    code, message = answer_question(session, escalation_id, choice)
    if code != 0:
        raise _fail(message, code)
    stdout_console().print(message, markup=False)


@_app.command()
def panic(
    state: Annotated[str, typer.Argument(help="on: refuse every mutating MCP tool; off: allow them again.")],
    session: TeamSessionOption,
) -> None:
    """The panic switch: while on, every mutating MCP tool of this session is refused; reads keep working.

    Takes effect at once, also for a run already going on in another process.
    Example: executor panic on --session work/login
    """
    from bridge import panic as switch  # noqa: PLC0415

    if state not in ("on", "off"):
        raise _fail(f"panic {state!r}: say `on` or `off`", 2)
    if not (session / ".executor").is_dir() and not (session / "team-session.json").is_file():
        raise _fail(f"--session {session} is not a session folder (no team-session.json)", 1)
    changed = switch.switch(session, state == "on", by="cli")
    note = "" if changed else " (it already was)"
    stdout_console().print(
        f"panic is {state}{note}: mutating MCP tools are {'refused' if state == 'on' else 'allowed'}"
    )


@_app.command()
def probe(json: JsonOpt = False) -> None:
    """Show which agent CLIs are installed, their versions, whether a key is set, and flag support.

    Keys are never printed: only which variable (or login file) provides one.
    Example: executor probe --json
    """
    from backends.probe import probe as run_probe  # noqa: PLC0415 - spawns the CLIs; only this command needs it
    from backends.registry import agent_backends  # noqa: PLC0415

    rows = run_probe(agent_backends())
    if json:
        sys.stdout.write(msgspec.json.encode(rows).decode() + "\n")
        raise typer.Exit(0)
    from rich.table import Table  # noqa: PLC0415

    table = Table("backend", "installed", "version", "key", "flags", "notes", box=None, pad_edge=False)
    for row in rows:
        flags = f"{sum(row.flags.values())}/{len(row.flags)}" if row.flags else "-"
        table.add_row(
            row.backend,
            row.path or "no",
            row.version or "-",
            ", ".join(row.credential_sources) or "missing",
            flags,
            row.problem or "ok",
        )
    stdout_console().print(table)


@_app.command()
def demo(
    into: Annotated[
        Path | None, typer.Option("--into", help="Folder for the demo's git project (default: ./demo-run/textkit-N).")
    ] = None,
    http: HttpOption = None,
    pace: Annotated[
        float | None,
        typer.Option("--pace", min=0, max=600, help="Seconds each demo task takes, to watch it (default: instant)."),
    ] = None,
) -> None:
    """Make a tiny git project and let a demo team change it: no key, no network.

    pm -> coder -> reviewer on the deterministic demo agent: the coder's first draft fails the
    project's tests (the quality gate), it fixes that, the review asks for one change, the
    coder makes it, the review passes. The end shows the diff and where to look.
    Example: executor demo            (or, to watch it in a browser: executor demo --http 8765 --pace 2)
    """
    from backends.conventions import ENV_DEMO_PACE  # noqa: PLC0415
    from cli.demo_cmd import DemoRefused, prepare_demo, print_story_end, print_story_start  # noqa: PLC0415

    try:
        setup = prepare_demo(into)
    except DemoRefused as error:
        raise _fail(str(error), 2) from None
    if setup.note:
        stderr_console().print(f"note: {escape(setup.note)}")
    print_story_start(stdout_console(), setup, paced=bool(pace))
    if pace:
        os.environ[ENV_DEMO_PACE] = f"{pace:g}"  # read by the demo backend when it starts each agent
    try:
        from actors.run import run_session  # noqa: PLC0415
        from actors.run_request import RunRefused, RunRequest  # noqa: PLC0415
        from cli.bridge_opener import bridge_opener  # noqa: PLC0415

        bridge = bridge_opener(http, allow_remote=False, stdio=False)
        backoff = max(0.2, pace or 0)  # the gate's retry comes at once, or at the watcher's pace
        request = RunRequest(
            session_dir=setup.session, command="run", interactive=False, bridge=bridge, retry_backoff_s=backoff
        )
        code = run_session(request)
    except RunRefused as error:
        raise _fail(str(error), error.exit_code) from None
    from session.report import build_report  # noqa: PLC0415 - the session loader: keeps `executor --help` fast

    report = build_report(setup.session)
    render_check(stdout_console(), report)
    print_story_end(stdout_console(), setup, report)
    raise typer.Exit(code)


def _command_name(info: typer.models.CommandInfo) -> str | None:
    if info.name:
        return info.name
    return info.callback.__name__.replace("_", "-") if info.callback is not None else None


def only_command(argv: list[str]) -> typer.Typer:
    """``app`` narrowed to the command ``argv`` names, when it names one.

    Typer builds every command's options from its signature (type hints included) before it
    looks at the arguments: 35 commands cost ~0.1 s at each start, which ``executor check``
    paid on every call; and each command's module costs its imports.  The narrowed app keeps
    the group's callback and settings and imports only that command's module, so the command
    parses, helps and fails exactly as it does in the whole app; anything else (no command, an
    option first, a name that is not a command) gets the whole app.
    """
    name = argv[1] if len(argv) > 1 else ""
    groups = [_group_info(*entry) for entry in _GROUPS if entry[0] == name]
    commands = [_command_info(*entry) for entry in _COMMANDS if entry[0] == name]
    commands += [info for info in _app.registered_commands if _command_name(info) == name]
    if not commands and not groups:
        return _whole_app()
    narrowed = copy.copy(_app)
    narrowed.registered_commands = commands
    narrowed.registered_groups = groups
    return narrowed


@functools.cache
def _whole_app() -> typer.Typer:
    """Every command, in the order `executor --help` lists them."""
    whole = copy.copy(_app)
    whole.registered_groups = [_group_info(*entry) for entry in _GROUPS]
    listed = [_command_info(*entry) for entry in _COMMANDS]
    # Then run, resume and mcp, then the commands defined in this module: registered on `_app` in that order.
    whole.registered_commands = [*listed, *_app.registered_commands]
    return whole


def __getattr__(name: str) -> Any:
    if name == "app":
        return _whole_app()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def main() -> None:
    """Console-script entry point."""
    try:
        only_command(sys.argv)()
    except SystemExit as done:
        _leave(done.code)
    except KeyboardInterrupt:
        stderr_console().print("interrupted")
        _leave(130)
    except Exception as error:
        if os.environ.get("EXECUTOR_DEBUG"):
            raise
        stderr_console().print(
            f"[red]internal error:[/] {type(error).__name__}: {error}\n"
            "This is a bug in team-executor; run again with EXECUTOR_DEBUG=1 for the traceback and report it."
        )
        _leave(70)
    _leave(0)


def _leave(code: str | int | None) -> NoReturn:
    """Exit with ``code`` (as ``sys.exit`` reads it) without the interpreter's teardown.

    Tearing down every module and object takes ~0.2 s after a 1,000-task run (and something
    on every command an agent calls): nothing of ours waits on it.  What must happen at exit
    still does: the ``atexit`` handlers (logging's flush and close, ``weakref.finalize``, our
    cgroup and watcher cleanups) and the standard streams' buffers.  While a thread that is
    not a daemon still runs, the ordinary exit waits for it, as it always did.
    """
    if any(thread is not threading.main_thread() and not thread.daemon for thread in threading.enumerate()):
        sys.exit(code)
    if code is None:
        status = 0
    elif isinstance(code, int):
        status = code
    else:  # sys.exit("message"): the message goes to stderr, the status is 1
        print(code, file=sys.stderr)
        status = 1
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # the reader went away, or the stream was closed
            stream.flush()
    os._exit(status & 0xFF)


if __name__ == "__main__":  # `python -m cli.main`: what a git hook runs where the console script is missing
    main()
