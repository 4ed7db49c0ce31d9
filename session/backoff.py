"""Exponential backoff: the one formula behind restarts, key cool-downs, network retries and notices."""

from __future__ import annotations

import random
from collections.abc import Callable

__all__ = ["exponential_delay"]


def exponential_delay(
    first_s: float, max_s: float, step: int, jitter: float = 0.0, rng: Callable[[], float] = random.random
) -> float:
    """``first_s`` doubled ``step`` times (step 0: ``first_s`` itself), at most ``max_s``, then
    stretched by up to ``jitter`` of itself (0.2: up to 20 % longer) so that retries spread out."""
    base = min(max_s, first_s * 2.0 ** min(max(step, 0), 32))
    return base * (1.0 + rng() * jitter)
