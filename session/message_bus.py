"""The session's message bus: ``.msg/messages.jsonl`` in the upstream ``team_msg`` format.

One JSON object a line, compact, UTF-8::

    {"id":"MSG-007","ts":"2026-02-27T10:00:00.000+00:00","from":"executor","to":"coordinator",
     "type":"progress","summary":"...","data":{...}}

``id`` is ``MSG-`` and a number, one more than the highest already in the file,
zero-padded to at least three digits (``MSG-999`` is followed by ``MSG-1000``).
``state_update`` messages also merge their ``data`` into ``.msg/meta.json``
``role_state[<from>]`` (with ``_updated_at``, as upstream does).

:meth:`MessageBus.open` scans the file once for the highest id.  Each
:meth:`MessageBus.post` is one ``write`` to a file opened with ``O_APPEND`` (so are
the messages drafted with :meth:`MessageBus.draft` and posted together with
:meth:`MessageBus.post_drafts`, as the Session actor does after each commit): no
buffering in this process, no fsync (the bus is a log for people and the
coordinator; the event store is what must survive a crash).  If another process
appended to the file meanwhile (an agent calling ``ccw team log``), only the new
tail is read to keep ids unique; that check is best effort, not a lock.

Readers running at the same time may see a last line that is still being
written: treat a final line without ``\\n`` as not there yet
(:func:`read_messages` skips it when it does not parse).

Secrets: every line and ``meta.json`` are redacted before they are written
(:mod:`session.redaction`; a line field by field, but its id, its time and the
executor's own words): summaries and data hold agent output, which may print a key.
"""

from __future__ import annotations

import json
import os
import re
import threading
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, NamedTuple

from protocol.types import TASK_STATUSES
from session.projection import write_atomic
from session.redaction import redact, redact_data
from session.safepath import write_all
from session.store import utc_now

__all__ = [
    "BUS_PROGRESS_INTERVAL_S",
    "DEFAULT_RECIPIENT",
    "DEFAULT_TYPE",
    "MESSAGES_FILE",
    "META_FILE",
    "MSG_DIR",
    "Draft",
    "Message",
    "MessageBus",
    "ProgressPacer",
    "blocker_message",
    "error_message",
    "format_message_id",
    "message_number",
    "progress_message",
    "read_messages",
    "task_complete_message",
    "task_unblocked_message",
    "warning_message",
]

MSG_DIR = ".msg"
MESSAGES_FILE = "messages.jsonl"
META_FILE = "meta.json"
DEFAULT_RECIPIENT = "coordinator"
DEFAULT_TYPE = "message"
STATE_UPDATE = "state_update"
SUMMARY_LIMIT = 200

_ID = re.compile(r"MSG-(\d+)")
# Characters that str.splitlines() treats as line ends but JSON may leave raw inside strings.
_LINE_SEPARATORS = str.maketrans({"\u2028": "\\u2028", "\u2029": "\\u2029", "\x85": "\\u0085"})


class Draft(NamedTuple):
    """A message redacted and encoded, waiting for its id (:meth:`MessageBus.draft`)."""

    rest: bytes  # the line after its opening brace: b'"ts":...}\n'
    sender: str
    type: str
    data: dict[str, Any] | None
    ts: str


class Message(NamedTuple):
    """A message body built by one of the ``*_message`` helpers: unpacks as ``(type, summary, data)``."""

    type: str
    summary: str
    data: dict[str, Any] | None = None


def format_message_id(number: int) -> str:
    return f"MSG-{number:03d}"


def message_number(message_id: Any) -> int | None:
    """``"MSG-042"`` -> 42; anything else -> None."""
    if not isinstance(message_id, str):
        return None
    match = _ID.fullmatch(message_id)
    return int(match.group(1)) if match else None


def _parse_line(line: bytes) -> dict[str, Any] | None:
    try:
        value = json.loads(line)
    except (ValueError, RecursionError):  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        return None
    return value if isinstance(value, dict) else None


