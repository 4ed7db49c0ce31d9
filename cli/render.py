"""Terminal rendering of ``executor check``: rich on a terminal, plain when piped.

Large sessions stay readable and fast: each layer of the graph shows at most
``per_layer`` tasks and counts the rest, unless ``full`` is asked for.
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING

from rich.console import Console
from rich.markup import escape

from session.run_choices import SOURCE_TEXT

if TYPE_CHECKING:  # types only: session.report brings the session loader, which `executor --help` does without
    from session.problems import Problem
    from session.report import CheckReport
    from session.run_choices import RoleBackend

__all__ = ["LEGEND", "describe_backends", "next_line", "render_check", "render_problems"]

_SYMBOL = {
    "completed": ("✓", "green"),
    "in_progress": ("▶", "cyan"),
    "review": ("◐", "yellow"),
    "pending": ("·", "white"),
    "failed": ("✗", "red"),
    "not_created": ("○", "dim"),
}
LEGEND = "legend: ✓ done  ▶ running  ◐ in review  · pending  ✗ failed  ○ not created"


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s"


def describe_backends(backends: list[RoleBackend]) -> str:
    """``demo for every role (remembered)`` or ``coder codex (role-spec), reviewer none``."""
    kinds = {(entry.backend, entry.source) for entry in backends}
    if len(kinds) == 1:
        backend, source = kinds.pop()
        return f"{backend or 'none'} for every role ({SOURCE_TEXT[source]})"
    return ", ".join(f"{entry.role} {entry.backend or 'none'} ({SOURCE_TEXT[entry.source]})" for entry in backends)


def next_line(report: CheckReport) -> str:
    """``next: COMMAND  # note``: the whole line after ``next:`` can be pasted into a shell as it is;
    ``done: ...`` when nothing is left to do."""
    if not report.next_command:
        return f"done: {report.next_note}"
    return f"next: {report.next_command}" + (f"  # {report.next_note}" if report.next_note else "")


def render_problems(console: Console, folder: str, problems: list[Problem]) -> None:
    errors = [p for p in problems if p.severity == "error"]
    warnings = [p for p in problems if p.severity == "warning"]
    if errors:
        console.print(f"[bold red]{escape(folder)}: {len(errors)} problem(s)[/]")
    for problem in errors:
        console.print(f"  [red]✗[/] {escape(str(problem))}")
    for problem in warnings:
        console.print(f"  [yellow]![/] {escape(str(problem))}")


def render_check(console: Console, report: CheckReport, per_layer: int = 12, full: bool = False) -> None:
    if not report.valid:
        render_problems(console, report.folder, report.problems)
        console.print(escape(next_line(report)))
        return
    progress = report.progress
    running = "running" if report.executor.running else "not running"
    console.print(f"[bold]{escape(report.session_id or '')}[/]  status: {report.status}  executor: {running}")
    bar_width = 30
    filled = round(bar_width * progress.percent / 100)
    console.print(
        f"progress: {progress.completed}/{progress.total} ({progress.percent:g}%) "
        f"[green]{'█' * filled}[/][dim]{'░' * (bar_width - filled)}[/]"
    )
    if report.backends:
        console.print(f"backends: {escape(describe_backends(report.backends))}")

    status_of = {task.id: task.status for task in report.tasks}
    console.print(f"\n[bold]execution graph[/]  [dim]{LEGEND}[/]")
    for depth, layer in enumerate(report.layers):
        shown = layer if full else layer[:per_layer]
        cells = []
        for task_id in shown:
            symbol, style = _SYMBOL[status_of[task_id]]
            cells.append(f"[{style}]{symbol} {escape(task_id)}[/]")
        line = "  ".join(cells)
        hidden = layer[len(shown) :]
        if hidden:
            counts = Counter(status_of[t] for t in hidden)
            summary = ", ".join(f"{n} {status.replace('_', ' ')}" for status, n in sorted(counts.items()))
            line += f"  [dim]… {len(hidden)} more ({summary})[/]"
        console.print(f"  L{depth:<3} {line}")

    console.print("\n[bold]active workers[/]")
    if not report.active_workers:
        console.print("  none")
    for worker in report.active_workers:
        console.print(
            f"  ▶ {escape(worker.task_id)}  {escape(worker.role)}  pid {worker.pid}  "
            + (f"on {escape(worker.node)}  " if worker.node else "")
            + f"{escape(worker.backend)}  attempt {worker.attempt}  {_duration(worker.elapsed_s)}"
            + (f"  {worker.percent}%" if worker.percent is not None else "")
            + (f"  {escape(worker.note[:80])}" if worker.note else "")
        )

    ready = report.ready if full else report.ready[:per_layer]
    more = f" … and {len(report.ready) - len(ready)} more" if len(ready) < len(report.ready) else ""
    console.print(f"\n[bold]ready to spawn[/] ({len(report.ready)}): {escape(' '.join(ready)) or 'none'}{more}")

    if report.failed:
        console.print(f"\n[bold red]failed[/] ({len(report.failed)})")
        for failed in report.failed if full else report.failed[:50]:
            console.print(
                f"  ✗ {escape(failed.id)}  after {failed.attempts} attempt(s)  "
                f"\\[{escape(failed.error_kind or '?')}] {escape((failed.error or '').strip()[:300])}"
            )
    if report.blocked:
        console.print(f"\n[bold yellow]blocked by failures[/] ({len(report.blocked)})")
        for blocked in report.blocked if full else report.blocked[:per_layer]:
            console.print(f"  {escape(blocked.id)} waits on failed {escape(', '.join(blocked.waiting_on_failed))}")
    for problem in report.problems:
        console.print(f"[yellow]![/] {escape(str(problem))}")
    if report.budget is not None:
        budget = report.budget
        limit = f" of ${budget.session_limit_usd:.2f}" if budget.session_limit_usd else ""
        note = " — budget spent: no new tasks" if budget.state == "exceeded" else ""
        style = "red" if budget.state == "exceeded" else "yellow" if budget.state == "warning" else ""
        line = f"spent: ${budget.spent_usd:.4f}{limit}{note}"
        console.print(f"\n[{style}]{escape(line)}[/]" if style else f"\n{escape(line)}")
    if report.recovery_report and not report.executor.running:
        console.print(f"\nlast recovery report: {escape(report.recovery_report)}")
    if report.queued_writes_waiting:
        ids = ", ".join(report.queued_writes_waiting[:10]) + (" …" if len(report.queued_writes_waiting) > 10 else "")
        when = "the run applies them next" if report.executor.running else "the next run applies them"
        console.print(f"\nqueued writes not applied yet ({len(report.queued_writes_waiting)}): {escape(ids)} — {when}")
    console.print(f"\n{escape(next_line(report))}")
