"""The session folder on disk: formats, validation, the event store, projections.

Depends on ``protocol`` only.
"""

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
