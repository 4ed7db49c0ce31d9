"""The panic switch: while ``.executor/PANIC`` exists, every mutating tool refuses.

A file, not a message, so that ``executor panic on`` works from another
terminal without reaching the running process, and so that the switch
survives a restart of the run.  Reads keep working.
"""

from __future__ import annotations

import os
from pathlib import Path

from session.store import STATE_DIR, utc_now

__all__ = ["is_on", "panic_path", "reason", "switch"]

_FILE = "PANIC"


def panic_path(folder: Path) -> Path:
    return Path(folder) / STATE_DIR / _FILE


def is_on(folder: Path) -> bool:
    return panic_path(folder).exists()


def reason(folder: Path) -> str:
    try:
        return panic_path(folder).read_text(encoding="utf-8").strip()
    except OSError:
        return ""


def switch(folder: Path, on: bool, by: str) -> bool:
    """Turn the switch on or off; returns whether it changed."""
    path = panic_path(folder)
    if on:
        if path.exists():
            return False
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"panic switched on by {by} at {utc_now()}\n", encoding="utf-8")
        return True
    try:
        os.unlink(path)
    except FileNotFoundError:
        return False
    return True
