"""A Markdown mirror of every task, for people and IDE agents: ``<session>/tasks/<lifecycle>/<ID>.md``.

The state store is the truth; the mirror is regenerated from it.  Each file shows
the task's state (lifecycle, priority, agent, times, review feedback, errors, git
context) and six free-text sections a person may edit: Goal, Acceptance
Criteria, Definition of Ready, Definition of Done, Files Affected and
Implementation Notes.  Edits to those are read back into the store; everything
else in the file is overwritten on the next write.

The protocol for a caller that owns the store (an executor command)::

    rows = store.tasks()
    for task_id, details in read_edits(folder, rows).items():  # 1. what people changed in the files
        store.update_task(task_id, TaskChange(details=details))             # 2. the store takes it
    write_mirror(folder, store.tasks(), runs_by_task, feedback)  # 3. the files show the store again

``write_mirror`` never silently loses a person's edit: with ``preserve_edits``
(the default) a file whose editable sections hold changes the store does not
have yet is left untouched, and its task id is listed in
:attr:`MirrorResult.conflicts` (read the edits back, apply them, write again).
``preserve_edits=False`` overwrites such files.  :func:`sync_mirror` only reads
the store (it cannot apply edits), so it leaves edited files alone.

Telling a person's edit from a store change: the last line of every file,
``<!-- mirror-base ...: goal=<digest> ... -->``, records a digest of each editable
section as written.  A section counts as edited when it differs from the store
*and* from that digest; a section that still matches its digest was not touched
in the file, so when it differs from the store it is the store that moved on
(``executor task prep``), and the file is simply rewritten.  Without that line
(a hand-made file) any difference counts as an edit.  A Goal that shows the
fallback text (the description or the subject, when the task has no goal) is not
an edit.

Files: written atomically (a temp file, then ``os.replace``) and only when their
bytes change, so an IDE watching the folder sees one event per real change; not
fsynced, since the store can always regenerate them.  A task whose lifecycle
changed moves to its new folder.  Files named like a task id (``<PREFIX>-<n>.md``)
for tasks the store no longer has are removed; anything else is left alone, as
are symbolic links.  Task ids that could name a path outside the mirror (see
the id grammar of :mod:`protocol.ids`) are skipped and listed in :attr:`MirrorResult.skipped`.

Sections that hold arbitrary text keep the document's structure: in the editable
free text a line that would read as a ``## `` heading is escaped with a
backslash (and unescaped when read back), and a code fence left open is closed;
in feedback and error text headings are demoted by two levels.

This module keeps the folder; the Markdown of one file is :mod:`session.mirror_markdown`.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import stat
from collections.abc import Iterable
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path

from protocol.ids import is_task_id
from protocol.records import RunRow, TaskDetails, TaskRow
from session.feedback import FEEDBACK_DIR, read_feedback
from session.lifecycle import LIFECYCLE, lifecycle_of
from session.mirror_markdown import Value, edited_details, render_file, shown_values
from session.redaction import redact, secrets_known
from session.store import StoreReader

__all__ = [
    "MIRROR_DIR",
    "MirrorMemo",
    "MirrorResult",
    "read_edits",
    "sync_mirror",
    "write_mirror",
]

MIRROR_DIR = "tasks"
_TASK_FILE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*-[0-9]+\.md")  # what stale-file removal may delete


@dataclass(slots=True)
class MirrorResult:
    """What one :func:`write_mirror` did.

    ``written``: files created or rewritten in place; ``moved``: files that moved to
    another lifecycle folder (written there, the old one removed); ``removed``: files
    of tasks the store no longer has (and duplicates); ``unchanged``: files already
    up to date; ``conflicts``: tasks whose file holds edits the store lacks (left
    untouched); ``skipped``: tasks whose id or lifecycle cannot name a file.
    """

    written: int = 0
    moved: int = 0
    removed: int = 0
    unchanged: int = 0
    conflicts: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


def _read_text(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError):
        return None


# --- the folder -----------------------------------------------------------------------------------


#: The folders scanned: the lifecycle's, and ``done`` where older versions put completed
#: tasks (a file found there is moved to ``completed/``).
_FOLDERS: tuple[str, ...] = (*LIFECYCLE, "done")


def _scan(root: Path) -> dict[str, dict[str, Path]]:
    """Task id -> {folder: file} for the regular ``<id>.md`` files in the lifecycle folders."""
    found: dict[str, dict[str, Path]] = {}
    for lifecycle in _FOLDERS:
        try:
            with os.scandir(root / lifecycle) as entries:
                for entry in entries:
                    task_id = entry.name[:-3]
                    if entry.name.endswith(".md") and is_task_id(task_id) and entry.is_file(follow_symlinks=False):
                        found.setdefault(task_id, {})[lifecycle] = Path(entry.path)
        except (FileNotFoundError, NotADirectoryError):
            continue
    return found


def _files_of(root: Path, task_ids: Iterable[str]) -> dict[str, dict[str, Path]]:
    """:func:`_scan` for ``task_ids`` only: one ``lstat`` per lifecycle folder and task, not a
    listing of every task's file."""
    found: dict[str, dict[str, Path]] = {}
    for task_id in task_ids:
        if not is_task_id(task_id):
            continue
        for lifecycle in _FOLDERS:
            path = root / lifecycle / f"{task_id}.md"
            try:
                mode = path.lstat().st_mode
            except OSError:
                continue
            if stat.S_ISREG(mode):
                found.setdefault(task_id, {})[lifecycle] = path
    return found


