"""Questions for the user that the pipeline waits on: which task each holds, when its
default answer is due, and which were answered during this run."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from protocol.bridge import KEY_REQUEST
from protocol.records import EscalationRow

__all__ = ["Questions"]


@dataclass
class Questions:
    open: set[str] = field(default_factory=set)
    deadlines: dict[str, tuple[float, str | None]] = field(default_factory=dict)  # id -> (due, default)
    holds: dict[str, set[str]] = field(default_factory=dict)  # task id -> open questions holding it
    critical_asked: set[str] = field(default_factory=set)  # tasks already asked about a CRITICAL model
    answered_this_run: set[str] = field(default_factory=set)
    key_requests: dict[str, str] = field(default_factory=dict)  # "keys:<provider>" -> its open question

    def asking(self, opened_by: str) -> bool:
        """True when a question about a provider's keys is open already (one per provider)."""
        return opened_by.startswith(KEY_REQUEST) and opened_by in self.key_requests

    def track(self, row: EscalationRow, holdable: bool) -> bool:
        """Remember an open question; True when its task must be held (``holdable``: it is pending)."""
        self.open.add(row.id)
        if row.opened_by.startswith(KEY_REQUEST):
            self.key_requests[row.opened_by] = row.id
        if row.deadline:
            try:
                due = datetime.fromisoformat(row.deadline).timestamp()
            except ValueError:
                due = None
            if due is not None:
                self.deadlines[row.id] = (due, row.default_choice)
        if row.holds_task and row.task_id and holdable:
            self.holds.setdefault(row.task_id, set()).add(row.id)
            return True
        return False

    def untrack(self, row: EscalationRow) -> bool:
        """Forget an answered question; True when its task is held by nothing else now."""
        self.open.discard(row.id)
        if self.key_requests.get(row.opened_by) == row.id:
            del self.key_requests[row.opened_by]
        self.deadlines.pop(row.id, None)
        holds = self.holds.get(row.task_id or "")
        if holds is None:
            return False
        holds.discard(row.id)
        if holds:
            return False
        del self.holds[row.task_id or ""]
        return True

    def due(self, wall: float) -> list[tuple[str, str]]:
        """(question, default choice) for each question past its deadline, forgotten here."""
        expired = [(qid, default) for qid, (at, default) in self.deadlines.items() if wall >= at]
        for qid, _ in expired:
            self.deadlines.pop(qid, None)
        return [(qid, default) for qid, default in expired if default is not None]
