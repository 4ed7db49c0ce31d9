"""``executor run`` / ``resume`` on the main thread: check, lock, boot the tree, wait, conclude.

The main thread stays out of the actors' way: it holds the session lock,
turns SIGINT/SIGTERM into :class:`ShutdownRequest` messages (the first one
graceful, the second immediate), waits for the run's outcome, performs the
completion action, and prints the completion report.

Exit codes: 0 the run completed (or was stopped cleanly by a signal), 1 it
ended with failed tasks, could not start, or was stopped by an escalation;
2 the request itself was unusable (e.g. no backend chosen).

The request and its refusals are :mod:`actors.run_request`; what the run shows is
:mod:`actors.run_console`.
"""

from __future__ import annotations

import hashlib
import logging
import os
import sys
import threading
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO, TypeVar

import psutil
import pykka

from actors.executor import Conclude, Executor, RoutingSetup, RunOptions
from actors.prompting import PromptSource
from actors.reconciler import find_marked_processes
from actors.run_console import (
    LOGGERS,
    RunConsole,
    choose_status,
    completion_report,
    configure_logging,
    is_terminal,
    json_events_sink,
    started_sink,
)
from actors.run_request import RunBridge, RunRefused, RunRequest, resolve_backends
from actors.session import EventSink
from actors.session_link import SESSION
from actors.stop_signals import StopSignals
from actors.supervision import Backoff
from backends.mcp_call import mcp_task_problems, register_servers
from backends.process_tree import stop_tree
from backends.registry import backend_names
from backends.sandbox import JailError, find_jail, resolve_workdir
from cluster.connect import ClusterUnavailable, connect, import_ray, namespace_of
from cluster.reaper import reap
from notify.setup import NotifySetup
from protocol.messages import RunSummary, ShutdownRequest
from session import collector
from session.config import ConfigInvalid, apply_role_defaults, load_config
from session.config_models import Config
from session.git_trees import repo_root
from session.id_checks import stored_bad_ids
from session.keypool import pool_from_config
from session.keystore import KeyStore, KeyStoreError
from session.lifecycle import reopen_failed
from session.loader import inspect_session
from session.lock import SessionBusy, SessionLock
from session.message_bus import MessageBus
from session.mirror_process import start_mirror
from session.problems import format_problems
from session.redaction import redact
from session.run_choices import RememberError, choice_notes, remember_backend, role_backends
from session.secret import ApiKey
from session.skills import user_config_dir
from session.store import STATE_DIR, Store, StoreError, StoreReader

if TYPE_CHECKING:
    from cluster.runner import ClusterSetup

__all__ = ["run_session"]
log = logging.getLogger("executor.run")
_T = TypeVar("_T")


def _session_finder(executor: pykka.ActorRef[Any]) -> Callable[[], pykka.ActorRef[Any] | None]:
    """Where the run's Session actor is, asked on the bridge's threads (a restarted one is another
    actor): the Executor's supervisor knows; a dict lookup, not a message to the busy Executor."""
    try:
        supervisor = executor.proxy().supervisor.get(timeout=30)
    except (pykka.ActorDeadError, pykka.Timeout):
        return lambda: None  # the run failed to start: nothing will be queued
    return lambda: supervisor.ref(SESSION)


