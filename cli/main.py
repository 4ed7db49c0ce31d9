"""The ``executor`` command line: a thin layer over the library.

Commands parse arguments, call ``session``/``actors``, and turn their named
exceptions into one clear message and an exit code.  Exit codes: 0 success,
1 the session (or run) is not in a good state, 2 usage error.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import msgspec
import typer
from rich.console import Console
from rich.markup import escape

from cli.backup_cmd import backup_command, restore_command
from cli.config_cmd import config_app
from cli.diff_cmd import diff_command
from cli.doctor_cmd import doctor as doctor_command
from cli.hook_cmd import hook_app
from cli.keys_cmd import keys_app
from cli.logs_cmd import logs_command
from cli.models_cmd import models as models_command
from cli.options import command_group, role_backends_of
from cli.options import fail as _fail
from cli.render import next_line, render_check, render_problems
from cli.rollback_cmd import rollback_command
from cli.task_cmd import task_app
from session.loader import inspect_session
from session.report import build_report
from session.store import StoreError

__all__ = ["app", "main"]

app = command_group(
    name="executor",
    help="Run a team of AI coding agents as a supervised, crash-safe pipeline.",
)


def _version_flag(value: bool) -> None:
    if value:
        from importlib.metadata import version  # noqa: PLC0415

        _stdout().print(f"executor (team-executor) {version('team-executor')}", markup=False)
        raise typer.Exit(0)


@app.callback()
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


app.add_typer(config_app, name="config")
app.add_typer(keys_app, name="keys")
app.add_typer(task_app, name="task")
app.add_typer(hook_app, name="hook")
app.command("models")(models_command)
app.command("doctor")(doctor_command)
app.command("diff")(diff_command)
app.command("logs")(logs_command)
app.command("rollback")(rollback_command)
app.command("backup")(backup_command)
app.command("restore")(restore_command)

SessionOption = Annotated[
    Path,
    typer.Option("--session", "-s", help="The team session folder (it holds team-session.json).", show_default=False),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print one JSON object instead of text.")]


def _stdout() -> Console:
    return Console(highlight=False, soft_wrap=True)


def _stderr() -> Console:
    return Console(stderr=True, highlight=False, soft_wrap=True)


@app.command()
def validate(session: SessionOption, json: JsonOption = False) -> None:
    """Check a session folder and list every problem, each with its file, field and fix.

    Example: executor validate --session work/login   (an upstream one: .workflow/.team/TC-auth-2026-02-27)

    Exit code 0 when valid, 1 when not.
    """
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
    Exit code 0, or 1 when the folder is not a valid session.
    Example: executor check --session work/login --json
    """
    try:
        report = build_report(session, role_backends_of(session))
    except StoreError as error:
        raise _fail(str(error)) from None
    if json:
        from session.redaction import redact, register_environment  # noqa: PLC0415 - keeps `executor --help` fast

        register_environment(os.environ)  # the keys this shell holds; stored text was redacted when written
        sys.stdout.write(redact(msgspec.json.encode(report).decode()) + "\n")
    else:
        render_check(_stdout(), report, full=full)
    raise typer.Exit(0 if report.valid else 1)


def _print_playbooks() -> None:
    from session.playbooks import describe_playbooks  # noqa: PLC0415 - only init needs it

    console = _stdout()
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


