"""How the executor runs git in a repository agents write to.

An agent can write ``.git/config`` and ``.git/hooks/`` as easily as any file of the project,
and git runs programs a repository names: hooks (``post-checkout`` on ``worktree add``,
``reference-transaction`` on every ref change), ``core.fsmonitor`` on every index refresh
(``status``, ``add``, ``diff``), an external diff.  Run with the executor's environment, such a
program would hold every provider key the executor was given.  So every git the executor
starts gets these options first and a minimal environment: hooks and fsmonitor never run,
and what still can (a clean filter named in ``.gitattributes``) runs with no secret to read.
"""

from __future__ import annotations

import os

__all__ = ["SAFE_GIT_OPTIONS", "safe_git_env"]

#: ``-c`` settings that keep a repository's own config from starting a program.
SAFE_GIT_OPTIONS: tuple[str, ...] = (
    "-c",
    "core.hooksPath=/dev/null",
    "-c",
    "core.fsmonitor=false",
    "-c",
    "diff.external=",
)


def safe_git_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """PATH and a fixed locale: no key, no token, no system config (``GIT_CONFIG_NOSYSTEM``)."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"),
        "LC_ALL": "C",
        "GIT_OPTIONAL_LOCKS": "0",
        "GIT_CONFIG_NOSYSTEM": "1",
    }
    return env | (extra or {})
