"""The JSON API, /healthz and /metrics: a FastAPI app over the bridge's context.

Reads go to the store through a read-only connection (they work while the
Executor is busy and cost the tree nothing); changes are the same protocol
messages the MCP tools send, so both surfaces refuse and accept alike.  The
handlers are plain ``def``s: FastAPI runs them on worker threads, where a
blocking ask of the tree never holds up the event loop.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path, PurePosixPath
from typing import Annotated, Any, Literal

import msgspec
from fastapi import FastAPI, Query, Request
from fastapi import Path as PathParam
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from mcp.server.mcpserver.exceptions import ToolError

from bridge import panic
from bridge.models import CancelOut, EscalationOut, EscalationsOut, TaskOut, TasksOut, WorkerOut, cancel_note
from bridge.tools import PRIORITY_OF, BridgeContext, RefusedByRun, Unavailable, fleet_out, task_out, task_view
from protocol.bridge import (
    AnswerEscalation,
    Cancelled,
    CancelTask,
    EscalationRecord,
    FleetSnapshot,
    GetFleet,
    SubmitTask,
    TaskAccepted,
)
from protocol.ids import TASK_ID_PATTERN, TASK_ID_RULE, is_task_id
from session.safepath import is_private
from session.store import STATE_DIR, StoreError
from web.events import event_stream
from web.metrics import render_metrics
from web.models import (
    AgentsOut,
    AgentStatsOut,
    AnswerIn,
    DiffOut,
    HealthOut,
    RunInfoOut,
    SessionOut,
    SpendOut,
    SubmitIn,
    TaskDetailOut,
    TaskRunOut,
)

__all__ = ["LOG_TAIL_BYTES", "build_api"]

LOG_TAIL_BYTES = 16 * 1024
ARTIFACT_MAX_BYTES = 2 * 1024 * 1024
HEALTH_TIMEOUT_S = 3.0
StatusFilter = Literal["pending", "in_progress", "review", "completed", "failed"]

#: A task id in the URL: the id grammar, or 422 before anything looks it up.
TaskIdParam = Annotated[str, PathParam(pattern=TASK_ID_PATTERN, description=f"A task id ({TASK_ID_RULE})")]

_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"description": "The request names something wrong; detail says what"},
    404: {"description": "No such task, escalation or file"},
    409: {"description": "The run refuses it in its present state (or the panic switch is on)"},
    503: {"description": "The run cannot answer now (starting, busy or ending); try again"},
}


class ApiError(Exception):
    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


def _status_of(error: ToolError) -> int:
    if isinstance(error, Unavailable):
        return 503
    if isinstance(error, RefusedByRun):
        if error.refused.retry_later:
            return 503
        return 404 if error.refused.reason.startswith("no ") else 409
    return 404 if "no task" in str(error) else 400


def _tail(path: str | None, folder: Path) -> str:
    """The end of a log file (whole lines), or '' when there is none."""
    if not path:
        return ""
    log = Path(path) if os.path.isabs(path) else folder / path
    try:
        with log.open("rb") as handle:
            size = handle.seek(0, os.SEEK_END)
            handle.seek(max(0, size - LOG_TAIL_BYTES))
            data = handle.read()
    except OSError:
        return ""
    if len(data) == LOG_TAIL_BYTES and b"\n" in data:
        data = data.split(b"\n", 1)[1]  # drop the partial first line
    return data.decode("utf-8", errors="replace")


def _artifact_file(folder: Path, relative: str) -> Path:
    """``relative`` inside the session folder, never its state folder, never a hidden path."""
    parts = PurePosixPath(relative).parts
    if not relative or PurePosixPath(relative).is_absolute() or ".." in parts:
        raise ApiError(400, "path: give a path relative to the session folder, e.g. artifacts/PM-001-plan.md")
    if parts[0] == STATE_DIR or any(part.startswith(".") for part in parts):
        raise ApiError(404, f"path: {relative} is not an artifact")
    root = folder.resolve()
    try:
        target = (root / relative).resolve()
        found = target.is_relative_to(root) and target.is_file()
    except (OSError, ValueError):  # a name too long for the file system, a NUL byte
        found = False
    if not found:
        raise ApiError(404, f"path: no file {relative[:200]} in this session")
    # The resolved target decides: a link in artifacts/ to .executor/ (or to any hidden
    # file) is refused as if it had been asked for by that name.
    if is_private(root, target) or any(part.startswith(".") for part in target.relative_to(root).parts):
        raise ApiError(404, f"path: {relative[:200]} is not an artifact")
    return target


def build_api(context: BridgeContext) -> FastAPI:
    """The API app; ``context`` reaches the tree and the store.  Docs are the schema (no CDN UI)."""
    api = FastAPI(
        title="team-executor",
        version="1",
        description="The live state of one team-executor session, and the few changes a person makes to it.",
        docs_url=None,
        redoc_url=None,
        openapi_url="/openapi.json",
    )
    folder = context.folder
    _, scrape = render_metrics(folder)

    @api.exception_handler(ToolError)
    async def tool_error(_request: Request, error: ToolError) -> JSONResponse:
        return JSONResponse({"detail": str(error)}, status_code=_status_of(error))

    @api.exception_handler(ApiError)
    async def api_error(_request: Request, error: ApiError) -> JSONResponse:
        return JSONResponse({"detail": error.detail}, status_code=error.status)

    @api.exception_handler(StoreError)
    async def store_error(_request: Request, error: StoreError) -> JSONResponse:
        return JSONResponse({"detail": str(error)}, status_code=503)

    def refuse_in_panic(what: str) -> None:
        if panic.is_on(folder):
            raise ApiError(
                409,
                f"the panic switch is on ({panic.reason(folder) or 'no reason given'}): {what} is refused; "
                f"clear it with `executor panic off --session {folder}`",
            )

    # --- health and metrics ------------------------------------------------------------

    @api.get("/healthz", tags=["health"], responses={503: {"model": HealthOut}})
    def healthz() -> JSONResponse:
        """Liveness (the process answers) and readiness (the actor tree answers and is not stopping)."""
        try:
            snapshot: FleetSnapshot = context.ask(GetFleet(), timeout_s=HEALTH_TIMEOUT_S)
        except ToolError as error:
            health = HealthOut(live=True, ready=False, state="unavailable", detail=str(error))
        else:
            ready = snapshot.state not in ("stopping", "finished")
            health = HealthOut(live=True, ready=ready, state=snapshot.state, actors=list(snapshot.actors))
        return JSONResponse(health.model_dump(), status_code=200 if health.ready else 503)

    @api.get("/metrics", tags=["health"], response_class=PlainTextResponse)
    def metrics() -> Response:
        """Prometheus text format: tasks, workers, dispatch latency, restarts, tokens and cost, per-agent stats."""
        return Response(scrape(), media_type="text/plain; version=0.0.4; charset=utf-8")

    # --- reading ------------------------------------------------------------------------

    @api.get("/api/session", tags=["session"], responses=_ERRORS)
    def session() -> SessionOut:
        """Where the session stands: progress, the live run, spend by model and key, the recovery report."""
        from session.report import build_report  # noqa: PLC0415 - the report pulls in the loader

        report = build_report(folder)
        reader = context.reader()
        spend = [SpendOut(**row) for row in reader.spend()]
        run, keys = None, []
        try:
            fleet = fleet_out(context)
        except ToolError:
            fleet = None
        if fleet is not None:
            run = RunInfoOut(run_id=fleet.run_id, state=fleet.state, max_workers=fleet.max_workers)
            keys = fleet.keys
        return SessionOut(
            session_id=report.session_id,
            status=report.status,
            completed=report.progress.completed,
            total=report.progress.total,
            percent=report.progress.percent,
            run=run,
            panic=panic.is_on(folder),
            spent_usd=round(sum(item.cost_usd for item in spend), 6),
            spend=spend,
            keys=keys,
            recovery_report=report.recovery_report,
            next_command=report.next_command,
            open_escalations=len(reader.escalations("open")),
            last_event_id=reader.last_event_id(),
        )

    @api.get("/api/tasks", tags=["tasks"], responses=_ERRORS)
    def list_tasks(
        status: Annotated[StatusFilter | None, Query(description="Only tasks with this status")] = None,
        owner: Annotated[str | None, Query(max_length=200, description="Only this role's tasks")] = None,
    ) -> TasksOut:
        """Every task (or one status's, or one role's), ordered by id; edges are in blocked_by."""
        rows = [
            row
            for row in context.reader().tasks()
            if (status is None or row.status == status) and (owner is None or row.owner == owner)
        ]
        rows.sort(key=lambda row: row.id)
        return TasksOut(tasks=[task_out(row) for row in rows], total=len(rows))

    @api.get("/api/tasks/{task_id}", tags=["tasks"], responses=_ERRORS)
    def task_detail(task_id: TaskIdParam) -> TaskDetailOut:
        """One task: description, every attempt, newest progress, artifacts, its log's tail, its questions."""
        view = task_view(context, task_id)
        newest_log = next((run.log_path for run in reversed(view.runs) if run.log_path), None)
        return TaskDetailOut(
            task=task_out(view.row),
            description=view.row.description,
            runs=[TaskRunOut.model_validate(run, from_attributes=True) for run in view.runs],
            progress=view.progress,
            artifacts=view.artifacts,
            log_tail=_tail(newest_log, folder),
            escalations=[
                EscalationOut.model_validate(row, from_attributes=True)
                for row in context.reader().escalations()
                if row.task_id == task_id
            ],
        )

    @api.get("/api/tasks/{task_id}/diff", tags=["tasks"], responses=_ERRORS)
    def task_diff_view(
        task_id: str,
        attempt: Annotated[int | None, Query(ge=1, description="One attempt only (default: all)")] = None,
        stat: Annotated[bool, Query(description="Only the files and line counts, no patch")] = False,
    ) -> DiffOut:
        """What the task changed in the project (never the executor's own files): files, line counts, the diff."""
        from session.task_diff import DiffUnavailable, task_diff  # noqa: PLC0415 - runs git; only this route

        if not is_task_id(task_id):
            raise ApiError(400, "task_id: not a task id (letters, digits, '-', '_', '.')")
        try:
            diff = task_diff(folder, task_id, attempt, patch=not stat)
        except DiffUnavailable as error:
            raise ApiError(400 if error.argument else 404, str(error)) from None
        return DiffOut.model_validate(msgspec.to_builtins(diff))

    @api.get("/api/tasks/{task_id}/log", tags=["tasks"], response_class=PlainTextResponse, responses=_ERRORS)
    def task_log(
        request: Request,
        task_id: str,
        attempt: Annotated[
            int | None, Query(ge=1, description="One attempt only (default: the newest, then the next)")
        ] = None,
    ) -> Response:
        """Server-sent events: the task's agent output from the start of its attempt, followed as it grows."""
        from web.log_stream import log_stream, resume_point  # noqa: PLC0415

        if not is_task_id(task_id):
            raise ApiError(400, "task_id: not a task id (letters, digits, '-', '_', '.')")
        if context.reader().task(task_id) is None:
            raise ApiError(404, f"no task '{task_id}' in this session")
        resume = resume_point(request.headers.get("last-event-id", ""))
        return log_stream(folder, task_id, attempt, resume, request.app.state.closing)

    @api.get("/api/agents", tags=["agents"], responses=_ERRORS)
    def agents() -> AgentsOut:
        """Running workers (with elapsed time) and, per backend and role, attempts, completions and error rate."""
        workers: list[WorkerOut] = []
        with contextlib.suppress(ToolError):  # the tree cannot answer now: the statistics come from the store
            workers = fleet_out(context).workers
        stats = [AgentStatsOut.model_validate(row, from_attributes=True) for row in context.reader().agent_stats()]
        return AgentsOut(workers=workers, agents=stats, installed=context.installed_backends())

    @api.get("/api/escalations", tags=["escalations"], responses=_ERRORS)
    def escalations(
        status: Annotated[Literal["open", "answered"] | None, Query(description="Only open or answered")] = None,
    ) -> EscalationsOut:
        """The questions for the user."""
        rows = context.reader().escalations(status)
        return EscalationsOut(escalations=[EscalationOut.model_validate(row, from_attributes=True) for row in rows])

    @api.get("/api/artifact", tags=["tasks"], response_class=PlainTextResponse, responses=_ERRORS)
    def artifact(
        path: Annotated[str, Query(min_length=1, max_length=1000, description="Relative to the session folder")],
    ) -> Response:
        """The text of a file a task produced (at most 2 MiB shown)."""
        target = _artifact_file(folder, path)
        try:
            with target.open("rb") as handle:
                data = handle.read(ARTIFACT_MAX_BYTES)
        except OSError as error:
            raise ApiError(404, f"path: cannot read {path[:200]} ({error.strerror or error})") from None
        return Response(data.decode("utf-8", errors="replace"), media_type="text/plain; charset=utf-8")

    @api.get("/api/events", tags=["events"], response_class=PlainTextResponse)
    def events(
        request: Request,
        after: Annotated[int, Query(ge=0, description="Send the events after this id (0: all)")] = 0,
    ) -> Response:
        """Server-sent events: every event the run records, as it is recorded (``id`` resumes a stream)."""
        resume_from = request.headers.get("last-event-id", "")
        start = int(resume_from) if resume_from.isdigit() else after
        return event_stream(folder, start, request.app.state.closing)

    # --- changing ---------------------------------------------------------------------

    @api.post("/api/tasks", tags=["tasks"], status_code=201, responses=_ERRORS)
    def submit(body: SubmitIn) -> TaskOut:
        """Add a task to the running pipeline; it is dispatched when its blockers are done."""
        refuse_in_panic("submitting a task")
        accepted: TaskAccepted = context.ask(
            SubmitTask(
                name=body.name,
                description=body.description,
                priority=PRIORITY_OF[body.priority],
                assigned_to=body.assigned_to,
                blocked_by=tuple(body.blocked_by),
            )
        )
        return task_out(accepted.task)

    @api.post("/api/tasks/{task_id}/cancel", tags=["tasks"], responses=_ERRORS)
    def cancel(task_id: TaskIdParam) -> CancelOut:
        """Cancel a pending or running task (a running agent is stopped); it ends failed, kind 'cancelled'."""
        refuse_in_panic("cancelling a task")
        cancelled: Cancelled = context.ask(CancelTask(task_id=task_id, by="web"))
        note = cancel_note(cancelled.was)
        return CancelOut(task_id=cancelled.task_id, was=cancelled.was, note=note)

    @api.post("/api/escalations/{escalation_id}/answer", tags=["escalations"], responses=_ERRORS)
    def answer(escalation_id: str, body: AnswerIn) -> EscalationOut:
        """Answer an open question with one of its options; what waited on it goes on."""
        refuse_in_panic("answering a question")
        record: EscalationRecord = context.ask(
            AnswerEscalation(escalation_id=escalation_id, choice=body.choice, answered_by="web")
        )
        return EscalationOut.model_validate(record.escalation, from_attributes=True)

    return api
