"""The session's durable state: ``<session>/.executor/state.db``.

Tables: ``events`` (append-only log of protocol events), ``tasks`` (the
TaskList), ``runs`` (one row per worker attempt) and ``meta`` (run
bookkeeping).  SQLite in WAL mode, so ``executor check`` in another process
reads while a run writes.

One writer: a :class:`Store` belongs to the thread that opened it (in a run,
the Session actor).  Readers anywhere use :meth:`StoreReader.open`, which never
writes and never creates files.

Durability: ``synchronous=NORMAL``.  A committed transaction survives the
executor being killed (kill -9); after a power cut the last few commits may be
lost but the database stays consistent, and the Reconciler then re-runs tasks
whose completion was lost.  ``synchronous=FULL`` costs ~1 ms per commit here
(see benchmarks/README.md), which would make a run of short tasks fsync-bound.

The change records a writer passes are :mod:`session.store_changes`; the schema's
migrations, :mod:`session.store_schema`.
"""

from __future__ import annotations

import errno
import functools
import re
import sqlite3
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, get_args

import msgspec

from protocol.events import Event, TaskCompleted, decode_event, encode_event
from protocol.messages import Disposition
from protocol.records import EscalationRow, QueuedWriteRow, RunRow, TaskRow
from protocol.types import ERROR_KINDS, PRIORITIES, TASK_STATUSES
from session.redaction import Verbatim, redacting_connection
from session.store_changes import RunChange, RunStart, TaskChange, given
from session.store_schema import MIGRATIONS, SCHEMA_VERSION

if TYPE_CHECKING:
    import sqlite_utils

__all__ = [
    "STATE_DIR",
    "RunRow",
    "Store",
    "StoreError",
    "StoreReader",
    "TaskRow",
    "utc_now",
]

STATE_DIR = ".executor"
DB_NAME = "state.db"


class StoreError(Exception):
    """The state database cannot be used (newer schema, corrupt file, ...)."""


_STORAGE_ERRNOS = {
    errno.ENOSPC: "the disk is full",
    errno.EDQUOT: "the disk quota is used up",
    errno.EROFS: "the file system is read-only",
    errno.EIO: "the disk failed (I/O error)",
}


