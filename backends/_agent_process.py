"""Run one agent process for a work order and say how the attempt ended.

Shared by the backends that start a local process (``command``, ``demo``): they
differ only in the argv.  Everything else — the environment, the limits, progress
lines, the report file, artifact discovery and the mapping of a process outcome to
an :class:`AttemptResult` — is here, so the two behave the same.
"""

from __future__ import annotations

import contextlib
import json
import math
import re
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

import msgspec

from backends.base import WorkerHooks
from backends.conventions import (
    ENV_AGENT_ID,
    ENV_ARTIFACTS,
    ENV_ATTEMPT,
    ENV_MARKER,
    ENV_MCP_TOKEN,
    ENV_MCP_URL,
    ENV_MODEL,
    ENV_PROMPT_FILE,
    ENV_REPORT,
    ENV_ROLE,
    ENV_SESSION,
    ENV_TASK_ID,
    PROGRESS_TYPE,
    REPORT_STATUSES,
    relative_inside,
    task_artifact_files,
)
from backends.git_state import executor_paths, touched_since
from backends.output_capture import ends_within
from backends.process import run_process
from backends.process_types import ProcessLimits, ProcessOutcome, ProcessSpec
from backends.sandbox import allowlisted_env
from protocol.messages import AttemptResult, WorkOrder
from protocol.types import ErrorKind
from session.projection import write_atomic
from session.redaction import redact_bytes
from session.safepath import make_folder

__all__ = [
    "PROGRESS_LINE_PREFIX",
    "clear_report",
    "order_env",
    "parse_progress",
    "printed",
    "process_of",
    "result_from_outcome",
    "run_agent_process",
]

#: How much of the combined stderr and stdout an AttemptResult keeps.
OUTPUT_TAIL_BYTES = 4096
SUMMARY_CHARS = 300
_NOTE_CHARS = 300
_MAX_REPORT_BYTES = 1 << 20


def order_env(order: WorkOrder) -> dict[str, str]:
    """The worker's environment: the allowlisted parent variables plus the ``TEAM_EXECUTOR_*`` ones."""
    extra = {
        ENV_TASK_ID: order.task_id,
        ENV_ATTEMPT: str(order.attempt),
        ENV_ROLE: order.role,
        ENV_SESSION: order.session_dir,
        ENV_ARTIFACTS: order.artifacts_dir,
        ENV_PROMPT_FILE: order.prompt_file,
        ENV_REPORT: order.report_file,
        ENV_MARKER: order.marker,
    }
    if order.model:
        extra[ENV_MODEL] = order.model
    if order.bridge is not None:
        # Any worker (a script too) can report progress and blockers to the bridge.
        extra[ENV_MCP_URL] = order.bridge.url
        extra[ENV_MCP_TOKEN] = order.bridge.token
        extra[ENV_AGENT_ID] = order.bridge.agent_id
    return allowlisted_env(extra=extra)


_PROGRESS_WORD = PROGRESS_TYPE.encode()


def parse_progress(line: bytes) -> tuple[int | None, str] | None:
    """``(percent, note)`` if ``line`` is a progress line, else ``None``.  Never raises.

    A progress line is a JSON object with ``"type": "progress"``; ``percent`` is kept
    when it is a number (clamped to 0..100), ``note`` when it is a string (cut to
    300 characters).
    """
    stripped = line.strip()
    if not stripped.startswith(b"{"):
        return None
    if _PROGRESS_WORD not in stripped and b"\\u" not in stripped and b"\0" not in stripped:
        # Its "type" cannot decode to "progress": no JSON escape but \u makes a letter, and
        # the line is not UTF-16 or -32 (which json.loads would read too).  An agent's stream
        # is mostly other JSON: a claude line of a tool call and its token counts took a
        # 9 us parse only to be dropped.
        return None
    try:
        data = json.loads(stripped)
    except (ValueError, RecursionError):
        return None
    if not isinstance(data, dict) or data.get("type") != PROGRESS_TYPE:
        return None
    raw_percent = data.get("percent")
    percent: int | None = None
    if isinstance(raw_percent, int | float) and not isinstance(raw_percent, bool) and math.isfinite(raw_percent):
        percent = int(min(100.0, max(0.0, float(raw_percent))))
    note = data.get("note")
    return percent, note[:_NOTE_CHARS] if isinstance(note, str) else ""


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _output_tail(outcome: ProcessOutcome) -> str:
    """About the last 4 KB of stderr and stdout; stderr keeps at least half when it has that much."""
    out, err = ends_within(outcome.stdout_tail.strip(), outcome.stderr_tail.strip(), OUTPUT_TAIL_BYTES)
    sections = []
    if err:
        sections.append("[stderr]\n" + err.decode("utf-8", errors="replace"))
    if out:
        sections.append("[stdout]\n" + out.decode("utf-8", errors="replace"))
    return "\n".join(sections)


