"""YAML frontmatter: the block between two ``---`` lines at the top of a Markdown file.

Role-specs and skills both start with one.
"""

from __future__ import annotations

__all__ = ["split_frontmatter"]


def split_frontmatter(text: str) -> tuple[str, str] | None:
    """``(frontmatter, body)``, or None when the text does not open with a closed ``---`` block."""
    lines = text.split("\n")
    if not lines or lines[0].strip() != "---":
        return None
    for index in range(1, len(lines)):
        if lines[index].strip() == "---":
            return "\n".join(lines[1:index]), "\n".join(lines[index + 1 :])
    return None
