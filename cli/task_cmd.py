"""``executor task``: create, prepare, claim, review, complete and fail tasks by hand.

For manual agents (a role with ``backend: manual``): a person or an IDE agent
takes a task, works, and hands it on without copying and pasting.  With a run
going on, each step goes through the session's inbox and the run carries it out
at once (what waits on the task moves); with none, it is written to the store
under the session lock and the next run starts from there.  Every command first
reads back edits made in the Markdown mirror (``tasks/<status>/<ID>.md``), then
regenerates it.
"""

from __future__ import annotations

import getpass
import sys
from pathlib import Path
from typing import Annotated, Any

import msgspec
import typer
from rich.console import Console
from rich.markup import escape

from cli.options import SessionFolder as Session
from cli.options import command_group
from cli.options import fail as _fail
from protocol.messages import HandoffRequest
from protocol.records import TaskRow
from session import inbox
from session.lock import SessionBusy, SessionLock, read_holder
from session.store import Store, StoreError, stored_tasks

__all__ = ["send_request", "task_app"]

REPLY_WAIT_S = 15.0
PRIORITY = {"critical": "P0", "high": "P0", "normal": "P1", "low": "P2", "P0": "P0", "P1": "P1", "P2": "P2"}

task_app = command_group(
    name="task",
    help=(
        "Work on tasks by hand (roles with `backend: manual`): create, prep, claim, review, complete, fail; "
        "status and next show where things stand. Works with or without a run going on.\n\n"
        "Example: executor task claim QA-001 --agent alice --session work/login"
    ),
)

TaskId = Annotated[str, typer.Argument(metavar="ID", help="The task, e.g. QA-001.")]
Json = Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")]


def _out() -> Console:
    return Console(highlight=False, soft_wrap=True)


def _who() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli"


def _session_facts(folder: Path) -> tuple[dict[str, tuple[str, int | None]], tuple[str, ...]]:
    """role -> (prefix, max_attempts), and the manual roles, as a run would see them."""
    from backends.registry import backend_names  # noqa: PLC0415
    from session.config import ConfigInvalid, apply_role_defaults, load_config  # noqa: PLC0415
    from session.loader import inspect_session  # noqa: PLC0415
    from session.problems import format_problems  # noqa: PLC0415
    from session.run_choices import role_backends  # noqa: PLC0415

    session, problems = inspect_session(folder)
    if session is None:
        raise _fail(f"{folder} is not a valid session:\n{format_problems(problems)}", 1)
    try:
        config = load_config(folder, None, known_backends=backend_names())
    except ConfigInvalid as error:
        raise _fail("the configuration is not valid:\n" + format_problems(error.problems), 2) from None
    # As a run resolves them: remembered, role-spec, [roles.NAME], [run].default_backend.
    manual = [entry.role for entry in role_backends(session, config, None) if entry.backend == "manual"]
    apply_role_defaults(session, config)
    roles: dict[str, tuple[str, int | None]] = {}
    for name, entry in session.roles.items():
        spec = session.role_specs[name].meta
        roles[name] = (entry.prefix, spec.max_attempts or config.run.max_attempts)
    return roles, tuple(sorted(manual))