def _last_line_summary(outcome: ProcessOutcome, role: str) -> str:
    """The worker's own summary: its last ``[<role>] ...`` line, else its last non-empty non-progress line."""
    lines = [line.strip() for line in outcome.stdout_tail.decode("utf-8", errors="replace").splitlines()]
    lines = [line for line in lines if line and parse_progress(line.encode()) is None]
    tagged = [line for line in lines if line.startswith(f"[{role}]")]
    chosen = tagged[-1] if tagged else (lines[-1] if lines else "")
    return chosen[:SUMMARY_CHARS]


def _read_report(path: Path) -> tuple[dict[str, Any] | None, str | None]:
    """``(report, None)``, ``(None, None)`` when there is no report, or ``(None, why it is bad)``."""
    try:
        with path.open("rb") as handle:
            data = handle.read(_MAX_REPORT_BYTES + 1)
    except FileNotFoundError:
        return None, None
    except OSError as error:
        return None, f"cannot read the report file {path}: {error.strerror or error}"
    if len(data) > _MAX_REPORT_BYTES:
        return None, f"the report file {path} is larger than {_MAX_REPORT_BYTES >> 10} KiB"
    redacted = redact_bytes(data)
    if redacted != data:  # the worker wrote a key into it: the file stays in the session folder
        with contextlib.suppress(OSError):
            write_atomic(path, redacted)
        data = redacted
    try:
        report = json.loads(data.decode("utf-8-sig"))
    except UnicodeDecodeError as error:
        return None, f"the report file {path} is not UTF-8 ({error.reason} at byte {error.start})"
    except json.JSONDecodeError as error:
        where = f"line {error.lineno} column {error.colno}"
        return None, f"the report file {path} is not valid JSON: {error.msg} at {where}"
    except RecursionError:
        return None, f"the report file {path} is nested too deeply"
    if not isinstance(report, dict):
        return None, f"the report file {path} must hold a JSON object, got {type(report).__name__}"
    status = report.get("status", "completed")
    if status not in REPORT_STATUSES:
        return None, f"the report file {path} has status {status!r}; use one of: {', '.join(REPORT_STATUSES)}"
    return report, None


def _session_relative(session: Path, value: Any) -> str | None:
    """A path the worker named, relative to the session folder, or None if it is not a path inside it."""
    if not isinstance(value, str) or not value.strip() or "\0" in value:
        return None
    return relative_inside(session, Path(value.strip()))


def _discovered_artifacts(order: WorkOrder, session: Path) -> tuple[str, ...]:
    listed = (relative_inside(session, path) for path in task_artifact_files(Path(order.artifacts_dir), order.task_id))
    return tuple(sorted(relative for relative in listed if relative is not None))


def _usage(report: dict[str, Any]) -> dict[str, Any]:
    """Usage and cost a wrapped agent put in its report (``tokens_in``, ``tokens_out``,
    ``tokens_cached``, ``cost_usd``, ``model``); anything not a sane number is ignored."""
    usage: dict[str, Any] = {}
    for name in ("tokens_in", "tokens_out", "tokens_cached"):
        value = report.get(name)
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            usage[name] = value
    cost = report.get("cost_usd")
    if isinstance(cost, int | float) and not isinstance(cost, bool) and math.isfinite(cost) and cost >= 0:
        usage["cost_usd"] = float(cost)
    if isinstance(report.get("model"), str) and report["model"].strip():
        usage["model"] = report["model"].strip()[:200]
    return usage


def _strings(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list):
        return ()
    return tuple(item for item in value if isinstance(item, str) and item.strip())


def printed(outcome: ProcessOutcome) -> bool:
    """Did the worker say anything on stdout besides progress lines?"""
    lines = outcome.stdout_tail.decode("utf-8", errors="replace").splitlines()
    return any(line.strip() and parse_progress(line.encode()) is None for line in lines)