def storage_problem(error: BaseException) -> str | None:
    """What a failed write says about the storage under it (full, read-only, failing), or
    None when the failure is something else.  Looks through chained exceptions too."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in _STORAGE_ERRNOS:
            return _STORAGE_ERRNOS[current.errno]
        if isinstance(current, sqlite3.OperationalError):
            text = str(current).lower()
            if "full" in text:
                return "the disk is full"
            if "readonly" in text or "read-only" in text:
                return "the file system is read-only"
            if "disk i/o" in text:
                return "the disk failed (I/O error)"
        current = current.__cause__ or current.__context__
    return None


_second_text: tuple[int, str] = (-1, "")  # the last second utc_now() formatted, and its text


def utc_now() -> str:
    """Now in UTC, to the millisecond: ``2026-03-01T10:00:00.123+00:00`` (``datetime.isoformat``'s form).

    Taken several times for every task a run records: the text of the current second is
    formatted once and kept, which makes a call about five times cheaper than ``datetime``."""
    global _second_text  # noqa: PLW0603 - a one-entry cache; a race only formats a second twice
    millis = time.time_ns() // 1_000_000
    second, milli = divmod(millis, 1000)
    cached_second, text = _second_text
    if second != cached_second:
        text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        _second_text = (second, text)
    return f"{text}.{milli:03d}+00:00"


_TASK_COLUMNS = tuple(TaskRow.__struct_fields__)
_RUN_COLUMNS = tuple(RunRow.__struct_fields__)


def _tasks_as_json(columns: tuple[str, ...]) -> str:
    """One query that returns the task list as a JSON array (decoded in one msgspec call)."""
    json_columns = {"blocked_by": "[]", "details": "{}"}
    fields = ", ".join(
        f"'{name}', json(ifnull({name}, '{json_columns[name]}'))" if name in json_columns else f"'{name}', {name}"
        for name in columns
    )
    # Built from our own column names only; nothing from outside reaches this string.
    return f"SELECT json_group_array(json_object({fields})) FROM tasks"  # noqa: S608


_TASKS_AS_JSON = _tasks_as_json(_TASK_COLUMNS)
_tasks_decoder = msgspec.json.Decoder(list[TaskRow])


def _without_nulls(row: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in row.items() if value is not None}


def _run_from_row(row: dict[str, Any]) -> RunRow:
    row = _without_nulls(row)
    if "files_changed" in row:
        row["files_changed"] = msgspec.json.decode(row["files_changed"])
    return msgspec.convert(row, RunRow)


def _escalation_from_row(row: dict[str, Any]) -> EscalationRow:
    row = _without_nulls(row)
    row["options"] = msgspec.json.decode(row.get("options") or "[]")
    row["holds_task"] = bool(row.get("holds_task"))
    return msgspec.convert(row, EscalationRow)


def _task_to_row(task: TaskRow) -> dict[str, Any]:
    row = msgspec.structs.asdict(task)
    row["blocked_by"] = msgspec.json.encode(task.blocked_by).decode()
    row["details"] = msgspec.json.encode(task.details).decode()
    return row


def _check_columns(values: dict[str, Any], allowed: frozenset[str], what: str) -> None:
    if not allowed.issuperset(values):
        raise ValueError(f"unknown {what} columns: {sorted(set(values) - allowed)}")


# What the connection need not redact (session.redaction.Verbatim): the words of our own
# vocabulary (statuses, outcomes, error kinds, event types) and the times utc_now() takes.
# Neither is anything an agent wrote, and neither can hold a credential (no registered
# secret, key shape or "token=..." value fits in them), so redacting them changes nothing;
# they are about half of the text a run binds.  Recognised by content, not by who passed them.
_OWN_WORDS: dict[str, Verbatim] = {
    word: Verbatim(word) for word in (*TASK_STATUSES, *PRIORITIES, *ERROR_KINDS, *get_args(Disposition))
}
_UTC_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00")
_UTC_TIME_LEN = len("2026-03-01T10:00:00.123+00:00")


def _bound(value: Any) -> Any:
    """``value`` as a statement binds it: a word of ours or a UTC time marked :class:`Verbatim`."""
    if type(value) is str:
        word = _OWN_WORDS.get(value)
        if word is not None:
            return word
        if len(value) == _UTC_TIME_LEN and _UTC_TIME.fullmatch(value):
            return Verbatim(value)
    return value


@functools.cache
def _event_type(tag: str) -> Verbatim:
    return Verbatim(tag)  # a Struct's tag: a class attribute of ours


def _payload(event: Event) -> str:
    return encode_event(event).decode()  # plain text: the connection redacts it (it holds agent text)


_TASK_COLUMN_SET = frozenset(_TASK_COLUMNS)
_RUN_COLUMN_SET = frozenset(_RUN_COLUMNS)
_INSERT_EVENT = "INSERT INTO events (type, task_id, payload_json, occurred_at) VALUES (?, ?, ?, ?)"
# A writer changes the same few sets of columns again and again: each statement's text is
# built once per set (from checked column names only) and SQLite's statement cache keeps it prepared.
_statements: dict[tuple[str, tuple[str, ...]], str] = {}


#: Every column of a task row, inserted or, for an id already there, all replaced.
_UPSERT_TASK = (
    f"INSERT INTO tasks ({', '.join(_TASK_COLUMNS)}) VALUES ({', '.join('?' for _ in _TASK_COLUMNS)}) "  # noqa: S608
    f"ON CONFLICT(id) DO UPDATE SET {', '.join(f'{name} = excluded.{name}' for name in _TASK_COLUMNS if name != 'id')}"
)
#: Events per INSERT in :meth:`Store.append_all` (4 values each: well under any SQLite's limit of bound values).
_EVENTS_PER_STATEMENT = 200


@functools.cache
def _insert_events(count: int) -> str:
    """One INSERT of ``count`` events (their ids follow in the order given)."""
    return _INSERT_EVENT.removesuffix("(?, ?, ?, ?)") + ", ".join("(?, ?, ?, ?)" for _ in range(count))


def _statement(kind: str, columns: tuple[str, ...]) -> str:
    sql = _statements.get((kind, columns))
    if sql is None:
        if kind == "insert_run":
            # OR IGNORE: a run row recorded twice (re-sent after a Session restart) stays as it was.
            marks = ", ".join("?" for _ in columns)
            sql = f"INSERT OR IGNORE INTO runs ({', '.join(columns)}) VALUES ({marks})"  # noqa: S608
        else:  # "tasks" or "runs": an UPDATE of these columns by id
            assignments = ", ".join(f"{name} = ?" for name in columns)
            sql = f"UPDATE {kind} SET {assignments} WHERE id = ?"  # noqa: S608
        _statements[(kind, columns)] = sql
    return sql


class AgentStats(msgspec.Struct, frozen=True, kw_only=True):
    """How one (backend, role) pair has done: what /metrics and /api/agents report."""

    backend: str
    role: str
    runs: int
    completed: int
    failed: int
    completed_s: float  # wall time of the completed attempts, summed

    @property
    def mean_completion_s(self) -> float | None:
        return self.completed_s / self.completed if self.completed else None

    @property
    def error_rate(self) -> float:
        """Failed / finished attempts; 0 when none finished."""
        finished = self.completed + self.failed
        return self.failed / finished if finished else 0.0


#: Events that name no task and change none (the run's own beginning and end).
_RUN_EVENTS = frozenset({"run_started", "run_completed", "shutdown_requested", "shutdown_completed"})


class _Reads:
    """Queries shared by the writer and the read-only reader (plain sqlite3, no ORM).

    Rows are decoded straight into Structs; the task list comes back as one
    JSON array from SQLite and is decoded in one call, so a 10,000-task check
    stays cheap.
    """

    conn: sqlite3.Connection

    def _rows(self, sql: str, params: list[Any] | tuple[Any, ...] = ()) -> list[dict[str, Any]]:
        cursor = self.conn.execute(sql, params)
        names = [column[0] for column in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]

    def schema_version(self) -> int:
        return int(self.conn.execute("PRAGMA user_version").fetchone()[0])

    def _tasks_query(self) -> str:
        """The task-list query for this database's schema: a file an older executor wrote (read
        by `check` before any run migrated it) lacks the newer columns, which then take their
        defaults."""
        if self.schema_version() >= SCHEMA_VERSION:
            return _TASKS_AS_JSON
        present = {row[1] for row in self.conn.execute("PRAGMA table_info(tasks)")}
        return _tasks_as_json(tuple(name for name in _TASK_COLUMNS if name in present))

    def tasks(self) -> list[TaskRow]:
        return self._decode_tasks(self.conn.execute(self._tasks_query()).fetchone()[0])

    def tasks_around(self, task_ids: Iterable[str]) -> list[TaskRow]:
        """The rows of ``task_ids`` and of every task blocked by one of them (one statement:
        SQLite looks through each row's ``blocked_by``, Python decodes only what it returns)."""
        ids = msgspec.json.encode(sorted(set(task_ids))).decode()
        where = (
            " WHERE id IN (SELECT value FROM json_each(:ids)) OR EXISTS (SELECT 1 FROM json_each(tasks.blocked_by)"
            " WHERE json_each.value IN (SELECT value FROM json_each(:ids)))"
        )
        return self._decode_tasks(self.conn.execute(self._tasks_query() + where, {"ids": ids}).fetchone()[0])

    def completed_among(self, task_ids: Iterable[str]) -> set[str]:
        """Which of ``task_ids`` are completed."""
        ids = msgspec.json.encode(sorted(set(task_ids))).decode()
        # `+status`: looked up by id, not through the status index (all the completed tasks).
        sql = "SELECT id FROM tasks WHERE id IN (SELECT value FROM json_each(?)) AND +status = 'completed'"
        return {task_id for (task_id,) in self.conn.execute(sql, [ids])}

    @staticmethod
    def _decode_tasks(text: str) -> list[TaskRow]:
        try:
            return _tasks_decoder.decode(text)
        except msgspec.ValidationError:
            # A NULL in a column that has a default (a row another tool wrote): the slow path.
            return [msgspec.convert(_without_nulls(row), TaskRow) for row in msgspec.json.decode(text)]

    def task(self, task_id: str) -> TaskRow | None:
        rows = self._rows("SELECT * FROM tasks WHERE id = ?", [task_id])
        if not rows:
            return None
        row = rows[0]
        row["blocked_by"] = msgspec.json.decode(row["blocked_by"] or "[]")
        if "details" in row:
            row["details"] = msgspec.json.decode(row["details"] or "{}")
        return msgspec.convert(_without_nulls(row), TaskRow)

    def open_runs(self) -> list[RunRow]:
        """Attempts that started and never recorded an end."""
        return [_run_from_row(r) for r in self._rows("SELECT * FROM runs WHERE ended_at IS NULL")]

    def runs(self, task_id: str | None = None) -> list[RunRow]:
        if task_id is None:
            rows = self._rows("SELECT * FROM runs ORDER BY id")
        else:
            rows = self._rows("SELECT * FROM runs WHERE task_id = ? ORDER BY id", [task_id])
        return [_run_from_row(r) for r in rows]

    def max_run_id(self) -> int:
        return int(self.conn.execute("SELECT ifnull(max(id), 0) FROM runs").fetchone()[0])

    def spent_by_task(self) -> dict[str, float]:
        """USD each task's attempts cost so far (reported or estimated)."""
        rows = self.conn.execute(
            "SELECT task_id, sum(cost_usd) FROM runs WHERE cost_usd IS NOT NULL GROUP BY task_id"
        ).fetchall()
        return {task_id: float(total) for task_id, total in rows}

    def latest_agent_sessions(self) -> dict[str, str]:
        """Task id -> the agent session id its latest attempt reported."""
        rows = self.conn.execute(
            "SELECT task_id, agent_session_id FROM runs WHERE agent_session_id IS NOT NULL ORDER BY id"
        ).fetchall()
        return dict(rows)

    def escalations(self, status: str | None = None) -> list[EscalationRow]:
        if self.schema_version() < 3:  # no questions before schema 3
            return []
        if status is None:
            rows = self._rows("SELECT * FROM escalations ORDER BY id")
        else:
            rows = self._rows("SELECT * FROM escalations WHERE status = ? ORDER BY id", [status])
        return [_escalation_from_row(row) for row in rows]

    def queued_write(self, write_id: str) -> QueuedWriteRow | None:
        """The queued write ``write_id`` as last committed, or None (never recorded here)."""
        if self.schema_version() < 8:
            return None
        rows = self._rows("SELECT * FROM queued_writes WHERE id = ?", [write_id])
        return msgspec.convert(rows[0], QueuedWriteRow) if rows else None

    def unsettled_writes(self) -> list[QueuedWriteRow]:
        """Writes recorded as queued and never handled (a run stopped first), oldest first."""
        if self.schema_version() < 8:
            return []
        rows = self._rows("SELECT * FROM queued_writes WHERE state = 'queued' ORDER BY queued_at, id")
        return [msgspec.convert(row, QueuedWriteRow) for row in rows]

    def escalation(self, escalation_id: str) -> EscalationRow | None:
        if self.schema_version() < 3:
            return None
        rows = self._rows("SELECT * FROM escalations WHERE id = ?", [escalation_id])
        return _escalation_from_row(rows[0]) if rows else None

    def latest_progress(self, task_id: str) -> tuple[str, Event] | None:
        """(time, event) of the task's newest progress report, if any."""
        row = self.conn.execute(
            "SELECT occurred_at, payload_json FROM events WHERE task_id = ? AND type = 'task_progress' "
            "ORDER BY id DESC LIMIT 1",
            [task_id],
        ).fetchone()
        return (row[0], decode_event(row[1])) if row else None

    def run_exists(self, run_row_id: int) -> bool:
        return self.conn.execute("SELECT 1 FROM runs WHERE id = ?", [run_row_id]).fetchone() is not None

    def meta(self) -> dict[str, str]:
        return dict(self.conn.execute("SELECT key, value FROM meta").fetchall())

    def events(self, after_id: int = 0, limit: int = 1000) -> list[tuple[int, str, Event]]:
        rows = self.conn.execute(
            "SELECT id, occurred_at, payload_json FROM events WHERE id > ? ORDER BY id LIMIT ?",
            [after_id, limit],
        ).fetchall()
        return [(row[0], row[1], decode_event(row[2])) for row in rows]

    def latest_artifacts(self, task_id: str) -> tuple[str, ...]:
        """The artifacts of the task's newest task_completed event (none: ())."""
        row = self.conn.execute(
            "SELECT payload_json FROM events WHERE task_id = ? AND type = 'task_completed' ORDER BY id DESC LIMIT 1",
            [task_id],
        ).fetchone()
        event = decode_event(row[0]) if row else None
        return tuple(event.artifacts) if isinstance(event, TaskCompleted) else ()

    def recent_events(self, count: int) -> list[tuple[int, str, Event]]:
        """The newest ``count`` events, oldest first."""
        return self.events(after_id=max(0, self.last_event_id() - count), limit=count)

    def completions(self) -> list[tuple[str, tuple[str, ...]]]:
        """(task id, artifacts) of every task_completed event, oldest first."""
        rows = self.conn.execute("SELECT payload_json FROM events WHERE type = 'task_completed' ORDER BY id").fetchall()
        completions = []
        for (payload,) in rows:
            event = decode_event(payload)
            if isinstance(event, TaskCompleted):
                completions.append((event.task_id, tuple(event.artifacts)))
        return completions

    def spend(self) -> list[dict[str, Any]]:
        """Runs, tokens and cost summed per (backend, model, key id): one grouped pass over runs."""
        return self._rows(
            "SELECT backend, model, key_id, count(*) AS runs, sum(ifnull(tokens_in, 0)) AS tokens_in, "
            "sum(ifnull(tokens_out, 0)) AS tokens_out, sum(ifnull(cost_usd, 0.0)) AS cost_usd "
            "FROM runs GROUP BY backend, model, key_id ORDER BY cost_usd DESC, backend, model, key_id"
        )

    def agent_stats(self) -> list[AgentStats]:
        """Per (backend, role): attempts, completed, failed, and the seconds the completed ones took.

        Open attempts count in ``runs`` but in neither outcome."""
        rows = self._rows(
            "SELECT r.backend AS backend, ifnull(t.owner, '') AS role, count(*) AS runs, "
            "ifnull(sum(r.outcome = 'completed'), 0) AS completed, ifnull(sum(r.outcome = 'failed'), 0) AS failed, "
            "ifnull(sum(CASE WHEN r.outcome = 'completed' AND r.ended_at IS NOT NULL "
            "THEN (julianday(r.ended_at) - julianday(r.started_at)) * 86400.0 END), 0.0) AS completed_s "
            "FROM runs r LEFT JOIN tasks t ON t.id = r.task_id GROUP BY r.backend, t.owner ORDER BY r.backend, role"
        )
        return [msgspec.convert(row, AgentStats) for row in rows]

    def last_event_id(self) -> int:
        return int(self.conn.execute("SELECT ifnull(max(id), 0) FROM events").fetchone()[0])

    def tasks_touched(self, after: int, until: int) -> tuple[set[str], bool]:
        """The task ids of the events after event ``after`` up to ``until``, and whether one of
        those events names no task and may have changed tasks (``TasksReopened``, reconciliation,
        any type not known to leave tasks alone)."""
        touched: set[str] = set()
        run_wide = False
        for task_id, kind in self.conn.execute(
            "SELECT DISTINCT task_id, type FROM events WHERE id > ? AND id <= ?", (after, until)
        ):
            if task_id is not None:
                touched.add(task_id)
            elif kind not in _RUN_EVENTS:
                run_wide = True
        return touched, run_wide

    def runs_of(self, task_ids: Iterable[str]) -> list[RunRow]:
        """The runs of ``task_ids``, in id order (one statement, whatever their number)."""
        ids = msgspec.json.encode(sorted(set(task_ids))).decode()
        rows = self._rows("SELECT * FROM runs WHERE task_id IN (SELECT value FROM json_each(?)) ORDER BY id", [ids])
        return [_run_from_row(r) for r in rows]

    def count_events(self, event_type: str | None = None, task_id: str | None = None) -> int:
        sql, params = "SELECT count(*) FROM events WHERE 1=1", list[str]()
        if event_type is not None:
            sql, params = sql + " AND type = ?", [*params, event_type]
        if task_id is not None:
            sql, params = sql + " AND task_id = ?", [*params, task_id]
        return int(self.conn.execute(sql, params).fetchone()[0])


class Store(_Reads):
    """The writer.  Bound to the thread that opened it."""

    def __init__(self, db: sqlite_utils.Database, path: Path) -> None:
        self.db = db
        self.conn = db.conn
        self.path = path
        self._unchanged_at = -1  # total_changes when begin() opened the current transaction

    @classmethod
    def open(cls, session_folder: Path, *, shared: bool = False) -> Store:
        """``shared``: the connection may be used from several threads, one at a time (the
        caller serializes them; sqlite3 refuses any other thread than its creator's without it)."""
        state_dir = Path(session_folder) / STATE_DIR
        state_dir.mkdir(exist_ok=True)
        path = state_dir / DB_NAME
        import sqlite_utils  # noqa: PLC0415 - only the writer needs it; keeps `check` fast to start

        try:
            # The one place text enters the file: every bound value is redacted (session.redaction).
            # No plugins: one installed in the environment would run its prepare_connection on the
            # session's state (register functions, change pragmas), and looking for them reads
            # every installed distribution's entry points at each run's start.
            db = sqlite_utils.Database(
                redacting_connection(str(path), check_same_thread=not shared), execute_plugins=False
            )
            db.enable_wal()
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute("PRAGMA busy_timeout=5000")
            store = cls(db, path)
            store._migrate()
        except sqlite3.DatabaseError as error:
            raise StoreError(f"{path}: cannot open the state database ({error})") from error
        return store

    def _migrate(self) -> None:
        version = self.schema_version()
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"{self.path} has schema version {version}, newer than this executor's "
                f"{SCHEMA_VERSION}; upgrade team-executor"
            )
        if version == SCHEMA_VERSION:
            return
        # All steps in one transaction: a reader (`check` while a run starts) sees the file
        # either before or after the upgrade, never half way.
        with self.db.atomic():
            for number in range(version, SCHEMA_VERSION):
                MIGRATIONS[number](self.db)
            self.db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def close(self) -> None:
        self.db.close()

    def begin(self) -> None:
        """Open a transaction for :meth:`transaction` to nest in (the Session actor's batch)."""
        self.conn.execute("BEGIN")
        self._unchanged_at = self.conn.total_changes

    @contextmanager
    def transaction(self) -> Iterator[Store]:
        """A transaction, or a savepoint inside the one already open; undone on error.

        In a transaction opened by :meth:`begin` that has changed no row yet (the first writer
        of a Session batch), there is nothing else to keep: an error rolls the whole transaction
        back and no savepoint is needed -- two statements fewer, each a GIL hand-off."""
        if not self.conn.in_transaction:
            with self.db.atomic():
                yield self
            return
        if self.conn.total_changes == self._unchanged_at:  # counts every row change, never goes back
            try:
                yield self
            except BaseException:
                if self.conn.in_transaction:
                    self.conn.execute("ROLLBACK")
                raise
            return
        # A fixed name is fine: SQLite savepoints nest by name, innermost first.
        self.conn.execute("SAVEPOINT store_tx")
        try:
            yield self
        except BaseException:
            if self.conn.in_transaction:
                self.conn.execute("ROLLBACK TO SAVEPOINT store_tx")
                self.conn.execute("RELEASE SAVEPOINT store_tx")
            raise
        self.conn.execute("RELEASE SAVEPOINT store_tx")

    def _write(self, sql: str, parameters: list[Any]) -> sqlite3.Cursor:
        """Run a write: inside the open transaction, or else committed at once (as sqlite-utils does)."""
        if self.conn.in_transaction:  # the Session actor's case: skip sqlite-utils' bookkeeping
            return self.conn.execute(sql, parameters)
        return self.db.execute(sql, parameters)

    def append(self, event: Event, task_id: str | None = None) -> int:
        task_id = task_id if task_id is not None else getattr(event, "task_id", None)
        now = Verbatim(utc_now())
        cursor = self._write(_INSERT_EVENT, [_event_type(event.__struct_config__.tag), task_id, _payload(event), now])
        return int(cursor.lastrowid or 0)

    def append_all(self, events: Sequence[Event]) -> None:
        """:meth:`append` each of ``events`` (each under its own ``task_id``), in order, in one
        statement per :data:`_EVENTS_PER_STATEMENT`."""
        if len(events) == 1:
            self.append(events[0])
            return
        if len(events) <= _EVENTS_PER_STATEMENT:
            self._append_chunk(events)
            return
        with self.transaction():  # several statements for one append: all of them or none
            for start in range(0, len(events), _EVENTS_PER_STATEMENT):
                self._append_chunk(events[start : start + _EVENTS_PER_STATEMENT])

    def _append_chunk(self, events: Sequence[Event]) -> None:
        now = Verbatim(utc_now())
        values: list[Any] = []
        for event in events:
            values += (_event_type(event.__struct_config__.tag), getattr(event, "task_id", None), _payload(event), now)
        self._write(_insert_events(len(events)), values)

    def put_tasks(self, tasks: list[TaskRow]) -> None:
        """Insert each task's row, or replace every column of the row it already has.

        One prepared statement for all of them (a run's start puts every task of the session:
        sqlite-utils' ``upsert_all`` took 0.2 s for 10,000, two statements a row)."""
        values = [[_bound(row[name]) for name in _TASK_COLUMNS] for row in map(_task_to_row, tasks)]
        if self.conn.in_transaction:
            self.conn.executemany(_UPSERT_TASK, values)
            return
        with self.db.atomic():
            self.conn.executemany(_UPSERT_TASK, values)

    def update_task(self, task_id: str, change: TaskChange) -> None:
        changes = given(change)
        for column in ("blocked_by", "details"):
            if column in changes:
                changes[column] = msgspec.json.encode(changes[column]).decode()
        changes.setdefault("updated_at", utc_now())
        _check_columns(changes, _TASK_COLUMN_SET, "task")
        self._write(_statement("tasks", tuple(changes)), [*map(_bound, changes.values()), task_id])

    # Runs are written on every attempt: plain SQL over checked column names, because
    # sqlite-utils' insert()/update() introspect the table on each call.
    def insert_run(self, run: RunStart) -> int:
        """Add the run row; its id, or 0 when a row with its id is already there (then it is kept as it was)."""
        fields = given(run)
        fields.setdefault("started_at", utc_now())
        _check_columns(fields, _RUN_COLUMN_SET, "run")
        cursor = self.conn.execute(_statement("insert_run", tuple(fields)), [*map(_bound, fields.values())])
        return int(cursor.lastrowid or 0) if cursor.rowcount > 0 else 0

    def update_run(self, run_id: int, change: RunChange) -> None:
        changes = given(change)
        _check_columns(changes, _RUN_COLUMN_SET, "run")
        if "files_changed" in changes:
            changes["files_changed"] = msgspec.json.encode(changes["files_changed"]).decode()
        if not changes:
            return
        self.conn.execute(_statement("runs", tuple(changes)), [*map(_bound, changes.values()), run_id])

    def put_escalation(self, escalation: EscalationRow) -> None:
        row = msgspec.structs.asdict(escalation)
        row["options"] = msgspec.json.encode(escalation.options).decode()
        self.db.table("escalations").upsert(row, pk="id")

    def next_escalation_id(self) -> str:
        (count,) = self.conn.execute("SELECT count(*) FROM escalations").fetchone()
        return f"ESC-{int(count) + 1:03d}"

    def record_queued_write(self, write_id: str, tool: str, message_json: str, queued_at: float) -> None:
        """Keep a queued write; one already kept stays as it is.  One already settled without its
        message (the Executor handled the write before this record reached the store: the two
        come by different paths) gets its message and time, and keeps its settlement."""
        self._write(
            "INSERT INTO queued_writes (id, tool, message_json, queued_at, state) VALUES (?, ?, ?, ?, 'queued') "
            "ON CONFLICT(id) DO UPDATE SET message_json = excluded.message_json, queued_at = excluded.queued_at "
            "WHERE queued_writes.message_json IS NULL",
            [write_id, tool, message_json, queued_at],
        )

    def settle_write(self, write_id: str, tool: str, reply_json: str | None, error: str | None) -> None:
        """Settle a queued write: ``applied`` with its reply, or ``refused`` with ``error``.  Only
        the first settlement counts (the record that applied a write settles it in its own
        transaction; the Executor's settlement after it changes nothing).  A write never
        recorded as queued (its record was lost with a restarted Session actor) is kept settled."""
        state = "refused" if error is not None else "applied"
        self._write(
            "INSERT INTO queued_writes (id, tool, queued_at, state, reply_json, error, settled_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT(id) DO UPDATE SET state = excluded.state, reply_json = excluded.reply_json, "
            "error = excluded.error, settled_at = excluded.settled_at WHERE queued_writes.state = 'queued'",
            [write_id, tool, time.time(), state, reply_json, error, utc_now()],
        )

    def set_meta(self, **values: str) -> None:
        self.db.table("meta").upsert_all([{"key": k, "value": v} for k, v in values.items()], pk="key")


