"""The in-process runtime harness: the real actor tree, an in-memory backend, a manual clock.

``Tree`` starts the real Executor (with its real Session actor, Reconciler and SQLite
store) on a session folder, with :class:`tests.fake_backend.FakeBackend` for every role and
a clock that moves only when the test says (``tick``).  Tests drive it message by message
with the same protocol messages the bridge and the workers send, and assert on the store.
``sync`` is the barrier: the Executor answers an ask only after the turn's records are
committed, so after it the store shows everything the Executor has done so far.
"""

from __future__ import annotations

import secrets
import time
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import pykka

from actors.executor import Executor
from actors.options import RunOptions
from actors.prompting import PromptSource
from actors.supervision import Backoff
from backends.manual import ManualBackend
from pipeline.clock import Instant
from protocol.bridge import FleetSnapshot, GetFleet
from protocol.events import Event
from protocol.messages import Conclude, RunSummary, ShutdownRequest, Tick
from protocol.records import TaskRow
from session.loader import inspect_session
from session.store import StoreReader
from tests.fake_backend import FakeBackend
from tests.waiting import wait_for

__all__ = ["ManualClock", "Tree"]


class ManualClock:
    """Starts at the real wall time (rows the store stamps are compared with it), then moves
    only in :meth:`advance`."""

    def __init__(self) -> None:
        self.mono = 1000.0
        self.wall = time.time()

    def __call__(self) -> Instant:
        return Instant(mono=self.mono, wall=self.wall)

    def advance(self, seconds: float) -> None:
        self.mono += seconds
        self.wall += seconds


class Tree:
    def __init__(
        self, folder: Path, fake: FakeBackend | None = None, manual: frozenset[str] = frozenset(), **options: Any
    ) -> None:
        """``manual``: roles whose tasks people take (the real ``manual`` backend); the rest run on ``fake``."""
        session, problems = inspect_session(folder)
        assert session is not None, problems
        self.folder = folder
        self.fake = fake or FakeBackend()
        self.clock = ManualClock()
        self.lines: list[str] = []
        self.events: list[Event] = []
        self.outcome: Future[RunSummary] = Future()
        defaults: dict[str, Any] = {
            "tick_s": 0,  # no ticker thread: time moves in tick()
            "retry_backoff": Backoff(min_s=1.0, max_s=60.0, jitter=0.0),
            "workdir": folder,
            "kill_grace_s": 1.0,
        }
        self.options = RunOptions(**{**defaults, **options})
        self.ref: pykka.ActorRef[Any] = Executor.start(
            session,
            self.options,
            {role: ManualBackend() if role in manual else self.fake for role in session.roles},
            PromptSource(session),
            self.outcome,
            [lambda _id, _at, event: self.events.append(event)],
            secrets.token_hex(10),
            self.lines.append,
            self.clock,
        )
        # The Executor tells itself Boot once started: asks sent before it are answered "booting".
        wait_for(lambda: self.sync().state != "booting", timeout=30, what="the run to boot")

    # --- driving it -----------------------------------------------------------------------

    def sync(self) -> FleetSnapshot:
        """Wait until the Executor has handled everything sent so far (and committed it)."""
        fleet: FleetSnapshot = self.ref.ask(GetFleet(), timeout=30)
        return fleet

    def ask(self, message: Any) -> Any:
        return self.ref.ask(message, timeout=30)

    def tick(self, seconds: float = 0.0) -> None:
        self.clock.advance(seconds)
        self.ref.tell(Tick())
        self.sync()

    def wait(self, condition: Any, what: str, timeout: float = 30.0) -> Any:
        """Wait for a worker's report to be handled (workers run on their own threads)."""
        return wait_for(condition, timeout=timeout, what=what)

    def wait_status(self, task_id: str, status: str) -> TaskRow:
        return self.wait(
            lambda: (row := self.tasks().get(task_id)) is not None and row.status == status and row,
            f"{task_id} to be {status} (it is {self.tasks().get(task_id, None) and self.tasks()[task_id].status})",
        )

    def finished(self) -> RunSummary:
        return self.wait(lambda: self.outcome.done() and self.outcome.result(), "the run to finish")

    def close(self) -> None:
        if self.ref.is_alive():
            if not self.outcome.done():
                self.ref.tell(ShutdownRequest(reason="test over", graceful=False))
                self.tick(0)
                wait_for(self.outcome.done, timeout=30, what="the run to stop")
            self.ref.ask(Conclude(session_status="paused"), timeout=60)
            self.ref.stop(block=True, timeout=30)

    # --- reading the store -------------------------------------------------------------------

    def _read(self, read: Any) -> Any:
        reader = StoreReader.open(self.folder)
        assert reader is not None, (list((self.folder / ".executor").iterdir()), self.lines, self.outcome.done())
        try:
            return read(reader)
        finally:
            reader.close()

    def tasks(self) -> dict[str, TaskRow]:
        return self._read(lambda reader: {row.id: row for row in reader.tasks()})

    def event_types(self) -> list[str]:
        return self._read(lambda reader: [event.__struct_config__.tag for _, _, event in reader.events()])

    def runs(self) -> list[Any]:
        return self._read(lambda reader: reader.runs())