def result_from_outcome(order: WorkOrder, outcome: ProcessOutcome, silent_since: float | None = None) -> AttemptResult:
    """How the process ended, read with the worker report (if any) and the artifacts it wrote.

    ``silent_since``: when the attempt started (wall clock); given, an exit 0 with no report,
    no artifact, nothing on stdout and no file changed in the working directory is ``no_work``.
    """
    timing: dict[str, Any] = {"exit_code": outcome.exit_code, "duration_s": outcome.duration_s}
    if outcome.error_kind is not None:
        return AttemptResult(
            ok=False,
            error_kind=cast(ErrorKind, outcome.error_kind),  # run_process's kinds are all ErrorKinds
            error=outcome.error,
            summary=_last_line_summary(outcome, order.role),
            output_tail=_output_tail(outcome),
            **timing,
        )
    report, problem = _read_report(Path(order.report_file))
    if problem is not None:
        return AttemptResult(
            ok=False,
            error_kind="bad_output",
            error=problem,
            summary=_last_line_summary(outcome, order.role),
            output_tail=_output_tail(outcome),
            **timing,
        )
    report = report or {}
    session = Path(order.session_dir)
    summary_value = report.get("summary")
    summary = (
        _one_line(summary_value)[:SUMMARY_CHARS]
        if isinstance(summary_value, str) and summary_value.strip()
        else _last_line_summary(outcome, order.role)
    )
    if isinstance(report.get("artifacts"), list):
        listed = (_session_relative(session, item) for item in report["artifacts"])
        artifacts = tuple(dict.fromkeys(item for item in listed if item is not None))
    else:
        artifacts = _discovered_artifacts(order, session)
    status = report.get("status", "completed")
    if (
        not report
        and not artifacts
        and silent_since is not None
        and not printed(outcome)
        and not touched_since(Path(order.workdir), silent_since, skip=executor_paths(session))
    ):
        return AttemptResult(
            ok=False,
            error_kind="no_work",
            outcome="failed",
            error="the worker exited 0 but did no work: no report, no artifact, no output, "
            f"no file changed in {order.workdir}",
            output_tail=_output_tail(outcome),
            **timing,
        )
    severity = report.get("severity")
    detail = report.get("detail")
    common: dict[str, Any] = {
        "summary": summary,
        "artifacts": artifacts,
        "files_modified": _strings(report.get("files_modified")),
        "severity": severity if isinstance(severity, str) and severity else None,
        "detail": detail if isinstance(detail, str) else "",
        **_usage(report),
        **timing,
    }
    if status == "failed":
        return AttemptResult(
            ok=False,
            error_kind="crash",
            error=summary or "the worker reported that the task failed",
            outcome="failed",
            output_tail=_output_tail(outcome),
            **common,
        )
    if status == "changes_requested":
        reviewed = report.get("reviewed_task")
        return AttemptResult(
            ok=True,
            outcome="changes_requested",
            feedback=_feedback_items(report.get("feedback")),
            reviewed_task=reviewed if isinstance(reviewed, str) and reviewed.strip() else None,
            **common,
        )
    return AttemptResult(ok=True, outcome=status, **common)


_VERDICT = re.compile(
    r"^\s*(?:\[[^\]\n]*\]\s*)?\W*verdict\W*[:=]?\s*changes[\s_-]requested\b", re.IGNORECASE | re.MULTILINE
)
_ITEM = re.compile(r"^\s*(?:[-*+]|\d+[.)])\s+(.+?)\s*$")
_REVIEWED = re.compile(
    r"^\W*reviewed(?:[\s_]task)?\W*[:=]\s*([A-Za-z0-9][A-Za-z0-9_.-]*)", re.IGNORECASE | re.MULTILINE
)


def verdict_in_text(text: str) -> tuple[tuple[str, ...], str | None] | None:
    """A reviewer that cannot write files ends its final message with ``verdict: changes_requested``
    and one ``- `` line per item (and may name ``reviewed: ID``): (items, reviewed task) or None."""
    found = _VERDICT.search(text)
    if found is None:
        return None
    items: list[str] = []
    for line in text[found.end() :].splitlines()[1:]:
        item = _ITEM.match(line)
        if item is not None:
            items.append(item.group(1)[:2000])
        elif items and line.strip():
            break  # the list ended
    reviewed = _REVIEWED.search(text)
    return tuple(items[:50]), reviewed.group(1) if reviewed else None


