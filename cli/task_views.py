"""What ``executor task status`` and ``executor task next`` print (read-only: the store, never the run)."""

from __future__ import annotations

import sys
from pathlib import Path

import msgspec
from rich.console import Console
from rich.table import Table

from protocol.records import TaskRow
from session.feedback import read_feedback
from session.graph import TaskSpec, layers
from session.handoff import choose_next
from session.lifecycle import lifecycle_of
from session.store import StoreError, stored_tasks

__all__ = ["show_next", "show_status"]


def _rows(folder: Path, console: Console) -> list[TaskRow] | None:
    try:
        return stored_tasks(folder)
    except StoreError as error:
        console.print(f"error: {error}", markup=False)
        return None


def show_status(folder: Path, task_id: str | None, as_json: bool, console: Console) -> int:
    rows = _rows(folder, console)
    if rows is None:
        return 1
    lifecycle = lifecycle_of(rows)
    if task_id is not None:
        row = next((row for row in rows if row.id == task_id), None)
        if row is None:
            console.print(f"error: no task '{task_id}' in this session", markup=False)
            return 1
        if as_json:
            data = {
                **msgspec.to_builtins(row),
                "lifecycle": lifecycle[row.id],
                "feedback": read_feedback(folder, row.id),
            }
            sys.stdout.write(msgspec.json.encode(data).decode() + "\n")
            return 0
        details = row.details
        lines = [
            f"{row.id} — {row.subject}",
            f"  status: {lifecycle[row.id]} ({row.status}); priority {row.priority}; role {row.owner}"
            + (f"; agent {row.agent}" if row.agent else ""),
            f"  blocked by: {', '.join(row.blocked_by) or '—'}",
            f"  goal: {details.goal or row.description or row.subject}",
        ]
        for title, items in (
            ("acceptance criteria", details.acceptance_criteria),
            ("definition of ready", details.definition_of_ready),
            ("definition of done", details.definition_of_done),
            ("files affected", details.files_affected),
            ("needs", details.capabilities),
        ):
            if items:
                lines.append(f"  {title}:")
                lines += [f"    - {item}" for item in items]
        if details.implementation_notes:
            lines.append(f"  notes: {details.implementation_notes}")
        if row.last_error:
            lines.append(f"  last error ({row.last_error_kind}): {row.last_error}")
        feedback = read_feedback(folder, row.id).strip()
        if feedback:
            lines += ["  feedback:", *("    " + line for line in feedback.splitlines())]
        console.print("\n".join(lines), markup=False)
        return 0
    # Pipeline order, as `check` draws the graph: by dependency depth, then P0 first, then id.
    specs = [
        TaskSpec(id=row.id, owner=row.owner, blocked_by=tuple(row.blocked_by), priority=row.priority) for row in rows
    ]
    place = {task_id: index for index, task_id in enumerate(task for layer in layers(specs) for task in layer)}
    rows.sort(key=lambda row: place.get(row.id, len(place)))
    if as_json:
        listing = [
            {
                "id": row.id,
                "lifecycle": lifecycle[row.id],
                "status": row.status,
                "owner": row.owner,
                "agent": row.agent,
                "priority": row.priority,
                "subject": row.subject,
            }
            for row in rows
        ]
        sys.stdout.write(msgspec.json.encode({"tasks": listing}).decode() + "\n")
        return 0
    if not rows:
        console.print("no task in the store yet (tasks enter it at the session's first run)")
        return 0
    table = Table(box=None, pad_edge=False)
    for column in ("id", "status", "priority", "role", "agent", "title"):
        table.add_column(column)
    for row in rows:
        table.add_row(row.id, lifecycle[row.id], row.priority, row.owner, row.agent or "", row.subject[:70])
    console.print(table)
    return 0


def show_next(folder: Path, agent: str, manual_roles: tuple[str, ...], as_json: bool, console: Console) -> int:
    rows = _rows(folder, console)
    if rows is None:
        return 1
    from session.agents import AgentsFileError, capabilities_of  # noqa: PLC0415

    try:
        capabilities = capabilities_of(folder, agent)
    except AgentsFileError as error:
        console.print(f"error: {error}", markup=False)
        return 2
    row, why = choose_next(rows, agent, manual_roles, capabilities)
    if as_json:
        sys.stdout.write(msgspec.json.encode({"task": row.id if row else None, "why": why}).decode() + "\n")
        return 0
    console.print(why, markup=False)
    return 0 if row is not None else 3
