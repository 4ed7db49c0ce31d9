"""Messages and events: the only things actors exchange and the log records.

Depends on nothing else in the project.
"""

from protocol._base import Message
from protocol.events import AnyEvent, Event, decode_event, encode_event
from protocol.types import ERROR_KINDS, PRIORITIES, TASK_STATUSES, ErrorKind, Priority, TaskStatus

__all__ = [
    "ERROR_KINDS",
    "PRIORITIES",
    "TASK_STATUSES",
    "AnyEvent",
    "ErrorKind",
    "Event",
    "Message",
    "Priority",
    "TaskStatus",
    "decode_event",
    "encode_event",
]
