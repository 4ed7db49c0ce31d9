"""Paths built from untrusted names, kept inside the folder they belong to.

Every file whose name holds a task id (prompts, logs, reports, feedback, task
mirrors, worktrees, artifacts) is built by :func:`task_file` or :func:`within`:
the name is checked against the id grammar, the result is resolved (links
followed) and refused with :class:`UnsafePath` when it falls outside its root.
:func:`is_private` tells whether a path resolves into the executor's own
``.executor/`` folder, which is never inlined into a prompt nor served.
"""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

from protocol.ids import task_id_problem

__all__ = [
    "STATE_DIR_NAME",
    "UnsafePath",
    "is_private",
    "make_folder",
    "open_new_file",
    "path_text_problem",
    "task_file",
    "task_file_text",
    "within",
    "within_text",
    "write_all",
]

#: The executor's private folder in a session (state.db, prompts, logs, inbox).
STATE_DIR_NAME = ".executor"
_MAX_PATH_TEXT = 4096
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class UnsafePath(ValueError):
    """A path built from a name would leave its folder, or the name is not a usable one."""


def within(root: Path, *parts: str) -> Path:
    """``root / parts`` as spelled; raises :class:`UnsafePath` unless it resolves inside ``root``.

    Both are resolved for the check (links followed, ``..`` folded), so a session reached
    through a link still works and a link planted inside cannot lead out.  The path need
    not exist."""
    return Path(within_text(root, *parts))


def within_text(root: str | os.PathLike[str], *parts: str) -> str:
    """:func:`within` as a string: the Executor builds three such paths per attempt on its one
    thread, and a ``Path`` costs more to make than the check itself."""
    for part in parts:
        problem = path_text_problem(part)
        if problem is not None:
            raise UnsafePath(problem)
    if _plainly_inside(root, parts):
        return os.path.join(root, *parts)
    base = Path(root).resolve()
    try:
        target = base.joinpath(*parts).resolve()
    except (OSError, RuntimeError, ValueError) as error:  # a link loop, an unusable name
        raise UnsafePath(f"cannot resolve {'/'.join(parts)!r} under {base}: {error}") from error
    if target == base or not target.is_relative_to(base):
        raise UnsafePath(f"{'/'.join(parts)!r} leads outside {base}")
    return os.fspath(Path(root).joinpath(*parts))


def _plainly_inside(root: str | os.PathLike[str], parts: tuple[str, ...]) -> bool:
    """Whether ``root/parts`` is inside ``root`` without resolving anything: every part a plain
    name (no separator, no ``.``/``..``) and no part, up to the first that does not exist yet,
    a link.  One ``lstat`` per part instead of one per component of the whole resolved path
    (twice): the executor builds three such paths per attempt on its one thread, where each
    system call waits for the GIL again.  Anything else (a link on the way, an odd name) takes
    the full resolution, which decides."""
    if not parts:
        return False
    path = os.fspath(root)
    for part in parts:
        if not part or part in (".", "..") or "/" in part:
            return False
        path = os.path.join(path, part)
        try:
            mode = os.lstat(path).st_mode
        except FileNotFoundError:
            return True  # nothing from here on exists, so no link can lead out of it
        except OSError:
            return False
        if stat.S_ISLNK(mode):
            return False
    return True


def make_folder(path: str | os.PathLike[str]) -> None:
    """``mkdir -p``, in one system call when the folder is already there (the usual case, once
    per attempt: ``Path.mkdir(parents=True, exist_ok=True)`` takes two)."""
    try:
        os.mkdir(path)
    except FileExistsError:
        return  # a file of that name: whatever is opened in it next fails and says so
    except FileNotFoundError:
        Path(path).mkdir(parents=True, exist_ok=True)


def open_new_file(path: str | os.PathLike[str], flags: int) -> int:
    """``os.open(path, flags | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0o666)``, making its folder only
    when it is missing (no ``mkdir`` per file).  ``O_NOFOLLOW``: a link planted at the name
    since the path was checked is refused (ELOOP), never written through."""
    flags |= os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        return os.open(path, flags, 0o666)
    except FileNotFoundError:
        make_folder(os.path.dirname(path))
        return os.open(path, flags, 0o666)


def write_all(fd: int, data: bytes) -> None:
    """``os.write`` until all of ``data`` is written (a write may take only part of it)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def task_file(root: Path, task_id: str, suffix: str = "", *folders: str) -> Path:
    """``root/<folders...>/<task_id><suffix>``, after checking the id and where it lands."""
    return Path(task_file_text(root, task_id, suffix, *folders))


def task_file_text(root: str | os.PathLike[str], task_id: str, suffix: str = "", *folders: str) -> str:
    """:func:`task_file` as a string (see :func:`within_text`)."""
    problem = task_id_problem(task_id)
    if problem is not None:
        raise UnsafePath(problem)
    return within_text(root, *folders, f"{task_id}{suffix}")


def path_text_problem(text: str) -> str | None:
    """Why ``text`` cannot be a path at all (NUL, control characters, absurd length), or None."""
    if "\0" in text:
        return "the path holds a NUL byte"
    if _CONTROL.search(text):  # one C scan: these checks run for every path an attempt builds
        return "the path holds a control character (a newline, a tab, an escape...)"
    if len(text) > _MAX_PATH_TEXT:
        return f"the path is {len(text)} characters long, over the limit of {_MAX_PATH_TEXT}"
    return None


def is_private(session: Path, path: Path) -> bool:
    """Whether ``path`` (relative to ``session`` or absolute) resolves into ``session/.executor``.

    The resolved target counts, not the spelling: a link in ``artifacts/`` that points
    into ``.executor/`` is private.  A path that cannot be resolved counts as private."""
    try:
        private = (Path(session).resolve() / STATE_DIR_NAME).resolve()
        target = (Path(session).resolve() / path).resolve()
    except (OSError, RuntimeError, ValueError):
        return True
    return target == private or target.is_relative_to(private)