def send_request(folder: Path, request: HandoffRequest) -> TaskRow:
    """Carry out ``request``: through the live run's inbox, or on the store under the lock."""
    payload = msgspec.to_builtins(request)
    if read_holder(folder) is not None:
        name = inbox.post(folder, {"kind": "task", "request": payload, "by": request.by})
        reply = inbox.wait_reply(folder, name, REPLY_WAIT_S)
        if reply is None:
            raise _fail(
                f"the running executor did not take the request within {REPLY_WAIT_S:g}s; it stays in "
                f"{inbox.inbox_dir(folder)} and is carried out when the run reads it"
            )
        if not reply.get("ok"):
            raise _fail(str(reply.get("message", "refused")))
        return msgspec.convert(reply["task"], TaskRow)
    from session.handoff import HandoffRefused, apply_handoff  # noqa: PLC0415

    roles, manual = _session_facts(folder)
    extra: dict[str, Any] = {"manual_roles": manual}
    if request.op == "claim":
        from session.agents import AgentsFileError, capabilities_of  # noqa: PLC0415

        try:
            declared = capabilities_of(folder, request.agent)
        except AgentsFileError as error:
            raise _fail(str(error), 2) from None
        extra["agent_capabilities"] = tuple(sorted(declared)) if declared is not None else None
    if request.op == "create":
        if request.role not in roles:
            raise _fail(
                f"--role {request.role!r} is not a role of this session; use one of: {', '.join(sorted(roles))}", 2
            )
        prefix, max_attempts = roles[request.role]
        extra |= {"prefix": prefix, "max_attempts": max_attempts or 3}
    lock = SessionLock(folder)
    try:
        lock.acquire("task")
    except SessionBusy as error:
        raise _fail(str(error)) from None
    try:
        store = Store.open(folder)
    except StoreError as error:
        lock.release()
        raise _fail(str(error)) from None
    try:
        result = apply_handoff(store, msgspec.structs.replace(request, **extra))
    finally:
        store.close()
        lock.release()
    if isinstance(result, HandoffRefused):
        hint = (
            "" if store_has_tasks(folder) else " (this session has not run yet: tasks enter the store at its first run)"
        )
        raise _fail(result.reason + hint)
    return result


def store_has_tasks(folder: Path) -> bool:
    try:
        return bool(stored_tasks(folder))
    except StoreError:
        return False


def _mirror(folder: Path) -> None:
    """Regenerate the Markdown mirror (a failure here never fails the command: the store is the truth)."""
    from session.task_mirror import sync_mirror  # noqa: PLC0415

    try:
        sync_mirror(folder)
    except (OSError, StoreError) as error:
        Console(stderr=True).print(f"! could not update the task mirror: {escape(str(error))}")


def _read_back_edits(folder: Path, by: str) -> None:
    """Edits people made to the mirror's free-text sections become prep requests first."""
    from session.task_mirror import read_edits  # noqa: PLC0415

    try:
        rows = stored_tasks(folder)
    except StoreError:
        return
    edits = read_edits(folder, rows)
    for task_id, details in edits.items():
        changes = msgspec.to_builtins(details)
        changes.pop("capabilities", None)
        send_request(folder, HandoffRequest(op="prep", by=f"{by} (mirror edit)", task_id=task_id, details=changes))
        _out().print(f"read back your edits to tasks/…/{task_id}.md", markup=False)


def _step(folder: Path, request: HandoffRequest) -> TaskRow:
    if not folder.is_dir():
        raise _fail(f"--session {folder} is not a folder", 2)
    _read_back_edits(folder, request.by)
    row = send_request(folder, request)
    _mirror(folder)
    return row


def _print_row(row: TaskRow, as_json: bool, said: str) -> None:
    if as_json:
        sys.stdout.write(msgspec.json.encode(row).decode() + "\n")
        return
    agent = f", agent {row.agent}" if row.agent else ""
    _out().print(f"{row.id} {said}: {row.status}{agent} — {row.subject}", markup=False)


@task_app.command()
def create(
    title: Annotated[str, typer.Argument(help="A one-line title.")],
    session: Session,
    role: Annotated[str, typer.Option("--role", help="The role whose task it is (e.g. a manual role).")],
    priority: Annotated[str, typer.Option("--priority", help="P0 | P1 | P2 (or critical/high/normal/low).")] = "P1",
    blocked_by: Annotated[
        list[str] | None, typer.Option("--blocked-by", help="A task that must complete first; repeatable.")
    ] = None,
    description: Annotated[str, typer.Option("--description", help="What it asks for.")] = "",
    json: Json = False,
) -> None:
    """Create a task. Example: executor task create "Review the login copy" --role qa --session work/login"""
    if priority not in PRIORITY:
        raise _fail(f"--priority {priority!r}: use P0, P1, P2 (or critical, high, normal, low)", 2)
    request = HandoffRequest(
        op="create",
        by=_who(),
        title=title,
        role=role,
        priority=PRIORITY[priority],  # type: ignore[arg-type]
        blocked_by=tuple(blocked_by or ()),
        description=description,
    )
    _print_row(_step(session, request), json, "created")


