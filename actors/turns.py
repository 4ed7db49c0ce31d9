"""Durable before visible: what each Executor turn starts and shows waits for its commit.

A turn's records are told to the Session actor; at the end of the turn the Executor tells
it :class:`Commit` and goes on with its next message.  The Session commits everything told
before (one transaction, shared by many turns under load) and answers :class:`Committed`;
only then are that turn's attempts started and its lines and notices shown.  Whoever asked
the Executor something is answered after a synchronous :class:`AwaitCommit`.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pykka

from actors.session_link import SessionLink
from protocol._base import Message
from protocol.messages import AwaitCommit, Commit, RunTask, StopWorker

__all__ = ["Turns", "Worker"]

log = logging.getLogger("executor.root")

Show = Callable[[], None]


@dataclass
class Worker:
    """A TeamWorker actor (``ref``), or an attempt slot on the Executor's own thread (``begin``)."""

    ref: pykka.ActorRef[Any] | None
    cancel: Any  # threading.Event: set to stop the running attempt
    begin: Callable[[RunTask], None] | None = None

    def start(self, run: RunTask) -> None:
        if self.ref is not None:
            self.ref.tell(run)
        elif self.begin is not None:
            self.begin(run)

    def stop(self) -> None:
        """Retire it (a slot on the Executor's thread has nothing to stop)."""
        if self.ref is not None:
            self.ref.tell(StopWorker())


class Turns:
    def __init__(self, link: SessionLink, workers: dict[str, Worker], fail: Callable[[str], None]) -> None:
        self.link = link
        self.workers = workers
        self.fail = fail
        self.to_start: list[tuple[str, RunTask]] = []
        self.to_show: list[Show] = []
        self._turn = 0
        self._awaiting: deque[tuple[int, list[tuple[str, RunTask]], list[Show]]] = deque()

    def end(self, wait: bool = False) -> None:
        """Close the turn.  ``wait``: commit now and show everything (an ask is answered, the
        run ends); always so when the Session's handlers run on this thread (a direct line):
        then committing is a call, and a Commit message would only add a turn.  When the
        records cannot be committed nothing is started or shown: an attempt never runs
        without its dispatch record, and no "done" is claimed that a crash could lose."""
        wait = wait or self.link.direct is not None
        if self.to_start or self.to_show:
            self._turn += 1
            self._awaiting.append((self._turn, self.to_start, self.to_show))
            self.to_start, self.to_show = [], []
            if not wait:
                self.link.tell(Commit(turn=self._turn))
        if not wait or not self._awaiting:
            return
        try:
            self.link.ask(AwaitCommit())
        except Exception as error:  # noqa: BLE001 - any failure to commit stops the run the same way
            self.drop()
            log.error("could not commit the run's records: %s", error)
            self.fail(f"the state could not be recorded: {error}")
            self.to_start, self.to_show = [], []  # nothing more is shown: it could not be committed
            return
        self.release(self._turn)

    def drop(self) -> None:
        """Forget the turns waiting for a commit (it failed): their workers stop unstarted."""
        awaiting, self._awaiting = self._awaiting, deque()
        for _, starts, _ in awaiting:
            for worker_id, _ in starts:
                worker = self.workers.pop(worker_id, None)
                if worker is not None:
                    worker.stop()

    def release(self, turn: int) -> None:
        """Start and show what the turns up to ``turn`` held back: they are committed."""
        while self._awaiting and self._awaiting[0][0] <= turn:
            _, starts, shows = self._awaiting.popleft()
            for worker_id, run in starts:
                worker = self.workers.get(worker_id)
                if worker is not None:
                    worker.start(run)
            for show in shows:
                show()

    def resync(self, running_records: list[Message]) -> list[Message]:
        """For a restarted Session actor: the running attempts' records (idempotent), then a
        Commit for the turns still waiting.  What the dead Session had not committed is lost,
        except the dispatch records sent again: the waiting attempts may start, but their
        turns' lines and notices (a "done" among them) are never shown."""
        self._awaiting = deque((turn, starts, []) for turn, starts, _ in self._awaiting)
        if self._awaiting:
            return [*running_records, Commit(turn=self._awaiting[-1][0])]
        return running_records
