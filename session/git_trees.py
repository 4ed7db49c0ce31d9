"""A project's work tree as git tree objects: capture, compare, restore.

Before and after each attempt the worker captures the whole work tree (tracked
files as they are on disk, and untracked files git does not ignore) as a tree
object, through a temporary copy of the index: the user's index, HEAD and
branches are never touched, and only files whose stat changed are hashed again.
The two trees are what ``executor diff`` compares and what ``executor rollback``
restores from.  Each captured tree is kept by a ref of its own,
``refs/team-executor/trees/<tree id>`` (not a branch: ``git log --all`` and
``git branch`` do not show it), so ``git gc`` never prunes a state a diff or a
rollback may need, however long after the run.  Dropping them all:
``git for-each-ref --format='delete %(refname)' refs/team-executor/trees | git update-ref --stdin``.

Git runs by argv with ``-C``, a minimal environment and the options that would
let a repository's own config run a program turned off (:mod:`session.safe_git`):
agents can write ``.git/config``.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

import msgspec

from session.safe_git import SAFE_GIT_OPTIONS, safe_git_env

__all__ = [
    "TREE_REFS",
    "FileChange",
    "GitMissing",
    "GitTreeError",
    "capture_tree",
    "changed_files",
    "changed_paths",
    "diff_patch",
    "head_commit",
    "is_object",
    "repo_root",
    "restore_paths",
    "run_git",
    "tree_blob",
]

_TIMEOUT_S = 60.0
_SAFE = (*SAFE_GIT_OPTIONS, "-c", "core.quotePath=false")
_OBJECT_ID = re.compile(r"^[0-9a-f]{40}([0-9a-f]{24})?$")


class GitTreeError(Exception):
    """git could not do it; the message says what and where."""


class GitMissing(GitTreeError):
    """There is no git program to run."""


class FileChange(msgspec.Struct, frozen=True):
    """One file between two trees: ``status`` A (added), M (modified), D (deleted), T (type changed)."""

    path: str
    status: str
    added: int | None = None  # lines; None for a binary file
    removed: int | None = None


_env = safe_git_env


def run_git(
    root: Path,
    *args: str,
    env: dict[str, str] | None = None,
    stdin: bytes | None = None,
    options: Sequence[str] = _SAFE,
    timeout_s: float = _TIMEOUT_S,
) -> bytes:
    """git ``args`` in ``root`` with ``options`` (-c settings) first; its stdout.

    Raises :class:`GitMissing` when there is no git, :class:`GitTreeError` with git's last line
    when it fails or takes longer than ``timeout_s``."""
    try:
        done = subprocess.run(
            ["git", *options, "-C", str(root), *args],
            capture_output=True,
            input=stdin,
            timeout=timeout_s,
            check=False,
            env=env or _env(),
        )
    except FileNotFoundError:
        raise GitMissing("git is not installed") from None
    except subprocess.TimeoutExpired:
        raise GitTreeError(f"git {args[0]} in {root} took longer than {timeout_s:g}s") from None
    if done.returncode != 0:
        message = done.stderr.decode("utf-8", "replace").strip().splitlines()
        raise GitTreeError(f"git {args[0]} in {root}: {message[-1] if message else f'exit {done.returncode}'}")
    return done.stdout


_git = run_git


#: How long "no ``.git`` in the folders above" is believed before they are looked at again.  The
#: folder itself is looked at every time (an agent's ``git init`` there counts at once); a
#: repository made above it while a run goes on is seen this much later.
ABOVE_RECHECK_S = 5.0
_none_above_until: dict[str, float] = {}  # resolved folder -> monotonic time its parents are looked at again


def _may_be_in_a_repository(path: Path, now: float | None = None) -> bool:
    """Whether a ``.git`` lies on the way up from ``path`` (a few stat calls).  Only then is git
    asked: this runs before and after every attempt, and a process per attempt just to hear "not a
    repository" cost a DAG of small commands a third of its time.  For an absolute path the
    folders above are looked at once per :data:`ABOVE_RECHECK_S` (one ``stat`` each, twice an
    attempt, was a fifth of a worker's system calls)."""
    if any(name in os.environ for name in ("GIT_DIR", "GIT_WORK_TREE")):
        return True  # git is told where the repository is: only git knows
    text = os.fspath(path)
    # A relative path means something else after a chdir: only absolute ones are remembered.
    absolute = os.path.isabs(text)
    candidates = _folders_up_from(text) if absolute else _folders_up_from.__wrapped__(text)
    if candidates is None:
        return True
    folder, above = candidates[0], candidates[1:]
    if os.path.exists(os.path.join(folder, ".git")):
        return True
    at = time.monotonic() if now is None else now
    if absolute and _none_above_until.get(folder, 0.0) > at:
        return False
    if any(os.path.exists(os.path.join(candidate, ".git")) for candidate in above):
        _none_above_until.pop(folder, None)
        return True
    if absolute:
        if len(_none_above_until) > 4096:  # a folder per task (worktrees): forget, do not grow
            _none_above_until.clear()
        _none_above_until[folder] = at + ABOVE_RECHECK_S
    return False


@functools.lru_cache(maxsize=256)
def _folders_up_from(path: str) -> tuple[str, ...] | None:
    """``path`` resolved, and each folder above it; None when it cannot be resolved.  Remembered:
    the same few work folders are asked about before and after every attempt, and resolving one
    is a system call per component (a wrong answer after a folder was moved only means git is
    asked, or an attempt's tree is not recorded)."""
    try:
        folder = Path(path).resolve()
    except (OSError, RuntimeError):
        return None
    return tuple(str(candidate) for candidate in (folder, *folder.parents))


def repo_root(path: Path) -> Path | None:
    """The top of the git work tree that holds ``path``, or None when there is none (or no git)."""
    if not _may_be_in_a_repository(Path(path)):
        return None
    try:
        out = _git(path, "rev-parse", "--show-toplevel")
    except GitTreeError:
        return None
    text = out.decode("utf-8", "replace").strip()
    return Path(text) if text else None


def head_commit(root: Path) -> str | None:
    """The commit HEAD names, or None (no commit yet, or not a repository)."""
    try:
        return _git(root, "rev-parse", "--verify", "-q", "HEAD").decode().strip() or None
    except GitTreeError:
        return None


def is_object(text: str | None) -> bool:
    return bool(text) and _OBJECT_ID.match(text or "") is not None


def _literal(path: str) -> str:
    return f":(top,literal){path}"


def _ignored(root: Path, paths: Sequence[str]) -> set[str]:
    """Which of ``paths`` .gitignore covers (one git call; exit 1 means none)."""
    if not paths:
        return set()
    try:
        out = _git(root, "check-ignore", "--no-index", "-z", "--stdin", stdin="\0".join(paths).encode())
        return set(_split_z(out))
    except GitTreeError:
        return set()


#: Where captured trees are kept from ``git gc``: one ref per tree, named by its id.
TREE_REFS = "refs/team-executor/trees"


def capture_tree(root: Path, exclude: Sequence[str] = ()) -> str:
    """The work tree under ``root`` as a tree object id; ``exclude``: repository-relative paths left out.

    Raises :class:`GitTreeError`."""
    index = Path(_git(root, "rev-parse", "--git-path", "index").decode().strip())
    index = index if index.is_absolute() else root / index
    with tempfile.TemporaryDirectory(prefix="executor-tree-") as scratch:
        temp_index = Path(scratch) / "index"
        if index.is_file():
            shutil.copyfile(index, temp_index)  # keeps the stat cache: only changed files are hashed
        env = _env({"GIT_INDEX_FILE": str(temp_index)})
        # Naming an ignored path, even to exclude it, makes `git add` fail: leave those to .gitignore.
        ignored = _ignored(root, exclude)
        excludes = [f":(top,exclude,literal){path}" for path in exclude if path not in ignored]
        _git(root, "add", "--all", "--", ":/", *excludes, env=env)
        tree = _git(root, "write-tree", env=env).decode().strip()
    if not is_object(tree):
        raise GitTreeError(f"git write-tree in {root} gave no tree id")
    _git(root, "update-ref", f"{TREE_REFS}/{tree}", tree)  # reachable, so `git gc` keeps it
    return tree


def _split_z(data: bytes) -> list[str]:
    return [part for part in data.decode("utf-8", "surrogateescape").split("\0") if part]


def changed_files(root: Path, before: str, after: str, paths: Iterable[str] | None = None) -> list[FileChange]:
    """Files that differ between two trees (or commits), with their line counts; renames are an add and a delete."""
    spec = ["--", *(_literal(path) for path in paths)] if paths is not None else []
    if paths is not None and len(spec) == 1:
        return []
    status = _split_z(_git(root, "diff", "--no-ext-diff", "--no-renames", "--name-status", "-z", before, after, *spec))
    counts = _split_z(_git(root, "diff", "--no-ext-diff", "--no-renames", "--numstat", "-z", before, after, *spec))
    lines: dict[str, tuple[int | None, int | None]] = {}
    for entry in counts:
        plus, minus, path = entry.split("\t", 2)
        lines[path] = (None, None) if plus == "-" else (int(plus), int(minus))
    changes = []
    for index in range(0, len(status) - 1, 2):
        path = status[index + 1]
        added, removed = lines.get(path, (None, None))
        changes.append(FileChange(path=path, status=status[index][:1], added=added, removed=removed))
    return sorted(changes, key=lambda change: change.path)


def changed_paths(root: Path, before: str, after: str) -> frozenset[str]:
    """The paths that differ between two trees (one cheap git call; none when they are the same tree)."""
    if before == after:
        return frozenset()
    return frozenset(_split_z(_git(root, "diff", "--no-ext-diff", "--no-renames", "--name-only", "-z", before, after)))


def diff_patch(root: Path, before: str, after: str, paths: Iterable[str]) -> str:
    """The unified diff of ``paths`` between two trees (plain text, no colour)."""
    spec = [_literal(path) for path in paths]
    if not spec:
        return ""
    out = _git(
        root,
        "diff",
        "--no-ext-diff",
        "--no-textconv",
        "--no-color",
        "--no-renames",
        "--binary",
        before,
        after,
        "--",
        *spec,
    )
    return out.decode("utf-8", "replace")


def tree_blob(root: Path, tree: str, path: str) -> bool:
    """Whether ``path`` exists (as a file or link) in ``tree``."""
    out = _git(root, "ls-tree", "-z", tree, "--", _literal(path))
    entries = [entry.split(b"\t", 1) for entry in out.split(b"\0") if entry]
    return any(len(entry) == 2 and entry[0].split()[1] == b"blob" for entry in entries)


def restore_paths(root: Path, tree: str, present: Sequence[str], absent: Sequence[str]) -> None:
    """Put ``present`` back as they are in ``tree`` and delete ``absent`` (files the tree does not have).

    Only the work tree changes (the index and HEAD stay).  A path to delete must resolve
    inside ``root`` without following a link out of it."""
    if present:
        _git(root, "restore", f"--source={tree}", "--worktree", "--", *(_literal(path) for path in present))
    top = root.resolve()
    for path in absent:
        target = top / path
        if not target.parent.resolve().is_relative_to(top) or ".." in Path(path).parts:
            raise GitTreeError(f"{path}: not inside {top}; left alone")
        if target.is_symlink() or target.is_file():
            target.unlink()
