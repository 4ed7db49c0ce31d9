"""The rules a worker process runs under: the environment allowlist and the workdir jail.

A worker sees only allowlisted variables plus what its backend adds (its one
key); its working directory must resolve inside the jail — the project the
agents work on (the git repository holding the session folder, else the
session folder).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

__all__ = ["DEFAULT_ENV_ALLOW", "JailError", "allowlisted_env", "find_jail", "resolve_workdir"]

#: Variable names a worker process may inherit. An entry ending in ``*`` is a prefix.
DEFAULT_ENV_ALLOW: tuple[str, ...] = (
    "PATH",
    "HOME",
    "USER",
    "LOGNAME",
    "LANG",
    "LC_ALL",
    "LC_CTYPE",
    "TERM",
    "TZ",
    "TMPDIR",
    "SHELL",
    "LC_*",
)


class JailError(Exception):
    """A working directory is missing or resolves outside the jail."""


# --------------------------------------------------------------------------- environment


@functools.lru_cache(maxsize=32)
def _allow_rules(allow: tuple[str, ...]) -> tuple[frozenset[str], tuple[str, ...]]:
    """The exact names and the prefixes (``LC_*``) of an allow list, split once: this runs for
    every attempt over every variable of the executor's environment."""
    exact = frozenset(name for name in allow if not name.endswith("*"))
    return exact, tuple(name[:-1] for name in allow if name.endswith("*"))


# The allowlisted part of os.environ, by allow list, with the environment it was taken from.
_FROM_ENVIRON: dict[tuple[str, ...], tuple[dict[Any, Any], dict[str, str]]] = {}


def _allowed_from_environ(rules: tuple[str, ...]) -> dict[str, str]:
    """What ``rules`` let through from ``os.environ``, computed again only when the environment
    changed: this runs for every attempt, and decoding each variable of the executor's
    environment took longer than all else in building a worker's environment.  CPython keeps
    the environment encoded in ``os.environ._data``: comparing that with a copy is one C loop."""
    raw = getattr(os.environ, "_data", None)
    cached = _FROM_ENVIRON.get(rules)
    if cached is not None and isinstance(raw, dict) and cached[0] == raw:
        return cached[1]
    # The copy is taken first: a change made while this runs makes the next call look again.
    taken = dict(raw) if isinstance(raw, dict) else None
    exact, prefixes = _allow_rules(rules)
    allowed = {k: v for k, v in os.environ.items() if k in exact or k.startswith(prefixes)}
    if taken is not None:
        _FROM_ENVIRON[rules] = (taken, allowed)
    return allowed


def allowlisted_env(
    extra: Mapping[str, str] | None = None,
    allow: Iterable[str] = DEFAULT_ENV_ALLOW,
    source: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """Build a clean environment for a worker process.

    Copies from ``source`` (default ``os.environ``) only the variables named in ``allow``;
    an entry ending in ``*`` allows every name with that prefix (the default allows
    ``LC_*``). Then ``extra`` is laid on top (it wins, and is not filtered: that is where a
    worker's one API key goes). Returns a new dict; the inputs are not modified.
    """
    rules = tuple(allow)
    if source is None:
        env = dict(_allowed_from_environ(rules))
    else:
        exact, prefixes = _allow_rules(rules)
        env = {k: v for k, v in source.items() if k in exact or k.startswith(prefixes)}
    if extra:
        env.update(extra)
    return env


# --------------------------------------------------------------------------- jail


def resolve_workdir(jail: Path, requested: str | Path | None) -> Path:
    """Resolve a worker's working directory and check that it lies inside the jail.

    ``None`` means the jail itself; a relative path is taken relative to the jail.
    Symlinks are resolved (``Path.resolve(strict=True)``) before the check, so a link
    pointing outside is refused. Returns the resolved directory.

    Raises :class:`JailError` (with a message naming the path, the jail and the fix) when
    the jail or the directory does not exist, is not a directory, or lies outside the jail.
    """
    try:
        jail_real = Path(jail).resolve(strict=True)
    except (OSError, RuntimeError) as exc:
        raise JailError(f"the jail {jail} does not exist or cannot be resolved ({exc})") from exc
    if requested is None:
        target = jail_real
    else:
        req = Path(requested).expanduser()
        target = req if req.is_absolute() else jail_real / req
    try:
        resolved = target.resolve(strict=True)
    except (OSError, RuntimeError) as exc:
        raise JailError(
            f"working directory {requested} ({target}) does not exist; create it or use --workdir inside {jail_real}"
        ) from exc
    if resolved != jail_real and not resolved.is_relative_to(jail_real):
        raise JailError(
            f"working directory {requested} resolves to {resolved}, outside the jail {jail_real}; "
            f"use --workdir inside {jail_real}"
        )
    if not resolved.is_dir():
        raise JailError(
            f"working directory {requested} ({resolved}) is not a directory; use --workdir inside {jail_real}"
        )
    return resolved


def find_jail(session_folder: Path) -> Path:
    """The jail for a session: the git repository that holds ``session_folder``.

    Walks up from the (resolved) session folder looking for a ``.git`` directory or file
    (a worktree or submodule has a file); returns that repository's root, else the session
    folder itself. The result is resolved.
    """
    folder = Path(session_folder).expanduser().resolve()
    for candidate in (folder, *folder.parents):
        if (candidate / ".git").exists():
            return candidate
    return folder
