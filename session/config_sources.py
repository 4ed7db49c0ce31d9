"""Where configuration comes from: file names, safe reading of one TOML or JSON file, merging layers.

Each merged value remembers the file that set it, so a problem can name that file.
"""

from __future__ import annotations

import copy
import json
import re
import tomllib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal

from session.problems import Problem

__all__ = [
    "BUILTIN",
    "SEED_FILES",
    "SESSION_CONFIG_FILE",
    "USER_CONFIG_FILE",
    "KeyPath",
    "deep_merge",
    "dotted",
    "file_problem",
    "origin_of",
    "read_json",
    "read_toml",
]


USER_CONFIG_FILE = "config.toml"
SESSION_CONFIG_FILE = "executor.toml"
SEED_FILES = ("hydra_keys.json", "notification.json", "fleet_registry.json")
#: How the built-in defaults are named in problems and in ``Config.sources``.
BUILTIN = "<built-in defaults>"
_MAX_FILE_BYTES = 1 << 20
_MAX_DEPTH = 32

KeyPath = tuple[str | int, ...]

# --------------------------------------------------------------------------- reading files


def file_problem(
    file: str, message: str, fix: str, field: str | None = None, severity: Literal["error", "warning"] = "error"
) -> Problem:
    return Problem(file=file, field=field, message=message, fix=fix, severity=severity)


def _read_text(path: Path, display: str) -> str | Problem:
    try:
        if not path.is_file():
            return file_problem(display, "not a file", "point at a file, not a folder")
        size = path.stat().st_size
        if size > _MAX_FILE_BYTES:
            return file_problem(
                display, f"file is {size // 1024} KiB, over the 1024 KiB limit", "a config file is short"
            )
        return path.read_bytes().decode("utf-8").lstrip("\ufeff")
    except UnicodeDecodeError as error:
        return file_problem(display, f"not UTF-8 text ({error.reason} at byte {error.start})", "save the file as UTF-8")
    except OSError as error:
        return file_problem(display, f"cannot read: {error.strerror}", "check the file's permissions")


def _too_deep(value: Any) -> bool:
    """Whether ``value`` nests tables/arrays more than :data:`_MAX_DEPTH` deep (checked without recursion)."""
    stack = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if depth > _MAX_DEPTH:
            return True
        if isinstance(item, dict):
            stack.extend((child, depth + 1) for child in item.values())
        elif isinstance(item, list):
            stack.extend((child, depth + 1) for child in item)
    return False


def _deep_problem(display: str) -> Problem:
    return file_problem(
        display,
        f"nests tables or arrays more than {_MAX_DEPTH} levels deep",
        "flatten it: a config is a few levels deep",
    )


_TOML_WHERE = re.compile(r"\s*\(at (line \d+, column \d+|end of document)\)\s*$")


def read_toml(path: Path, display: str) -> dict[str, Any] | Problem:
    text = _read_text(path, display)
    if isinstance(text, Problem):
        return text
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        reason = str(error)
        match = _TOML_WHERE.search(reason)
        where = match.group(1) if match else "an unknown place"
        what = reason[: match.start()] if match else reason
        return file_problem(
            display,
            f"not valid TOML: {what} at {where}",
            f"correct the TOML at {where} (strings need quotes, tables are written [name], one key = value per line)",
        )
    except (ValueError, RecursionError) as error:  # huge integers, absurd nesting
        return file_problem(display, f"not valid TOML: {type(error).__name__}", "simplify the file; see TOML's syntax")
    return _deep_problem(display) if _too_deep(data) else data


def read_json(path: Path, display: str) -> dict[str, Any] | Problem:
    text = _read_text(path, display)
    if isinstance(text, Problem):
        return text
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        return file_problem(
            display,
            f"not valid JSON: {error.msg} at line {error.lineno}, column {error.colno}",
            f"correct the JSON at line {error.lineno}, column {error.colno}",
        )
    except (ValueError, RecursionError) as error:
        return file_problem(display, f"not valid JSON: {type(error).__name__}", "simplify the file")
    if not isinstance(data, dict):
        return file_problem(display, "must be a JSON object", "wrap the content in { ... }")
    return _deep_problem(display) if _too_deep(data) else data


# --------------------------------------------------------------------------- merging, with where each value came from


def deep_merge(base: dict[str, Any], overlay: Mapping[str, Any], origin: str, where: dict[KeyPath, str]) -> None:
    """Merge ``overlay`` into ``base`` in place; ``where`` records which file set each key path."""

    def merge(into: dict[str, Any], layer: Mapping[str, Any], path: KeyPath) -> None:
        for key, value in layer.items():
            here = (*path, key)
            if isinstance(value, dict) and isinstance(into.get(key), dict):
                merge(into[key], value, here)
                continue
            for stale in [known for known in where if known[: len(here)] == here]:
                del where[stale]
            into[key] = copy.deepcopy(value)
            where[here] = origin

    merge(base, overlay, ())


def origin_of(where: Mapping[KeyPath, str], loc: Iterable[str | int]) -> str:
    """The file that set the value at ``loc`` (or its nearest enclosing key)."""
    path = tuple(loc)
    while path:
        if path in where:
            return where[path]
        path = path[:-1]
    return where.get((), BUILTIN)


_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def dotted(loc: Iterable[str | int]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            name = part if _BARE_KEY.fullmatch(part) else json.dumps(part)
            out += f".{name}" if out else name
    return out