@app.command()
def init(
    session: SessionOption,
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
    from backends.registry import backend_names  # noqa: PLC0415 - loads every backend
    from session.playbooks import DEFAULT_PLAYBOOK, InitError, find_playbook  # noqa: PLC0415 - only init needs it
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
    console = _stdout()
    console.print(f"created {session_id} in {session} (playbook {chosen.name})")
    console.print(next_line(build_report(session, role_backends_of(session))), markup=False)


def _run(session: Path, command: str, http: str | None, allow_remote: bool, mcp_stdio: bool, **options: Any) -> None:
    from actors.run import RunRefused, RunRequest, run_session  # noqa: PLC0415 - keeps check/validate fast
    from cli.bridge_opener import bridge_opener  # noqa: PLC0415

    try:
        bridge = bridge_opener(http, allow_remote, stdio=mcp_stdio)
        request = RunRequest(session_dir=session, command=command, bridge=bridge, mcp_stdio=mcp_stdio, **options)
        code = run_session(request)
    except RunRefused as error:
        if not mcp_stdio:
            raise _fail(str(error), error.exit_code) from None
        # An MCP client sees only "connection closed" when its server exits: serve the reads
        # and answers anyway, and let the other tools carry the reason.
        from bridge.standby import serve_unusable  # noqa: PLC0415

        serve_unusable(session, str(error), lambda line: _stderr().print(line, markup=False))
        code = error.exit_code
    raise typer.Exit(code)


ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config", help="A config TOML file on top of the user's and the session's (see `executor config check`)."
    ),
]
BackendOption = Annotated[
    str | None,
    typer.Option(
        "--backend",
        help="Backend for every role (e.g. demo), over the role-specs; remembered in the session's executor.toml "
        "for the next run, resume and mcp.",
    ),
]
MaxWorkersOption = Annotated[
    int | None,
    typer.Option(
        "--max-workers",
        min=1,
        help="Workers running at once. Agents mostly wait on the network, so more than the core count is fine.",
    ),
]
WorkdirOption = Annotated[
    Path | None,
    typer.Option("--workdir", help="Where agents work; must be inside the project (default: its git root)."),
]
JsonEventsOption = Annotated[bool, typer.Option("--json-events", help="Stream every event as a JSON line on stdout.")]
ExportOption = Annotated[
    Path | None, typer.Option("--export", help="When complete, copy artifacts/ here, then archive the session.")
]
TimeoutOption = Annotated[
    float | None, typer.Option("--task-timeout", min=0.001, help="Seconds one attempt may run (role-spec `timeout`).")
]
HangOption = Annotated[
    float | None,
    typer.Option("--hang-timeout", min=0.001, help="Seconds without output before an attempt counts as hung."),
]
AttemptsOption = Annotated[
    int | None, typer.Option("--max-attempts", min=1, help="Attempts per task before it fails (default 3).")
]
GraceOption = Annotated[
    float | None,
    typer.Option("--shutdown-grace", min=0, help="Seconds running workers get to finish on Ctrl-C/SIGTERM."),
]
BackoffOption = Annotated[
    float | None, typer.Option("--retry-backoff", min=0, help="First retry delay in seconds (doubles each time).")
]
HttpOption = Annotated[
    str | None,
    typer.Option(
        "--http",
        "--mcp-http",
        metavar="[HOST:]PORT",
        help="Serve the dashboard at /, the JSON API at /api (schema: /openapi.json), /healthz, /metrics and the "
        "MCP bridge at /mcp (127.0.0.1 unless HOST is given; the owner token from your config folder is required). "
        "The run then keeps serving when the pipeline is done.",
    ),
]
AllowRemoteOption = Annotated[
    bool,
    typer.Option(
        "--allow-remote",
        "--mcp-allow-remote",
        help="Let --http listen on a non-loopback address (the token is still required).",
    ),
]
RetryFailedOption = Annotated[
    bool, typer.Option("--retry-failed", help="Start the failed tasks again, with fresh attempts.")
]
ExitWhenDoneOption = Annotated[
    bool, typer.Option("--exit-when-done", help="With --http: end when the pipeline is done, as without it.")
]


def _pipeline_command(command: str, doc: str, *, mcp_stdio: bool = False) -> Callable[..., None]:
    """``run``, ``resume`` and ``mcp``: one option set, one way into the run."""

    def pipeline(
        session: SessionOption,
        backend: BackendOption = None,
        config: ConfigOption = None,
        max_workers: MaxWorkersOption = None,
        workdir: WorkdirOption = None,
        json_events: JsonEventsOption = False,
        export: ExportOption = None,
        task_timeout: TimeoutOption = None,
        hang_timeout: HangOption = None,
        max_attempts: AttemptsOption = None,
        shutdown_grace: GraceOption = None,
        retry_backoff: BackoffOption = None,
        http: HttpOption = None,
        allow_remote: AllowRemoteOption = False,
        exit_when_done: ExitWhenDoneOption = False,
        retry_failed: RetryFailedOption = False,
    ) -> None:
        _run(
            session,
            command,
            http=http,
            allow_remote=allow_remote,
            mcp_stdio=mcp_stdio,
            backend=backend,
            config_file=config,
            max_workers=max_workers,
            workdir=workdir,
            json_events=json_events,
            export_dir=export,
            task_timeout_s=task_timeout,
            hang_timeout_s=hang_timeout,
            max_attempts=max_attempts,
            shutdown_grace_s=shutdown_grace,
            retry_backoff_s=retry_backoff,
            exit_when_done=exit_when_done,
            retry_failed=retry_failed,
        )

    pipeline.__doc__ = doc
    return pipeline


