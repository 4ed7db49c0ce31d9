"""Keep track of every process an attempt starts, even one that tries to escape.

A worker's grandchild can leave its process group and session (``setsid``) and drop the
marker variable (``env -i``); then neither the group nor the environment finds it.  Two
ways to follow it anyway:

- :class:`AttemptCgroup`, where the machine lets us: a cgroup per attempt (cgroup v2, or a
  v1 ``pids``/``freezer`` hierarchy).  The child joins it before it execs the program
  (:meth:`AttemptCgroup.wrap`), every descendant inherits it, and an unprivileged process
  cannot leave it.  At the end, whatever is still listed in it is stopped and the cgroup
  removed.
- :class:`Descendants`, everywhere: the descendants of the child recorded (pid and create
  time) while the attempt runs, at a modest interval, from a table of the machine's
  processes that all attempts share (:class:`ProcessTable`).  A process that is started and
  orphaned between two looks is missed; the cgroup has no such gap.

Both stop what is left the same way: SIGTERM, a grace period, SIGKILL.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import hashlib
import itertools
import os
import shutil
import signal
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import psutil

from session.processes import stat_fields

__all__ = [
    "DISABLE_ENV",
    "AttemptCgroup",
    "Descendants",
    "ProcessTable",
    "cgroups_available",
    "find_program",
    "stop_pids",
    "sweep",
]

#: Set to 1 to do without cgroups (the descendant list alone is used).
DISABLE_ENV = "TEAM_EXECUTOR_NO_CGROUP"
_PARENT = "team-executor"
_CREATE_TIME_TOLERANCE_S = 1.0
_POLL_S = 0.05
_EMPTY_WAIT_S = 5.0
_sequence = itertools.count(1)

# Runs in the child between fork and the program: join the cgroup, then exec the program
# (same pid).  A fixed script: the cgroup file and the argv are positional arguments, never
# parsed by the shell; /bin/sh starts in about a millisecond where Python takes twenty.
_SHELL = "/bin/sh"
_JOIN = 'echo $$ > "$0" 2>/dev/null; {unset}exec "$@"'
# Variables a shell adds to the environment of what it execs: removed unless the caller set them.
_SHELL_ADDS = ("PWD", "SHLVL", "_")


def _mounts() -> list[tuple[str, str, set[str]]]:
    """(mount point, filesystem type, super options) of the cgroup mounts."""
    found = []
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return []
    for line in lines:
        left, _, right = line.partition(" - ")
        fields, tail = left.split(), right.split()
        if len(fields) >= 5 and len(tail) >= 3 and tail[0] in ("cgroup", "cgroup2"):
            found.append((fields[4].replace("\\040", " "), tail[0], set(tail[2].split(","))))
    return found


def _own_paths() -> dict[str, str]:
    """This process's cgroup per hierarchy: ``""`` for v2, a controller name for v1."""
    own: dict[str, str] = {}
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return own
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) == 3:
            for controller in parts[1].split(",") if parts[1] else [""]:
                own[controller] = parts[2]
    return own


def _writable_base() -> Path | None:
    """A folder under which this process may create cgroups and move its children into them."""
    own = _own_paths()
    candidates: list[Path] = []
    for mount, kind, options in _mounts():
        if kind == "cgroup2" and "" in own:
            candidates.insert(0, Path(mount + own[""]))
        elif kind == "cgroup":
            controller = next((name for name in ("pids", "freezer") if name in options), None)
            if controller is not None and controller in own:
                candidates.append(Path(mount + own[controller]))
    for base in candidates:
        parent = base / _PARENT
        try:
            parent.mkdir(exist_ok=True)
            probe = parent / f"probe-{os.getpid()}-{next(_sequence)}"
            probe.mkdir()
            writable = os.access(probe / "cgroup.procs", os.W_OK)
            probe.rmdir()
        except OSError:
            continue
        if writable:
            return parent
    return None


_BASE: Path | None = None
_BASE_KNOWN = False


def _base() -> Path | None:
    global _BASE, _BASE_KNOWN  # noqa: PLW0603 - looked up once per process
    if not _BASE_KNOWN:
        _BASE = None if os.environ.get(DISABLE_ENV) == "1" else _writable_base()
        _BASE_KNOWN = True
    return _BASE


_OWNER: tuple[int, str] | None = None


