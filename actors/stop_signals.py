"""SIGINT/SIGTERM during ``executor run``: stop requests for the Executor, never a half-closed exit."""

from __future__ import annotations

import contextlib
import signal
from typing import Any

import pykka

from protocol.messages import ShutdownRequest

__all__ = ["StopSignals"]


class StopSignals:
    """SIGINT/SIGTERM during a run: the first asks the executor to stop gracefully, the second
    at once, later ones are absorbed.

    Installed before the bridge serves (a SIGTERM once the dashboard answers is a clean
    stop) and kept until the bridge, the mirror and the lock are closed, so no signal can
    end the process half-way through closing them.  When a stop was asked for, the process
    is on its way out: the signals stay ignored afterwards (a storm of them must not turn a
    clean stop into exit 143); otherwise the previous handlers return.
    Runs on the main thread (Python delivers signals there).
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.seen = 0
        self._executor: Any = None
        self._previous: dict[signal.Signals, Any] = {}

    def install(self) -> None:
        """From now on SIGINT and SIGTERM are ours; until :meth:`attach` they are only counted."""
        self._previous = {sig: signal.signal(sig, self._on_signal) for sig in self.SIGNALS}

    def attach(self, executor: Any) -> None:
        """Signals reach ``executor`` (a pykka ActorRef); one that came while it started is passed on now."""
        self._executor = executor
        if self.seen:
            self._tell("a signal while the run started")

    def restore(self) -> None:
        for sig, before in self._previous.items():
            signal.signal(sig, signal.SIG_IGN if self.seen else before)

    def _on_signal(self, signum: int, _frame: Any) -> None:
        self.seen += 1
        if self.seen <= 2 and self._executor is not None:
            self._tell(f"signal {signal.Signals(signum).name}")

    def _tell(self, reason: str) -> None:
        with contextlib.suppress(pykka.ActorDeadError):  # it already stopped: nothing left to stop
            self._executor.tell(ShutdownRequest(reason=reason, graceful=self.seen == 1))