def _scan(path: Path, offset: int = 0) -> tuple[int, int, bool]:
    """Read ``path`` from ``offset``: (highest MSG number seen, size read up to, ends with a newline)."""
    highest = 0
    last = b""
    try:
        with path.open("rb") as file:
            file.seek(offset)
            for line in file:  # binary files split on b"\n" only
                last = line
                record = _parse_line(line)
                number = message_number(record.get("id")) if record is not None else None
                if number is not None and number > highest:
                    highest = number
            size = file.tell()
    except FileNotFoundError:
        return 0, 0, True
    return highest, size, last == b"" or last.endswith(b"\n")


#: The executor's own words on a line: its keys, the keys of the bodies the ``*_message``
#: helpers build, message types, task statuses, phases, severities.  Nothing an agent wrote, and
#: none could hold a credential, so :func:`_redacted` passes them without a redact() call.
_OWN_WORDS = frozenset(
    {"id", "ts", "from", "to", "type", "summary", "data", DEFAULT_RECIPIENT, DEFAULT_TYPE, STATE_UPDATE}
    | {"progress", "blocker", "task_complete", "task_unblocked", "warning", "error", "dispatched"}
    | {"task_id", "role", "status", "progress_pct", "phase", "blocker_detail", "severity", "attempted"}
    | {"artifact", "files_modified", "tasks", "unblocked_by", "error_kind", "detail", "HIGH", "MEDIUM", "LOW"}
    | set(TASK_STATUSES)
)


