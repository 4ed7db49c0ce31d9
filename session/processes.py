"""Process identity: a pid is only ours if its create time matches too.

Pids are reused; the (pid, create time) pair is not.  ``create_time`` is
wall-clock based, so it is compared with a small tolerance.
"""

from __future__ import annotations

import functools
import os
import select

__all__ = ["create_time_of", "exited_within", "is_alive", "started_at", "stat_fields"]

_CREATE_TIME_TOLERANCE_S = 1.0


def create_time_of(pid: int) -> float | None:
    # psutil (~10 ms to import) loads with the first question about a process: every command
    # imports session.lock, and `executor --help` asks none.
    import psutil  # noqa: PLC0415

    try:
        return psutil.Process(pid).create_time()
    except (psutil.NoSuchProcess, psutil.AccessDenied, ValueError):
        return None


@functools.cache
def _boot_time() -> float:
    import psutil  # noqa: PLC0415 - see create_time_of

    return psutil.boot_time()


@functools.cache
def _ticks_per_second() -> int:
    return os.sysconf("SC_CLK_TCK")


def stat_fields(pid: int | str) -> list[bytes] | None:
    """The fields of ``/proc/<pid>/stat`` after the program's name, in one read (three system
    calls): ``[0]`` the state, ``[1]`` the parent's pid, ``[19]`` the start in clock ticks after
    boot.  None when it cannot be read (no such process, no ``/proc``)."""
    try:
        fd = os.open(f"/proc/{pid}/stat", os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        data = os.read(fd, 4096)
    except OSError:
        return None
    finally:
        os.close(fd)
    # "pid (comm) state ppid ...": the name may hold spaces and parentheses, so the fields
    # start after the last ")".
    return data[data.rfind(b")") + 2 :].split()


def started_at(pid: int) -> float | None:
    """:func:`create_time_of` for a child just started, in three system calls on Linux.

    Read once per attempt on the worker's thread: ``psutil.Process(pid).create_time()``
    opens ``/proc/<pid>/stat`` twice and ``/proc/stat`` (for the boot time) every time.
    The same formula as psutil's (start ticks / ticks per second + boot time), with the boot
    time read once; elsewhere, or when ``/proc`` cannot be read, psutil answers.
    """
    fields = stat_fields(pid)
    if fields is None:
        return create_time_of(pid)
    try:
        return int(fields[19]) / _ticks_per_second() + _boot_time()
    except (IndexError, ValueError):
        return create_time_of(pid)


def is_alive(pid: int | None, create_time: float | None) -> bool:
    """True when ``pid`` runs, is not a zombie, and started at ``create_time``."""
    if not pid or pid <= 0:
        return False
    import psutil  # noqa: PLC0415 - see create_time_of

    try:
        process = psutil.Process(pid)
        if create_time is not None and abs(process.create_time() - create_time) > _CREATE_TIME_TOLERANCE_S:
            return False
        return process.status() != psutil.STATUS_ZOMBIE
    except (psutil.NoSuchProcess, psutil.AccessDenied, ValueError):
        return False


def exited_within(pid: int, timeout_s: float) -> bool | None:
    """Whether our child ``pid``, not yet reaped, exits within ``timeout_s``: told by the kernel
    through a pidfd, where waiting with a timeout otherwise polls (``Popen.wait`` sleeps in
    steps that grow to 50 ms).  None where no pidfd can be had (a kernel before 5.3): poll then.
    Only for an unreaped child: a reaped one's pid may already be another process's."""
    try:
        pidfd = os.pidfd_open(pid)
    except (AttributeError, OSError):
        return None
    try:
        return bool(select.select([pidfd], [], [], max(0.0, timeout_s))[0])
    finally:
        os.close(pidfd)
