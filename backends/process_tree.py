"""Stopping a process tree: its process group and every descendant, SIGTERM, a grace period, then SIGKILL."""

from __future__ import annotations

import contextlib
import os
import signal
import time

import psutil

__all__ = [
    "group_exists",
    "signal_name",
    "stop_tree",
]


#: How far a recorded create time may differ from psutil's and still be the same process.
_CREATE_TIME_TOLERANCE_S = 1.0
_STOP_POLL_S = 0.05


def signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def _is_gone(proc: psutil.Process) -> bool:
    """True if the process has exited (a zombie counts as exited) or its pid was reused."""
    try:
        return not proc.is_running() or proc.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True
    except psutil.Error:
        return False


def _group_members(pgid: int) -> list[psutil.Process]:
    """Live processes whose process group is ``pgid`` (a scan of the process table)."""
    members = []
    for proc in psutil.process_iter():
        try:
            if os.getpgid(proc.pid) == pgid:
                members.append(proc)
        except OSError:
            continue
    return members


def _killpg(pgid: int, sig: int) -> bool:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def group_exists(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def stop_tree(pid: int, create_time: float | None = None, grace_s: float = 5.0) -> list[int]:
    """Stop a process, its process group and all its descendants.

    Steps: collect ``psutil`` descendants (``children(recursive=True)``) and the members of
    the process group ``pid`` first; then send SIGTERM to the group (``os.killpg``) and to
    each collected process; wait up to ``grace_s`` for them to exit; SIGKILL the
    survivors (and the group again).

    The process group ``pid`` is signalled only when ``pid`` leads it (our workers are
    started in a process group of their own) or when ``pid`` is gone but its group lives
    on (a grandchild that outlived the worker). The caller's own process and process group
    are never signalled.

    Identity: if ``create_time`` is given and the live process ``pid`` has a create time
    more than 1 s away from it, the pid was reused by another program and nothing is done.

    Zombies count as exited. Waiting never reaps anything, so a caller holding a
    ``subprocess.Popen`` for ``pid`` still gets its exit status afterwards.

    Returns the pids that were sent a signal (sorted). Never raises for processes that are
    already gone or vanish meanwhile; blocks for at most about ``grace_s`` (plus the scans).
    """
    me = os.getpid()
    my_group = os.getpgrp()
    if pid <= 0 or pid == me:
        return []
    root: psutil.Process | None
    try:
        root = psutil.Process(pid)
        if create_time is not None and abs(root.create_time() - create_time) > _CREATE_TIME_TOLERANCE_S:
            return []
    except psutil.NoSuchProcess:
        root = None
    except psutil.Error:
        return []  # AccessDenied on create_time: we cannot prove identity, so do nothing.

    # Is `pid` a process group we may signal?
    signal_group = False
    if pid not in (me, my_group):
        if root is None:
            signal_group = True  # leader gone; members (if any) keep its pid as their pgid
        else:
            try:
                signal_group = os.getpgid(pid) == pid
            except OSError:
                signal_group = True  # exited between the two calls

    # Collect everything first: once the root dies its children are reparented and lost.
    targets: dict[int, psutil.Process] = {}
    members: set[int] = set()
    if root is not None:
        targets[root.pid] = root
        with contextlib.suppress(psutil.Error):
            for child in root.children(recursive=True):
                targets[child.pid] = child
    if signal_group:
        for member in _group_members(pid):
            if create_time is not None:
                # A member created before the worker cannot belong to it: the group id is
                # not the worker's. Signal only what we can vouch for, one by one.
                with contextlib.suppress(psutil.Error):
                    if member.create_time() < create_time - _CREATE_TIME_TOLERANCE_S:
                        signal_group = False
                        continue
            targets.setdefault(member.pid, member)
            members.add(member.pid)
    targets.pop(me, None)

    alive = [proc for proc in targets.values() if not _is_gone(proc)]
    signalled: set[int] = set()
    if signal_group and _killpg(pid, signal.SIGTERM):
        signalled.update(proc.pid for proc in alive if proc.pid in members)
    for proc in alive:
        try:
            proc.terminate()
            signalled.add(proc.pid)
        except psutil.Error:
            continue

    deadline = time.monotonic() + max(0.0, grace_s)
    while alive and time.monotonic() < deadline:
        time.sleep(_STOP_POLL_S)
        alive = [proc for proc in alive if not _is_gone(proc)]

    if alive:
        # Survivors may have forked meanwhile: pick up their new descendants too.
        extra: list[psutil.Process] = []
        for proc in alive:
            with contextlib.suppress(psutil.Error):
                extra.extend(proc.children(recursive=True))
        for proc in [*alive, *extra]:
            if proc.pid == me or _is_gone(proc):
                continue
            try:
                proc.kill()
                signalled.add(proc.pid)
            except psutil.Error:
                continue
    if signal_group and group_exists(pid):
        # Members that joined the group after the scan, or ignored SIGTERM unseen.
        late = [m for m in _group_members(pid) if m.pid != me and not _is_gone(m)]
        if late and _killpg(pid, signal.SIGKILL):
            signalled.update(m.pid for m in late)
    return sorted(signalled)
