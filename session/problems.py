"""What is wrong with a session folder, said so a person can fix it.

Validation never stops at the first problem: it collects every one, each
naming the file (relative to the session folder), the field (a JSON path such
as ``$.roles[1].role_spec`` or a frontmatter key) and the fix.
"""

from __future__ import annotations

from typing import Literal

import msgspec

__all__ = ["Problem", "SessionInvalid", "format_problems"]


class Problem(msgspec.Struct, frozen=True, kw_only=True):
    file: str
    message: str
    fix: str
    field: str | None = None
    severity: Literal["error", "warning"] = "error"

    def __str__(self) -> str:
        where = f"{self.file}: {self.field}" if self.field else self.file
        return f"{where}: {self.message}. Fix: {self.fix}"


class SessionInvalid(Exception):
    """The session folder cannot be loaded; ``problems`` says every reason."""

    def __init__(self, folder: str, problems: list[Problem]) -> None:
        self.folder = folder
        self.problems = problems
        errors = [p for p in problems if p.severity == "error"]
        super().__init__(f"{folder}: {len(errors)} problem(s); first: {errors[0] if errors else '-'}")


def format_problems(problems: list[Problem]) -> str:
    return "\n".join(f"{p.severity}: {p}" for p in problems)
