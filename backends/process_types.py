"""What a process run is given and how it ended.

:class:`ProcessSpec` and :class:`ProcessLimits` go in; :class:`ProcessOutcome` comes out.
"""

from __future__ import annotations

import msgspec

__all__ = [
    "ProcessLimits",
    "ProcessOutcome",
    "ProcessSpec",
]


class ProcessLimits(msgspec.Struct, frozen=True, kw_only=True):
    """How long a process may run and how much of its output is kept.

    Attributes:
        wall_timeout_s: kill after this much wall-clock time (error kind ``"timeout"``);
            ``None`` means no limit.
        hang_timeout_s: kill after this long without a byte on stdout or stderr
            (error kind ``"hang"``); ``None`` means no limit.
        grace_s: on a kill, time between SIGTERM and SIGKILL.
        tail_bytes: how many of the last bytes of stdout, and of stderr, are kept in
            memory; also the longest line passed to ``on_stdout_line``.
        log_max_bytes: the log file stops growing past this size; a one-line truncation
            notice is written once when the limit is reached.
        nice: added to the child's scheduling niceness right after it starts (before the
            program runs when the child joins a cgroup first); 0 leaves it as it is.
    """

    wall_timeout_s: float | None = None
    hang_timeout_s: float | None = None
    grace_s: float = 5.0
    tail_bytes: int = 64 * 1024
    nice: int = 0
    log_max_bytes: int = 64 * 1024 * 1024


class ProcessSpec(msgspec.Struct, frozen=True, kw_only=True):
    """What to run.

    Attributes:
        argv: program and arguments; never interpreted by a shell.
        cwd: working directory (check it with :func:`resolve_workdir` first).
        env: the complete environment of the child (build it with :func:`allowlisted_env`).
        log_path: file that receives the raw stdout and stderr bytes, interleaved as read
            (appended to; parent directories are created).
        stdin_data: bytes fed to the child's stdin, which is then closed; ``None`` gives
            the child ``/dev/null``.
    """

    argv: tuple[str, ...]
    cwd: str
    env: dict[str, str]
    log_path: str
    stdin_data: bytes | None = None


class ProcessOutcome(msgspec.Struct, frozen=True, kw_only=True):
    """How a run ended.

    Attributes:
        pid: the child's pid, ``None`` if it never started.
        create_time: psutil's create time of the child (identity is pid + create time).
        exit_code: the exit status; ``None`` when killed by a signal or never started.
        signal: the number of the signal that ended the child, if any.
        error_kind: ``None`` (exit 0), ``"crash"`` (non-zero exit, or death by a signal we
            did not send), ``"timeout"``, ``"hang"``, ``"interrupted"`` (cancel event set),
            ``"spawn_failed"`` (the program could not be started), or the kind a
            ``stop_check`` returned.
        error: one-line human message, ``None`` on success.
        stdout_tail: the last ``tail_bytes`` bytes of stdout.
        stderr_tail: the last ``tail_bytes`` bytes of stderr.
        stdout_bytes: total stdout bytes seen.
        stderr_bytes: total stderr bytes seen.
        duration_s: wall-clock seconds from just before the spawn to the end.
    """

    pid: int | None
    create_time: float | None
    exit_code: int | None
    signal: int | None
    error_kind: str | None
    error: str | None
    stdout_tail: bytes
    stderr_tail: bytes
    stdout_bytes: int
    stderr_bytes: int
    duration_s: float