def _owner() -> str:
    """``<pid>-<create time>`` of this process: read once (a forked child reads its own)."""
    global _OWNER  # noqa: PLW0603 - a fact of this process, asked for on every attempt
    if _OWNER is None:  # no os.getpid() per call: each is a system call, and a GIL hand-off
        pid = os.getpid()
        _OWNER = (pid, f"{pid}-{int(psutil.Process(pid).create_time())}")
    return _OWNER[1]


def _forget_owner() -> None:
    global _OWNER  # noqa: PLW0603 - see _owner
    _OWNER = None


os.register_at_fork(after_in_child=_forget_owner)


def cgroups_available() -> bool:
    """Whether attempts run in cgroups of their own here (else only the descendant list is kept)."""
    return _base() is not None


def _alive(proc: psutil.Process) -> bool:
    try:
        return bool(proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE)
    except psutil.Error:
        return False


def stop_pids(procs: Iterable[psutil.Process], grace_s: float) -> list[int]:
    """SIGTERM ``procs``, wait up to ``grace_s``, SIGKILL the survivors.  Returns the pids signalled.

    Never signals this process.  ``psutil.Process`` checks its create time before a signal,
    so a pid reused meanwhile is left alone.
    """
    me = os.getpid()
    alive = [proc for proc in procs if proc.pid != me and _alive(proc)]
    signalled: set[int] = set()
    for proc in alive:
        with contextlib.suppress(psutil.Error):
            proc.terminate()
            signalled.add(proc.pid)
    deadline = time.monotonic() + max(0.0, grace_s)
    while alive and time.monotonic() < deadline:
        time.sleep(_POLL_S)
        alive = [proc for proc in alive if _alive(proc)]
    for proc in alive:
        with contextlib.suppress(psutil.Error):
            proc.kill()
    return sorted(signalled)


def _runnable(path: str) -> bool:
    return os.path.isfile(path) and os.access(path, os.X_OK)


#: (program, PATH) -> where it was found: a search of PATH is a dozen stat calls per attempt;
#: a remembered answer is checked with two, and searched again once it no longer holds.
_found_on_path: dict[tuple[str, str], str] = {}


def _on_path(program: str, search_path: str) -> str | None:
    key = (program, search_path)
    known = _found_on_path.get(key)
    if known is not None and _runnable(known):
        return known
    found = shutil.which(program, path=search_path)
    if found is None or not _runnable(found):
        _found_on_path.pop(key, None)
        return None
    _found_on_path[key] = found
    return found


def find_program(program: str, env: Mapping[str, str], cwd: str) -> str | None:
    """Where ``program`` is, as the child's exec would find it: a path with a ``/`` from
    ``cwd``, a bare name on the ``PATH`` of ``env``; None where it is not a runnable file."""
    if "/" in program:
        joined = os.path.join(cwd, program)
        return joined if _runnable(joined) else None
    return _on_path(program, env.get("PATH", os.defpath))


@functools.cache
def _shell_runnable() -> bool:
    return os.access(_SHELL, os.X_OK)


