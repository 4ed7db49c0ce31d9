"""Reading an HTTP ``Retry-After`` value: how long a server asks us to wait.

One reader for every client that honours it: the openai and opencode backends and the
notification channels (Telegram, Discord, webhooks).
"""

from __future__ import annotations

import email.utils
import math
import time

__all__ = ["parse_retry_after"]


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds from a ``Retry-After`` value: a number of seconds or an HTTP date (never negative);
    ``None`` when absent, unreadable or not finite.  ``now`` (epoch seconds) is for tests."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    if not math.isfinite(seconds):
        return None
    return max(0.0, seconds)
