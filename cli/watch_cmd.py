"""``executor watch``: a live terminal view of a session, from another process, read-only.

Each frame is built from the same read-only sources as ``executor check`` (the
state database opened read-only, the lock file) plus the newest events, the
open questions and the key states the run records; nothing is written and no
lock is taken, so it is safe next to a run.  Cost per frame is one pass over
the task list and one indexed query for the newest events.
"""

from __future__ import annotations

import time
from datetime import datetime
from pathlib import Path

import msgspec
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.markup import escape
from rich.panel import Panel
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from cli.models_cmd import recorded_key_states
from cli.render import next_line
from protocol.events import Event
from protocol.records import EscalationRow
from session.report import CheckReport, build_report
from session.store import StoreError, StoreReader

__all__ = ["frame", "watch"]

RECENT_EVENTS = 12


def _recent(folder: Path) -> tuple[list[tuple[str, Event]], list[EscalationRow], dict[str, str]]:
    try:
        reader = StoreReader.open(folder)
    except StoreError:
        return [], [], {}
    if reader is None:
        return [], [], {}
    try:
        events = [(at, event) for _, at, event in reader.recent_events(RECENT_EVENTS)]
        return events, reader.escalations("open"), reader.meta()
    finally:
        reader.close()


def _describe(event: Event) -> str:
    tag = event.__struct_config__.tag
    fields = msgspec.structs.asdict(event)
    task = fields.pop("task_id", None)
    detail = ", ".join(f"{key}={value}" for key, value in fields.items() if value not in (None, "", (), [], {}))
    return f"{task + ' ' if task else ''}{tag}" + (f" ({detail[:100]})" if detail else "")


def frame(folder: Path) -> RenderableType:
    """One picture of the session as it is now."""
    report: CheckReport = build_report(folder)
    events, questions, meta = _recent(folder)
    progress = report.progress
    state = (
        f"[green]running[/] (pid {report.executor.pid}, {escape(report.executor.command or '')})"
        if report.executor.running
        else "[yellow]no run going on[/]"
    )
    header = Table.grid(padding=(0, 2))
    header.add_row(
        Text(report.session_id or str(folder), style="bold"),
        Text.from_markup(state),
        Text(f"status: {report.status}"),
    )
    bar = Table.grid(padding=(0, 1))
    bar.add_row(
        ProgressBar(total=max(progress.total, 1), completed=progress.completed, width=40),
        Text(f"{progress.completed}/{progress.total} tasks ({progress.percent:.0f}%)"),
    )
    if report.budget is not None and report.budget.spent_usd:
        bar.add_row(Text(""), Text(f"spent ${report.budget.spent_usd:.2f}"))
    parts: list[RenderableType] = [header, bar]

    workers = Table(title="running", title_justify="left", box=None, pad_edge=False)
    for column in ("task", "role", "backend", "attempt", "pid", "elapsed"):
        workers.add_column(column)
    for worker in report.active_workers:
        workers.add_row(
            worker.task_id,
            worker.role,
            worker.backend,
            str(worker.attempt),
            str(worker.pid or "-"),
            f"{worker.elapsed_s:.0f}s",
        )
    parts.append(workers if report.active_workers else Text("running: nothing", style="dim"))

    if report.failed or report.blocked:
        failed = ", ".join(f"{task.id} ({task.error_kind})" for task in report.failed[:10])
        blocked = ", ".join(task.id for task in report.blocked[:10])
        parts.append(Text(f"failed: {failed or '-'}   blocked: {blocked or '-'}", style="red"))
    if report.ready:
        parts.append(Text(f"ready: {', '.join(report.ready[:12])}"))
    if questions:
        lines = [f"{row.id}: {row.issue[:100]} [{' / '.join(row.options) or 'any'}]" for row in questions[:5]]
        parts.append(Panel("\n".join(escape(line) for line in lines), title="questions for you", title_align="left"))
    keys = recorded_key_states(meta.get("key_states") or "[]", time.time())
    if keys:
        shown = [
            f"{key.key_id} {key.status}"
            + (f" {key.cooling_for_s:.0f}s" if key.cooling_for_s else "")
            + f" ({key.requests} req)"
            for key in keys[:8]
        ]
        parts.append(Text("keys: " + "; ".join(shown)))
    if events:
        recent = Table(title="latest events", title_justify="left", box=None, pad_edge=False)
        recent.add_column("time", style="dim")
        recent.add_column("event")
        for at, event in events[-RECENT_EVENTS:]:
            try:
                when = datetime.fromisoformat(at).astimezone().strftime("%H:%M:%S")
            except ValueError:
                when = at[:8]
            recent.add_row(when, escape(_describe(event)))
        parts.append(recent)
    parts.append(Text(next_line(report), style="dim"))
    return Group(*parts)


def watch(folder: Path, interval_s: float, once: bool, console: Console) -> None:
    if once:
        console.print(frame(folder))
        return
    with Live(frame(folder), console=console, refresh_per_second=4, transient=False) as live:
        try:
            while True:
                time.sleep(interval_s)
                live.update(frame(folder))
        except KeyboardInterrupt:
            return