def _session_marker(folder: Path) -> str:
    return hashlib.sha256(str(folder.resolve()).encode()).hexdigest()[:20]


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
    stored_keys = _open_stored_keys()
    # An agent CLI with no key of its own may take its provider's keys from the run's pool.
    pooled = {key.provider for key in (*config.collect_keys(os.environ), *stored_keys.keys)}
    backends = resolve_backends(session, chosen, config, pooled_providers=pooled)
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

    cluster = _cluster_setup(request, config, _session_marker(Path(session.folder)), workdir)
    lock = SessionLock(Path(session.folder))
    try:
        lock.acquire(request.command)
    except SessionBusy as error:
        raise RunRefused(str(error)) from None
    handler = configure_logging(Path(session.folder))
    console = RunConsole(human)
    if cluster is not None:
        # We hold the lock: attempt actors alive in this session's namespace were left by a
        # predecessor killed while they ran; the reconciler puts their tasks back.
        reaped = reap(import_ray())
        if reaped:
            console(f"stopped {len(reaped)} attempt(s) a previous run left on the cluster: {', '.join(reaped)}")
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
    sinks: list[EventSink] = [started_sink(console)]
    if request.json_events:
        sinks.append(json_events_sink(out))
    stop_signals = StopSignals()
    stop_signals.install()
    bridge: RunBridge | None = None
    if request.bridge is not None:
        try:
            bridge = request.bridge(
                Path(session.folder).resolve(), console, console.reveal if is_terminal(human) else None
            )
        except RunRefused:
            stop_signals.restore()
            lock.release()
            raise
    if stored_keys.problem:
        console(f"! {stored_keys.problem}")
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
        agent_nice=settings.agent_nice,
        gate_env=tuple(settings.gate_env),
        retry_backoff=Backoff(min_s=retry_backoff_s, max_s=max(300.0, retry_backoff_s), jitter=0.2),
        routing=_routing_setup(config, stored_keys),
        session_budget_usd=config.budget.session_usd,
        task_budget_usd=config.budget.task_usd,
        budget_warn_at=config.budget.warn_at,
        keep_alive=bridge is not None and not request.exit_when_done,
        worker_bridge=bridge.worker_endpoint if bridge is not None else None,
        mcp_servers=dict(config.mcp_servers),
        notify=notify_setup,
        cluster=cluster,
    )
    outcome: Future[RunSummary] = Future()
    booted = threading.Event()
    executor = Executor.start(
        session,
        options,
        backends,
        PromptSource(session),
        outcome,
        sinks,
        _session_marker(Path(session.folder)),
        console,
        booted=booted,
    )
    stop_signals.attach(executor)
    if bridge is not None:
        while not booted.wait(0.1) and not outcome.done() and executor.is_alive():
            pass  # the bridge is told the run (and tells its address) once the tasks are in the store
        bridge.attach(executor, _session_finder(executor))
    mirror = start_mirror(Path(session.folder), len(session.tasks))  # tasks/<status>/<ID>.md, kept current
    # What the run builds once is built (its tree boots on): the collector the console script
    # paused for the start goes on, without walking all of that again (session.collector).
    collector.resume()
    try:
        console(f"{session.session_id}: {request.command} with up to {options.max_workers} worker(s)")
        if request.mcp_stdio and bridge is not None:
            bridge.serve_stdio(outcome, lambda why: executor.tell(ShutdownRequest(reason=why)))
        summary = _wait(outcome, executor, str(session.folder))
        status = (
            choose_status(session, request, summary, console)
            if not (summary.interrupted or summary.escalated or summary.budget_stopped)
            else "paused"
        )
        executor.ask(Conclude(session_status=status), timeout=60)
        executor.stop(block=True, timeout=30)
        _sweep_orphans(Path(session.folder), console)
        _settle_worktrees(Path(session.folder), workdir, console)
        human.write(redact(completion_report(session, summary, status)) + "\n")
        human.flush()
    finally:
        if executor.is_alive():
            executor.stop(block=False)
        if bridge is not None:
            bridge.close()
        mirror.stop()  # its last pass shows where the run left every task
        lock.release()
        for name in LOGGERS:
            logging.getLogger(name).removeHandler(handler)
        handler.close()
        stop_signals.restore()  # last: a signal now can no longer cut the closing short
    if summary.escalated or summary.failed or summary.blocked or summary.budget_stopped:
        return 1
    return 0


@dataclass
class _StoredKeys:
    """The user's encrypted key store, opened once per run (opening it may ask the OS keyring)."""

    store: KeyStore | None = None
    keys: list[ApiKey] = field(default_factory=list)
    problem: str | None = None  # why it could not be opened; the run goes on without it


def _open_stored_keys() -> _StoredKeys:
    if not (user_config_dir() / "keys.enc").exists():
        return _StoredKeys()
    try:
        store = KeyStore.open(user_config_dir(), os.environ)
        return _StoredKeys(store, list(store.secrets()))
    except KeyStoreError as error:
        return _StoredKeys(problem=f"the key store could not be opened ({error}); going on without its keys")


def _routing_setup(config: Config, stored: _StoredKeys) -> RoutingSetup:
    """The key pool from the config's key variables and seed files, plus the encrypted store's keys."""
    return RoutingSetup(
        config=config,
        pool=pool_from_config(config, os.environ, stored=stored.keys),
        store=stored.store,
        store_path=user_config_dir() / "keys.enc",
        open_store=lambda: KeyStore.open(user_config_dir(), os.environ),
    )


def _cluster_setup(request: RunRequest, config: Config, marker: str, workdir: Path) -> ClusterSetup | None:
    """Where attempts run: --cluster, else ``[cluster].address``; None runs them in this process."""
    settings = config.cluster
    address = request.cluster or settings.address
    if not address:
        return None
    if not settings.shared_filesystem and repo_root(workdir) is None:
        raise RunRefused(
            f"[cluster].shared_filesystem = false sends the project to the nodes by git, but {workdir} is not in a "
            "git repository: run `git init` there and commit it, or give every node the folder at the same path "
            "and set shared_filesystem = true",
            exit_code=2,
        )
    namespace = namespace_of(marker)
    try:
        connect(address, namespace)
    except ClusterUnavailable as error:
        raise RunRefused(str(error), exit_code=2) from None
    from cluster.runner import ClusterSetup  # noqa: PLC0415 - only a run on a cluster loads cluster.runner

    return ClusterSetup(
        address=address,
        namespace=namespace,
        resources=dict(settings.resources),
        num_cpus=settings.num_cpus,
        shared_filesystem=settings.shared_filesystem,
    )


def _first(flag: _T | None, configured: _T) -> _T:
    """A command-line flag when given, else the configured value."""
    return configured if flag is None else flag


def _settle_worktrees(folder: Path, project: Path, console: RunConsole) -> None:
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


def _sweep_orphans(folder: Path, console: RunConsole) -> None:
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
