"""The run's side of its bridge process: start it, carry its asks to the actors, watch it.

``executor run --http`` serves HTTP (the MCP endpoint, the dashboard, the API, the
event streams) from a process of its own, so that the run's actor tree — whose
per-task work holds the GIL for stretches — never stalls the server's event loop.
The run binds the listening socket itself (the address is checked and known at
once, and stays the same if the bridge process is restarted) and starts
``<python> -P -m cli.bridge_process`` with two inherited descriptors: that socket
and its end of a private socketpair (:mod:`bridge.channel`).  Over the socketpair
go the tokens, and the tools' asks to the actors: each is put in the actor's
inbox at once, in the order it came, and its reply is sent back when the actor
answers (a waiting thread per target; they cost the tree nothing).

The bridge process dies with the run: it asked the kernel for SIGKILL when its
parent dies (``PR_SET_PDEATHSIG``), and it stops at the end of the socketpair.
If it dies first, the run says so on its console and in ``.executor/bridge.log``
and starts another on the same socket (backing off; after
:data:`MAX_RESTARTS` exits within :data:`RESTART_PERIOD_S` it gives up and says so).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pykka

from actors.queued_writes import record_queued
from actors.supervision import Backoff
from bridge.auth import Tokens
from bridge.channel import ActorHandle, Channel, ChannelClosed, RecalledWrite, RecallWrite
from protocol.messages import GetService
from session.store import STATE_DIR

__all__ = ["BRIDGE_LOG", "MAX_RESTARTS", "RESTART_PERIOD_S", "BridgeProcess", "BridgeStartError", "describe_exit"]

log = logging.getLogger("executor.bridge")

#: The bridge process's own log (its logging and whatever it prints), in the session's state folder.
BRIDGE_LOG = "bridge.log"
MAX_RESTARTS = 5
RESTART_PERIOD_S = 60.0
#: How long the run waits for a bridge process to serve before it says it could not.
READY_WAIT_S = 60.0
#: How often a thread waiting on a forwarded ask looks whether anyone still waits for the reply.
_WAIT_STEP_S = 1.0
_STOP_WAIT_S = 8.0
#: How many queued writes the run remembers for the bridge (the newest; as many as a bridge process).
LEDGER_KEEP = 10_000


def _let_go_of_stdio() -> None:
    """The bridge process holds the MCP client's ends now: the run keeps none (the client sees the
    end of the stream when that process ends), reads nothing, and what it prints goes to stderr."""
    devnull = os.open(os.devnull, os.O_RDONLY)
    try:
        os.dup2(devnull, 0)
    finally:
        os.close(devnull)
    os.dup2(2, 1)


class BridgeStartError(Exception):
    """The bridge process could not be started, or did not serve; the message says why and where to look."""


def describe_exit(code: int) -> str:
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"was killed by {name}"
    return f"exited with code {code}"


@dataclass(frozen=True)
class _Queued:
    """A queued write as the run keeps it, by request id: a new bridge process can still read its outcome."""

    tool: str
    message: Any
    queued_at: float
    future: pykka.Future[Any]

    def recalled(self) -> RecalledWrite:
        try:
            reply = self.future.get(timeout=0)
        except pykka.Timeout:
            return RecalledWrite(self.tool, self.message, self.queued_at, settled=False)
        except Exception as error:  # noqa: BLE001 - the write's outcome is this error
            return RecalledWrite(self.tool, self.message, self.queued_at, settled=True, error=error)
        return RecalledWrite(self.tool, self.message, self.queued_at, settled=True, reply=reply)


@dataclass
class _Child:
    """One bridge process and the run's end of its channel."""

    process: subprocess.Popen[bytes]
    channel: Channel
    generation: int
    ready: threading.Event = field(default_factory=threading.Event)
    fatal: str | None = None

    def send(self, item: tuple[Any, ...]) -> None:
        with contextlib.suppress(ChannelClosed):  # it is gone: the supervisor reports that
            self.channel.send(item)


