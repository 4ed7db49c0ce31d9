"""The one way tests wait: for a condition, with a deadline, never for a fixed time."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

__all__ = ["wait_for"]

_T = TypeVar("_T")


def wait_for(condition: Callable[[], _T], timeout: float = 60.0, what: str = "the condition", poll: float = 0.02) -> _T:
    """Return ``condition()``'s first truthy value; fail naming ``what`` when ``timeout`` passes first."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(poll)
