"""A folder's sorted listing, kept current from the kernel's notices where it can be trusted.

``artifacts/`` is looked up by name several times per attempt (the upstream artifacts a
prompt inlines, then the files the attempt left).  Listing it each time made a run
quadratic: with 10,000 artifacts one listing is ~5 ms, and the folder changes with every
attempt, so no listing could be reused (29 ms per task at 10,000 tasks against 6.6 ms at
1,000).  Here, on Linux and a local filesystem, the folder is listed once and the listing
is then kept current from inotify's notices of names created, deleted and moved — read
without waiting before each answer, so whatever a finished process did is in it (the
kernel queues a notice as part of the change itself).  Where inotify is missing or cannot
be trusted — a network filesystem, where another machine's writes raise no notice here —
the folder is listed again whenever its mtime moves, as before.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import stat
import threading
import time
from bisect import bisect_left
from collections.abc import Iterable
from typing import Any

__all__ = ["Entry", "fstype_of", "listing"]

#: (name, "file" | "dir" | "other"): a link is "other", never followed.
Entry = tuple[str, str]

# Filesystems whose every change is made through this kernel: its notices are complete.
_LOCAL_FILESYSTEMS = frozenset(
    {"ext2", "ext3", "ext4", "xfs", "btrfs", "tmpfs", "ramfs", "f2fs", "zfs", "overlay", "jfs", "bcachefs"}
)
_MAX_WATCHED = 8  # folders watched at once (an inotify instance each: the user's limit is 128)

# A listing remembered by the folder's mtime is trusted only once that mtime is this old: the
# clock that stamps it is coarse, and a later change in the same tick would keep it (as git does).
_RACY_NS = 100_000_000

try:  # Linux only
    from inotify_simple import INotify
    from inotify_simple import flags as _flags
except (ImportError, OSError):  # pragma: no cover - other systems
    INotify = None

if INotify is not None:
    _ADDED = _flags.CREATE | _flags.MOVED_TO
    _REMOVED = _flags.DELETE | _flags.MOVED_FROM
    _GONE = _flags.DELETE_SELF | _flags.MOVE_SELF | _flags.UNMOUNT | _flags.IGNORED
    _WATCH_MASK = _ADDED | _REMOVED | _flags.DELETE_SELF | _flags.MOVE_SELF | _flags.ONLYDIR | _flags.DONT_FOLLOW
    _OVERFLOW = _flags.Q_OVERFLOW


def _kind(path: str) -> str | None:
    try:
        mode = os.lstat(path).st_mode
    except OSError:
        return None
    return "file" if stat.S_ISREG(mode) else "dir" if stat.S_ISDIR(mode) else "other"


def _scan(folder: str) -> list[Entry] | None:
    """Every entry of ``folder``, sorted by name; None when it cannot be listed."""
    try:
        with os.scandir(folder) as entries:
            return sorted(
                (
                    entry.name,
                    "file"
                    if entry.is_file(follow_symlinks=False)
                    else "dir"
                    if entry.is_dir(follow_symlinks=False)
                    else "other",
                )
                for entry in entries
            )
    except OSError:
        return None


def _unescape(field: str) -> str:
    # mountinfo writes a space, tab, newline and backslash in a path as \040, \011, \012, \134.
    return field.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n").replace("\\134", "\\")


def fstype_of(path: str, mountinfo: Iterable[str]) -> str | None:
    """The filesystem type of the mount holding ``path`` (resolved), from ``/proc/self/mountinfo`` lines."""
    best, best_type = "", None
    for line in mountinfo:
        fields, _, rest = line.partition(" - ")
        parts, types = fields.split(), rest.split()
        if len(parts) < 5 or not types:
            continue
        mount_point = _unescape(parts[4])
        inside = path == mount_point or path.startswith(mount_point.rstrip("/") + "/")
        if inside and len(mount_point) >= len(best):  # the last of equal ones is the one on top
            best, best_type = mount_point, types[0]
    return best_type


def _on_local_disk(folder: str) -> bool:
    try:
        with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as lines:
            return fstype_of(os.path.realpath(folder), lines) in _LOCAL_FILESYSTEMS
    except OSError:
        return False


class _Watched:
    """One folder's listing and the inotify instance that keeps it current."""

    def __init__(self, folder: str) -> None:
        self.folder = folder
        self.lock = threading.Lock()
        self.scans = 0
        self.notify: Any = INotify(nonblocking=True)
        try:
            # Watch first, then list: a change in between is in both, and applying it again
            # changes nothing.
            self.notify.add_watch(folder, _WATCH_MASK)
            entries = self._list()
        except BaseException:
            self.notify.close()
            raise
        self.entries = entries

    def _list(self) -> list[Entry]:
        entries = _scan(self.folder)
        if entries is None:
            raise FileNotFoundError(self.folder)
        self.scans += 1
        return entries

    def current(self) -> list[Entry] | None:
        """The listing as of now; None once the watch is over (the folder was removed or moved)."""
        with self.lock:
            if self.notify.closed:
                return None
            try:
                events = self.notify.read(timeout=0)
            except OSError:
                self.notify.close()
                return None
            if events:
                try:
                    self.entries = self._applied(events)
                except FileNotFoundError:
                    self.notify.close()
                    return None
            if any(event.mask & _GONE for event in events):
                self.notify.close()
                return None
            return self.entries  # never changed in place: a caller may still be reading the last one

    def _applied(self, events: list[Any]) -> list[Entry]:
        if any(event.mask & _OVERFLOW for event in events):
            return self._list()  # notices were lost: list again
        entries = list(self.entries)
        for event in events:
            if not event.name:
                continue
            index = bisect_left(entries, (event.name, ""))
            present = index < len(entries) and entries[index][0] == event.name
            kind = _kind(os.path.join(self.folder, event.name)) if event.mask & _ADDED else None
            if kind is None:  # removed, or added and already gone again (its removal follows)
                if present:
                    del entries[index]
            elif present:
                entries[index] = (event.name, kind)
            else:
                entries.insert(index, (event.name, kind))
        return entries

    def close(self) -> None:
        with self.lock:
            if not self.notify.closed:
                self.notify.close()