class BridgeProcess:
    """Starts, serves and supervises the bridge process of one run."""

    def __init__(
        self,
        folder: Path,
        listener: socket.socket,
        host: str,
        tokens: Tokens,
        command: Sequence[str],
        console: Callable[[str], None],
        url: str,
        stdio: bool = False,
    ) -> None:
        self.folder = folder
        self.stdio = stdio  # executor mcp: the first bridge process also serves the run's stdin/stdout
        self.listener = listener
        self.host = host
        self.tokens = tokens
        self.command = list(command)
        self.console = console
        self.url = url
        self.log_path = folder / STATE_DIR / BRIDGE_LOG
        self._executor: pykka.ActorRef[Any] | None = None
        self._session: Callable[[], pykka.ActorRef[Any] | None] = lambda: None
        self._services: dict[str, pykka.ActorRef[Any]] = {}
        self._ledger: OrderedDict[str, _Queued] = OrderedDict()
        self._ledger_lock = threading.Lock()
        self._pools: dict[str, ThreadPoolExecutor] = {}
        self._pools_lock = threading.Lock()
        self._child: _Child | None = None
        self._closing = threading.Event()
        self._settled = threading.Event()  # a child is ready, or the supervisor gave up
        self._gave_up: str | None = None
        self._served = False
        self._supervisor = threading.Thread(target=self._supervise, name="bridge-supervisor", daemon=True)
        self._client_gone: Callable[[str], None] | None = None
        self._client_gone_why: str | None = None  # said before anyone listened
        self._client_lock = threading.Lock()

    # --- the run's calls ------------------------------------------------------------------

    def start(self) -> None:
        """Start the bridge process and wait until it serves; raises :class:`BridgeStartError`.

        Before the run boots its tree, as when the server ran in the run's process: a client
        that connects early is told the executor is still starting."""
        self._supervisor.start()
        self._settled.wait(READY_WAIT_S)
        child = self._child
        if self._gave_up is None and child is not None and child.ready.is_set():
            return
        problem = self._gave_up or (
            f"the HTTP bridge process did not serve within {READY_WAIT_S:g}s; see {self.log_path}"
        )
        self.close()
        raise BridgeStartError(problem)

    def attach(self, executor: pykka.ActorRef[Any], session: Callable[[], pykka.ActorRef[Any] | None]) -> None:
        """The tools may reach ``executor`` now (the run has loaded its session); queued writes
        are kept by ``session``'s actor."""
        self._executor = executor
        self._session = session
        child = self._child
        if child is not None:
            child.send(("attached",))

    def on_client_gone(self, callback: Callable[[str], None]) -> None:
        """``callback(why)`` once the stdio client is gone (it closed stdin, or the process that
        served it ended: its connection went with it); at once if that already happened."""
        with self._client_lock:
            self._client_gone = callback
            why = self._client_gone_why
        if why is not None:
            callback(why)

    def _stdio_client_gone(self, why: str) -> None:
        with self._client_lock:
            if self._client_gone_why is not None:
                return
            self._client_gone_why = why
            callback = self._client_gone
        if callback is not None:
            callback(why)

    @property
    def pid(self) -> int | None:
        child = self._child
        return child.process.pid if child is not None else None

    def close(self) -> None:
        self._closing.set()
        stopped = self._child
        if stopped is not None:
            self._stop(stopped)
        if self._supervisor.is_alive():
            self._supervisor.join(_STOP_WAIT_S)
        latest = self._child
        if latest is not None and latest is not stopped:  # started by a restart racing this close
            self._stop(latest)
        self.listener.close()
        with self._pools_lock:
            for pool in self._pools.values():
                pool.shutdown(wait=False, cancel_futures=True)

    @staticmethod
    def _stop(child: _Child) -> None:
        child.send(("stop",))
        try:
            child.process.wait(_STOP_WAIT_S)
        except subprocess.TimeoutExpired:
            child.process.kill()
            child.process.wait()
        child.channel.close()

    # --- supervision ------------------------------------------------------------------------

    def _supervise(self) -> None:
        """Start the bridge process, and again each time it dies while the run lives.

        Every start happens on this one thread, which lives as long as the bridge may: the
        kernel's parent-death signal follows the thread that forked, not the process."""
        backoff = Backoff(min_s=0.5, max_s=10.0, jitter=0.2)
        exits: list[float] = []
        generation = 0
        while not self._closing.is_set():
            generation += 1
            try:
                child = self._spawn(generation)
            except OSError as error:
                self._give_up(f"the HTTP bridge process could not be started: {error}")
                return
            code = child.process.wait()
            child.channel.close()
            if self._closing.is_set():
                return
            now = time.monotonic()
            exits = [at for at in exits if now - at < RESTART_PERIOD_S] + [now]
            what = f"the HTTP bridge process (pid {child.process.pid}) {describe_exit(code)}"
            if child.fatal:
                what += f": {child.fatal}"
            log.error("%s", what)
            if not self._served:
                self._give_up(f"{what} before it served. See {self.log_path}")
                return
            if self.stdio:  # the MCP client's connection was this process's: no other can take it over
                self._give_up(f"{what}; the MCP client on stdio lost its server with it. See {self.log_path}")
                self._stdio_client_gone(f"{what}, and with it the MCP client's connection")
                return
            if len(exits) > MAX_RESTARTS:
                self._give_up(
                    f"{what}; it failed {len(exits)} times within {RESTART_PERIOD_S:g}s, so the run goes on "
                    f"without it ({self.url} is not served). See {self.log_path}"
                )
                return
            delay = backoff.delay(len(exits) - 1)
            self.console(f"! {what}. The run goes on; a new one starts in {delay:.1f}s (see {self.log_path})")
            if self._closing.wait(delay):
                return

    def _give_up(self, why: str) -> None:
        self._gave_up = why
        log.error("%s", why)
        if self._served:  # it served once: the run goes on and says so; before, start() raises it
            self.console(f"! {why}")
        self._settled.set()

    def _spawn(self, generation: int) -> _Child:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        argv = [
            *self.command,
            "--session",
            str(self.folder),
            "--channel",
            str(theirs.fileno()),
            "--listener",
            str(self.listener.fileno()),
            "--parent",
            str(os.getpid()),
        ]
        passed = [theirs.fileno(), self.listener.fileno()]
        client = (os.dup(0), os.dup(1)) if self.stdio and generation == 1 else None
        if client is not None:
            argv += ["--stdio-in", str(client[0]), "--stdio-out", str(client[1])]
            passed += client
        try:
            with self.log_path.open("ab") as output:
                process = subprocess.Popen(
                    argv,
                    pass_fds=passed,
                    stdin=subprocess.DEVNULL,
                    stdout=output,
                    stderr=output,
                    start_new_session=True,  # a Ctrl-C at the terminal is the run's to handle, not the bridge's
                )
        except OSError:
            ours.close()
            raise
        finally:
            theirs.close()
            if client is not None:
                for fd in client:
                    os.close(fd)
        if client is not None:
            _let_go_of_stdio()
        child = _Child(process, Channel(ours), generation)
        self._child = child
        child.send(("setup", {"owner": self.tokens.owner, "worker": self.tokens.worker, "host": self.host}))
        if self._executor is not None:
            child.send(("attached",))
        threading.Thread(target=self._read, args=(child,), name=f"bridge-link-{generation}", daemon=True).start()
        return child

    # --- the bridge's asks ------------------------------------------------------------------

    def _read(self, child: _Child) -> None:
        while True:
            try:
                item = child.channel.receive()
            except Exception:
                log.exception("the bridge process sent a message that cannot be read")
                item = None
            if item is None:
                return
            kind = item[0]
            if kind == "ask":
                self._ask(child, item[1], item[2], item[3], item[4])
            elif kind == "tell":
                ref = self._target(item[1])
                if ref is not None:
                    with contextlib.suppress(pykka.ActorDeadError):
                        ref.tell(item[2])
            elif kind == "ready":
                child.ready.set()
                self._served = True
                self._settled.set()
                if child.generation > 1:
                    self.console(f"the HTTP bridge serves again (pid {child.process.pid}) on {self.url}")
            elif kind == "fatal":
                child.fatal = str(item[1])
            elif kind == "stdio-closed":
                self._stdio_client_gone("the MCP client closed stdin")

    def _target(self, name: str) -> pykka.ActorRef[Any] | None:
        return self._executor if name == "executor" else self._services.get(name)

    def _ask(
        self, child: _Child, request: int, target: str, message: Any, ticket: tuple[str, str, float] | None
    ) -> None:
        if isinstance(message, RecallWrite):  # the run's own record: answered here, at once
            with self._ledger_lock:
                queued = self._ledger.get(message.request_id)
            child.send(("reply", request, queued.recalled() if queued is not None else None))
            return
        ref = self._target(target)
        if ref is None:
            child.send(("raise", request, pykka.ActorDeadError(f"{target} is not running")))
            return
        if ticket is not None:  # a queued write: kept in the store before it reaches the Executor
            record_queued(self._session(), ticket, message)
        future = ref.ask(message, block=False)  # into the inbox now, in arrival order
        if ticket is not None:
            request_id, tool, queued_at = ticket
            with self._ledger_lock:
                self._ledger[request_id] = _Queued(tool, message, queued_at, future)
                while len(self._ledger) > LEDGER_KEEP:
                    self._ledger.popitem(last=False)
        self._pool(target).submit(self._answer, child, request, message, future)

    def _pool(self, target: str) -> ThreadPoolExecutor:
        with self._pools_lock:
            pool = self._pools.get(target)
            if pool is None:
                pool = self._pools[target] = ThreadPoolExecutor(8, thread_name_prefix=f"bridge-{target}")
            return pool

    def _answer(self, child: _Child, request: int, message: Any, future: pykka.Future[Any]) -> None:
        while True:  # as long as the actor takes; a stopping run resolves every pending ask
            try:
                reply = future.get(timeout=_WAIT_STEP_S)
                break
            except pykka.Timeout:
                if self._closing.is_set() or child.process.poll() is not None:
                    return  # nobody is left to read the reply (the ledger still has the future)
            except Exception as error:  # noqa: BLE001 - the actor's failure is the bridge's to report
                self._send_error(child, request, error)
                return
        if isinstance(reply, pykka.ActorRef):  # a service: the bridge names it in later asks
            name = message.name if isinstance(message, GetService) else f"ref-{id(reply)}"
            self._services[name] = reply
            reply = ActorHandle(name)
        try:
            child.channel.send(("reply", request, reply))
        except ChannelClosed:
            pass
        except Exception as error:  # noqa: BLE001 - a reply that cannot cross is an error for the caller
            self._send_error(child, request, RuntimeError(f"the reply cannot reach the bridge: {error}"))

    @staticmethod
    def _send_error(child: _Child, request: int, error: Exception) -> None:
        try:
            child.channel.send(("raise", request, error))
        except ChannelClosed:
            pass
        except Exception:  # noqa: BLE001 - an exception that does not pickle crosses as its text
            child.send(("raise", request, RuntimeError(f"{type(error).__name__}: {error}")))