def _redacted(value: Any) -> Any:
    """:func:`session.redaction.redact_data` of a line's fields, our own words passed as they are."""
    if isinstance(value, str):
        return value if value in _OWN_WORDS else redact(value)
    if isinstance(value, dict):
        return {_redacted(key): _redacted(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_redacted(item) for item in value)
    return value


def _encode_line(record: dict[str, Any]) -> bytes:
    """One line of the file; ``record``'s text is already redacted."""
    text = json.dumps(record, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    try:
        return text.translate(_LINE_SEPARATORS).encode("utf-8") + b"\n"
    except UnicodeEncodeError:  # a lone surrogate from undecodable agent output: escape everything
        return json.dumps(record, separators=(",", ":"), allow_nan=False).encode("ascii") + b"\n"


def read_messages(folder: Path) -> list[dict[str, Any]]:
    """Every message in ``<folder>/.msg/messages.jsonl`` that parses, in file order.

    Malformed lines and a half-written last line are skipped; a missing file is no messages.
    """
    path = Path(folder) / MSG_DIR / MESSAGES_FILE
    try:
        with path.open("rb") as file:
            return [record for line in file if (record := _parse_line(line)) is not None]
    except FileNotFoundError:
        return []


class MessageBus:
    """The appending writer of one session's message bus.  Thread-safe; close it when done."""

    def __init__(self, directory: Path, fd: int, last_number: int, size: int, clock: Callable[[], str]) -> None:
        self.directory = directory
        self.path = directory / MESSAGES_FILE
        self.meta_path = directory / META_FILE
        self._fd: int | None = fd
        self._last_number = last_number
        self._size = size  # where our next line starts, as far as we know
        self._clock = clock
        self._lock = threading.Lock()

    @classmethod
    def open(cls, folder: Path, *, clock: Callable[[], str] = utc_now) -> MessageBus:
        """Open ``<folder>/.msg/messages.jsonl`` for appending (creating ``.msg/`` and the file)."""
        directory = Path(folder) / MSG_DIR
        directory.mkdir(exist_ok=True)
        path = directory / MESSAGES_FILE
        highest, size, complete = _scan(path)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o666)
        bus = cls(directory, fd, highest, size, clock)
        if not complete:
            bus._append(b"\n")  # finish the last line someone left open, so ours starts a new one
        return bus

    @property
    def last_id(self) -> str | None:
        """The highest id in the file as far as this bus knows, or None for an empty bus."""
        return format_message_id(self._last_number) if self._last_number else None

    def post(
        self,
        sender: str,
        summary: str,
        type: str = DEFAULT_TYPE,  # the field is called type in the file format
        to: str = DEFAULT_RECIPIENT,
        data: dict[str, Any] | None = None,
    ) -> str:
        """Append one message and return its id.

        ``data`` must be JSON-serialisable (else ``TypeError``/``ValueError``, and no id
        is used up).  A ``state_update`` with data is merged into ``meta.json``.
        """
        (message_id,) = self.post_drafts([self.draft(sender, summary, type, to, data)])
        return message_id

    def draft(
        self,
        sender: str,
        summary: str,
        type: str = DEFAULT_TYPE,
        to: str = DEFAULT_RECIPIENT,
        data: dict[str, Any] | None = None,
    ) -> Draft:
        """One message as :meth:`post` would write it, its time taken now, redacted and encoded
        but not yet numbered nor written (:meth:`post_drafts`).  Raises as :meth:`post` does."""
        ts = self._clock()
        # Every field redacted but the time (and the id, added later), which are ours.
        record: dict[str, Any] = {
            "ts": ts,
            "from": _redacted(sender),
            "to": _redacted(to),
            "type": _redacted(type),
            "summary": _redacted(summary),
        }
        if data is not None:
            record["data"] = _redacted(data)
        return Draft(_encode_line(record).removeprefix(b"{"), sender, type, data, ts)

    def post_drafts(self, drafts: Sequence[Draft]) -> list[str]:
        """Number ``drafts`` in order and append them in one write; their ids."""
        with self._lock:
            if self._fd is None:
                raise ValueError("the message bus is closed")
            self._catch_up()
            number = self._last_number
            ids: list[str] = []
            lines: list[bytes] = []
            for draft in drafts:
                number += 1
                ids.append(format_message_id(number))
                # The id is a line's first field: the rest was encoded by draft().
                lines.append(b'{"id":"' + ids[-1].encode() + b'",' + draft.rest)
            if not lines:
                return ids
            self._append(b"".join(lines))
            self._last_number = number
            for draft in drafts:
                if draft.type == STATE_UPDATE and draft.data is not None:
                    self._merge_role_state(draft.sender, draft.data, draft.ts)
            return ids

    def post_message(self, sender: str, message: Message, to: str = DEFAULT_RECIPIENT) -> str:
        """Post a body from one of the ``*_message`` helpers."""
        return self.post(sender, message.summary, type=message.type, to=to, data=message.data)

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None

    def __enter__(self) -> MessageBus:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    # --- internals ----------------------------------------------------------------

    def _append(self, data: bytes) -> None:
        assert self._fd is not None  # noqa: S101 - callers check under the lock
        write_all(self._fd, data)
        self._size += len(data)

    def _catch_up(self) -> None:
        """Take in lines another process appended since our last write (one fstat when none did)."""
        assert self._fd is not None  # noqa: S101
        size = os.fstat(self._fd).st_size
        if size == self._size:
            return
        offset = self._size if size > self._size else 0  # shorter: someone rewrote it; read it all
        highest, self._size, complete = _scan(self.path, offset)
        if offset == 0:
            self._last_number = highest
        else:
            self._last_number = max(self._last_number, highest)
        if not complete:
            self._append(b"\n")

    def _merge_role_state(self, role: str, data: dict[str, Any], when: str) -> None:
        meta = self._read_meta()
        role_state = meta.get("role_state")
        if not isinstance(role_state, dict):
            role_state = meta["role_state"] = {}
        entry = role_state.get(role)
        merged = dict(entry) if isinstance(entry, dict) else {}
        merged.update(data)
        merged["_updated_at"] = when
        role_state[role] = merged
        text = json.dumps(redact_data(meta), indent=2, ensure_ascii=False)
        write_atomic(self.meta_path, (text + "\n").encode("utf-8"))

    def _read_meta(self) -> dict[str, Any]:
        """``meta.json`` as a dict; a missing file is empty, an unreadable one is set aside as ``meta.json.bad``."""
        try:
            raw = self.meta_path.read_bytes()
        except FileNotFoundError:
            return {"role_state": {}}
        record = _parse_line(raw.removeprefix(b"\xef\xbb\xbf"))
        if record is None:
            write_atomic(self.meta_path.with_name(META_FILE + ".bad"), raw)
            return {"role_state": {}}
        return record


# --- message bodies the executor posts (pure functions) -------------------------------


def _one_line(text: str, limit: int = SUMMARY_LIMIT) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


#: A task's progress goes to the bus at most this often (the store keeps every report).
BUS_PROGRESS_INTERVAL_S = 5.0


class ProgressPacer:
    """Which progress reports go to the bus: a task's first, then one every
    :data:`BUS_PROGRESS_INTERVAL_S` at most.  Agents report several times a second (the store
    and ``check`` keep up with that); the bus is read by agents and people, for whom 200
    agents at 4 reports a second would be 800 lines a second of noise — and each line costs
    the run's writer an encode, a redaction and an append."""

    def __init__(self, interval_s: float = BUS_PROGRESS_INTERVAL_S) -> None:
        self.interval_s = interval_s
        self._last: dict[str, float] = {}

    def due(self, task_id: str, now: float) -> bool:
        """Whether this report of ``task_id`` at ``now`` (monotonic seconds) goes to the bus."""
        last = self._last.get(task_id)
        if last is not None and now - last < self.interval_s:
            return False
        self._last[task_id] = now
        return True

    def forget(self, task_id: str) -> None:
        """The task's attempt ended: its next attempt's first report goes out at once."""
        self._last.pop(task_id, None)


def progress_message(task_id: str, role: str, status: str, progress_pct: int, phase: str) -> Message:
    data = {"task_id": task_id, "role": role, "status": status, "progress_pct": progress_pct, "phase": phase}
    return Message("progress", _one_line(f"[{role}] {task_id} {status} {progress_pct}%: {phase}"), data)


def blocker_message(
    task_id: str, blocker_detail: str, severity: str = "MEDIUM", attempted: Iterable[str] = ()
) -> Message:
    """``severity`` is upstream's ``HIGH`` / ``MEDIUM`` / ``LOW``."""
    data = {"task_id": task_id, "blocker_detail": blocker_detail, "severity": severity, "attempted": list(attempted)}
    return Message("blocker", _one_line(f"{task_id} blocked ({severity}): {blocker_detail}"), data)


def task_complete_message(
    task_id: str, role: str, artifact: str | None = None, files_modified: Iterable[str] = ()
) -> Message:
    data = {"task_id": task_id, "role": role, "artifact": artifact, "files_modified": list(files_modified)}
    produced = f" -> {artifact}" if artifact else ""
    return Message("task_complete", _one_line(f"[{role}] {task_id} complete{produced}"), data)


def task_unblocked_message(task_ids: Iterable[str], unblocked_by: str | None = None) -> Message:
    tasks = list(task_ids)
    data: dict[str, Any] = {"tasks": tasks}
    if unblocked_by is not None:
        data["unblocked_by"] = unblocked_by
    return Message("task_unblocked", _one_line(f"Tasks unblocked: {', '.join(tasks)}"), data)


def _details(task_id: str | None, **fields: Any) -> dict[str, Any] | None:
    data = {key: value for key, value in {"task_id": task_id, **fields}.items() if value is not None}
    return data or None


def warning_message(summary: str, task_id: str | None = None, detail: str | None = None) -> Message:
    return Message("warning", _one_line(summary), _details(task_id, detail=detail))


def error_message(
    summary: str, task_id: str | None = None, error_kind: str | None = None, detail: str | None = None
) -> Message:
    return Message("error", _one_line(summary), _details(task_id, error_kind=error_kind, detail=detail))
