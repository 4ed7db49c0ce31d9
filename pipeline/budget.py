"""Money: what each task and the session spent, the warnings and the stops."""

from __future__ import annotations

from dataclasses import dataclass, field

from pipeline.effects import Effect, NotifyUser, Record, Say
from pipeline.policy import PipelineConfig
from protocol.events import BudgetExceeded, BudgetWarning, Event
from protocol.messages import RecordEvents

__all__ = ["Ledger"]


@dataclass
class Ledger:
    config: PipelineConfig
    spent_by_task: dict[str, float] = field(default_factory=dict)
    warned: set[str] = field(default_factory=set)
    stopped: bool = False  # the session budget is spent: no new task starts

    @property
    def session_spent(self) -> float:
        return sum(self.spent_by_task.values())

    def meta(self, state: str) -> dict[str, str]:
        meta = {"budget_state": state}
        if self.config.session_budget_usd is not None:
            meta["budget_session_usd"] = f"{self.config.session_budget_usd:g}"
        if self.config.task_budget_usd is not None:
            meta["budget_task_usd"] = f"{self.config.task_budget_usd:g}"
        return meta

    def charge(self, task_id: str, cost_usd: float | None, running: int, out: list[Effect]) -> bool:
        """Add an attempt's cost; warn or stop at the limits.  True when the task's own budget is spent."""
        if cost_usd:
            self.spent_by_task[task_id] = self.spent_by_task.get(task_id, 0.0) + cost_usd
            self.check_session(running, out)
        limit = self.config.task_budget_usd
        if limit is None:
            return False
        spent = self.spent_by_task.get(task_id, 0.0)
        if spent >= limit:
            if f"task-exceeded:{task_id}" not in self.warned:
                self.warned.add(f"task-exceeded:{task_id}")
                event: Event = BudgetExceeded(scope="task", task_id=task_id, spent_usd=round(spent, 6), limit_usd=limit)
                out.append(Record(message=RecordEvents(events=(event,))))
                out.append(Say(line=f"$ {task_id} spent its budget (${spent:.2f} of ${limit:.2f}): no more attempts"))
                out.append(
                    NotifyUser(
                        kind="budget_stop",
                        title=f"{task_id} spent its budget",
                        body=f"${spent:.2f} of ${limit:.2f}: the task gets no more attempts.",
                        action="raise [budget].task_usd, then " + self.config.command("resume"),
                    )
                )
            return True
        if spent >= self.config.budget_warn_at * limit and f"task:{task_id}" not in self.warned:
            self.warned.add(f"task:{task_id}")
            warning: Event = BudgetWarning(scope="task", task_id=task_id, spent_usd=round(spent, 6), limit_usd=limit)
            out.append(Record(message=RecordEvents(events=(warning,))))
        return False

    def check_session(self, running: int, out: list[Effect]) -> bool:
        """Warn or stop on the session's spending; True when this call stopped the run."""
        limit = self.config.session_budget_usd
        if limit is None or self.stopped:
            return False
        spent = self.session_spent
        if spent >= limit:
            self.stopped = True
            event: Event = BudgetExceeded(scope="session", spent_usd=round(spent, 6), limit_usd=limit)
            out.append(Record(message=RecordEvents(events=(event,), meta=self.meta("exceeded"))))
            may_finish = f"; {running} running worker(s) may finish" if running else ""
            out.append(
                Say(
                    line=f"$ session budget spent (${spent:.2f} of ${limit:.2f}): no new tasks{may_finish}. "
                    "Raise [budget].session_usd to go on."
                )
            )
            out.append(
                NotifyUser(
                    kind="budget_stop",
                    title="Session budget spent: the run stops",
                    body=f"${spent:.2f} of ${limit:.2f}. No new task starts{may_finish}.",
                    action="raise [budget].session_usd, then " + self.config.command("resume"),
                )
            )
            return True
        if spent >= self.config.budget_warn_at * limit and "session" not in self.warned:
            self.warned.add("session")
            warning: Event = BudgetWarning(scope="session", spent_usd=round(spent, 6), limit_usd=limit)
            out.append(Record(message=RecordEvents(events=(warning,), meta=self.meta("warning"))))
            out.append(Say(line=f"$ {spent / limit:.0%} of the session budget spent (${spent:.2f} of ${limit:.2f})"))
            out.append(
                NotifyUser(
                    kind="budget_warning",
                    title=f"{spent / limit:.0%} of the session budget spent",
                    body=f"${spent:.2f} of ${limit:.2f}; at 100% no new task starts.",
                    action=self.config.command("check"),
                )
            )
        return False
