"""``executor watch``: a live terminal view of a session, from another process, read-only.

Each frame is built from the same read-only sources as ``executor check`` (the
state database opened read-only, the lock file) plus the newest events, the
open questions and the key states the run records; nothing is written and no
lock is taken, so it is safe next to a run.  Cost per frame is one pass over
the task list and one indexed query for the newest events.
"""

from __future__ import annotations

import time
from collections.abc import Callable
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
from cli.render import next_line, render_problems
from protocol.events import Event
from protocol.records import EscalationRow
from session.report import CheckReport, build_report
from session.run_choices import RoleBackend
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


def frame(folder: Path, backends: list[RoleBackend] | None = None) -> RenderableType:
    """One picture of the session as it is now."""
    report: CheckReport = build_report(folder, backends)
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
    for column in ("task", "role", "backend", "attempt", "pid", "node", "elapsed"):
        workers.add_column(column)
    for worker in report.active_workers:
        workers.add_row(
            worker.task_id,
            worker.role,
            worker.backend,
            str(worker.attempt),
            str(worker.pid or "-"),
            worker.node or "local",
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


def _status_line(report: CheckReport) -> str:
    progress = report.progress
    running = ", ".join(worker.task_id for worker in report.active_workers) or "-"
    failed = ", ".join(task.id for task in report.failed) or "-"
    state = f"run pid {report.executor.pid}" if report.executor.running else "no run"
    return (
        f"{progress.completed}/{progress.total} tasks ({progress.percent:.0f}%), {state}; running: {running}; "
        f"failed: {failed}; {next_line(report)}"
    )


def _json_frame(folder: Path, backends: list[RoleBackend] | None) -> str:
    report = build_report(folder, backends)
    events, questions, _ = _recent(folder)
    payload = {
        "report": report,
        "events": [{"occurred_at": at, "event": event} for at, event in events],
        "questions": questions,
    }
    return msgspec.json.encode(payload).decode()


def watch(folder: Path, interval_s: float, once: bool, console: Console, as_json: bool = False) -> int:
    """Show the session until Ctrl-C (or one frame with ``once``); return the exit code:
    0, or 1 when the folder is not a valid session (its problems are printed).

    On a terminal: a live view.  Piped: ``--once`` prints the frame as plain text; otherwise
    one plain line whenever the state changes, each new event on a line of its own.
    ``as_json``: one JSON object per frame (per change when not ``once``), one per line.
    """
    from cli.options import role_backends_of  # noqa: PLC0415 - reads the config once, not per frame

    backends = role_backends_of(folder)
    report = build_report(folder, backends)
    if not report.valid:
        render_problems(console, str(folder), report.problems)
        console.print(escape(next_line(report)))
        return 1
    try:
        if as_json:
            _follow(lambda: _json_frame(folder, backends), console, interval_s, once)
        elif once:
            console.print(frame(folder, backends))
        elif not console.is_terminal:
            _follow_plain(folder, backends, console, interval_s)
        else:
            with Live(frame(folder, backends), console=console, refresh_per_second=4, transient=False) as live:
                while True:
                    time.sleep(interval_s)
                    live.update(frame(folder, backends))
    except KeyboardInterrupt:
        pass
    return 0


def _follow(render: Callable[[], str], console: Console, interval_s: float, once: bool) -> None:
    """Print ``render()`` now, then each time it changes (plain, one line each)."""
    last = ""
    while True:
        text = render()
        if text != last:
            console.out(text, highlight=False)
            last = text
        if once:
            return
        time.sleep(interval_s)


def _follow_plain(folder: Path, backends: list[RoleBackend] | None, console: Console, interval_s: float) -> None:
    """Piped: a status line when it changes and every new event, as plain lines."""
    last_event = 0
    reader = _open_reader(folder)
    if reader is not None:
        last_event = max(0, reader.last_event_id() - RECENT_EVENTS)
        reader.close()
    last_status = ""
    while True:
        reader = _open_reader(folder)
        if reader is not None:
            try:
                for event_id, at, event in reader.events(after_id=last_event):
                    console.out(f"{at[11:19]} {_describe(event)}", highlight=False)
                    last_event = event_id
            finally:
                reader.close()
        status = _status_line(build_report(folder, backends))
        if status != last_status:
            console.out(status, highlight=False)
            last_status = status
        time.sleep(interval_s)


def _open_reader(folder: Path) -> StoreReader | None:
    try:
        return StoreReader.open(folder)
    except StoreError:
        return None