def _write(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` in one rename: readers see the old file or the new one."""
    temp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        with temp.open("xb") as handle:
            handle.write(data)
        os.replace(temp, path)
    except BaseException:
        with suppress(OSError):
            temp.unlink()
        raise


def _holds_edits(row: TaskRow, path: Path, data: bytes, shown: dict[str, Value], cache: dict[Path, bytes]) -> bool:
    """Does the file at ``path`` hold edits the store lacks?  A file that cannot be read or decoded
    might, so it counts as one (never overwritten unread)."""
    try:
        current = cache[path] = path.read_bytes()
    except FileNotFoundError:
        return False
    except OSError:
        return True
    if current == data:
        return False
    try:
        text = current.decode("utf-8-sig")
    except UnicodeDecodeError:
        return True
    return edited_details(row, text, shown) is not None


#: What a file was written from, the file as it was left (mtime, size, inode), and a digest of its bytes.
MirrorMemo = dict[str, tuple[tuple[object, ...], tuple[int, int, int], bytes]]


def _digest_of(data: bytes) -> bytes:
    return hashlib.blake2b(data, digest_size=16).digest()


def _stat_of(path: Path) -> tuple[int, int, int] | None:
    try:
        stat = path.stat()
    except OSError:
        return None
    return stat.st_mtime_ns, stat.st_size, stat.st_ino


def write_mirror(
    folder: Path,
    rows: list[TaskRow],
    runs_by_task: dict[str, list[RunRow]],
    feedback_by_task: dict[str, str],
    *,
    preserve_edits: bool = True,
    memo: MirrorMemo | None = None,
    only: set[str] | None = None,
    completed: set[str] | None = None,
) -> MirrorResult:
    """Bring ``<folder>/tasks/`` in line with ``rows``, in one pass over the rows and one scan of the folder.

    ``only``: the files of these tasks only; files of tasks the store does not know are then left
    for a whole pass to remove.  A task's lifecycle folder depends on its blockers' status: either
    ``rows`` holds every task, or ``completed`` names the completed ones among the blockers of
    the tasks in ``only`` (then ``rows`` needs to hold only those tasks).

    ``memo``: kept by a caller that writes the mirror again and again (the run's MirrorKeeper).  A
    task whose row, runs and feedback are those its file was written from, and whose file is still
    the one written (same mtime, size and inode: nobody edited it), is not rendered again — a pass
    over a large session then costs a stat per unchanged task instead of a render and a read.

    OSError from writing a file propagates (the files written before it stay written).
    """
    root = Path(folder) / MIRROR_DIR
    result = MirrorResult()
    lifecycles = lifecycle_of(rows, completed)
    on_disk = _scan(root) if only is None else _files_of(root, only)
    known = {row.id for row in rows}
    done: set[str] = set()
    made: set[str] = set()
    for row in rows if only is None else (row for row in rows if row.id in only):
        lifecycle = lifecycles[row.id]
        if not is_task_id(row.id) or lifecycle not in LIFECYCLE:
            result.skipped.append(row.id)
            continue
        if row.id in done:
            continue
        done.add(row.id)
        existing = on_disk.get(row.id, {})
        target = root / lifecycle / f"{row.id}.md"
        # A secret registered since the file was written must be masked in it too: it counts as a change.
        runs = tuple(runs_by_task.get(row.id, ()))
        source = (row, lifecycle, runs, feedback_by_task.get(row.id, ""), secrets_known())
        remembered = memo.get(row.id) if memo is not None else None
        # The one file of the task is still the one this memo's pass left (same mtime, size and
        # inode): nobody edited it, and its bytes are the ones remembered (their digest): no read,
        # no parse of the file to look for edits.
        as_left: bytes | None = None
        if remembered is not None and len(existing) == 1:
            (single,) = existing.values()
            if _stat_of(single) == remembered[1]:
                as_left = remembered[2]
        if as_left is not None and remembered is not None and remembered[0] == source and lifecycle in existing:
            result.unchanged += 1
            continue
        text, shown = render_file(row, lifecycle, runs_by_task.get(row.id, []), feedback_by_task.get(row.id, ""))
        data = redact(text).encode("utf-8")  # users commit these files: no key in them, whatever an agent said
        cache: dict[Path, bytes] = {}
        may_hold_edits = as_left is None and preserve_edits
        if may_hold_edits and any(_holds_edits(row, path, data, shown, cache) for path in existing.values()):
            result.conflicts.append(row.id)
            continue
        others = [path for other, path in existing.items() if other != lifecycle]
        if lifecycle in existing:
            if as_left is not None:
                same = as_left == _digest_of(data)
            else:
                current = cache.get(target)
                if current is None:
                    with suppress(OSError):
                        current = target.read_bytes()
                same = current == data
            if same:
                result.unchanged += 1
            else:
                _write(target, data)
                result.written += 1
            result.removed += len(others)
        else:
            if lifecycle not in made:
                target.parent.mkdir(parents=True, exist_ok=True)
                made.add(lifecycle)
            _write(target, data)
            if others:
                result.moved += 1
                result.removed += len(others) - 1
            else:
                result.written += 1
        for path in others:
            path.unlink(missing_ok=True)
        if memo is not None:
            left = _stat_of(target)
            if left is not None:
                memo[row.id] = (source, left, _digest_of(data))
    for task_id, paths in on_disk.items() if only is None else ():
        if task_id in known:
            continue
        for path in paths.values():
            if _TASK_FILE.fullmatch(path.name):
                path.unlink(missing_ok=True)
                result.removed += 1
    return result


def _feedback_texts(folder: Path, rows: Iterable[TaskRow]) -> dict[str, str]:
    """The feedback file of each task that has one (one directory listing, not one open per task)."""
    try:
        with os.scandir(folder / FEEDBACK_DIR) as entries:
            names = {entry.name for entry in entries}
    except (FileNotFoundError, NotADirectoryError):
        return {}
    texts: dict[str, str] = {}
    for row in rows:
        if f"{row.id}.md" in names and is_task_id(row.id):
            with suppress(OSError, UnicodeDecodeError):
                texts[row.id] = read_feedback(folder, row.id)
    return texts


def sync_mirror(
    folder: Path, *, preserve_edits: bool = True, memo: MirrorMemo | None = None, since: tuple[int, int] | None = None
) -> MirrorResult:
    """Regenerate the mirror from the session's store (read-only); no store yet: nothing written.

    Edited files are left alone (``preserve_edits``): this cannot apply edits to the store.
    ``since`` (``(after, until)``, event ids): only the files of the tasks those events name, and
    of the tasks that wait for them (their folder follows their blockers' status) — a pass then
    costs what changed, not what the session holds.  An event that names no task (tasks reopened
    together, say) makes it a whole pass.
    Raises :class:`session.store.StoreError` when the store cannot be read.
    """
    folder = Path(folder)
    reader = StoreReader.open(folder)
    if reader is None:
        return MirrorResult()
    only: set[str] | None = None
    try:
        if since is not None:
            touched, run_wide = reader.tasks_touched(*since)
            only = None if run_wide else touched
        completed: set[str] | None = None
        if only is not None:
            # The changed tasks and those waiting for them, and which of their blockers are done:
            # what their folders follow.  Not every row of a 10,000-task session each pass.
            rows = reader.tasks_around(only)
            only = {row.id for row in rows}
            completed = reader.completed_among({blocker for row in rows for blocker in row.blocked_by})
            runs = reader.runs_of(only)
        else:
            rows = reader.tasks()
            runs = reader.runs()
    finally:
        reader.close()
    runs_by_task: dict[str, list[RunRow]] = {}
    for run in runs:
        runs_by_task.setdefault(run.task_id, []).append(run)
    feedback = _feedback_texts(folder, rows if only is None else (row for row in rows if row.id in only))
    return write_mirror(
        folder, rows, runs_by_task, feedback, preserve_edits=preserve_edits, memo=memo, only=only, completed=completed
    )


def read_edits(folder: Path, rows: list[TaskRow]) -> dict[str, TaskDetails]:
    """Task id -> its details as edited in its mirror file, for each task whose file holds edits.

    The file in the task's current lifecycle folder is read first, then any other.
    Only the edited fields change (capabilities never do).  Files that cannot be
    read are skipped; this never raises for a file's content.
    """
    on_disk = _scan(Path(folder) / MIRROR_DIR)
    if not on_disk:
        return {}
    lifecycles = lifecycle_of(rows)
    edits: dict[str, TaskDetails] = {}
    for row in rows:
        paths = on_disk.get(row.id)
        if not paths:
            continue
        current = lifecycles.get(row.id)
        shown = shown_values(row)
        for lifecycle in sorted(paths, key=lambda name: (name != current, _FOLDERS.index(name))):
            text = _read_text(paths[lifecycle])
            details = None if text is None else edited_details(row, text, shown)
            if details is not None:
                edits[row.id] = details
                break
    return edits
