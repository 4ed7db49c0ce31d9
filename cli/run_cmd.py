"""``executor run``, ``resume`` and ``mcp``: one option set, one way into a run of the session's pipeline."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from cli.options import TeamSessionOption, stderr_console
from cli.options import fail as _fail

__all__ = ["HttpOption", "mcp_command", "resume_command", "run_command"]


def _run(session: Path, command: str, http: str | None, allow_remote: bool, mcp_stdio: bool, **options: Any) -> None:
    from actors.run import run_session  # noqa: PLC0415 - keeps check/validate fast
    from actors.run_request import RunRefused, RunRequest  # noqa: PLC0415
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

        serve_unusable(session, str(error), lambda line: stderr_console().print(line, markup=False))
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
ClusterOption = Annotated[
    str | None,
    typer.Option(
        "--cluster",
        metavar="ADDRESS",
        help="Run each attempt as a Ray actor on this cluster (auto, ray://host:10001 or host:port); "
        "needs pip install 'team-executor[ray]'. Default: [cluster].address in executor.toml, else this process.",
    ),
]
ExitWhenDoneOption = Annotated[
    bool, typer.Option("--exit-when-done", help="With --http: end when the pipeline is done, as without it.")
]


def _pipeline_command(command: str, doc: str, *, mcp_stdio: bool = False) -> Callable[..., None]:
    """``run``, ``resume`` and ``mcp``: one option set, one way into the run."""

    def pipeline(
        session: TeamSessionOption,
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
        cluster: ClusterOption = None,
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
            cluster=cluster,
        )

    pipeline.__doc__ = doc
    return pipeline


run_command = _pipeline_command(
    "run",
    """Run the session's pipeline until nothing is ready and nothing runs.

    Crash-safe: every transition is in .executor/state.db first; after a kill or a
    power cut, `executor resume` carries on. Ctrl-C stops gracefully; twice, at once.
    Example: executor run --session work/login --backend demo --max-workers 4
    """,
)
resume_command = _pipeline_command(
    "resume",
    """Continue a session exactly where it stopped (after Ctrl-C, a crash or kill -9).

    Resets what was running, stops processes left over from a crashed run, writes a
    recovery report, and dispatches what is ready.
    Example: executor resume --session work/login
    """,
)
mcp_command = _pipeline_command(
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
