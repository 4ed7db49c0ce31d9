"""``executor hook install``: git hooks that keep a session and a repository in step.

- ``pre-commit`` runs the quality gates (``verify:``) of the roles whose tasks are
  in progress; a failing gate blocks the commit and appends its output to
  ``feedback/<ID>.md`` of each of those tasks.
- ``post-commit`` moves a claimed task to review when the commit message names
  its id (``DSN-002: the export API``).

A hook already there is kept: it is renamed ``<hook>.before-team-executor`` and
runs first (its failure still blocks the commit); ``executor hook uninstall``
puts it back.  The hooks call this executor by absolute path, so they work from
any shell, and pass the session folder as an absolute path too.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "HOOKS",
    "MARKER",
    "HookError",
    "executor_program",
    "hooks_dir",
    "install_hooks",
    "named_task_ids",
    "uninstall_hooks",
]

HOOKS = ("pre-commit", "post-commit")
MARKER = "# installed by `executor hook install` (team-executor)"
SAVED_SUFFIX = ".before-team-executor"
_TASK_ID = re.compile(r"\b[A-Z][A-Z0-9_]*-\d+\b")


class HookError(Exception):
    """The hooks cannot be installed as asked; the message says why and what to do."""


@dataclass(frozen=True)
class HookChange:
    hook: str
    path: Path
    kept_previous: Path | None  # where an existing hook was moved, to run first


def _git(repo: Path, *args: str) -> str:
    try:
        done = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, timeout=30, check=False)
    except FileNotFoundError:
        raise HookError("git is not installed (or not on PATH)") from None
    if done.returncode != 0:
        raise HookError(f"{repo} is not inside a git repository ({done.stderr.strip() or 'git failed'})")
    return done.stdout.strip()


def hooks_dir(repo: Path) -> Path:
    """The repository's hooks folder (honours core.hooksPath and worktrees)."""
    path = Path(_git(repo, "rev-parse", "--git-path", "hooks"))
    return path if path.is_absolute() else (Path(repo) / path).resolve()  # git answers relative to -C


def executor_program() -> str:
    """The absolute path of this executor, for hooks that may run from another environment."""
    found = shutil.which("executor")
    candidate = Path(sys.argv[0]) if sys.argv and sys.argv[0] else None
    if candidate is not None and candidate.name == "executor" and candidate.exists():
        return str(candidate.resolve())
    if found:
        return str(Path(found).resolve())
    # -P: the hook runs in the project, where agents write; a `cli/` package there must not be what runs.
    return f"{sys.executable} -P -m cli.main"  # pragma: no cover - an install without the console script


def _script(hook: str, program: str, session: Path) -> str:
    command = program if " " in program else shlex.quote(program)
    return (
        "#!/bin/sh\n"
        f"{MARKER}\n"
        "# The hook that was here before runs first; its failure still stops git.\n"
        f'previous="$(dirname "$0")/{hook}{SAVED_SUFFIX}"\n'
        'if [ -x "$previous" ]; then "$previous" "$@" || exit $?; fi\n'
        f'exec {command} hook run {hook} --session {shlex.quote(str(session))} "$@"\n'
    )


def install_hooks(repo: Path, session: Path, program: str | None = None) -> list[HookChange]:
    """Write both hooks (again, if ours are there); keep any other hook to run first."""
    directory = hooks_dir(repo)
    directory.mkdir(parents=True, exist_ok=True)
    changes = []
    for hook in HOOKS:
        path = directory / hook
        saved = directory / f"{hook}{SAVED_SUFFIX}"
        kept = None
        if path.exists() and MARKER not in path.read_text(encoding="utf-8", errors="replace"):
            if saved.exists():
                raise HookError(
                    f"{path} is not ours and {saved} already exists; move one of them away, then install again"
                )
            os.replace(path, saved)
            kept = saved
        elif saved.exists():
            kept = saved
        temporary = path.with_name(f".{hook}.tmp")
        temporary.write_text(_script(hook, program or executor_program(), Path(session).resolve()), encoding="utf-8")
        temporary.chmod(0o755)
        os.replace(temporary, path)
        changes.append(HookChange(hook=hook, path=path, kept_previous=kept))
    return changes


def uninstall_hooks(repo: Path) -> list[str]:
    """Remove our hooks and put back the ones they replaced; returns what was done."""
    directory = hooks_dir(repo)
    done = []
    for hook in HOOKS:
        path = directory / hook
        saved = directory / f"{hook}{SAVED_SUFFIX}"
        if path.exists() and MARKER in path.read_text(encoding="utf-8", errors="replace"):
            path.unlink()
            done.append(f"removed {path}")
        if saved.exists() and not path.exists():
            os.replace(saved, path)
            done.append(f"restored {path}")
    return done


def named_task_ids(message: str, known: set[str]) -> list[str]:
    """The ids of known tasks a commit message names, in order, once each."""
    return list(dict.fromkeys(found for found in _TASK_ID.findall(message) if found in known))
