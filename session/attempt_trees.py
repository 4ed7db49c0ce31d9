"""The git state around each attempt: ``<session>/.executor/git-trees.jsonl``.

The worker thread that runs an attempt captures the project's work tree before
it starts and after it ends (gates and worktree commit included) and appends
one JSON line per capture: ``{"task_id", "attempt", "phase", "root", "tree",
"head"}``.  Appending a short line with ``O_APPEND`` is one write, so workers
running at once never interleave.  A line that cannot be read is skipped.

Kept beside the store, not in it, because the worker thread is not the store's
writer; every other fact about the attempt is in the ``runs`` table, matched by
(task id, attempt).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Literal

import msgspec

from session.git_trees import GitTreeError, capture_tree, head_commit, is_object, repo_root
from session.own_paths import is_own, own_prefixes
from session.store import STATE_DIR
from session.worktrees import WorktreeError, worktrees_root

__all__ = ["AttemptTrees", "Capture", "after_attempt", "before_attempt", "own_filter", "read_trees", "record_path"]

RECORD_NAME = "git-trees.jsonl"


class Capture(msgspec.Struct, frozen=True, kw_only=True):
    task_id: str
    attempt: int
    phase: Literal["before", "after"]
    root: str  # the repository's top folder (a task in its own worktree has its own)
    tree: str
    head: str | None = None


class AttemptTrees(msgspec.Struct, frozen=True, kw_only=True):
    """What one attempt started from and left (``after`` None: it has not ended, or its end was lost)."""

    task_id: str
    attempt: int
    root: str
    before: str
    after: str | None = None
    started: int = 0  # the record's line numbers: when, relative to the other attempts, it began and ended
    ended: int | None = None


_decoder = msgspec.json.Decoder(Capture)
_encoder = msgspec.json.Encoder()


def record_path(session_dir: Path) -> Path:
    return Path(session_dir) / STATE_DIR / RECORD_NAME


def _capture(workdir: Path, session_dir: Path, task_id: str, attempt: int, phase: str) -> Capture | None:
    root = repo_root(workdir)
    if root is None:
        return None
    try:
        tree = capture_tree(root, own_prefixes(root, session_dir))
    except GitTreeError:
        return None  # never fail an attempt over its record
    return msgspec.convert(
        {
            "task_id": task_id,
            "attempt": attempt,
            "phase": phase,
            "root": str(root),
            "tree": tree,
            "head": head_commit(root),
        },
        Capture,
    )


def _append(session_dir: Path, capture: Capture) -> None:
    path = record_path(session_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, _encoder.encode(capture) + b"\n")
    finally:
        os.close(fd)


def before_attempt(workdir: Path, session_dir: Path, task_id: str, attempt: int) -> bool:
    """Record the work tree an attempt starts from; False when the workdir is not in a git work tree."""
    capture = _capture(workdir, session_dir, task_id, attempt, "before")
    if capture is None:
        return False
    try:
        _append(session_dir, capture)
    except OSError:
        return False
    return True


def after_attempt(workdir: Path, session_dir: Path, task_id: str, attempt: int) -> None:
    """Record the work tree an attempt left (call it only when :func:`before_attempt` recorded one)."""
    capture = _capture(workdir, session_dir, task_id, attempt, "after")
    if capture is not None:
        try:
            _append(session_dir, capture)
        except OSError:
            return


def own_filter(workdir: Path, session_dir: Path, files: Sequence[str]) -> tuple[str, ...]:
    """``files`` (repository-relative) without the executor's own."""
    if not files:
        return ()
    root = repo_root(workdir)
    prefixes = own_prefixes(root, session_dir) if root is not None else ()
    return tuple(path for path in files if not is_own(path, prefixes))


def _trusted_roots(session_dir: Path) -> Callable[[str], bool]:
    """Where an attempt may have worked: the project (the repository that holds the session) or a task
    worktree of this session.  The record file is in the session folder, which agents can reach: a
    line naming any other place is ignored, so a rollback never writes outside the project."""
    project = repo_root(session_dir)
    if project is None:
        return lambda root: False
    try:
        worktrees: Path | None = worktrees_root(project, session_dir).resolve()
    except (WorktreeError, OSError):
        worktrees = None
    top = project.resolve()

    def trusted(root: str) -> bool:
        path = Path(root).resolve()
        return path == top or (worktrees is not None and path.parent == worktrees)

    return trusted


def read_trees(session_dir: Path) -> list[AttemptTrees]:
    """Every recorded attempt in the project, in the order they started (recorded twice: its newest start)."""
    try:
        data = record_path(session_dir).read_bytes()
    except OSError:
        return []
    trusted = _trusted_roots(session_dir)
    attempts: dict[tuple[str, int], AttemptTrees] = {}
    for number, line in enumerate(data.splitlines(), start=1):
        try:
            capture = _decoder.decode(line)
        except msgspec.DecodeError:
            continue
        if not (is_object(capture.tree) and trusted(capture.root)):
            continue
        key = (capture.task_id, capture.attempt)
        if capture.phase == "before":
            attempts.pop(key, None)
            attempts[key] = AttemptTrees(
                task_id=capture.task_id, attempt=capture.attempt, root=capture.root, before=capture.tree, started=number
            )
        elif key in attempts and attempts[key].root == capture.root:
            attempts[key] = msgspec.structs.replace(attempts[key], after=capture.tree, ended=number)
    return list(attempts.values())