def _feedback_items(value: Any) -> tuple[str, ...]:
    """A reviewer's feedback: strings, or objects with issue/file/line/suggestion; at most 50 items."""
    items: list[str] = []
    for item in value if isinstance(value, list) else [value] if isinstance(value, str) else []:
        if isinstance(item, str) and item.strip():
            items.append(item.strip()[:2000])
        elif isinstance(item, dict):
            issue = str(item.get("issue") or item.get("text") or item.get("message") or "").strip()
            where = ":".join(str(item[key]) for key in ("file", "line") if item.get(key) not in (None, ""))
            suggestion = str(item.get("suggestion") or "").strip()
            text = (f"{where}: " if where else "") + issue + (f" (suggestion: {suggestion})" if suggestion else "")
            if text.strip(": "):
                items.append(text[:2000])
    return tuple(items[:50])


def run_agent_process(
    order: WorkOrder,
    argv: Sequence[str],
    hooks: WorkerHooks,
    cancel: threading.Event,
) -> AttemptResult:
    """Run ``argv`` for ``order`` and turn how it ended into an :class:`AttemptResult`.

    Runs on the caller's thread until the process ends (see ``run_process``): in
    ``order.workdir``, stdin from ``/dev/null``, with :func:`order_env` as the whole
    environment, under ``order``'s wall, hang and grace limits, output appended to
    ``order.log_path``.  A stale report file is deleted first.  ``hooks.started`` is
    called once the process exists, ``hooks.progress`` for each progress line; the
    result's ``progress_lines`` says how many there were.

    How it ends:

    - the process failed (non-zero exit, signal, timeout, hang, cancel, could not
      start): ``ok=False`` with run_process's error kind, the exit code and the
      output tail;
    - exit 0 with a report that cannot be read, is not a JSON object, or has an
      unknown status: ``ok=False``, ``"bad_output"``, the error naming the file;
    - report status ``failed``: ``ok=False``, ``"crash"``, the error = its summary;
    - ``consensus_blocked`` / ``capability_gap``: ``ok=True`` with that outcome,
      severity and detail;
    - ``changes_requested`` (a reviewer's verdict): ``ok=True`` with its ``feedback`` items
      and the ``reviewed_task`` it names, if any;
    - ``completed`` or no report: ``ok=True``; but no report, no artifact, nothing on stdout
      but progress and no file changed in the working directory: ``ok=False``, ``"no_work"``
      (an exit code alone proves nothing).

    Artifacts are the report's list (paths inside the session folder only, made
    relative to it), else every file under ``order.artifacts_dir`` that belongs to
    the task.  The summary is the report's, else the last ``[<role>]`` line of
    stdout, else its last non-empty line (at most 300 characters).

    Raises only what ``hooks`` raise (after the process tree has been stopped).
    """
    problem = clear_report(order)
    if problem is not None:
        return problem
    progress_lines = 0

    def on_stdout_line(line: bytes) -> None:
        nonlocal progress_lines
        progress = parse_progress(line)
        if progress is not None:
            progress_lines += 1
            hooks.progress(*progress)

    started = time.time()
    spec, limits = process_of(order, argv)
    outcome = run_process(
        spec,
        limits,
        cancel=cancel,
        on_start=hooks.started,
        on_stdout_line=on_stdout_line,
        stdout_line_prefix=PROGRESS_LINE_PREFIX,
    )
    result = result_from_outcome(order, outcome, silent_since=started)
    return msgspec.structs.replace(result, progress_lines=progress_lines)


#: Only a JSON object can be a progress line: the others are never made into objects.
PROGRESS_LINE_PREFIX = b"{"


def clear_report(order: WorkOrder) -> AttemptResult | None:
    """Delete a stale report file (and make its folder): None, or the failed result when that cannot be done."""
    report = Path(order.report_file)
    try:
        report.unlink(missing_ok=True)
        make_folder(report.parent)
    except OSError as error:
        return AttemptResult(
            ok=False,
            error_kind="spawn_failed",
            error=f"cannot prepare the report file {report}: {error.strerror or error}",
        )
    return None


def process_of(order: WorkOrder, argv: Sequence[str]) -> tuple[ProcessSpec, ProcessLimits]:
    """What to run for ``order`` and under which limits: in its working directory, with
    :func:`order_env` as the whole environment, output appended to its log."""
    spec = ProcessSpec(argv=tuple(argv), cwd=order.workdir, env=order_env(order), log_path=order.log_path)
    limits = ProcessLimits(
        wall_timeout_s=order.timeout_s,
        hang_timeout_s=order.hang_timeout_s,
        grace_s=order.grace_s,
        nice=order.nice,
    )
    return spec, limits
