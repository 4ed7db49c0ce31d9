"""``executor run`` / ``resume`` on the main thread: check, lock, boot the tree, wait, conclude.

The main thread stays out of the actors' way: it holds the session lock,
turns SIGINT/SIGTERM into :class:`ShutdownRequest` messages (the first one
graceful, the second immediate), waits for the run's outcome, performs the
completion action, and prints the completion report.

Exit codes: 0 the run completed (or was stopped cleanly by a signal), 1 it
ended with failed tasks, could not start, or was stopped by an escalation;
2 the request itself was unusable (e.g. no backend chosen).
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import logging
import os
import shutil
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol, TextIO, TypeVar

import msgspec
import psutil
import pykka

from actors.executor import Conclude, Executor, RoutingSetup, RunOptions
from actors.prompting import PromptSource
from actors.reconciler import find_marked_processes
from actors.session import EventSink
from actors.stop_signals import StopSignals
from actors.supervision import Backoff
from backends.base import Backend
from backends.mcp_call import mcp_task_problems, register_servers
from backends.openai_http import OpenAIHttpBackend
from backends.process_tree import stop_tree
from backends.registry import UnknownBackend, backend_names, get_backend
from backends.sandbox import JailError, find_jail, resolve_workdir
from notify.setup import NotifySetup
from protocol.events import Event, TaskDispatched, encode_event
from protocol.messages import RunSummary, ShutdownRequest
from session.config import ConfigInvalid, apply_role_defaults, load_config
from session.config_models import Config
from session.id_checks import stored_bad_ids
from session.keypool import pool_from_config
from session.keystore import KeyStore, KeyStoreError
from session.lifecycle import reopen_failed
from session.loader import TeamSession, inspect_session
from session.lock import SessionBusy, SessionLock
from session.message_bus import MessageBus
from session.mirror_keeper import MirrorKeeper
from session.problems import format_problems
from session.redaction import RedactingFilter, redact
from session.run_choices import RememberError, RoleBackend, choice_notes, remember_backend, role_backends
from session.skills import user_config_dir
from session.store import STATE_DIR, Store, StoreError, StoreReader

__all__ = ["BridgeOpener", "RunBridge", "RunRefused", "RunRequest", "resolve_backends", "run_session"]

log = logging.getLogger("executor.run")
_T = TypeVar("_T")


class RunRefused(Exception):
    """The run cannot start; the message says why and what to do."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class RunBridge(Protocol):
    """The MCP bridge and dashboard a run serves (``bridge.serve.BridgeRuntime``)."""

    @property
    def worker_endpoint(self) -> tuple[str, str]: ...

    def attach(self, executor: pykka.ActorRef[Any]) -> None: ...

    def serve_stdio(self, outcome: Future[Any], request_stop: Callable[[str], None]) -> None: ...

    def close(self) -> None: ...


class BridgeOpener(Protocol):
    """Opens the run's bridge; raises :class:`RunRefused`.  The command line composes it
    (bridge/ and web/ sit above actors/, so a run never imports them)."""

    def __call__(
        self, folder: Path, console: Callable[[str], None], terminal: Callable[[str], None] | None
    ) -> RunBridge: ...


def _stdin_is_terminal() -> bool:
    return sys.stdin is not None and sys.stdin.isatty()


@dataclass
class RunRequest:
    """What the command line asked for; ``None`` means "the config's value"."""

    session_dir: Path
    command: str = "run"
    backend: str | None = None
    config_file: Path | None = None
    max_workers: int | None = None
    workdir: Path | None = None
    json_events: bool = False
    export_dir: Path | None = None
    task_timeout_s: float | None = None
    hang_timeout_s: float | None = None
    max_attempts: int | None = None
    shutdown_grace_s: float | None = None
    retry_backoff_s: float | None = None
    interactive: bool = field(default_factory=_stdin_is_terminal)
    bridge: BridgeOpener | None = None  # --http or `executor mcp`: dashboard, API and the MCP bridge
    mcp_stdio: bool = False  # `executor mcp`: the bridge on stdin/stdout
    exit_when_done: bool = False  # with the bridge: end when the pipeline is done instead of serving on
    retry_failed: bool = False  # resume --retry-failed: failed tasks start again with fresh attempts


