"""The base classes every protocol Struct derives from.

Structs are frozen (actors share them across threads without copying) and
tagged (the ``type`` field names the class), so one decoder reads a union of
them and an unknown tag is a clear validation error rather than a silent dict.
"""

from __future__ import annotations

import re

import msgspec

__all__ = ["Message", "snake_case"]

_CAMEL_BOUNDARY = re.compile(r"(?<!^)(?=[A-Z])")


def snake_case(class_name: str) -> str:
    """``TaskCompleted`` -> ``task_completed``: the wire tag of a Struct class."""
    return _CAMEL_BOUNDARY.sub("_", class_name).lower()


class Message(msgspec.Struct, frozen=True, kw_only=True, tag_field="type", tag=snake_case):
    """Base of every Struct that crosses an actor boundary or lands in the log."""
