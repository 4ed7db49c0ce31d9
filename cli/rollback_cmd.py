"""``executor rollback TASK``: put back the files a task changed, and set the task back to pending or cancelled.

With a run going on the store change goes through the run's inbox (the run
refuses a task that started meanwhile); with none, everything happens under the
session lock, and ``team-session.json`` no longer lists the task as completed.
"""

from __future__ import annotations

import getpass
import sys
from pathlib import Path
from typing import Annotated, Literal

import msgspec
import typer
from rich.console import Console

from cli.task_args import SessionOption, TaskArgument, fail, session_folder, task_argument
from protocol.messages import HandoffRequest
from protocol.records import TaskRow
from session import inbox
from session.git_trees import GitTreeError
from session.lock import SessionBusy, SessionLock, read_holder
from session.rollback import (
    RollbackBlocked,
    prepare,
    record_in_store,
    restore,
    rollback_requests,
    undo_restore,
)
from session.store import StoreError
from session.task_changes import RollbackPlan

__all__ = ["rollback_command"]

REPLY_WAIT_S = 15.0


def _who() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli"


def _refused(plan: RollbackPlan, recorded: list[TaskRow], why: str) -> typer.Exit:
    """The store would not take it: put the files back as they were, unless a task's rollback is already recorded."""
    if recorded:
        done = ", ".join(row.id for row in recorded)
        return fail(f"the files are restored and {done} rolled back, but then: {why}")
    try:
        undo_restore(plan)
    except (GitTreeError, OSError) as error:
        return fail(f"{why}; and putting the files back failed ({error}): see `executor diff` for what they were")
    return fail(f"{why}; the files are as they were")


def _through_run(folder: Path, plan: RollbackPlan, requests: list[HandoffRequest]) -> list[TaskRow]:
    rows: list[TaskRow] = []
    for request in requests:
        name = inbox.post(folder, {"kind": "task", "request": msgspec.to_builtins(request), "by": request.by})
        reply = inbox.wait_reply(folder, name, REPLY_WAIT_S)
        if reply is None:
            raise fail(
                f"the files are restored, but the running executor did not take the rollback of {request.task_id} "
                f"within {REPLY_WAIT_S:g}s; it stays in {inbox.inbox_dir(folder)} and is recorded when the run reads it"
            )
        if not reply.get("ok"):
            raise _refused(plan, rows, f"the run refused to record the rollback: {reply.get('message', 'refused')}")
        rows.append(msgspec.convert(reply["task"], TaskRow))
    return rows


def _in_store(folder: Path, plan: RollbackPlan, requests: list[HandoffRequest]) -> list[TaskRow]:
    rows, refusal = record_in_store(folder, requests)
    if refusal is not None:
        raise _refused(plan, rows, f"the store refused to record the rollback: {refusal}")
    return rows


def _cascade(value: list[str] | None) -> tuple[str, ...]:
    names = tuple(dict.fromkeys(name.strip() for item in value or () for name in item.split(",") if name.strip()))
    for name in names:
        task_argument(name)
    return names


def rollback_command(
    task_id: TaskArgument,
    session: SessionOption,
    cascade: Annotated[
        list[str] | None,
        typer.Option(
            "--cascade",
            metavar="TASK[,TASK]",
            help="Later tasks that changed the same files: roll them back too (repeatable or comma-separated).",
        ),
    ] = None,
    to: Annotated[
        str, typer.Option("--to", metavar="pending|cancelled", help="The task's status afterwards.")
    ] = "pending",
    json: Annotated[bool, typer.Option("--json", help="Print one JSON object instead of text.")] = False,
) -> None:
    """Undo a task's changes: restore the files it changed as they were before its first attempt.

    Refused while the task runs, when later tasks changed the same files (unless --cascade names
    them: they are rolled back too), and when a file changed since the task ended. The task is
    then pending again (it runs on the next `executor resume`, or at once in a live run) or
    cancelled; the rollback is recorded as an event. Only the work tree changes, never a commit.
    Example: executor rollback IMPL-001 --session work/login --to cancelled
    """
    folder = session_folder(session)
    task_argument(task_id)
    names = _cascade(cascade)
    if to not in ("pending", "cancelled"):
        raise fail(f"--to {to!r}: say pending or cancelled", 2)
    status: Literal["pending", "cancelled"] = "pending" if to == "pending" else "cancelled"
    lock: SessionLock | None = None
    live = read_holder(folder) is not None
    if not live:
        lock = SessionLock(folder)
        try:
            lock.acquire("rollback")
        except SessionBusy as error:
            raise fail(str(error)) from None
    try:
        try:
            plan = prepare(folder, task_id, names, live=live)
        except RollbackBlocked as error:
            raise fail(str(error), 2 if error.usage else 1) from None
        try:
            restore(plan)
        except (GitTreeError, OSError) as error:
            raise fail(f"could not restore the files in {plan.root}: {error}") from None
        requests = rollback_requests(plan, status, _who())
        rows = _through_run(folder, plan, requests) if live else _in_store(folder, plan, requests)
    except StoreError as error:
        raise fail(str(error)) from None
    finally:
        if lock is not None:
            lock.release()
    if json:
        out = {"tasks": [msgspec.to_builtins(row) for row in rows], "files": list(plan.files), "root": plan.root}
        sys.stdout.write(msgspec.json.encode(out).decode() + "\n")
        return
    console = Console(highlight=False, soft_wrap=True)
    console.print(f"restored {len(plan.files)} file(s) in {plan.root}:", markup=False)
    for path in plan.files:
        console.print(f"  {path}", markup=False)
    for row in rows:
        console.print(f"{row.id} is {row.status}" + (" (cancelled)" if status == "cancelled" else ""), markup=False)
    if status == "pending" and not live:
        console.print(f"next: executor resume --session {folder}", markup=False)