def resolve_backends(
    session: TeamSession, chosen: list[RoleBackend], config: Config | None = None
) -> dict[str, Backend]:
    """The backend of every role (``chosen`` by :func:`session.run_choices.role_backends`), or
    :class:`RunRefused` with one line per problem and the list of backends once."""
    problems: list[str] = []
    missing: list[str] = []
    backends: dict[str, Backend] = {}
    for entry in chosen:
        role, spec = entry.role, session.role_specs[entry.role]
        where = session.roles[role].role_spec
        if entry.backend is None:
            missing.append(role)
            continue
        try:
            backend = get_backend(entry.backend)
        except UnknownBackend:
            origin = {"flag": "--backend", "remembered": "[remembered].backend in executor.toml"}.get(
                entry.source, where
            )
            close = difflib.get_close_matches(entry.backend, backend_names(), n=1)
            problem = f"{origin}: unknown backend '{entry.backend}'" + (f" (did you mean {close[0]}?)" if close else "")
            if entry.source not in ("flag", "remembered"):
                problem += f" (role {role})"
            if problem not in problems:  # --backend names it once for every role
                problems.append(problem)
            continue
        # The choice made here is the one the workers use: the role-spec they read says so.
        if spec.meta.backend != entry.backend:
            session.role_specs[role] = dataclasses.replace(
                spec, meta=spec.meta.model_copy(update={"backend": entry.backend})
            )
            spec = session.role_specs[role]
        # Runs have a Router and a KeyPool: the openai backend's model, base URL and key
        # may come from the registry and the pool rather than the role-spec.
        refusal = (
            backend.preflight_routed(role, spec.meta, config)
            if isinstance(backend, OpenAIHttpBackend)
            else backend.preflight(role, spec.meta)
        )
        if refusal:
            problems.append(refusal)
            continue
        backends[role] = backend
    if missing:
        specs = ", ".join(session.roles[role].role_spec for role in missing)
        problems.insert(
            0,
            f"no backend for role(s) {', '.join(missing)}: pass --backend NAME (e.g. --backend demo: no key "
            f"needed; it is remembered for resume) or add `backend: NAME` to {specs}",
        )
    if problems:
        unknown = any("unknown backend" in problem for problem in problems) or missing
        choices = f"\n  backends: {', '.join(backend_names())}" if unknown else ""
        raise RunRefused("cannot run this session:\n  " + "\n  ".join(problems) + choices, exit_code=2)
    return backends


def _session_marker(folder: Path) -> str:
    return hashlib.sha256(str(folder.resolve()).encode()).hexdigest()[:20]


# Ours, and the libraries under the bridge: all to the session's log file, none on the terminal
# (over stdio the terminal's stdout is the protocol).
_LOGGERS = ("pykka", "executor", "mcp", "uvicorn", "uvicorn.error", "sse_starlette")