app.command("run")(
    _pipeline_command(
        "run",
        """Run the session's pipeline until nothing is ready and nothing runs.

    Crash-safe: every transition is in .executor/state.db first; after a kill or a
    power cut, `executor resume` carries on. Ctrl-C stops gracefully; twice, at once.
    Example: executor run --session work/login --backend demo --max-workers 4
    """,
    )
)
app.command("resume")(
    _pipeline_command(
        "resume",
        """Continue a session exactly where it stopped (after Ctrl-C, a crash or kill -9).

    Resets what was running, stops processes left over from a crashed run, writes a
    recovery report, and dispatches what is ready.
    Example: executor resume --session work/login
    """,
    )
)
app.command("mcp")(
    _pipeline_command(
        "resume",
        """Serve the MCP bridge on stdin/stdout, running the session's tree in this process.

    For MCP clients that launch their servers (desktop assistants, IDE agents). Resumes the
    session, dispatches what is ready, and serves until the client disconnects. Workers that
    speak MCP reach the same bridge over a loopback HTTP port. Logs go to stderr.
    A session that cannot run (no backend, a CLI or key missing) is still served: reads and
    answers work, get_fleet_status lists the problems, the other tools say what to fix.
    Example (client config): {"command": "executor", "args": ["mcp", "--session", "/work/login"]}
    """,
        mcp_stdio=True,
    )
)


@app.command()
def watch(
    session: SessionOption,
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
        code = watch_session(session, interval, once, _stdout(), as_json=json)
    except StoreError as error:
        raise _fail(str(error)) from None
    raise typer.Exit(code)


@app.command()
def answer(
    session: SessionOption,
    escalation_id: Annotated[str | None, typer.Argument(metavar="ID", help="The question, e.g. ESC-001.")] = None,
    choice: Annotated[str | None, typer.Argument(help="One of its options.")] = None,
    json: JsonOption = False,
) -> None:
    """Answer a question the pipeline asked you; without ID, list the open ones.

    Works while a run goes on (it takes the answer within a second) and when none does
    (the next run finds it answered). Only the tasks waiting on the question move.
    Example: executor answer ESC-001 approve --session work/login
    """
    from cli.answer_cmd import answer_question, list_questions  # noqa: PLC0415
    from cli.options import existing_session  # noqa: PLC0415

    existing_session(session)
    if escalation_id is None:
        raise typer.Exit(list_questions(session, json, _stdout()))
    if choice is None:
        raise _fail(f"answer {escalation_id}: give the choice too, e.g. `executor answer {escalation_id} yes`", 2)
    code, message = answer_question(session, escalation_id, choice)
    if code != 0:
        raise _fail(message, code)
    _stdout().print(message, markup=False)


@app.command()
def panic(
    state: Annotated[str, typer.Argument(help="on: refuse every mutating MCP tool; off: allow them again.")],
    session: SessionOption,
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
    _stdout().print(f"panic is {state}{note}: mutating MCP tools are {'refused' if state == 'on' else 'allowed'}")


@app.command()
def probe(json: JsonOption = False) -> None:
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
    _stdout().print(table)


@app.command()
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
        _stderr().print(f"note: {escape(setup.note)}")
    print_story_start(_stdout(), setup, paced=bool(pace))
    if pace:
        os.environ[ENV_DEMO_PACE] = f"{pace:g}"  # read by the demo backend when it starts each agent
    try:
        from actors.run import RunRefused, RunRequest, run_session  # noqa: PLC0415
        from cli.bridge_opener import bridge_opener  # noqa: PLC0415

        bridge = bridge_opener(http, allow_remote=False, stdio=False)
        backoff = max(0.2, pace or 0)  # the gate's retry comes at once, or at the watcher's pace
        request = RunRequest(
            session_dir=setup.session, command="run", interactive=False, bridge=bridge, retry_backoff_s=backoff
        )
        code = run_session(request)
    except RunRefused as error:
        raise _fail(str(error), error.exit_code) from None
    report = build_report(setup.session)
    render_check(_stdout(), report)
    print_story_end(_stdout(), setup, report)
    raise typer.Exit(code)


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
