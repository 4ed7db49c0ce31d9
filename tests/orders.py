"""Work orders and hooks for backend tests: real files under the session's ``.executor/``."""

from __future__ import annotations

import sys
from pathlib import Path

from backends.prompt import build_prompt
from protocol.messages import WorkOrder
from session.loader import TeamSession

PY = sys.executable


class RecordingHooks:
    """WorkerHooks that remember every call."""

    def __init__(self) -> None:
        self.started_calls: list[tuple[int, float | None]] = []
        self.progress_calls: list[tuple[int | None, str]] = []

    def started(self, pid: int, create_time: float | None) -> None:
        self.started_calls.append((pid, create_time))

    def progress(self, percent: int | None, note: str) -> None:
        self.progress_calls.append((percent, note))


def make_order(
    session_dir: Path,
    task_id: str,
    role: str,
    *,
    prompt: str = "",
    command: list[str] | tuple[str, ...] = (),
    backend: str = "command",
    attempt: int = 1,
    timeout_s: float | None = 60.0,
    hang_timeout_s: float | None = None,
    grace_s: float = 2.0,
    workdir: Path | None = None,
) -> WorkOrder:
    """A work order whose prompt, report and log live under ``<session>/.executor/``."""
    session_dir = session_dir.resolve()
    state = session_dir / ".executor"
    prompt_file = state / "prompts" / f"{task_id}-{attempt}.md"
    prompt_file.parent.mkdir(parents=True, exist_ok=True)
    prompt_file.write_text(prompt, encoding="utf-8")
    return WorkOrder(
        task_id=task_id,
        attempt=attempt,
        role=role,
        backend=backend,
        session_dir=str(session_dir),
        artifacts_dir=str(session_dir / "artifacts"),
        workdir=str(workdir or session_dir),
        prompt_file=str(prompt_file),
        report_file=str(state / "reports" / f"{task_id}-{attempt}.json"),
        log_path=str(state / "logs" / f"{task_id}-{attempt}.log"),
        run_id=f"run-{task_id}-{attempt}",
        marker=f"marker-{task_id}-{attempt}",
        command=tuple(command),
        timeout_s=timeout_s,
        hang_timeout_s=hang_timeout_s,
        grace_s=grace_s,
    )


def order_for(
    session: TeamSession, task_id: str, *, attempt: int = 1, feedback: str = "", **kwargs: object
) -> WorkOrder:
    """A work order for a task of a loaded session, its prompt built by ``build_prompt``."""
    task = session.task(task_id)
    prompt = build_prompt(session, task, attempt, feedback)
    return make_order(session.folder, task_id, task.owner, prompt=prompt, attempt=attempt, **kwargs)
