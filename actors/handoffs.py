"""The Executor's side of handoff: manual tasks moved by people, IDE agents, git.

A request (``executor task ...`` through the inbox, or an MCP tool) is carried
out by the Session actor on the store (:mod:`session.handoff`); here the
Executor keeps its scheduler in step: a created task joins the graph, a claimed
one leaves the ready queue, a completed one releases what waited on it.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

import msgspec

from actors.base import handles
from protocol.bridge import Refused
from protocol.messages import HandoffRequest
from protocol.records import TaskRow
from session import inbox
from session.agents import AgentsFileError, capabilities_of
from session.handoff import HandoffRefused

if TYPE_CHECKING:
    from pathlib import Path

__all__ = ["HandoffHandlers", "manual_roles_of"]


def manual_roles_of(backends: dict[str, Any]) -> tuple[str, ...]:
    return tuple(sorted(role for role, backend in backends.items() if getattr(backend, "name", "") == "manual"))


class HandoffHandlers:
    """Mixed into the Executor."""

    rows: dict[str, TaskRow]
    scheduler: Any
    backends: dict[str, Any]
    options: Any
    session: Any
    prompts: Any
    folder: Path
    stopping_since: float | None
    finished: bool
    idle_announced: bool
    console: Any

    if TYPE_CHECKING:  # provided by the Executor; stubs here would shadow them

        def _ask(self, message: Any) -> Any: ...
        def _dispatch(self) -> None: ...
        def _maybe_finish(self) -> None: ...

    @handles(HandoffRequest)
    def handoff(self, message: HandoffRequest) -> TaskRow | Refused:
        if self.scheduler is None:
            return Refused(reason="the run is still starting; try again in a moment", retry_later=True)
        if self.stopping_since is not None or self.finished:
            return Refused(reason="the run is stopping; try again when it has stopped")
        manual = manual_roles_of(self.backends)
        extra: dict[str, Any] = {"manual_roles": manual}
        if message.op == "claim":
            try:
                declared = capabilities_of(self.folder, message.agent)
            except AgentsFileError as error:
                return Refused(reason=str(error), argument="agent")
            extra["agent_capabilities"] = tuple(sorted(declared)) if declared is not None else None
        if message.op == "create":
            role = self.session.roles.get(message.role)
            if role is None:
                roles = ", ".join(sorted(self.session.roles))
                return Refused(
                    reason=f"'{message.role}' is not a role of this session; use one of: {roles}", argument="role"
                )
            spec = self.session.role_specs[message.role].meta
            extra |= {"prefix": role.prefix, "max_attempts": spec.max_attempts or self.options.max_attempts}
        result = self._ask(msgspec.structs.replace(message, **extra))
        if isinstance(result, HandoffRefused):
            return Refused(reason=result.reason, argument=result.argument)
        self._follow(message, result)
        return result

    def _follow(self, message: HandoffRequest, row: TaskRow) -> None:
        """Bring the scheduler in line with what the store now says."""
        before = self.rows.get(row.id)
        self.rows[row.id] = row
        if message.op == "create":
            self.prompts.add(row, goal=row.subject)
            self.scheduler.add(row)
            self.console(f"+ {row.id} ({row.owner}, {row.priority}) created by {message.by}: {row.subject}")
        elif before is not None and before.status != row.status:
            if row.status == "completed":
                unblocked = self.scheduler.complete(row.id)
                then = f"; unblocked {', '.join(unblocked)}" if unblocked else ""
                self.console(f"✓ {row.id} completed by {row.agent or message.by}{then}")
            elif row.status == "failed":
                self.scheduler.fail(row.id)
                self.console(f"✗ {row.id} failed, said {row.agent or message.by}: {row.last_error}")
            else:
                self.scheduler.set_status(row.id, row.status)
                verb = {"in_progress": f"claimed by {row.agent}", "review": "handed in for review"}
                if row.status != "pending":  # a release says why itself
                    self.console(f"✋ {row.id} {verb.get(row.status, row.status)}")
        self.idle_announced = False
        self._dispatch()
        self._maybe_finish()

    def _release_silent_claims(self, wall_now: float) -> None:
        """A claimed task whose agent has been silent past its role's claim_idle_timeout is
        released for someone else (its last sign of life: the row's last update)."""
        if self.scheduler is None:
            return
        for task_id in self.scheduler.manual_open():  # only the manual tasks, never the whole list
            row = self.rows[task_id]
            if row.status != "in_progress" or row.agent is None:
                continue
            spec = self.session.role_specs.get(row.owner)
            limit = spec.meta.claim_idle_timeout if spec else None
            if not limit:
                continue
            try:
                silent_s = wall_now - datetime.fromisoformat(row.updated_at).timestamp()
            except ValueError:
                continue
            if silent_s < limit:
                continue
            reason = f"{row.agent} was silent for {silent_s:.0f}s (claim_idle_timeout {limit:g}s)"
            released = self.handoff(HandoffRequest(op="release", by="executor", task_id=row.id, reason=reason))
            if isinstance(released, TaskRow):
                self.console(f"⇠ {row.id} released: {reason}; it is ready for someone else")

    def _handoff_from_inbox(self, name: str, request: dict[str, Any]) -> None:
        """``executor task ...`` while this run is live: the request came through the inbox."""
        try:
            message = msgspec.convert(
                {**request.get("request", {}), "by": str(request.get("by", "cli"))[:100]}, HandoffRequest
            )
        except msgspec.ValidationError as error:
            inbox.reply(self.folder, name, {"ok": False, "message": f"a malformed task request: {error}"})
            return
        result = self.handoff(message)
        if isinstance(result, Refused):
            inbox.reply(self.folder, name, {"ok": False, "message": result.reason, "argument": result.argument})
        else:
            inbox.reply(self.folder, name, {"ok": True, "task": msgspec.to_builtins(result)})
