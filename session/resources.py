"""Where the built-in role library and example sessions are.

In a source checkout they sit at the top of the repository; in an installed
wheel they are packaged under ``session/_builtin`` (see pyproject.toml).
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["builtin_path"]


def builtin_path(name: str) -> Path:
    """``builtin_path("role-specs")`` -> the folder of built-in role-specs."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "_builtin" / name, here.parent / name):
        if candidate.exists():
            return candidate
    raise FileNotFoundError(f"built-in resource '{name}' is missing from this installation; reinstall team-executor")
