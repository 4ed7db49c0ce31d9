"""What travels between the head and a node that shares no filesystem with it.

With ``[cluster].shared_filesystem = false`` an attempt's project comes to its node as a
git bundle (the task's branch ``team-executor/<ID>``) and its session context as a few
files; what the agent did goes back as a bundle of that branch plus the attempt's
artifacts and log.  Everything coming back was written by an agent on another machine:
the head checks every name and size before it writes a byte (see :mod:`cluster.head_git`).

The git here runs by argv with the options that would let a repository's config run a
program turned off, and without the user's or system git config: the repositories it
reads were written by agents.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath

import msgspec

from session.git_trees import GitMissing, GitTreeError, run_git
from session.safe_git import SAFE_GIT_OPTIONS, safe_git_env
from session.safepath import path_text_problem

__all__ = [
    "MAX_ARTIFACTS",
    "MAX_ARTIFACT_BYTES",
    "MAX_BUNDLE_BYTES",
    "MAX_CONTEXT_BYTES",
    "MAX_LOG_BYTES",
    "MAX_REPORT_BYTES",
    "Returned",
    "ShipError",
    "Shipment",
    "git",
    "plain_relative",
    "ship_ref",
]

MAX_BUNDLE_BYTES = 512 << 20
MAX_ARTIFACT_BYTES = 8 << 20
MAX_ARTIFACTS = 200
MAX_CONTEXT_BYTES = 32 << 20  # session files sent to the node, all together
MAX_CONTEXT_FILE_BYTES = 1 << 20
MAX_LOG_BYTES = 4 << 20  # the log's tail that comes back
MAX_REPORT_BYTES = 1 << 20  # as much as a backend reads of a report
_TIMEOUT_S = 300.0
_SAFE = (*SAFE_GIT_OPTIONS, "-c", "core.quotePath=false", "-c", "protocol.file.allow=always")
AUTHOR_ENV = {
    "GIT_AUTHOR_NAME": "team-executor",
    "GIT_AUTHOR_EMAIL": "team-executor@localhost",
    "GIT_COMMITTER_NAME": "team-executor",
    "GIT_COMMITTER_EMAIL": "team-executor@localhost",
}


class ShipError(Exception):
    """The work could not be shipped to the node or taken back; the message says what and where."""


class Shipment(msgspec.Struct, frozen=True):
    """What the node needs besides the bundle (which travels through Ray's object store)."""

    branch: str  # team-executor/<ID>: fixed by the head
    base: str  # the commit the branch starts from on the node
    workdir: str  # the agent's working folder, relative to the repository's top ("" for the top)
    files: tuple[tuple[str, bytes], ...] = ()  # session-relative POSIX name -> content


class Returned(msgspec.Struct, frozen=True):
    """What the node sends back once the agent has finished."""

    tip: str | None = None  # the branch's newest commit on the node; None: nothing changed
    agent_head: str | None = None  # the newest commit the agent made itself, before its leftovers were committed
    bundle: bytes = b""  # base..tip of refs/heads/<branch>
    artifacts: tuple[tuple[str, bytes], ...] = ()  # session-relative names under artifacts/
    log: bytes = b""  # the tail of the attempt's log
    report: bytes = b""  # the agent's JSON report file, as it wrote it
    problem: str | None = None  # git failed on the node: the work could not be packed


def ship_ref(task_id: str) -> str:
    """The ref the head's bundle carries the base commit under (not a branch: no one sees it)."""
    return f"refs/team-executor/ship/{task_id}"


def git(root: Path, *args: str, stdin: bytes | None = None, env: dict[str, str] | None = None) -> bytes:
    """Run git in ``root``; its stdout, or :class:`ShipError` with git's last line."""
    base_env = safe_git_env({"GIT_CONFIG_GLOBAL": "/dev/null", "GIT_TERMINAL_PROMPT": "0", "HOME": str(root)})
    try:
        return run_git(root, *args, env=base_env | (env or {}), stdin=stdin, options=_SAFE, timeout_s=_TIMEOUT_S)
    except GitMissing:
        raise ShipError("git is not installed (shared_filesystem = false ships work by git)") from None
    except GitTreeError as error:
        raise ShipError(str(error)) from None


def plain_relative(name: str, under: str | None = None) -> PurePosixPath | None:
    """``name`` as a plain relative POSIX path (optionally under the folder ``under``), or None.

    No absolute path, no ``..`` or ``.`` part, no empty part, no backslash, no control character."""
    if not name or path_text_problem(name) is not None or "\\" in name or name.startswith("/"):
        return None
    path = PurePosixPath(name)
    if any(part in ("", ".", "..") for part in name.split("/")):
        return None
    if under is not None and (len(path.parts) < 2 or path.parts[0] != under):
        return None
    return path
