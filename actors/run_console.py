"""What a run shows.

Its log file, the console lines, the JSON event stream, the ending it chooses, and
the completion report.
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
from pathlib import Path
from typing import Literal, TextIO

import msgspec

from actors.run_request import RunRequest
from actors.session import EventSink
from protocol.events import Event, TaskDispatched, encode_event
from protocol.messages import RunSummary
from session.loader import TeamSession
from session.redaction import RedactingFilter, redact
from session.store import STATE_DIR, StoreReader

__all__ = [
    "LOGGERS",
    "Ending",
    "RunConsole",
    "choose_status",
    "completion_report",
    "configure_logging",
    "is_terminal",
    "json_events_sink",
    "started_sink",
]


log = logging.getLogger("executor.run")


# Ours, and the libraries under the bridge: all to the session's log file, none on the terminal
# (over stdio the terminal's stdout is the protocol).
LOGGERS = ("pykka", "executor", "mcp", "uvicorn", "uvicorn.error", "sse_starlette")


def configure_logging(folder: Path) -> logging.Handler:
    # A log line that cannot be written (a full disk) is dropped, never printed as a traceback.
    logging.raiseExceptions = False
    handler = logging.FileHandler(folder / STATE_DIR / "executor.log", encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(threadName)s: %(message)s"))
    handler.addFilter(RedactingFilter())  # on the handler: it sees every logger's records
    for name in LOGGERS:
        logger = logging.getLogger(name)
        logger.setLevel(logging.INFO)
        logger.addHandler(handler)
        logger.propagate = False  # actor crashes go to the log file, never as tracebacks on the terminal
    return handler


class RunConsole:
    """Human-readable lines, serialized across threads."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self._lock = threading.Lock()
        self.started = time.monotonic()

    def __call__(self, line: str) -> None:
        elapsed = time.monotonic() - self.started
        with self._lock:
            self.stream.write(f"[{elapsed:7.1f}s] {redact(line)}\n")
            self.stream.flush()

    def reveal(self, line: str) -> None:
        """``line`` as it is, secrets included: only for a stream that is a terminal (the owner's
        sign-in link), never for a pipe or a file."""
        elapsed = time.monotonic() - self.started
        with self._lock:
            self.stream.write(f"[{elapsed:7.1f}s] {line}\n")
            self.stream.flush()


def json_events_sink(stream: TextIO) -> EventSink:
    lock = threading.Lock()

    def sink(_event_id: int, occurred_at: str, event: Event) -> None:
        payload = msgspec.json.decode(encode_event(event))
        payload["occurred_at"] = occurred_at
        with lock:
            stream.write(redact(msgspec.json.encode(payload).decode()) + "\n")
            stream.flush()

    return sink


def started_sink(console: RunConsole) -> EventSink:
    def sink(_event_id: int, _occurred_at: str, event: Event) -> None:
        if isinstance(event, TaskDispatched):
            attempt = f" attempt {event.attempt}" if event.attempt > 1 else ""
            console(f"▶ {event.task_id} started on {event.backend}{attempt}")

    return sink


Ending = Literal["paused", "completed"]


def choose_status(session: TeamSession, request: RunRequest, summary: RunSummary, console: RunConsole) -> Ending:
    """The completion action: archive (completed) or keep (paused); export first when asked."""
    if summary.failed or summary.blocked or summary.completed < summary.total:
        return "paused"
    if request.export_dir is not None:
        shutil.copytree(Path(session.folder) / "artifacts", request.export_dir, dirs_exist_ok=True)
        console(f"exported artifacts to {request.export_dir}")
        return "completed"
    action = session.team.completion_action
    if action == "auto_archive":
        return "completed"
    if action == "auto_keep" or not request.interactive:
        return "paused"
    answer = input("Pipeline complete. [a]rchive, [k]eep active, or [e]xport artifacts to a folder? [k] ")
    choice = answer.strip().lower()[:1]
    if choice == "a":
        return "completed"
    if choice == "e":
        target = Path(input("Export to folder: ").strip()).expanduser()
        shutil.copytree(Path(session.folder) / "artifacts", target, dirs_exist_ok=True)
        console(f"exported artifacts to {target}")
        return "completed"
    return "paused"


def completion_report(session: TeamSession, summary: RunSummary, status: str) -> str:
    reader = StoreReader.open(session.folder)
    deliverables: dict[str, tuple[str, tuple[str, ...]]] = {}
    if reader is not None:
        try:
            owners = {row.id: row.owner for row in reader.tasks()}
            for task_id, artifacts in reader.completions():
                deliverables[task_id] = (owners.get(task_id, ""), artifacts)
        finally:
            reader.close()
    lines = []
    if summary.escalated:
        lines.append(f"run stopped: {summary.escalated}")
    elif summary.budget_stopped:
        lines.append("run stopped: the session budget is spent (raise [budget].session_usd, then resume)")
    elif summary.interrupted:
        lines.append("run stopped on request; state saved")
    elif summary.failed or summary.blocked:
        lines.append("pipeline finished with failures")
    else:
        lines.append("pipeline complete")
    percent = 100.0 * summary.completed / summary.total if summary.total else 0.0
    lines.append(
        f"  tasks: {summary.completed}/{summary.total} ({percent:.0f}%)   roles: "
        f"{', '.join(session.roles)}   duration: {summary.duration_s:.1f}s"
    )
    if summary.failed:
        lines.append(f"  failed: {', '.join(summary.failed)}")
    if summary.blocked:
        lines.append(
            f"  blocked by failures: {', '.join(summary.blocked[:20])}" + (" …" if len(summary.blocked) > 20 else "")
        )
    shown = [(task_id, role, artifacts) for task_id, (role, artifacts) in deliverables.items() if artifacts]
    if shown:
        lines.append("  deliverables:")
        lines += [
            f"    {artifact}  ({role}, {task_id})" for task_id, role, artifacts in shown[:100] for artifact in artifacts
        ]
    folder = session.folder
    if status == "completed":
        lines.append("  session archived (status: completed)")
    elif summary.failed or summary.blocked:
        lines.append(f"  see `executor check --session {folder}`; fix the cause, then:")
        lines.append(f"next: executor resume --session {folder} --retry-failed")
    elif summary.completed >= summary.total:
        lines.append(f"  every task is complete; the session is kept (status: {status}) for more work")
    else:
        first = ""
        if summary.budget_stopped:
            first = "raise [budget].session_usd in the config, then "
        elif summary.escalated:
            first = f"answer the open questions (`executor answer --session {folder}`), then "
        lines.append(f"  session kept (status: {status}); {first}continue with:")
        lines.append(f"next: executor resume --session {folder}")
    return "\n".join(lines)


def is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