@task_app.command()
def prep(
    task_id: TaskId,
    session: Session,
    goal: Annotated[str | None, typer.Option("--goal", help="What done looks like, in a sentence or two.")] = None,
    accept: Annotated[list[str] | None, typer.Option("--accept", help="An acceptance criterion; repeatable.")] = None,
    ready: Annotated[list[str] | None, typer.Option("--ready", help="A definition-of-ready item; repeatable.")] = None,
    done: Annotated[list[str] | None, typer.Option("--done", help="A definition-of-done item; repeatable.")] = None,
    file: Annotated[list[str] | None, typer.Option("--file", help="A file it will change; repeatable.")] = None,
    notes: Annotated[str | None, typer.Option("--notes", help="Implementation notes.")] = None,
    needs: Annotated[
        list[str] | None, typer.Option("--needs", help="A capability an agent needs to take it; repeatable.")
    ] = None,
    json: Json = False,
) -> None:
    """Prepare a task for handoff: goal, acceptance criteria, definitions of ready and done, files, notes."""
    changes: dict[str, Any] = {
        key: value
        for key, value in (
            ("goal", goal),
            ("acceptance_criteria", accept),
            ("definition_of_ready", ready),
            ("definition_of_done", done),
            ("files_affected", file),
            ("implementation_notes", notes),
            ("capabilities", needs),
        )
        if value is not None
    }
    if not changes:
        raise _fail("prep: give at least one of --goal, --accept, --ready, --done, --file, --notes, --needs", 2)
    _print_row(_step(session, HandoffRequest(op="prep", by=_who(), task_id=task_id, details=changes)), json, "prepared")


@task_app.command()
def claim(
    task_id: TaskId,
    session: Session,
    agent: Annotated[str, typer.Option("--agent", help="Who takes it (you, or your IDE agent's name).")],
    json: Json = False,
) -> None:
    """Take a ready task of a manual role: it is yours (in progress) until you hand it on."""
    request = HandoffRequest(op="claim", by=_who(), task_id=task_id, agent=agent)
    _print_row(_step(session, request), json, "claimed")


@task_app.command()
def review(task_id: TaskId, session: Session, json: Json = False) -> None:
    """Hand a claimed task in for review (what depends on it still waits)."""
    _print_row(_step(session, HandoffRequest(op="review", by=_who(), task_id=task_id)), json, "handed in")


@task_app.command()
def complete(task_id: TaskId, session: Session, json: Json = False) -> None:
    """Mark a claimed task done: what waited on it goes on."""
    _print_row(_step(session, HandoffRequest(op="complete", by=_who(), task_id=task_id)), json, "completed")


@task_app.command("fail")
def fail_command(
    task_id: TaskId,
    session: Session,
    reason: Annotated[str, typer.Option("--reason", help="Why it failed (kept with the task).")],
    json: Json = False,
) -> None:
    """Mark a claimed task failed, with the reason; what depends on it stays blocked."""
    _print_row(_step(session, HandoffRequest(op="fail", by=_who(), task_id=task_id, reason=reason)), json, "failed")


@task_app.command()
def release(
    task_id: TaskId,
    session: Session,
    reason: Annotated[str, typer.Option("--reason", help="Why you give it up (kept with the task).")] = "",
    json: Json = False,
) -> None:
    """Give a claimed task back: it is ready again, for anyone to claim."""
    request = HandoffRequest(op="release", by=_who(), task_id=task_id, reason=reason)
    _print_row(_step(session, request), json, "released")


@task_app.command()
def status(
    session: Session,
    task_id: Annotated[str | None, typer.Argument(metavar="[ID]", help="One task in full.")] = None,
    json: Json = False,
) -> None:
    """Every task with its status (pending, ready, in_progress, review, completed, failed), or one in full."""
    from cli.task_views import show_status  # noqa: PLC0415

    _read_back_edits(session, _who())
    _mirror(session)
    raise typer.Exit(show_status(session, task_id, json, _out()))


@task_app.command("next")
def next_task(
    session: Session,
    agent: Annotated[str, typer.Option("--agent", help="Who asks.")],
    json: Json = False,
) -> None:
    """The next task this agent should do, and why (its own claimed work first, then the best ready one)."""
    from cli.task_views import show_next  # noqa: PLC0415

    roles_manual = _session_facts(session)[1] if session.is_dir() else ()
    raise typer.Exit(show_next(session, agent, roles_manual, json, _out()))