_watched: dict[str, _Watched | None] = {}  # None: not watchable (listed by mtime instead)
_watched_lock = threading.Lock()
_by_mtime: dict[str, tuple[int, list[Entry]]] = {}
_by_mtime_lock = threading.Lock()


def _watcher(folder: str) -> _Watched | None:
    with _watched_lock:
        if folder in _watched:
            return _watched[folder]
    if not os.path.isdir(folder):
        return None  # not there yet (or not a folder): asked again next time
    if INotify is None or not _on_local_disk(folder):
        watched = None
    else:
        try:
            watched = _Watched(folder)
        except FileNotFoundError:
            return None  # not there yet: asked again next time
        except OSError:
            watched = None  # the user's inotify limits are reached: list by mtime
    with _watched_lock:
        if folder in _watched:  # another thread was first
            if watched is not None:
                watched.close()
            return _watched[folder]
        _watched[folder] = watched
        while len(_watched) > _MAX_WATCHED:
            oldest = _watched.pop(next(iter(_watched)))
            if oldest is not None:
                oldest.close()
    return watched


def _close_all() -> None:
    with _watched_lock:
        watched = list(_watched.values())
        _watched.clear()
    for one in watched:
        if one is not None:
            one.close()


atexit.register(_close_all)


def _reset_in_child() -> None:
    """A forked child starts without watches: reading the parent's inotify descriptor would take
    notices the parent needs.  No lock is taken (another thread may have held it at the fork)."""
    global _watched, _watched_lock, _by_mtime_lock
    for one in _watched.values():
        if one is not None:
            with contextlib.suppress(OSError):
                one.notify.close()  # the child's copy of the descriptor only
    _watched, _watched_lock, _by_mtime_lock = {}, threading.Lock(), threading.Lock()


os.register_at_fork(after_in_child=_reset_in_child)


def _forget(folder: str, watched: _Watched) -> None:
    with _watched_lock:
        if _watched.get(folder) is watched:
            del _watched[folder]
    watched.close()


def listing(folder: str | os.PathLike[str]) -> list[Entry]:
    """(name, "file" | "dir" | "other") of each entry of ``folder``, sorted by name; [] if missing.

    The list returned is never changed afterwards: read it as long as needed."""
    key = os.fspath(folder)
    watched = _watcher(key)
    if watched is not None:
        entries = watched.current()
        if entries is not None:
            return entries
        _forget(key, watched)  # removed or moved: watched again once it is back
    return _listing_by_mtime(key)


def _listing_by_mtime(key: str) -> list[Entry]:
    try:
        mtime = os.stat(key).st_mtime_ns
    except OSError:
        return []
    with _by_mtime_lock:
        cached = _by_mtime.get(key)
    if cached is not None and cached[0] == mtime:
        return cached[1]
    entries = _scan(key)
    if entries is None:
        return []
    if time.time_ns() - mtime > _RACY_NS:
        with _by_mtime_lock:
            _by_mtime[key] = (mtime, entries)
    return entries
