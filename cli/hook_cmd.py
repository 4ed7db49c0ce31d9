"""``executor hook``: install the git hooks, and what they run (see :mod:`session.git_hooks`)."""

from __future__ import annotations

import contextlib
import os
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.markup import escape

from cli.options import SessionFolder as Session
from cli.options import command_group
from cli.options import fail as _fail
from protocol.messages import HandoffRequest
from protocol.records import TaskRow
from session.gates import DEFAULT_GATE_TIMEOUT_S, gate_commands, record_gate_failure
from session.git_hooks import HOOKS, HookError, install_hooks, named_task_ids, uninstall_hooks
from session.store import STATE_DIR, StoreError, stored_tasks, utc_now

if TYPE_CHECKING:
    from session.loader import TeamSession

__all__ = ["hook_app"]

hook_app = command_group(
    name="hook",
    help=(
        "Git hooks for a session: pre-commit runs the quality gates of the tasks in progress (a failing gate "
        "blocks the commit and writes feedback/<ID>.md); post-commit moves a claimed task named in the commit "
        "message to review. An existing hook is kept and runs first.\n\n"
        "Example: executor hook install --session work/login"
    ),
)

Repo = Annotated[
    Path | None,
    typer.Option("--repo", help="The git repository (default: the one the session folder is in).", show_default=False),
]


def _err() -> Console:
    return Console(stderr=True, highlight=False, soft_wrap=True)


@hook_app.command()
def install(session: Session, repo: Repo = None) -> None:
    """Install the pre-commit and post-commit hooks into the repository."""
    if not (session / "team-session.json").is_file():
        raise _fail(f"--session {session} is not a session folder (no team-session.json)", 2)
    try:
        changes = install_hooks(repo or session, session)
    except HookError as error:
        raise _fail(str(error), 2) from None
    out = Console(highlight=False, soft_wrap=True)
    for change in changes:
        kept = f" (your previous hook runs first: {change.kept_previous.name})" if change.kept_previous else ""
        out.print(f"installed {change.path}{kept}", markup=False)


@hook_app.command()
def uninstall(session: Session, repo: Repo = None) -> None:
    """Remove the hooks and restore the ones they replaced."""
    try:
        done = uninstall_hooks(repo or session)
    except HookError as error:
        raise _fail(str(error), 2) from None
    Console(highlight=False).print("\n".join(done) or "no team-executor hook was installed", markup=False)


@hook_app.command("run", hidden=True)
def run_hook(
    hook: Annotated[str, typer.Argument(help="pre-commit or post-commit")],
    session: Session,
    args: Annotated[list[str] | None, typer.Argument(hidden=True)] = None,
) -> None:
    """What the installed hooks call (git runs them at the top of the work tree)."""
    del args  # git passes none to these two hooks; anything else is ignored
    if hook not in HOOKS:
        raise _fail(f"unknown hook {hook!r}; choose one of: {', '.join(HOOKS)}", 2)
    rows = _tasks(session)
    if hook == "pre-commit":
        raise typer.Exit(_pre_commit(session, rows))
    _post_commit(session, rows)


def _tasks(folder: Path) -> list[TaskRow]:
    try:
        return stored_tasks(folder)
    except StoreError as error:
        _err().print(f"team-executor: {escape(str(error))}; hooks skipped")
        return []


def _pre_commit(folder: Path, rows: list[TaskRow]) -> int:
    in_progress = [row for row in rows if row.status == "in_progress"]
    if not in_progress:
        return 0
    from session.loader import inspect_session  # noqa: PLC0415

    session, problems = inspect_session(folder)
    if session is None:
        _err().print(f"team-executor: {folder} is not a valid session ({len(problems)} problem(s)); gates skipped")
        return 0
    gate_env = _configure(folder, session)
    by_command: dict[tuple[str, ...], list[str]] = {}
    timeouts: dict[tuple[str, ...], float] = {}
    for row in in_progress:
        spec = session.role_specs.get(row.owner)
        if spec is None:
            continue
        for command in gate_commands(spec.meta.verify):
            by_command.setdefault(command, []).append(row.id)
            timeouts[command] = max(timeouts.get(command, 0.0), spec.meta.verify_timeout or DEFAULT_GATE_TIMEOUT_S)
    from backends.gates import GateRun, run_gates  # noqa: PLC0415 - only a commit with tasks in progress runs gates

    # The same rules as in a run (the environment allowlist among them): a gate that passes here
    # passes there, and the agents' code the tests run sees none of the committer's keys.
    log_path = folder / STATE_DIR / "logs" / "pre-commit-gates.log"
    with contextlib.suppress(OSError):  # this commit's gates only: a log kept across commits would reach its cap
        log_path.unlink()
    for command, task_ids in by_command.items():
        how = GateRun(cwd=Path(os.getcwd()), log_path=log_path, timeout_s=timeouts[command], allow=gate_env)
        outcome = run_gates([command], how)
        if outcome.ok:
            continue
        written = [record_gate_failure(folder, task_id, outcome, utc_now(), "pre-commit") for task_id in task_ids]
        why = outcome.why or f"exit {outcome.exit_code}"
        _err().print(
            f"team-executor: the gate `{escape(outcome.command)}` failed ({escape(why)}) for "
            f"{', '.join(task_ids)}; the commit is stopped. Its output is in "
            + ", ".join(escape(str(path)) for path in written)
            + f"; all of it in {escape(str(log_path))}"
        )
        tail = outcome.output_tail.strip()
        if tail:
            _err().print(escape(tail[-2000:]), markup=True)
        return 1
    return 0


def _configure(folder: Path, session: TeamSession) -> tuple[str, ...]:
    """As a run would: ``[roles.NAME]`` fills what the role-specs leave out (``verify`` among it),
    and the gates' allowlist is the agents' plus ``[run].gate_env``."""
    from backends.registry import backend_names  # noqa: PLC0415
    from backends.sandbox import DEFAULT_ENV_ALLOW  # noqa: PLC0415
    from session.config import ConfigInvalid, apply_role_defaults, load_config  # noqa: PLC0415

    try:
        config = load_config(folder, None, known_backends=backend_names())
    except ConfigInvalid as error:
        first = next((problem for problem in error.problems if problem.severity == "error"), error.problems[0])
        _err().print(f"team-executor: the configuration is not valid, gates run without it ({escape(str(first))})")
        return DEFAULT_ENV_ALLOW
    apply_role_defaults(session, config)
    return (*DEFAULT_ENV_ALLOW, *config.run.gate_env)


def _post_commit(folder: Path, rows: list[TaskRow]) -> None:
    from cli.task_cmd import send_request  # noqa: PLC0415

    try:
        message = subprocess.run(
            ["git", "log", "-1", "--format=%H%n%B"], capture_output=True, text=True, timeout=30, check=True
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return
    sha, _, body = message.partition("\n")
    claimed = {row.id for row in rows if row.status == "in_progress" and row.agent}
    for task_id in named_task_ids(body, {row.id for row in rows}):
        if task_id not in claimed:
            continue
        try:
            send_request(folder, HandoffRequest(op="review", by=f"git:{sha[:12]}", task_id=task_id))
        except typer.Exit:
            continue  # the reason is printed; a post-commit hook never undoes the commit
        Console(stderr=True, highlight=False).print(f"team-executor: {task_id} moved to review (commit {sha[:12]})")
