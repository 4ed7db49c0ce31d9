"""The run's task mirror (:class:`session.mirror_keeper.MirrorKeeper`) in a process of its own.

Rendering task files is Python work that has nothing to do with dispatching: on a thread of
the executor it held the GIL for seconds at a time (a first pass over 10,000 tasks), and every
worker and actor thread, waking for a child's output or a message, waited its turn behind it.
A 10,000-task run of `echo` took 31.2 s with the mirror on a thread and 26.7 s with it in its
own process, no more than with no mirror at all (benchmarks/README.md).

The child reads the store (read-only) and writes ``tasks/`` exactly as the thread did.  It
must mask what the executor masks: the secrets registered so far go to it first thing, and
every later one as it is registered, as JSON lines on its stdin.  The end of its stdin (the
run is over, or the executor died) makes it do its last pass and exit.  If it dies early (or
cannot start), a thread of the executor takes over at once, as for a small session: ``tasks/``
never stays stale for the rest of a run, and always shows where the run left every task.

Run as ``python -P -m session.mirror_process FOLDER`` by :class:`MirrorProcess` only.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import msgspec

from session.mirror_keeper import MirrorKeeper
from session.processes import exited_within
from session.redaction import RedactingFilter, on_new_secrets, register_secret, registered_secrets
from session.store import STATE_DIR

__all__ = ["PROCESS_FROM_TASKS", "MirrorProcess", "main", "start_mirror"]

log = logging.getLogger("executor.mirror")

#: From this many tasks the mirror runs in a process of its own; below, on a thread (its passes take
#: milliseconds there, and a process would cost each small run its start-up).
PROCESS_FROM_TASKS = 1000
#: How often the link to the child looks whether it is still there.
WATCH_S = 1.0
#: How long the last pass may take before the child is stopped (a 10,000-task pass takes ~2 s).
FINAL_PASS_TIMEOUT_S = 120.0
_PROJECT_ROOT = Path(__file__).resolve().parent.parent


class _Line(msgspec.Struct, forbid_unknown_fields=True):
    """One line on the child's stdin: secrets to mask, or whether to make a last pass at the end."""

    secrets: tuple[str, ...] = ()
    final_pass: bool | None = None


_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder(_Line).decode


