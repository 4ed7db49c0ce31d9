"""The safe process runner every worker backend uses to run an agent CLI or a command.

Rules it enforces (DESIGN.md section 4):

- argv lists only, never a shell; the child gets a process group of its own, so the whole
  group can be signalled at once, and no controlling terminal (:mod:`backends.spawn`);
- a wall-clock timeout and a no-output (hang) timeout, and a cancel event;
- stopping is tree-wide: the process group plus every psutil descendant, SIGTERM,
  a grace period, then SIGKILL (:func:`stop_tree`); at the end of every run, whatever is
  left of it is stopped even if it left the group and the session (``setsid``): the
  attempt's cgroup where the machine allows one, else the descendants recorded while it
  ran (:mod:`backends.containment`);
- output is captured bounded: only the last ``tail_bytes`` of each stream are kept in
  memory, the full combined log goes to a file that stops growing at ``log_max_bytes``;
- the environment is an allowlist (:func:`allowlisted_env`) and the working directory
  must resolve inside the jail (:func:`resolve_workdir`, :func:`find_jail`).

A run is watched on an :class:`~backends.event_loop.EventLoop`: :func:`run_process` drives a
loop of its own on the calling thread until the run is over; :func:`watch_process` puts the run
on a loop that watches many (one thread for every attempt's pipes and pidfd), where stopping a
run waits out its grace period on a helper thread, never on the loop's.

Its parts: :mod:`backends.process_types` (what a run is given and returns),
:mod:`backends.output_capture` (bounded output), :mod:`backends.process_tree` (stopping a tree),
:mod:`backends.event_loop` (the loop).

Nothing the child does makes :func:`run_process` raise: every way a run can end is a
:class:`ProcessOutcome` with an ``error_kind``.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import math
import os
import re
import subprocess
import threading
import time
from collections.abc import Callable
from typing import IO

from backends.containment import AttemptCgroup, Descendants
from backends.event_loop import EventLoop, Timer
from backends.output_capture import LineSplitter, OutputLog, Tail
from backends.process_tree import group_exists, signal_name, stop_tree
from backends.process_types import ProcessLimits, ProcessOutcome, ProcessSpec
from backends.spawn import Child
from backends.spawn import start as start_child
from session.processes import started_at
from session.redaction import register_environment

__all__ = ["OUTPUT_CPU_SHARE", "Watched", "run_process", "watch_process"]

#: A pipe holds 64 KiB (Linux's default), so no read returns more; and asking for more
#: costs: os.read allocates what is asked, then shrinks it (4x the CPU per byte at 256 KiB).
_READ_CHUNK = 64 * 1024
#: Reading one run's output (reads, tails, lines, redacted log) may take at most this
#: share of a core, averaged over time, while other runs are reading theirs in this
#: process; past it the output is left in the pipe, where the child blocks on it and burns
#: nothing, so one worker that floods its output does not starve the others (they share the
#: process, and its GIL).  A run alone reads at full speed: there is no one to starve, and a
#: lone flood (a verbose build, an agent's long JSON stream) would otherwise take 20 times
#: longer than its output.  Ordinary output never comes near the share: an agent's stream or
#: a test run's log costs a fraction of a percent.
OUTPUT_CPU_SHARE = 0.05
#: How much CPU time a run may spend on its output in one burst before the share applies.
_OUTPUT_CPU_BURST_S = 0.02
#: After the main process has exited, keep reading for at most this long: a background
#: grandchild may hold the pipes open (and may keep writing) forever.
_DRAIN_AFTER_EXIT_S = 1.0
#: After a kill, read what is left in the pipes for at most this long.
_DRAIN_AFTER_KILL_S = 2.0
#: After SIGKILL, how long to wait for the kernel to let us reap the child.
_REAP_AFTER_KILL_S = 10.0

# --------------------------------------------------------------------------- run_process


def _spawn_error_message(exc: OSError, spec: ProcessSpec) -> str:
    program = spec.argv[0]
    if exc.filename is not None and str(exc.filename) == spec.cwd and str(exc.filename) != program:
        if isinstance(exc, FileNotFoundError):
            return f"working directory not found: {spec.cwd}"
        return f"cannot enter working directory {spec.cwd}: {exc.strerror or exc}"
    if isinstance(exc, FileNotFoundError):
        return f"program not found: {program} (is it installed and on PATH?)"
    if isinstance(exc, PermissionError):
        return f"permission denied running {program} (is it executable?)"
    if exc.errno == errno.ENOEXEC:
        return f"cannot execute {program}: not an executable file"
    return f"could not start {program}: {exc.strerror or exc}"


@functools.cache
def _devnull() -> int:
    """``/dev/null`` for every child's stdin, opened once (``subprocess.DEVNULL`` opens and
    closes it on every spawn).  Close-on-exec: only the child's stdin holds it."""
    return os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)