def _configure_logging(folder: Path) -> logging.Handler:
    # A log line that cannot be written (a full disk) is dropped, never printed as a traceback.
    logging.raiseExceptions = False
    handler = logging.FileHandler(folder / STATE_DIR / "executor.log", encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(threadName)s: %(message)s"))
    handler.addFilter(RedactingFilter())  # on the handler: it sees every logger's records
    for name in _LOGGERS:
        logger = logging.getLogger(name)
        logger.setLevel(logging.INFO)
        logger.addHandler(handler)
        logger.propagate = False  # actor crashes go to the log file, never as tracebacks on the terminal
    return handler


class _Console:
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


def _json_events_sink(stream: TextIO) -> EventSink:
    lock = threading.Lock()

    def sink(_event_id: int, occurred_at: str, event: Event) -> None:
        payload = msgspec.json.decode(encode_event(event))
        payload["occurred_at"] = occurred_at
        with lock:
            stream.write(redact(msgspec.json.encode(payload).decode()) + "\n")
            stream.flush()

    return sink


def _started_sink(console: _Console) -> EventSink:
    def sink(_event_id: int, _occurred_at: str, event: Event) -> None:
        if isinstance(event, TaskDispatched):
            attempt = f" attempt {event.attempt}" if event.attempt > 1 else ""
            console(f"▶ {event.task_id} started on {event.backend}{attempt}")

    return sink


_Ending = Literal["paused", "completed"]


def _choose_status(session: TeamSession, request: RunRequest, summary: RunSummary, console: _Console) -> _Ending:
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


def _completion_report(session: TeamSession, summary: RunSummary, status: str) -> str:
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


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def run_session(request: RunRequest, out: TextIO | None = None) -> int:
    """Run (or resume) a session to its end; return the exit code.  Raises :class:`RunRefused`."""
    out = out or sys.stdout
    if request.mcp_stdio and request.json_events:
        raise RunRefused("--json-events cannot share stdout with the MCP stdio transport; drop one", exit_code=2)
    # Over stdio, stdout is the protocol's: people read stderr.
    human = sys.stderr if request.json_events or request.mcp_stdio else out
    if request.bridge is not None:
        request.interactive = False  # nobody at a keyboard: stdin may be the protocol
    session, problems = inspect_session(request.session_dir)
    if session is None:
        raise RunRefused(f"{request.session_dir} is not a valid session:\n{format_problems(problems)}")
    bad_ids = stored_bad_ids(Path(session.folder))
    if bad_ids:  # an older version stored them; dispatching one would build paths from it
        shown = ", ".join(repr(task_id) for task_id in bad_ids[:5])
        raise RunRefused(
            f"{STATE_DIR}/state.db holds task id(s) no file may be named after: {shown}. "
            f"Fix: move {Path(session.folder) / STATE_DIR} aside to start this session's state afresh",
            exit_code=2,
        )
    try:
        config = load_config(Path(session.folder), request.config_file, known_backends=backend_names())
    except ConfigInvalid as error:
        raise RunRefused("the configuration is not valid:\n" + format_problems(error.problems), exit_code=2) from None
    chosen = role_backends(session, config, request.backend)  # before [roles.X] is merged into the role-specs
    apply_role_defaults(session, config)
    register_servers(config.mcp_servers)  # before resolve_backends: the mcp backend's preflight reads them
    backends = resolve_backends(session, chosen, config)
    mcp_problems = mcp_task_problems(
        session.tasks, session.role_specs, backends, done=set(session.team.completed_tasks)
    )
    if mcp_problems:
        raise RunRefused("cannot run this session:\n  " + "\n  ".join(mcp_problems), exit_code=2)
    try:
        jail = find_jail(Path(session.folder))
        workdir = resolve_workdir(jail, request.workdir)
    except JailError as error:
        raise RunRefused(str(error), exit_code=2) from None
    try:
        Store.open(Path(session.folder)).close()
    except StoreError as error:
        raise RunRefused(str(error)) from None
    try:
        MessageBus.open(Path(session.folder)).close()
    except OSError as error:
        where = error.filename or Path(session.folder) / ".msg"
        raise RunRefused(
            f"cannot open the message bus {where}: {error.strerror or error}; "
            "it must be a writable file (remove or rename what is there)"
        ) from None

    lock = SessionLock(Path(session.folder))
    try:
        lock.acquire(request.command)
    except SessionBusy as error:
        raise RunRefused(str(error)) from None
    handler = _configure_logging(Path(session.folder))
    console = _Console(human)
    if request.retry_failed:
        retried = reopen_failed(Path(session.folder), by="cli")
        console(
            f"retrying {len(retried)} failed task(s): {', '.join(retried)}" if retried else "no failed task to retry"
        )
    config_file = Path(session.folder) / "executor.toml"
    for note in choice_notes(chosen, config.remembered.backend, config_file):
        console(f"note: {note}")
    if request.backend:
        try:
            remember_backend(Path(session.folder), request.backend)
        except RememberError as error:
            console(f"! {error}; the next resume needs --backend {request.backend} again")
    sinks: list[EventSink] = [_started_sink(console)]
    if request.json_events:
        sinks.append(_json_events_sink(out))
    stop_signals = StopSignals()
    stop_signals.install()
    bridge: RunBridge | None = None
    if request.bridge is not None:
        try:
            bridge = request.bridge(
                Path(session.folder).resolve(), console, console.reveal if _is_terminal(human) else None
            )
        except RunRefused:
            stop_signals.restore()
            lock.release()
            raise
    notify_setup = NotifySetup.from_config(config, os.environ)
    for warning in notify_setup.warnings:
        console(f"! notifications: {warning}")
    settings = config.run
    retry_backoff_s = _first(request.retry_backoff_s, settings.retry_backoff_s)
    options = RunOptions(
        command=request.command,
        max_workers=_first(request.max_workers, settings.max_workers),
        workdir=workdir,
        max_attempts=_first(request.max_attempts, settings.max_attempts),
        task_timeout_s=request.task_timeout_s,
        hang_timeout_s=request.hang_timeout_s,
        shutdown_grace_s=_first(request.shutdown_grace_s, settings.shutdown_grace_s),
        retry_backoff=Backoff(min_s=retry_backoff_s, max_s=max(300.0, retry_backoff_s), jitter=0.2),
        routing=_routing_setup(config, console),
        session_budget_usd=config.budget.session_usd,
        task_budget_usd=config.budget.task_usd,
        budget_warn_at=config.budget.warn_at,
        keep_alive=bridge is not None and not request.exit_when_done,
        worker_bridge=bridge.worker_endpoint if bridge is not None else None,
        mcp_servers=dict(config.mcp_servers),
        notify=notify_setup,
    )
    outcome: Future[RunSummary] = Future()
    executor = Executor.start(
        session,
        options,
        backends,
        PromptSource(session),
        outcome,
        sinks,
        _session_marker(Path(session.folder)),
        console,
    )
    stop_signals.attach(executor)
    if bridge is not None:
        bridge.attach(executor)
    mirror = MirrorKeeper(Path(session.folder)).start()  # tasks/<status>/<ID>.md, kept current
    try:
        console(f"{session.session_id}: {request.command} with up to {options.max_workers} worker(s)")
        if request.mcp_stdio and bridge is not None:
            bridge.serve_stdio(outcome, lambda why: executor.tell(ShutdownRequest(reason=why)))
        summary = _wait(outcome, executor, str(session.folder))
        status = (
            _choose_status(session, request, summary, console)
            if not (summary.interrupted or summary.escalated or summary.budget_stopped)
            else "paused"
        )
        executor.ask(Conclude(session_status=status), timeout=60)
        executor.stop(block=True, timeout=30)
        _sweep_orphans(Path(session.folder), console)
        _settle_worktrees(Path(session.folder), workdir, console)
        human.write(redact(_completion_report(session, summary, status)) + "\n")
        human.flush()
    finally:
        if executor.is_alive():
            executor.stop(block=False)
        if bridge is not None:
            bridge.close()
        mirror.stop()  # its last pass shows where the run left every task
        lock.release()
        for name in _LOGGERS:
            logging.getLogger(name).removeHandler(handler)
        handler.close()
        stop_signals.restore()  # last: a signal now can no longer cut the closing short
    if summary.escalated or summary.failed or summary.blocked or summary.budget_stopped:
        return 1
    return 0


def _routing_setup(config: Config, console: _Console) -> RoutingSetup:
    """The key pool from the config's key variables and seed files, plus the encrypted
    store when one exists (opening it may ask the OS keyring, so only then)."""
    store = None
    stored: list[Any] = []
    if (user_config_dir() / "keys.enc").exists():
        try:
            store = KeyStore.open(user_config_dir(), os.environ)
            stored = list(store.secrets())
        except KeyStoreError as error:
            console(f"! the key store could not be opened ({error}); going on without its keys")
    return RoutingSetup(
        config=config,
        pool=pool_from_config(config, os.environ, stored=stored),
        store=store,
        store_path=user_config_dir() / "keys.enc",
        open_store=lambda: KeyStore.open(user_config_dir(), os.environ),
    )


def _first(flag: _T | None, configured: _T) -> _T:
    """A command-line flag when given, else the configured value."""
    return configured if flag is None else flag


def _settle_worktrees(folder: Path, project: Path, console: _Console) -> None:
    """Tasks' worktrees whose work has been judged: removed once merged, or exported as a patch."""
    from session.worktrees import WorktreeError, settle_finished, worktrees_root  # noqa: PLC0415

    try:
        if not worktrees_root(project, folder).is_dir():
            return
    except WorktreeError:
        return  # not a git project: no task had a worktree
    reader = StoreReader.open(folder)
    if reader is None:
        return
    try:
        rows = reader.tasks()
    finally:
        reader.close()
    try:
        for settled in settle_finished(project, folder, rows):
            console(f"⎇ {settled.task_id}: {settled.detail}")
    except WorktreeError as error:
        console(f"! a worktree was left as it is: {error}")


def _sweep_orphans(folder: Path, console: _Console) -> None:
    """Every worker is done: whatever still carries this session's marker escaped its
    process group (a detached grandchild) and would be orphaned for good."""
    stopped: list[int] = []
    for process in find_marked_processes(_session_marker(folder)):
        try:
            stopped += stop_tree(process.pid, process.create_time(), grace_s=2.0)
        except psutil.NoSuchProcess:
            continue
    if stopped:
        console(f"stopped {len(stopped)} leftover process(es) that workers had detached: {sorted(stopped)}")
        log.warning("stopped leftover worker descendants %s", sorted(stopped))


def _wait(outcome: Future[RunSummary], executor: Any, folder: str) -> RunSummary:
    while True:
        try:
            return outcome.result(timeout=0.2)
        except FutureTimeout:
            if not executor.is_alive():
                raise RunRefused(
                    "the executor stopped unexpectedly; the state is saved — see .executor/executor.log, "
                    f"then `executor resume --session {folder}`"
                ) from None