class MirrorProcess:
    """The parent's end: start the child, relay new secrets to it, stop it at the end of the run.
    Should the child die (or never start), the mirror goes on on a thread of this process."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self._child: subprocess.Popen[bytes] | None = None
        self._lines: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()
        self._writer = threading.Thread(target=self._write_lines, name="task-mirror-link", daemon=True)
        self._unsubscribe: Callable[[], None] = lambda: None
        self._fallback: MirrorKeeper | None = None  # the thread that took over from a dead child
        self._lock = threading.Lock()
        self._stopping = False

    def start(self) -> MirrorProcess:
        # Subscribe before taking the snapshot: a secret registered in between is sent twice, never not at all.
        self._unsubscribe = on_new_secrets(lambda added: self._lines.put(_encode(_Line(secrets=added)) + b"\n"))
        first = _encode(_Line(secrets=registered_secrets())) + b"\n"
        env = dict(os.environ)
        # The child imports this very code, wherever the executor was started from.
        env["PYTHONPATH"] = os.pathsep.join(filter(None, (str(_PROJECT_ROOT), env.get("PYTHONPATH"))))
        try:
            self._child = subprocess.Popen(
                # -P: the working directory (the project, where agents write) is never on its import
                # path: a `session/` package an agent left there must not be what receives the secrets.
                [sys.executable, "-P", "-m", "session.mirror_process", str(self.folder)],
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,  # it logs to the run's log file; nothing of it reaches the terminal
                env=env,
                close_fds=True,
                # Not in the terminal's process group: a ^C is the executor's to handle; it then
                # ends the child's stdin like any other end of the run.
                start_new_session=True,
            )
        except OSError as error:
            self._take_over(f"the task mirror's process could not start ({error})")
            return self
        self._lines.put(first)
        self._writer.start()
        return self

    def _take_over(self, why: str) -> None:
        """The child is gone: keep the mirror current from a thread here (as below
        :data:`PROCESS_FROM_TASKS` tasks) rather than leave it stale until the end."""
        with self._lock:
            if self._stopping or self._fallback is not None:
                return
            self._unsubscribe()  # this process's own redaction knows every secret
            log.warning("%s; the task mirror goes on on a thread of the executor", why)
            self._fallback = MirrorKeeper(self.folder).start()

    def _write_lines(self) -> None:
        child = self._child
        stdin = child.stdin if child is not None else None
        if child is None or stdin is None:
            return
        while True:
            try:
                line = self._lines.get(timeout=WATCH_S)
            except queue.Empty:
                if child.poll() is not None:
                    self._take_over(f"the task mirror's process stopped (exit {child.returncode})")
                    break
                continue
            if line is None:
                break
            try:
                stdin.write(line)
                stdin.flush()
            except OSError as error:
                self._take_over(f"the task mirror's process cannot be reached ({error})")
                break
        with contextlib.suppress(OSError):
            stdin.close()

    def stop(self, final_pass: bool = True) -> None:
        """Let the child make its last pass (``final_pass``) and wait for it; make the pass here if
        the child is gone."""
        with self._lock:
            self._stopping = True
        self._unsubscribe()
        code: int | None = 0
        child = self._child
        if child is not None:
            self._lines.put(_encode(_Line(final_pass=final_pass)) + b"\n")
            self._lines.put(None)
            self._writer.join(timeout=10)
            try:
                code = _wait_for_exit(child, FINAL_PASS_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                child.kill()
                code = child.wait()
                log.warning("the task mirror's last pass took over %.0f s and was stopped", FINAL_PASS_TIMEOUT_S)
        if self._fallback is not None:
            self._fallback.stop(final_pass=final_pass)
            return
        if code == 0:
            return
        log.warning("the task mirror's process stopped early (exit %s); its last pass is made here", code)
        if final_pass:
            MirrorKeeper(self.folder).sync_if_changed()


def _wait_for_exit(child: subprocess.Popen[bytes], timeout_s: float) -> int:
    """``child.wait(timeout_s)``, told of the exit by the kernel (:func:`exited_within`): the end
    of every large run waits here for the mirror's last pass."""
    if child.returncode is not None:  # reaped already: its pid may be another process's now
        return child.returncode
    ended = exited_within(child.pid, timeout_s)
    if ended is None:
        return child.wait(timeout=timeout_s)
    if not ended:
        raise subprocess.TimeoutExpired(child.args, timeout_s)
    return child.wait()


def start_mirror(folder: Path, tasks: int) -> MirrorKeeper | MirrorProcess:
    """The run's task mirror, started: in a process of its own for a session of ``tasks`` tasks
    or more (:data:`PROCESS_FROM_TASKS`), else on a thread."""
    return (MirrorProcess if tasks >= PROCESS_FROM_TASKS else MirrorKeeper)(folder).start()


def _log_to_run_file(folder: Path) -> None:
    """The child's warnings go where the executor's go: the run's log file (never the terminal)."""
    try:
        handler: logging.Handler = logging.FileHandler(folder / STATE_DIR / "executor.log", encoding="utf-8")
    except OSError:
        handler = logging.NullHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s task-mirror-process: %(message)s"))
    handler.addFilter(RedactingFilter())
    logging.raiseExceptions = False
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False


def main(argv: list[str]) -> int:
    folder = Path(argv[0])
    _log_to_run_file(folder)
    stdin = sys.stdin.buffer
    final_pass = True
    try:
        first = stdin.readline()  # the secrets registered so far: known before the first file is written
        if first:
            register_secret(*_decode(first).secrets)
        keeper = MirrorKeeper(folder).start()
        for line in stdin:
            message = _decode(line)
            register_secret(*message.secrets)
            if message.final_pass is not None:
                final_pass = message.final_pass
        keeper.stop(final_pass=final_pass)
    except Exception:  # a bug here must not print a traceback anywhere a person reads: the log says it
        log.exception("the task mirror's process failed")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