class StoreReader(_Reads):
    """A read-only view for ``check`` and ``watch``, safe while a run writes.

    Never creates or changes a file: with a write-ahead log present (a run is
    going on, or one was killed) it opens read-only and reads the log too;
    otherwise the database is complete on its own and opens as immutable.
    """

    def __init__(self, conn: sqlite3.Connection, wal: Path | None = None) -> None:
        self.conn = conn
        self._immutable_until = wal  # opened immutable: valid only while this log does not exist

    @property
    def stale(self) -> bool:
        """Opened as immutable, and a run has started writing since: reopen to see its changes."""
        return self._immutable_until is not None and self._immutable_until.exists()

    @classmethod
    def open(cls, session_folder: Path) -> StoreReader | None:
        path = (Path(session_folder) / STATE_DIR / DB_NAME).resolve()
        if not path.is_file():
            return None
        wal = path.with_name(DB_NAME + "-wal")
        mode = "mode=ro" if wal.exists() else "immutable=1"
        try:
            conn = sqlite3.connect(f"{path.as_uri()}?{mode}", uri=True, check_same_thread=False)
            conn.execute("PRAGMA busy_timeout=5000")
            reader = cls(conn, wal=None if wal.exists() else wal)
            version = reader.schema_version()
        except sqlite3.DatabaseError as error:
            raise StoreError(f"{path}: cannot read the state database ({error})") from error
        if version == 0:
            conn.close()
            return None
        if version > SCHEMA_VERSION:
            conn.close()
            raise StoreError(
                f"{path} has schema version {version}, newer than this executor's "
                f"{SCHEMA_VERSION}; upgrade team-executor"
            )
        return reader

    def close(self) -> None:
        self.conn.close()


def stored_tasks(session_folder: Path) -> list[TaskRow]:
    """A session's task list, read-only; [] when it has never run.  Raises :class:`StoreError`."""
    reader = StoreReader.open(session_folder)
    if reader is None:
        return []
    try:
        return reader.tasks()
    finally:
        reader.close()
