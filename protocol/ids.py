"""The one grammar of a task id (and of a role's id prefix).

A task id becomes a file name (``prompts/<id>-a1.md``, ``feedback/<id>.md``,
``tasks/ready/<id>.md``), a git branch, and a word in a user's command argv.  It
is written by an LLM (task-analysis.json) or arrives over MCP/HTTP, so it is
checked here, once, by everything that accepts one: letters, digits, ``-``,
``_`` and ``.``; the first character a letter, digit or ``_`` (never ``.``,
which would hide the file or spell ``..``, and never ``-``, which a command would
read as an option); at most :data:`MAX_TASK_ID` characters.
"""

from __future__ import annotations

import re

__all__ = ["MAX_TASK_ID", "TASK_ID_PATTERN", "TASK_ID_RULE", "is_task_id", "task_id_problem"]

MAX_TASK_ID = 64
#: For JSON schemas (pydantic ``pattern=``, msgspec ``Meta(pattern=...)``).
TASK_ID_PATTERN = rf"^[A-Za-z0-9_][A-Za-z0-9_.-]{{0,{MAX_TASK_ID - 1}}}$"
#: What a person is told to do: the grammar in words.
TASK_ID_RULE = (
    f"use only letters, digits, '-', '_' and '.', starting with a letter, digit or '_', "
    f"at most {MAX_TASK_ID} characters (e.g. IMPL-001)"
)

_TASK_ID = re.compile(TASK_ID_PATTERN)


def is_task_id(value: object) -> bool:
    """Whether ``value`` is a string in the task-id grammar."""
    # fullmatch, and "$" in the pattern: a trailing newline must not slip through.
    return isinstance(value, str) and _TASK_ID.fullmatch(value) is not None


def task_id_problem(value: object) -> str | None:
    """Why ``value`` is not a usable task id (a short phrase), or None when it is one."""
    if not isinstance(value, str):
        return f"a task id must be a string, got {type(value).__name__}"
    if not value:
        return "the task id is empty"
    if len(value) > MAX_TASK_ID:
        return f"task id is {len(value)} characters long, over the limit of {MAX_TASK_ID}"
    if is_task_id(value):
        return None
    bad = sorted({char for char in value if not (char.isascii() and (char.isalnum() or char in "-_."))})
    if bad:
        shown = ", ".join(repr(char) for char in bad[:5])
        return f"task id {value!r} holds characters an id cannot have ({shown})"
    return f"task id {value!r} starts with {value[0]!r}"
