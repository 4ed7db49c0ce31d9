"""Start an attempt's child: with the compiled helper where it was built, else with ``subprocess``.

The helper (``backends/_spawn.c``, compiled at install by ``hatch_build.py``) starts the child
in its attempt's cgroup (created there by ``clone3`` where the kernel allows it, else joining it
before its exec) and the child execs the program itself: no ``/bin/sh`` in between (a second
exec on every attempt), and the GIL released while the child starts.  Where it could not be
built (no C compiler at install), :func:`start` is ``subprocess.Popen`` of the program, wrapped
in the shell that joins the cgroup (:meth:`AttemptCgroup.wrap`), exactly as before.

With the helper the child gets a process group of its own and no controlling terminal but
stays in the executor's session: where the kernel schedules by session (autogroup) a session of
its own would have put every agent in a scheduling group of its own, beside the executor instead
of below it, and the niceness it is given would have ranked it only among its own descendants.
``subprocess`` cannot leave the terminal without a session of its own: there the child gets one,
and that session's scheduling group gets the child's niceness where the kernel allows it.

Either way the caller gets a :class:`Child`: the part of ``Popen`` a run uses.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import logging
import os
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from typing import IO, Protocol

from backends.containment import AttemptCgroup, find_program
from session.processes import exited_within

__all__ = ["HELPER", "Child", "born_in_cgroups", "start"]

log = logging.getLogger("executor.process")


def _load_helper() -> Callable[..., int] | None:
    try:
        from backends._spawn import spawn  # noqa: PLC0415 - optional: compiled at install where a C compiler is
    except ImportError:
        return None
    return spawn


#: The compiled helper's spawn, or None where it was not built (tests set it to None for the fallback).
HELPER: Callable[..., int] | None = _load_helper()


class Child(Protocol):
    """A started child process, as ``subprocess.Popen`` shows it (the part a run uses)."""

    @property
    def pid(self) -> int: ...
    @property
    def stdin(self) -> IO[bytes] | None: ...
    @property
    def stdout(self) -> IO[bytes] | None: ...
    @property
    def stderr(self) -> IO[bytes] | None: ...
    @property
    def returncode(self) -> int | None: ...
    def poll(self) -> int | None: ...
    def wait(self, timeout: float | None = None) -> int: ...


class _Spawned:
    """A child the helper started: reaped as ``Popen`` reaps, by its pid."""

    def __init__(
        self, pid: int, args: Sequence[str], stdin: IO[bytes] | None, stdout: IO[bytes], stderr: IO[bytes]
    ) -> None:
        self.pid = pid
        self.args = args
        self.stdin = stdin
        self.stdout = stdout
        self.stderr = stderr
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            self._reap(os.WNOHANG)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if timeout is not None and self.returncode is None:
            ended = exited_within(self.pid, timeout)
            if ended is False:
                raise subprocess.TimeoutExpired(list(self.args), timeout)
            if ended is None:
                return self._poll_until(timeout)
        while self.returncode is None:
            self._reap(0)
        return self.returncode

    def _poll_until(self, timeout: float) -> int:
        """:meth:`wait` where the kernel gives no pidfd."""
        deadline = time.monotonic() + timeout
        delay = 0.0005  # as Popen.wait polls: short at first, at most 50 ms
        while self.poll() is None:
            left = deadline - time.monotonic()
            if left <= 0:
                raise subprocess.TimeoutExpired(list(self.args), timeout)
            time.sleep(min(delay, left))
            delay = min(delay * 2, 0.05)
        assert self.returncode is not None  # noqa: S101 - poll() just said so
        return self.returncode

    def _reap(self, options: int) -> None:
        try:
            pid, status = os.waitpid(self.pid, options)
        except ChildProcessError:  # reaped elsewhere (SIGCHLD ignored): Popen says 0 too
            self.returncode = 0
            return
        if pid == self.pid:
            self.returncode = os.waitstatus_to_exitcode(status)


@functools.cache
def _max_fd() -> int:
    """Where the child stops closing descriptors if the kernel has no close_range (before 5.9)."""
    try:
        return min(int(os.sysconf("SC_OPEN_MAX")), 1 << 16)
    except (OSError, ValueError):
        return 4096


def _environment(env: Mapping[str, str]) -> list[bytes]:
    entries = []
    for name, value in env.items():
        key = os.fsencode(name)
        if not key or b"=" in key:  # as Popen refuses it
            raise ValueError(f"illegal environment variable name: {name!r}")
        entries.append(key + b"=" + os.fsencode(value))
    return entries


def start(
    argv: Sequence[str],
    *,
    env: Mapping[str, str],
    cwd: str,
    stdin: int | None,
    cgroup: AttemptCgroup | None,
    nice: int,
) -> tuple[Child, bool]:
    """Start ``argv`` in ``cwd`` with exactly ``env``, in a process group of its own with no
    controlling terminal (see the module's docstring), its stdout and stderr pipes to us, its
    stdin the descriptor ``stdin`` (None: a pipe to us); in ``cgroup`` where given; ``nice``
    added to its niceness.  The child, and whether it joined ``cgroup``.
    Raises OSError as ``Popen`` does when it cannot start (the program not found, not
    executable, the directory missing)."""
    if HELPER is None:
        return _start_with_popen(argv, env=env, cwd=cwd, stdin=stdin, cgroup=cgroup, nice=nice)
    # A path is run as it is (its exec says what is wrong with it); a name is looked for on PATH.
    program = os.path.join(cwd, argv[0]) if "/" in argv[0] else find_program(argv[0], env, cwd)
    if program is None:
        raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), argv[0])
    program = os.path.abspath(program)  # the child enters cwd before its exec
    envp = _environment(env)
    child_fds: list[int] = []
    ours: list[int] = []
    to_child = -1
    try:
        if stdin is None:
            child_in, to_child = os.pipe()
            child_fds.append(child_in)
            ours.append(to_child)
        else:
            child_in = stdin
        from_out, child_out = os.pipe()
        ours.append(from_out)
        child_fds.append(child_out)
        from_err, child_err = os.pipe()
        ours.append(from_err)
        child_fds.append(child_err)
        path, words, directory = os.fsencode(program), [os.fsencode(word) for word in argv], os.fsencode(cwd)

        def spawn(into: int) -> int:
            return HELPER(path, words, envp, directory, child_in, child_out, child_err, into, True, nice, _max_fd())

        folder = _open_cgroup(cgroup)
        joined = folder >= 0
        try:
            pid = spawn(folder)
        except OSError as error:
            if not joined or error.filename != "<cgroup>":
                raise
            # The cgroup refused it (removed meanwhile, a limit, a controller turned on): it
            # runs outside, followed by its descendants, as where there are no cgroups.
            where = cgroup.path if cgroup is not None else "its cgroup"
            log.warning("%s could not join %s (%s): its descendants are followed instead", argv[0], where, error)
            joined = False
            pid = spawn(-1)
        finally:
            if folder >= 0:
                os.close(folder)
    except BaseException:
        for fd in ours:
            os.close(fd)
        raise
    finally:
        for fd in child_fds:
            os.close(fd)
    child = _Spawned(
        pid,
        argv,
        open(to_child, "wb", buffering=0) if stdin is None else None,  # noqa: SIM115 - the run closes it
        open(from_out, "rb", buffering=0),  # noqa: SIM115 - the run closes it
        open(from_err, "rb", buffering=0),  # noqa: SIM115 - the run closes it
    )
    return child, joined


def born_in_cgroups() -> bool | None:
    """Whether children given a cgroup are created in it here (``clone3``), found by starting
    ``true`` in one: None where the helper cannot (none built, or built without that way: not
    x86-64), or there is no cgroup or no ``true`` to try with."""
    if HELPER is None:
        return None
    from backends import _spawn  # noqa: PLC0415 - the helper is there: its module is

    if not _spawn.HAS_CLONE3:
        return None
    tried, born = _spawn.clone3_state()
    if not tried:
        return False
    cgroup = AttemptCgroup.create()
    if cgroup is None:
        return None
    try:
        env = {"PATH": os.environ.get("PATH", os.defpath)}
        child, contained = start(("true",), env=env, cwd="/", stdin=None, cgroup=cgroup, nice=0)
        for stream in (child.stdin, child.stdout, child.stderr):
            if stream is not None:
                stream.close()
        child.wait()
    except OSError:
        return None
    finally:
        cgroup.remove()
    return contained and _spawn.clone3_state() == (True, born + 1)


def _open_cgroup(cgroup: AttemptCgroup | None) -> int:
    """The cgroup's folder, open for the helper to start the child in it; -1 without one, or
    when it cannot be opened (removed meanwhile): the child then runs outside it."""
    if cgroup is None:
        return -1
    try:
        return os.open(cgroup.path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as error:
        log.warning("cannot open %s (%s): its descendants are followed instead", cgroup.path, error)
        return -1


def _start_with_popen(
    argv: Sequence[str], *, env: Mapping[str, str], cwd: str, stdin: int | None, cgroup: AttemptCgroup | None, nice: int
) -> tuple[Child, bool]:
    # None when the program cannot be found: Popen then says so (or finds what we did not,
    # and it runs outside the cgroup: the caller follows it by its descendants instead).
    wrapped = cgroup.wrap(argv, dict(env), cwd) if cgroup is not None else None
    proc = subprocess.Popen(
        list(wrapped or argv),
        cwd=cwd,
        env=dict(env),
        stdin=subprocess.PIPE if stdin is None else stdin,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
        close_fds=True,
        bufsize=0,  # the pipes are read with os.read: no buffered file objects to set up
    )
    if nice > 0:
        # The child is the cgroup wrapper at this point (vfork returned at its exec): the
        # program it runs next, and all it starts, inherit the niceness.
        niceness = min(19, _own_niceness() + nice)
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, proc.pid, niceness)
        # Its session is a scheduling group of its own where the kernel groups by session: the
        # group's niceness is what ranks it beside the executor.  Best effort: without
        # CAP_SYS_ADMIN the kernel takes at most ten such changes a second (EAGAIN), and a
        # kernel without autogroups has no such file.
        with contextlib.suppress(OSError), open(f"/proc/{proc.pid}/autogroup", "w") as group:
            group.write(str(niceness))
    return proc, wrapped is not None


@functools.cache
def _own_niceness() -> int:
    """This process's niceness, read once: the agents' is set relative to it on every attempt."""
    return os.getpriority(os.PRIO_PROCESS, 0)


os.register_at_fork(after_in_child=_own_niceness.cache_clear)
