"""``executor diff TASK``: what a task changed in the project, from the git state recorded around its attempts."""

from __future__ import annotations

import sys
from typing import Annotated

import msgspec
import typer
from rich.console import Console

from cli.task_args import JsonOption, SessionOption, TaskArgument, fail, for_terminal, session_folder, task_argument
from session.task_diff import DiffUnavailable, TaskDiff, task_diff

__all__ = ["diff_command"]


def _render(console: Console, diff: TaskDiff, stat_only: bool) -> None:
    attempts = ", ".join(str(number) for number in diff.attempts)
    live = " (still running: compared with the work tree now)" if diff.live else ""
    plural = "s" if len(diff.attempts) > 1 else ""
    console.print(
        f"{diff.task_id}, attempt{plural} {attempts}{live}: {len(diff.files)} file(s), +{diff.added} -{diff.removed}",
        markup=False,
    )
    if not diff.files:
        console.print("no change to the project's files", markup=False)
        return
    width = max(len(change.path) for change in diff.files)
    for change in diff.files:
        counts = "binary" if change.added is None else f"+{change.added} -{change.removed}"
        console.print(f" {change.status} {for_terminal(change.path).ljust(width)}  {counts}", markup=False)
    if stat_only or not diff.patch:
        return
    console.print()
    if console.is_terminal:  # coloured, and never an escape sequence from a file on a person's terminal
        # rich.syntax brings pygments (~15 ms): every command imports this module, only this line needs it.
        from rich.syntax import Syntax  # noqa: PLC0415

        patch = for_terminal(diff.patch)
        console.print(Syntax(patch, "diff", theme="ansi_dark", background_color="default", word_wrap=False))
    else:
        sys.stdout.write(diff.patch)


def diff_command(
    task_id: TaskArgument,
    session: SessionOption,
    attempt: Annotated[
        int | None, typer.Option("--attempt", min=1, help="One attempt only (default: all of them, first to last).")
    ] = None,
    stat: Annotated[bool, typer.Option("--stat", help="Only the files and their line counts.")] = False,
    json: JsonOption = False,
) -> None:
    """Show what a task changed in the project: the files, their line counts, and the diff.

    From the work tree before its first attempt to the one after its last (or one --attempt),
    limited to the files its attempts changed; the executor's own files never count.
    Read-only: works while a run goes on (a running attempt is compared with the tree now).
    Example: executor diff IMPL-001 --session work/login --stat
    """
    folder = session_folder(session)
    task_argument(task_id)
    try:
        diff = task_diff(folder, task_id, attempt, patch=not stat)
    except DiffUnavailable as error:
        raise fail(str(error), 2 if error.argument else 1) from None
    if json:
        sys.stdout.write(msgspec.json.encode(diff).decode() + "\n")
        return
    _render(Console(highlight=False, soft_wrap=True), diff, stat)
