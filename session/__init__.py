"""The session folder on disk: formats, validation, the event store, projections.

Depends on ``protocol`` only.  The names below load with the first use of one of them: a
command that needs only a light module of the package (``session.lock``, ``session.store``)
does not pay for the loader's models.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from session.graph import TaskSpec
    from session.loader import TeamSession, inspect_session, load_session
    from session.problems import Problem, SessionInvalid
    from session.store import Store, StoreReader

__all__ = [
    "Problem",
    "SessionInvalid",
    "Store",
    "StoreReader",
    "TaskSpec",
    "TeamSession",
    "inspect_session",
    "load_session",
]

_MODULE_OF = {
    "Problem": "session.problems",
    "SessionInvalid": "session.problems",
    "Store": "session.store",
    "StoreReader": "session.store",
    "TaskSpec": "session.graph",
    "TeamSession": "session.loader",
    "inspect_session": "session.loader",
    "load_session": "session.loader",
}


def __getattr__(name: str) -> Any:
    if name not in _MODULE_OF:
        raise AttributeError(f"module 'session' has no attribute '{name}'")
    return getattr(importlib.import_module(_MODULE_OF[name]), name)
