"""The time an input happened: the core has no clock of its own."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

__all__ = ["Instant", "iso"]


@dataclass(frozen=True)
class Instant:
    """``mono`` (a monotonic reading: durations, retry times, stalls) and ``wall`` (epoch
    seconds: question deadlines, claims' last update, timestamps written to rows)."""

    mono: float
    wall: float


def iso(wall: float) -> str:
    """``wall`` as the store writes times (see ``session.store.utc_now``)."""
    return datetime.fromtimestamp(wall, UTC).isoformat(timespec="milliseconds")
