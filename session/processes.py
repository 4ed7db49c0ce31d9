"""Process identity: a pid is only ours if its create time matches too.

Pids are reused; the (pid, create time) pair is not.  ``create_time`` is
wall-clock based, so it is compared with a small tolerance.
"""

from __future__ import annotations

__all__ = ["create_time_of", "is_alive"]

_CREATE_TIME_TOLERANCE_S = 1.0


def create_time_of(pid: int) -> float | None:
    # psutil (~10 ms to import) loads with the first question about a process: every command
    # imports session.lock, and `executor --help` asks none.
    import psutil  # noqa: PLC0415

    try:
        return psutil.Process(pid).create_time()
    except (psutil.NoSuchProcess, psutil.AccessDenied, ValueError):
        return None


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