class AttemptCgroup:
    """One cgroup for one attempt's process tree."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @classmethod
    def create(cls, marker: str | None = None) -> AttemptCgroup | None:
        """A new empty cgroup, or None where cgroups cannot be used (then rely on :class:`Descendants`).

        Its name says whose it is: the session's ``marker`` (hashed), and the executor's pid and
        create time, so that :func:`sweep` finds it after the executor died.
        """
        base = _base()
        if base is None:
            return None
        prefix = f"{_tag(marker)}-{_owner()}"
        kept = _take_idle(prefix)
        if kept is not None:
            return cls(kept)
        path = base / f"{prefix}-{next(_sequence)}"
        try:
            path.mkdir()
        except OSError:
            return None
        return cls(path)

    def wrap(self, argv: Sequence[str], env: dict[str, str], cwd: str) -> tuple[str, ...] | None:
        """``argv`` prefixed so that the child joins this cgroup before it runs the program.

        None when the program cannot be found: the caller runs ``argv`` as it is and reports
        that error (there is then nothing to contain).
        """
        found = find_program(argv[0], env, cwd)
        if not found or not _shell_runnable():
            return None
        # The program by its absolute path: the shell's `exec` must never read it as an option.
        added = [name for name in _SHELL_ADDS if name not in env]
        script = _JOIN.format(unset=f"unset {' '.join(added)}; " if added else "")
        return (_SHELL, "-c", script, str(self.path / "cgroup.procs"), os.path.abspath(found), *argv[1:])

    def members(self) -> list[psutil.Process]:
        try:  # os.open/os.read: three system calls, where a file object takes seven
            fd = os.open(self.path / "cgroup.procs", os.O_RDONLY | os.O_CLOEXEC)
            try:
                text = os.read(fd, 1 << 20).decode("ascii", "replace")
            finally:
                os.close(fd)
        except OSError:
            return []
        procs = []
        for line in text.split():
            with contextlib.suppress(psutil.Error, ValueError):
                procs.append(psutil.Process(int(line)))
        return procs

    def stop(self, grace_s: float) -> list[int]:
        """Stop every process still in the cgroup, wait until it is empty, remove it."""
        members = self.members()
        if not members:  # the usual end: nothing is left, and nothing can join an empty cgroup
            self.release()
            return []
        signalled = stop_pids(members, grace_s)
        deadline = time.monotonic() + _EMPTY_WAIT_S
        while True:
            left = [proc for proc in self.members() if _alive(proc)]
            if not left or time.monotonic() >= deadline:
                break
            for proc in left:  # forked after the first look
                with contextlib.suppress(psutil.Error):
                    proc.send_signal(signal.SIGKILL)
                    signalled.append(proc.pid)
            time.sleep(_POLL_S)
        self.remove()
        return sorted(set(signalled))

    def release(self) -> None:
        """Keep this emptied cgroup for the next attempt of the same session and owner (or
        remove it when enough are kept).  Only an empty one is kept: nothing can join it."""
        prefix = self.path.name.rpartition("-")[0]
        with _idle_lock:  # a crashed executor's cgroup (emptied by sweep) is removed, not kept
            if prefix.endswith(f"-{_owner()}") and sum(len(kept) for kept in _idle.values()) < _IDLE_MAX:
                _idle.setdefault(prefix, []).append(self.path)
                return
        self.remove()

    def remove(self) -> None:
        # Zombies still count as members for a moment after their parent reaps them.
        deadline = time.monotonic() + _EMPTY_WAIT_S
        while True:
            try:
                self.path.rmdir()
                return
            except FileNotFoundError:
                return
            except OSError:
                if time.monotonic() >= deadline:
                    return  # left for the next run's sweep
                time.sleep(_POLL_S)


#: Emptied cgroups of this process, kept for the next attempt of the same session: making one
#: and removing it are two costly system calls (the kernel sets up and tears down its
#: controllers) that every attempt paid.  Removed when the process exits; after a crash, the
#: next run's :func:`sweep` removes the empty ones of the dead owner.
_IDLE_MAX = 64
_idle: dict[str, list[Path]] = {}
_idle_lock = threading.Lock()


def _take_idle(prefix: str) -> Path | None:
    with _idle_lock:
        kept = _idle.get(prefix)
        while kept:
            path = kept.pop()
            if os.access(path / "cgroup.procs", os.W_OK):  # still there (nobody else removes ours)
                return path
    return None


@atexit.register
def _remove_idle() -> None:
    with _idle_lock:
        paths = [path for kept in _idle.values() for path in kept]
        _idle.clear()
    for path in paths:
        with contextlib.suppress(OSError):
            path.rmdir()


@functools.lru_cache(maxsize=64)  # a run has one marker, and asks for its tag at every attempt
def _tag(marker: str | None) -> str:
    return hashlib.sha256(marker.encode()).hexdigest()[:12] if marker else "nomarker"


def sweep(marker: str, grace_s: float = 5.0) -> list[int]:
    """Stop what is left in the cgroups of ``marker``'s session whose executor is gone (a crash).

    A cgroup of a live executor is its own business and is left alone; an empty one of a
    dead executor of another session is removed.
    """
    base = _base()
    if base is None:
        return []
    stopped: list[int] = []
    mine = f"{_tag(marker)}-"
    for entry in sorted(base.glob("*-*-*-*")):
        try:
            _, pid, started, _ = entry.name.split("-")
            owner = psutil.Process(int(pid))
            if abs(owner.create_time() - int(started)) <= 1 + _CREATE_TIME_TOLERANCE_S and _alive(owner):
                continue
        except psutil.NoSuchProcess:
            pass
        except (psutil.Error, ValueError):
            continue
        if entry.name.startswith(mine):
            stopped += AttemptCgroup(entry).stop(grace_s)
        else:  # another session's: only tidied away when nothing is left in it
            with contextlib.suppress(OSError):
                entry.rmdir()
    return sorted(set(stopped))


class ProcessTable:
    """Every process of the machine by its parent, from one scan shared by all attempts.

    Finding a process's descendants without a cgroup means reading every process's parent:
    psutil's ``children(recursive=True)`` reads the stat file of each one, some 200 system
    calls on a quiet machine of 70 processes, thousands on a desktop.  An attempt used to pay
    that for itself at each look, its first one right after the spawn: a 1,000-task run of
    short commands took 2.5 times as long without cgroups as with them, and 200 agents looking
    twice a second read 30,000 files a second.  Here one scan serves every attempt that asks
    within ``max_age_s``, as long as it is newer than what the asker needs to see.
    """

    def __init__(self, max_age_s: float = 0.2) -> None:
        self.max_age_s = max_age_s
        self.scans = 0  # how many times the machine's processes were read (tests, benchmarks)
        self._lock = threading.Lock()
        self._taken_at = -float("inf")
        self._children: dict[int, list[psutil.Process]] = {}
        self._known: dict[tuple[int, object], psutil.Process] = {}  # kept between scans: made once per process

    def descendants(self, root_pid: int, now: float, not_before: float) -> list[psutil.Process]:
        """The processes below ``root_pid``, from a scan taken at or after ``not_before`` and
        at most ``max_age_s`` before ``now`` (both on the ``time.monotonic`` clock)."""
        with self._lock:
            if self._taken_at < max(not_before, now - self.max_age_s):
                self._children = self._scan()
                self._taken_at = now  # read before the scan: what starts during it may be missed
            children = self._children
        found: list[psutil.Process] = []
        stack = [root_pid]
        while stack:
            for child in children.get(stack.pop(), ()):
                found.append(child)
                stack.append(child.pid)
        return found

    def _scan(self) -> dict[int, list[psutil.Process]]:
        self.scans += 1
        table = _parents_from_proc()
        if table is None:  # no /proc: psutil asks the system its own way
            table = {
                p.pid: (p.info["ppid"], p.info["create_time"])
                for p in psutil.process_iter(["ppid", "create_time"])
                if p.info["ppid"] is not None
            }
        known, self._known = self._known, {}
        by_parent: dict[int, list[psutil.Process]] = {}
        for pid, (ppid, started) in table.items():
            if ppid == pid:
                continue
            # Known by pid *and* start: a pid given to a new process since is a new process.
            proc = known.get((pid, started))
            if proc is None:
                try:
                    proc = psutil.Process(pid)  # holds its create time: signals never reach a successor
                except psutil.Error:
                    continue
            self._known[pid, started] = proc
            by_parent.setdefault(ppid, []).append(proc)
        return by_parent


def _parents_from_proc() -> dict[int, tuple[int, object]] | None:
    """Each process's parent and start (clock ticks after boot), from ``/proc/<pid>/stat`` (one
    read per process), or None where there is no ``/proc``.  A process that ends meanwhile is left out."""
    try:
        names = os.listdir("/proc")
    except OSError:
        return None
    table: dict[int, tuple[int, object]] = {}
    for name in names:
        fields = stat_fields(name) if name.isdigit() else None
        if fields is not None and len(fields) >= 20 and fields[1].isdigit():
            table[int(name)] = (int(fields[1]), fields[19])
    return table


#: The table every :class:`Descendants` of this process reads.
_TABLE = ProcessTable()


class Descendants:
    """The descendants of one process, recorded while it runs (pid with create time).

    The first look is ``first_look_s`` after the start, then one every ``interval_s``: at the
    spawn the child has had no time to start anything, and a command that is over sooner
    costs no scan at all (what it leaves in its process group is stopped anyway)."""

    def __init__(
        self,
        root_pid: int,
        interval_s: float = 0.5,
        first_look_s: float = 0.1,
        table: ProcessTable | None = None,
        now: float | None = None,
    ) -> None:
        self.root_pid = root_pid
        self.interval_s = interval_s
        self.table = table if table is not None else _TABLE
        self.seen: dict[int, psutil.Process] = {}
        self.started = time.monotonic() if now is None else now
        self.next_look = self.started + first_look_s

    def look(self, now: float | None = None) -> None:
        """Record the root's descendants, at most once per interval."""
        now = time.monotonic() if now is None else now
        if now < self.next_look:
            return
        self.next_look = now + self.interval_s
        for child in self.table.descendants(self.root_pid, now, not_before=self.started):
            self.seen.setdefault(child.pid, child)

    def stop(self, grace_s: float) -> list[int]:
        """Stop every recorded descendant that still runs (the same process, not a reused pid)."""
        return stop_pids(self.seen.values(), grace_s)