class _Throttle:
    """A token bucket of CPU seconds: refills at ``share`` per wall second, holds at most ``burst``."""

    def __init__(self, share: float, burst: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.share = share
        self.burst = burst
        self.credit = burst
        self.clock = clock
        self.at = clock()

    def spend(self, cpu_s: float) -> None:
        self.credit -= cpu_s

    def wait_s(self, *, alone: Callable[[], bool] | None = None) -> float:
        """How long to leave the output alone before reading again (0: read now).  ``alone()``,
        asked only of a run over its share: no other run is reading in this process; then the
        run reads now, owing nothing, and the share holds again from the moment another starts."""
        now = self.clock()
        self.credit = min(self.burst, self.credit + (now - self.at) * self.share)
        self.at = now
        if self.credit >= 0:
            return 0.0
        if alone is not None and alone():
            self.credit = 0.0
            return 0.0
        return -self.credit / self.share


class _Readers:
    """How many runs are reading their output in this process (every loop, every thread), and
    whether one has been alone long enough to read at full speed."""

    #: A run is alone once it has been the only one reading for this long.  Between a
    #: pipeline's short tasks there are moments with no other run: a flood let loose in each
    #: would take the CPU from those tasks (its writer, no longer blocked, runs flat out too).
    QUIET_S = 1.0

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._lock = threading.Lock()
        self._count = 0
        self._clock = clock
        self._shared_until = -math.inf  # when two or more last read at once (inf: they still do)

    def add(self) -> None:
        with self._lock:
            self._count += 1
            if self._count >= 2:
                self._shared_until = math.inf

    def discard(self) -> None:
        with self._lock:
            self._count -= 1
            if self._count == 1:
                self._shared_until = self._clock()

    @property
    def reading(self) -> int:
        """How many runs read now."""
        return self._count

    def alone(self) -> bool:
        """Whether at most one run reads (the asking one), and has for :attr:`QUIET_S`."""
        with self._lock:
            return self._count <= 1 and self._clock() - self._shared_until >= self.QUIET_S


_readers = _Readers()


class _Run:
    """One started run, watched on an :class:`EventLoop` (every method runs on its thread,
    except the finishing work, which may run on one of its helpers)."""

    def __init__(
        self,
        *,
        proc: Child,
        create_time: float,
        start: float,
        limits: ProcessLimits,
        log: OutputLog,
        stdin_data: bytes | None,
        cancel: threading.Event | None,
        on_stdout_line: Callable[[bytes], None] | None,
        poll_interval_s: float,
        on_stderr_line: Callable[[bytes], None] | None = None,
        stop_check: Callable[[], tuple[str, str] | None] | None = None,
        cgroup: AttemptCgroup | None = None,
        stdout_line_prefix: bytes | None = None,
        stdout_line_pattern: re.Pattern[bytes] | None = None,
        stderr_line_pattern: re.Pattern[bytes] | None = None,
        loop: EventLoop,
    ) -> None:
        if proc.stdout is None or proc.stderr is None:
            raise RuntimeError("internal error: the child's output pipes are missing")
        self.proc = proc
        self.stdin: IO[bytes] | None = proc.stdin
        self.stdout: IO[bytes] = proc.stdout
        self.stderr: IO[bytes] = proc.stderr
        self.pid = proc.pid
        self.create_time = create_time
        self.start = start
        self.last_output = start
        self.limits = limits
        self.log = log
        self.cancel = cancel
        self.poll = max(0.001, poll_interval_s)
        self.out = Tail(limits.tail_bytes)
        self.err = Tail(limits.tail_bytes)
        self.lines = (
            LineSplitter(limits.tail_bytes, on_stdout_line, stdout_line_prefix, stdout_line_pattern)
            if on_stdout_line
            else None
        )
        self.err_lines = (
            LineSplitter(limits.tail_bytes, on_stderr_line, None, stderr_line_pattern) if on_stderr_line else None
        )
        self.stop_check = stop_check
        self.throttle = _Throttle(OUTPUT_CPU_SHARE, _OUTPUT_CPU_BURST_S)
        # Every process of the attempt: its cgroup where we have one, else its descendants
        # as seen while it runs.  Stopped at the end, whatever process group or session
        # or environment they moved to.
        self.cgroup = cgroup
        self.descendants = Descendants(proc.pid) if cgroup is None else None
        self.stdin_view = memoryview(stdin_data or b"")
        self.reason: str | None = None  # why we stopped it: timeout, hang, interrupted
        self.reason_msg: str | None = None
        # Watching, on the loop's thread:
        self.loop = loop
        self.open_outputs: set[int] = {self.stdout.fileno(), self.stderr.fileno()}
        self.pidfd: int | None = None
        self.exited_at: float | None = None
        self.chunks = 0  # output chunks read so far: "did any arrive since" without a clock
        self.paused = False  # over its share of CPU: the output waits in the pipes
        self.timers: list[Timer] = []
        self.finishing = False
        self.reading = False  # counted in _readers, from watch() to _unwatch()
        self.on_done: Callable[[ProcessOutcome], None] | None = None
        # On a loop shared by many runs (watch_process) an error of ours while watching this
        # one ends this one (error kind "worker_crashed"); on a loop of its own it is raised.
        self.shared = False

    def outcome(self, *, returncode: int | None) -> ProcessOutcome:
        """Classify the end of the run."""
        exit_code = returncode if returncode is not None and returncode >= 0 else None
        sig = -returncode if returncode is not None and returncode < 0 else None
        error_kind: str | None
        error: str | None
        if self.reason is not None:
            error_kind, error = self.reason, self.reason_msg
        elif returncode is None:
            error_kind, error = "crash", "did not exit even after SIGKILL"
        elif sig is not None:
            error_kind, error = "crash", f"killed by signal {signal_name(sig)}"
        elif returncode != 0:
            error_kind, error = "crash", f"exited with code {returncode}"
        else:
            error_kind, error = None, None
        return ProcessOutcome(
            pid=self.pid,
            create_time=self.create_time,
            exit_code=exit_code,
            signal=sig,
            error_kind=error_kind,
            error=error,
            stdout_tail=self.out.value(),
            stderr_tail=self.err.value(),
            stdout_bytes=self.out.total,
            stderr_bytes=self.err.total,
            duration_s=time.monotonic() - self.start,
        )

    # -- limits -------------------------------------------------------------------

    def check_limits(self) -> bool:
        """Set ``self.reason`` and return True if the run must be stopped now."""
        now = time.monotonic()
        lim = self.limits
        if self.cancel is not None and self.cancel.is_set():
            self.reason, self.reason_msg = "interrupted", "interrupted (cancel requested)"
        elif lim.wall_timeout_s is not None and now - self.start >= lim.wall_timeout_s:
            self.reason = "timeout"
            self.reason_msg = f"still running after {lim.wall_timeout_s:.1f} s (wall timeout)"
        elif lim.hang_timeout_s is not None and now - self.last_output >= lim.hang_timeout_s:
            self.reason = "hang"
            self.reason_msg = f"no output for {lim.hang_timeout_s:.1f} s (hang timeout)"
        elif self.stop_check is not None and (verdict := self.stop_check()) is not None:
            self.reason, self.reason_msg = verdict  # the caller read the output and knows it is over
        return self.reason is not None

    # -- child status without reaping ---------------------------------------------

    def exited(self) -> bool:
        """True once the child has exited. Does not reap it, so its pid stays reserved."""
        if self.proc.returncode is not None:
            return True
        try:
            return os.waitid(os.P_PID, self.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
        except ChildProcessError:
            return True  # reaped by someone else (SIGCHLD ignored?): Popen will say 0

    # -- watching on the loop -----------------------------------------------------

    def watch(self, on_done: Callable[[ProcessOutcome], None]) -> None:
        """Start watching the run on its loop; ``on_done(outcome)`` is called there at its end."""
        loop = self.loop
        self.on_done = on_done
        self.reading = True
        _readers.add()
        self._watch_outputs()
        if self.stdin is not None:
            if len(self.stdin_view):
                os.set_blocking(self.stdin.fileno(), False)
                loop.add_writer(self.stdin.fileno(), self._guarded(self.write_stdin))
            else:
                self.close_stdin()
        try:
            self.pidfd = os.pidfd_open(self.pid)
        except OSError:  # a kernel before 5.3: the periodic check looks instead
            self.pidfd = None
        if self.pidfd is not None:
            loop.add_reader(self.pidfd, self._guarded(self._child_exited))
        self._later(0.0, self._check)  # a cancel already asked for, a stop check already true: at once

    def _guarded(self, callback: Callable[[], None]) -> Callable[[], None]:
        if not self.shared:
            return callback

        def guarded() -> None:
            try:
                callback()
            except Exception as error:  # noqa: BLE001 - ends this run alone (see self.shared)
                self._failed(error)

        return guarded

    def _failed(self, error: Exception) -> None:
        """Our own code failed watching the run: stop its tree (on a helper: it waits out the
        grace period) and end it as ``worker_crashed``."""
        if self.on_done is None or self.finishing:
            return
        self.finishing = True
        self._unwatch()
        self.reason = "worker_crashed"
        self.reason_msg = f"the executor failed watching it: {type(error).__name__}: {error}"

        def stop() -> ProcessOutcome:
            self.abort()
            return self.outcome(returncode=self.proc.returncode)

        self.loop.run_blocking(stop, self._done)

    def _end_shared(self, *, nothing_left: bool = False) -> ProcessOutcome:
        """:meth:`end` on a shared loop: what it raises ends the run as ``worker_crashed``."""
        try:
            return self.end(nothing_left=nothing_left)
        except Exception as error:  # noqa: BLE001 - end() has stopped the tree (abort) before raising
            self.reason = "worker_crashed"
            self.reason_msg = f"the executor failed ending it: {type(error).__name__}: {error}"
            return self.outcome(returncode=self.proc.returncode)

    def _later(self, delay_s: float, callback: Callable[[], None]) -> None:
        self.timers = [timer for timer in self.timers if not timer.cancelled]
        self.timers.append(self.loop.call_later(delay_s, self._guarded(callback)))

    def _watch_outputs(self) -> None:
        for fd in self.open_outputs:
            self.loop.add_reader(fd, self._guarded(functools.partial(self._readable, fd)))

    def _check(self) -> None:
        """Every poll interval: the limits, the stop check, the descendants."""
        if self.finishing:
            return
        if self.paused:
            self.last_output = time.monotonic()  # not silent, only throttled
        if self.check_limits():
            self._finish()
            return
        if self.exited_at is None:
            if self.descendants is not None:
                self.descendants.look()
            if self.pidfd is None and self.exited():
                self._child_exited()
                if self.finishing:
                    return
        self._later(self.poll, self._check)

    def _readable(self, fd: int) -> None:
        wait = self.throttle.wait_s(alone=_readers.alone)  # asked only past the share: not on every read
        if wait > 0:
            self._pause(wait)
            return
        cpu = time.thread_time()
        try:
            chunk = os.read(fd, _READ_CHUNK)
        except OSError:
            chunk = b""
        if not chunk:
            self._output_closed(fd)
            return
        self.last_output = time.monotonic()
        self._take(fd, chunk)
        self.throttle.spend(time.thread_time() - cpu)

    def _take(self, fd: int, chunk: bytes) -> None:
        """A chunk read from stdout or stderr: into the log, the stream's tail and its lines."""
        self.chunks += 1
        self.log.write(chunk)
        if fd == self.stdout.fileno():
            self.out.add(chunk)
            if self.lines is not None:
                self.lines.feed(chunk)
        else:
            self.err.add(chunk)
            if self.err_lines is not None:
                self.err_lines.feed(chunk)

    def _pause(self, wait_s: float) -> None:
        """Over its share of CPU: leave the output in the pipes (the child blocks on them)."""
        self.paused = True
        self.last_output = time.monotonic()
        for fd in self.open_outputs:
            self.loop.remove(fd)
        self._later(wait_s, self._resume)

    def _resume(self) -> None:
        if self.finishing or not self.paused:
            return
        self.paused = False
        self._watch_outputs()

    def _output_closed(self, fd: int) -> None:
        self.loop.remove(fd)
        self.open_outputs.discard(fd)
        if fd == self.stdout.fileno() and self.lines is not None:
            self.lines.finish()
        if fd == self.stderr.fileno() and self.err_lines is not None:
            self.err_lines.finish()
        if not self.open_outputs:
            self.close_stdin()
            if self.exited_at is not None:
                self._finish()

    def _child_exited(self) -> None:
        if self.pidfd is not None:
            self.loop.remove(self.pidfd)
        if self.exited_at is not None or self.finishing:
            return
        self.exited_at = time.monotonic()
        if not self.open_outputs:
            self._finish()
            return
        # Read what the child left in the pipes; but a background grandchild may hold them
        # open (and keep writing) forever: stop at the first quiet poll, or after a while.
        self._after_exit(self.chunks)

    def _after_exit(self, chunks_before: int) -> None:
        exited_at = self.exited_at or time.monotonic()

        def look() -> None:
            if self.finishing:
                return
            quiet = self.chunks == chunks_before and not self.paused
            if quiet or time.monotonic() - exited_at >= _DRAIN_AFTER_EXIT_S:
                self._finish()
            else:
                self._after_exit(self.chunks)

        self._later(self.poll, look)

    def write_stdin(self) -> None:
        if self.stdin is None:
            return
        try:
            n = os.write(self.stdin.fileno(), self.stdin_view[:_READ_CHUNK])
        except BlockingIOError:
            return
        except OSError:  # BrokenPipeError: the child does not read its stdin
            self.close_stdin()
            return
        self.stdin_view = self.stdin_view[n:]
        if not len(self.stdin_view):
            self.close_stdin()

    def close_stdin(self) -> None:
        if self.stdin is None:
            return
        self.loop.remove(self.stdin.fileno())
        with contextlib.suppress(OSError):
            self.stdin.close()
        self.stdin = None

    def cancel_now(self) -> None:
        """On the loop's thread: stop the run at once (its end is ``"interrupted"``)."""
        if self.finishing:
            return
        self.reason, self.reason_msg = "interrupted", "interrupted (cancel requested)"
        self._finish()

    # -- the end ------------------------------------------------------------------

    def _unwatch(self) -> None:
        if self.reading:
            self.reading = False
            _readers.discard()
        for timer in self.timers:
            timer.cancel()
        self.timers = []
        for fd in self.open_outputs:
            self.loop.remove(fd)
        if self.pidfd is not None:
            self.loop.remove(self.pidfd)
        if self.stdin is not None:
            self.loop.remove(self.stdin.fileno())
        if self.pidfd is not None:
            with contextlib.suppress(OSError):
                os.close(self.pidfd)
            self.pidfd = None

    def _finish(self) -> None:
        """The run is over, or must be stopped: stop watching, then end it — on the loop's
        thread when nothing is left to wait for (the usual end), else where waiting is allowed."""
        if self.finishing:
            return
        self.finishing = True
        self._unwatch()
        if self.reason is None and self.exited_at is not None and not self.open_outputs and self._nothing_left():
            self._done(self._end_shared(nothing_left=True) if self.shared else self.end(nothing_left=True))
        else:
            self.loop.run_blocking(self._end_shared if self.shared else self.end, self._done)

    def _nothing_left(self) -> bool:
        """Whether ending the run will not wait: nothing of it runs any more (the cheap looks)."""
        # The child has exited (its pidfd said so): reaped, it no longer counts as a member of
        # its own process group, which then holds only what it left behind.
        if self.proc.poll() is None:
            return False
        if self.pid != os.getpgrp() and group_exists(self.pid):
            return False
        if self.cgroup is not None:
            return not self.cgroup.members()
        return self.descendants is None or not self.descendants.seen

    def _done(self, outcome: ProcessOutcome) -> None:
        if self.on_done is not None:
            self.on_done(outcome)

    def end(self, *, nothing_left: bool = False) -> ProcessOutcome:
        """Stop what must be stopped, reap the child, contain what is left; may wait.

        ``nothing_left``: :meth:`_nothing_left` has just seen the child reaped and its group and
        cgroup empty; with no process left to start another, they are not looked at again."""
        try:
            if self.reason is not None:
                self.kill()
            returncode = self.reap()
            if nothing_left:
                if self.cgroup is not None:
                    self.cgroup.release()  # empty: kept for the next attempt
            else:
                self.cleanup_group()  # a background grandchild that outlived the child
                self.contain()  # and one that left the group (setsid) and the marker (env -i)
        except BaseException:
            self.abort()
            raise
        self.close_pipes()
        self.log.close()
        return self.outcome(returncode=returncode)

    def drain(self, max_s: float) -> None:
        """Read what is left until EOF on both streams, at most ``max_s`` (stops at the first
        quiet poll), on a loop of this thread's own."""
        if not self.open_outputs:
            return
        own = EventLoop()
        try:
            for fd in self.open_outputs:
                own.add_reader(fd, functools.partial(self._drain_readable, own, fd))
            deadline = time.monotonic() + max_s
            while self.open_outputs:
                left = deadline - time.monotonic()
                before = self.chunks
                if left <= 0:
                    return
                own.run_once(min(self.poll, left))
                if self.chunks == before and self.open_outputs:
                    return
        finally:
            own.close()

    def _drain_readable(self, own: EventLoop, fd: int) -> None:
        try:
            chunk = os.read(fd, _READ_CHUNK)
        except OSError:
            chunk = b""
        if not chunk:
            own.remove(fd)
            self.open_outputs.discard(fd)
            return
        self._take(fd, chunk)

    def close_pipes(self, *, finish_lines: bool = True) -> None:
        self.close_stdin()
        if finish_lines and self.lines is not None:
            self.lines.finish()  # a last partial line, if the stream was cut short
        if finish_lines and self.err_lines is not None:
            self.err_lines.finish()
        for stream in (self.stdout, self.stderr):
            with contextlib.suppress(OSError):
                stream.close()
        self.open_outputs.clear()

    def kill(self) -> None:
        stop_tree(self.pid, self.create_time, self.limits.grace_s)
        self.drain(_DRAIN_AFTER_KILL_S)

    def reap(self) -> int | None:
        try:
            return self.proc.wait(timeout=_REAP_AFTER_KILL_S)
        except subprocess.TimeoutExpired:
            return None

    def cleanup_group(self) -> None:
        """Stop what is left of the child's process group once the child has been reaped.

        While any member lives, the kernel keeps the group's id (the child's pid) from
        being reused, so ``killpg(pid, 0)`` succeeding means leftovers of *this* run.
        """
        if self.pid != os.getpgrp() and group_exists(self.pid):
            stop_tree(self.pid, self.create_time, self.limits.grace_s)
            self.drain(_DRAIN_AFTER_KILL_S)

    def contain(self) -> None:
        """Stop whatever of the attempt is still running: its cgroup, or the descendants seen."""
        if self.cgroup is not None:
            self.cgroup.stop(self.limits.grace_s)
        elif self.descendants is not None:
            self.descendants.stop(self.limits.grace_s)

    def abort(self) -> None:
        """A callback raised, or KeyboardInterrupt: never leave the tree running."""
        self.finishing = True
        with contextlib.suppress(Exception):
            self._unwatch()
        with contextlib.suppress(Exception):
            stop_tree(self.pid, self.create_time, self.limits.grace_s)
        with contextlib.suppress(Exception):
            self.close_pipes(finish_lines=False)
        with contextlib.suppress(Exception):
            self.reap()
        with contextlib.suppress(Exception):
            self.contain()
        self.log.close()


def _not_started(error: str, start: float) -> ProcessOutcome:
    return ProcessOutcome(
        pid=None,
        create_time=None,
        exit_code=None,
        signal=None,
        error_kind="spawn_failed",
        error=error,
        stdout_tail=b"",
        stderr_tail=b"",
        stdout_bytes=0,
        stderr_bytes=0,
        duration_s=time.monotonic() - start,
    )


def run_process(
    spec: ProcessSpec,
    limits: ProcessLimits,
    *,
    cancel: threading.Event | None = None,
    on_start: Callable[[int, float], None] | None = None,
    on_stdout_line: Callable[[bytes], None] | None = None,
    poll_interval_s: float = 0.1,
    on_stderr_line: Callable[[bytes], None] | None = None,
    stop_check: Callable[[], tuple[str, str] | None] | None = None,
    stdout_line_prefix: bytes | None = None,
    stdout_line_pattern: re.Pattern[bytes] | None = None,
    stderr_line_pattern: re.Pattern[bytes] | None = None,
) -> ProcessOutcome:
    """Run ``spec.argv`` to the end under ``limits`` and say how it ended.

    The child runs without a shell, in a process group of its own and without a terminal,
    with exactly ``spec.env`` as its environment and ``spec.cwd`` as its working directory. Its stdout
    and stderr are read by the calling thread (``selectors``, up to 64 KiB at a time);
    memory stays bounded by the tails whatever the child prints, and the CPU spent on the
    output by :data:`OUTPUT_CPU_SHARE` while other runs read theirs (a child that prints
    faster then waits on its pipe).
    Every ``poll_interval_s`` the cancel event, the wall timeout and the hang timeout are
    checked (output left waiting in a pipe is not silence); on any of them the whole
    tree is stopped with :func:`stop_tree`. When the child exits, members of its process
    group that are still running (background grandchildren) are stopped too, even if they
    hold the output pipes open.

    Callbacks run in the calling thread, synchronously, while the child runs (a slow
    callback delays reading, never loses output):

    - ``on_start(pid, create_time)``: once, right after the spawn, before any output is
      read; ``create_time`` is psutil's, for persisting the run's identity.
    - ``on_stdout_line(line)``: for each stdout line, without its ``\\n`` (a ``\\r`` is
      kept), in order; a line longer than ``limits.tail_bytes`` is cut to that length; a
      last line without a newline is passed at EOF.  With ``stdout_line_prefix``, only
      the lines whose first non-blank bytes are that prefix (``b"{"``: the lines that can
      be JSON events), or that hold a match of ``stdout_line_pattern`` (lowercase, searched
      in the lowercased bytes; a line that is not ASCII is passed anyway); the others cost nothing per
      line, which keeps a flood of them cheap.
    - ``on_stderr_line(line)``: the same for stderr: every line, or with
      ``stderr_line_pattern`` only those that hold a match (or are not ASCII).
    - ``stop_check()``: every poll; an ``(error_kind, message)`` it returns stops the tree
      and ends the run with that kind (a caller that reads the output and sees that the
      run cannot succeed, e.g. an agent retrying a dead endpoint).

    ``cancel`` may be set from any thread; the run then ends with ``"interrupted"``.

    Returns a :class:`ProcessOutcome`. Nothing the child does makes this raise: a program
    that cannot be started, or a log file that cannot be opened, gives error kind
    ``"spawn_failed"``. Raises ``ValueError`` for an empty argv, and re-raises any exception
    from a callback (or ``KeyboardInterrupt``) after stopping the process tree.
    """
    loop = EventLoop()  # this thread's own: the run's waits (a grace period) happen right here
    started = _spawn(
        spec,
        limits,
        loop,
        cancel=cancel,
        on_stdout_line=on_stdout_line,
        poll_interval_s=poll_interval_s,
        on_stderr_line=on_stderr_line,
        stop_check=stop_check,
        stdout_line_prefix=stdout_line_prefix,
        stdout_line_pattern=stdout_line_pattern,
        stderr_line_pattern=stderr_line_pattern,
    )
    if isinstance(started, ProcessOutcome):
        loop.close()
        return started
    run = started
    ended: list[ProcessOutcome] = []
    try:
        run.watch(ended.append)
        if on_start is not None:
            on_start(run.pid, run.create_time)
        while not ended:
            loop.run_once()
    except BaseException:
        run.abort()
        raise
    finally:
        run.log.close()
        loop.close()
    return ended[0]


def _spawn(
    spec: ProcessSpec,
    limits: ProcessLimits,
    loop: EventLoop,
    *,
    cancel: threading.Event | None = None,
    on_stdout_line: Callable[[bytes], None] | None = None,
    poll_interval_s: float = 0.1,
    on_stderr_line: Callable[[bytes], None] | None = None,
    stop_check: Callable[[], tuple[str, str] | None] | None = None,
    stdout_line_prefix: bytes | None = None,
    stdout_line_pattern: re.Pattern[bytes] | None = None,
    stderr_line_pattern: re.Pattern[bytes] | None = None,
) -> _Run | ProcessOutcome:
    """Start ``spec`` (log, cgroup, child): the run to watch, or why it could not start."""
    if not spec.argv:
        raise ValueError("ProcessSpec.argv is empty")
    start = time.monotonic()
    try:
        log = OutputLog(spec.log_path, limits.log_max_bytes)
    except OSError as exc:
        return _not_started(f"cannot open log file {spec.log_path}: {exc.strerror or exc}", start)
    cgroup = AttemptCgroup.create(spec.env.get("TEAM_EXECUTOR_MARKER"))
    try:
        register_environment(spec.env)  # before any output: what it prints of its keys is masked
        proc, contained = start_child(
            spec.argv,
            env=spec.env,
            cwd=spec.cwd,
            stdin=_devnull() if spec.stdin_data is None else None,
            cgroup=cgroup,
            nice=max(limits.nice, 0),
        )
    except OSError as exc:
        log.close()
        if cgroup is not None:
            cgroup.remove()
        return _not_started(_spawn_error_message(exc, spec), start)
    except BaseException:
        log.close()
        if cgroup is not None:
            cgroup.remove()
        raise
    if cgroup is not None and not contained:
        cgroup.remove()  # it runs outside: its descendants are followed instead
        cgroup = None
    create_time = started_at(proc.pid)
    if create_time is None:
        create_time = time.time()  # cannot happen for an unreaped child; close enough
    return _Run(
        proc=proc,
        create_time=create_time,
        start=start,
        limits=limits,
        log=log,
        stdin_data=spec.stdin_data,
        cancel=cancel,
        on_stdout_line=on_stdout_line,
        poll_interval_s=poll_interval_s,
        on_stderr_line=on_stderr_line,
        stop_check=stop_check,
        cgroup=cgroup,
        stdout_line_prefix=stdout_line_prefix,
        stdout_line_pattern=stdout_line_pattern,
        stderr_line_pattern=stderr_line_pattern,
        loop=loop,
    )


class Watched:
    """A run watched on a shared loop (:func:`watch_process`); its methods are for the loop's thread."""

    def __init__(self, run: _Run) -> None:
        self._run = run
        self.pid = run.pid
        self.create_time = run.create_time

    def cancel(self) -> None:
        """Stop the run now: its outcome is ``"interrupted"``, and reaches ``on_done`` later."""
        self._run.cancel_now()

    @property
    def held_back(self) -> bool:
        """Whether its output is left in the pipes for now: over its share of CPU while other
        runs read theirs (:data:`OUTPUT_CPU_SHARE`)."""
        return self._run.paused


def watch_process(
    spec: ProcessSpec,
    limits: ProcessLimits,
    loop: EventLoop,
    on_done: Callable[[ProcessOutcome], None],
    *,
    cancel: threading.Event | None = None,
    on_stdout_line: Callable[[bytes], None] | None = None,
    stdout_line_prefix: bytes | None = None,
    poll_interval_s: float = 0.1,
) -> Watched | ProcessOutcome:
    """Start ``spec`` as :func:`run_process` does, but watch it on ``loop``, which serves many
    runs: the caller's thread goes on, and ``on_done(outcome)`` is called on the loop's thread
    when the run is over.  The loop must have helper threads: stopping a run waits out its
    grace period there, never on the loop's thread.

    Returns the run (its pid and create time, and :meth:`Watched.cancel`), or the outcome at
    once when it could not start (``on_done`` is then not called).  ``cancel``, set from any
    thread, is seen within a poll interval (on the loop's thread, :meth:`Watched.cancel` acts
    at once).  ``on_stdout_line`` is
    called on the loop's thread.  An exception from it (an error of the caller's, not the
    child's doing) stops the run's tree and ends it as ``"worker_crashed"``; the loop and
    its other runs go on.  ``on_done`` must not raise.
    """
    started = _spawn(
        spec,
        limits,
        loop,
        cancel=cancel,
        on_stdout_line=on_stdout_line,
        poll_interval_s=poll_interval_s,
        stdout_line_prefix=stdout_line_prefix,
    )
    if isinstance(started, ProcessOutcome):
        return started
    started.shared = True
    started.watch(on_done)
    return Watched(started)
