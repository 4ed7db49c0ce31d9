"""What an agent CLI is told it must not read: the executor's own files.

The session's ``.executor/`` (state, prompts, logs, inbox, bridge files) and the
user's config folder (owner tokens, the key store, config with secrets) are
private to the executor.  The agents work in the project next to them, so each
CLI that has a deny mechanism gets one, in its own terms:

- Claude Code: ``permissions.deny`` rules ``Read(//<path>/**)`` and
  ``Edit(//<path>/**)`` passed with ``--settings`` (a deny beats every allow and
  every permission mode; Read rules cover Read, Grep and Glob).  Its Bash tool is
  not covered by path rules; ``Bash(*.executor*)`` refuses a command naming the folder.
- Gemini CLI: a policy file (``--policy``, the user tier, above the built-in
  approval-mode rules) denying any tool call whose arguments name a private path.
- Codex: nothing here; its ``--sandbox`` modes restrict writes, not reads, and its
  newer permission profiles do not combine with ``--sandbox`` (see docs/security.md).

These are the CLIs' own checks, not an operating-system sandbox: they stop an agent
that follows its tools' rules, and a prompt-injected one that asks for the files by
name; a shell command that reaches the files another way is not stopped by them.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from protocol.messages import WorkOrder
from session.safepath import STATE_DIR_NAME
from session.skills import user_config_dir

__all__ = ["claude_deny_settings", "gemini_deny_policy", "private_paths"]

_REGEX_SPECIAL = re.compile(r"([\\.^$|?*+()\[\]{}])")


def private_paths(order: WorkOrder) -> tuple[Path, ...]:
    """The folders an agent must not read: ``<session>/.executor`` and the user's config folder."""
    paths = [Path(order.session_dir).resolve() / STATE_DIR_NAME]
    config = user_config_dir().expanduser()
    paths.append(config.resolve() if config.is_absolute() else (Path.cwd() / config).resolve())
    return tuple(dict.fromkeys(paths))


def claude_deny_settings(order: WorkOrder) -> str:
    """The JSON for ``claude --settings``: deny rules for every private folder."""
    rules: list[str] = []
    for path in private_paths(order):
        rules += [f"Read(/{path.as_posix()}/**)", f"Edit(/{path.as_posix()}/**)"]  # "//": an absolute path
    rules.append(f"Bash(*{STATE_DIR_NAME}*)")
    return json.dumps({"permissions": {"deny": rules}}, separators=(",", ":"))


def _regex(text: str) -> str:
    """``text`` as a literal in a JavaScript regular expression (unicode mode too)."""
    return _REGEX_SPECIAL.sub(r"\\\1", text)


def gemini_deny_policy(order: WorkOrder) -> str:
    """A Gemini CLI policy (TOML): any tool whose arguments name a private folder is denied."""
    names = [_regex(STATE_DIR_NAME)]  # relative or absolute, in any argument
    names += [_regex(path.as_posix()) for path in private_paths(order)[1:]]
    names = [name for name in names if "'" not in name and "\n" not in name]  # a TOML literal string
    pattern = "|".join(names)
    return (
        "# Written by team-executor: the agent must not read the executor's private files.\n"
        "[[rule]]\n"
        'toolName = "*"\n'
        f"argsPattern = '{pattern}'\n"
        'decision = "deny"\n'
        "priority = 999\n"
    )
