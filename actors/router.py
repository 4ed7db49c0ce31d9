"""The Router actor: a service that picks each task's model and moves it along the fallback chain.

It holds the validated :class:`~session.config_models.Config` and one
:class:`~session.routing_types.AttemptState` per task; the decisions themselves are
:mod:`session.routing`'s pure policy.  Messages are in :mod:`protocol.routing`.

Bad input never crashes it: an unknown forced model, a complexity it cannot
read, or a chain with nothing left is a :class:`~protocol.routing.NoModel`
reply with the reason.  Its per-task state lives in memory only; after a
restart a task starts afresh (approvals included), which at worst asks again.
"""

from __future__ import annotations

from typing import Any

import pykka

from actors.base import TreeActor, handles
from protocol.messages import Ok
from protocol.routing import (
    ApproveCritical,
    ForgetTask,
    GetRegistry,
    GiveUp,
    ModelChoice,
    NextModel,
    NoModel,
    Registry,
    SelectModel,
)
from session.config_models import Config, ModelSpec
from session.routing import next_after_failure, select_model
from session.routing_chain import registry_of
from session.routing_types import DEFAULT_OPTIONS, AttemptState, RoutingError, RoutingOptions

__all__ = ["RouterActor"]


class RouterActor(TreeActor):
    """Start with ``RouterActor.start(name, parent, incarnation, config)``."""

    def __init__(
        self,
        name: str,
        parent: pykka.ActorRef[Any] | None,
        incarnation: int,
        config: Config,
        options: RoutingOptions = DEFAULT_OPTIONS,
    ) -> None:
        super().__init__(name, parent, incarnation)
        self.config = config
        self.options = options
        self.tasks: dict[str, AttemptState] = {}

    def _choice(
        self, task_id: str, model: ModelSpec, reason: str, needs_approval: bool = False, delay_s: float = 0.0
    ) -> ModelChoice:
        return ModelChoice(
            task_id=task_id,
            model=model.name,
            tier=model.tier,
            backend=model.backend,
            provider=model.provider,
            needs_approval=needs_approval,
            reason=reason,
            delay_s=delay_s,
        )

    @handles(SelectModel)
    def select(self, message: SelectModel) -> ModelChoice | NoModel:
        previous = self.tasks.get(message.task_id)
        state = AttemptState(
            approved_critical=previous is not None and previous.approved_critical,
            budget_usd=message.budget_usd,
            backend=message.backend,
        )
        self.tasks[message.task_id] = state
        try:
            selection = select_model(
                self.config,
                message.complexity,
                message.budget_usd,
                message.force_model,
                state.approved_critical,
                self.options,
                backend=message.backend,
            )
        except RoutingError as error:
            return NoModel(task_id=message.task_id, reason=str(error))
        state.tried.append(selection.model.name)
        return self._choice(message.task_id, selection.model, selection.reason, selection.needs_approval)

    @handles(ApproveCritical)
    def approve(self, message: ApproveCritical) -> Ok:
        self.tasks.setdefault(message.task_id, AttemptState()).approved_critical = True
        return Ok()

    @handles(NextModel)
    def next_model(self, message: NextModel) -> ModelChoice | NoModel:
        state = self.tasks.setdefault(message.task_id, AttemptState())
        if message.budget_usd is not None:
            state.budget_usd = message.budget_usd
        decision = next_after_failure(self.config, message.current_model, message.error_kind, state, self.options)
        if isinstance(decision, GiveUp):
            return NoModel(task_id=message.task_id, reason=decision.reason, fallback_backend=decision.fallback_backend)
        model = self.config.find_model(decision.model)
        if model is None:  # the policy only names registry models
            return NoModel(task_id=message.task_id, reason=f"'{decision.model}' is not in the registry")
        return self._choice(message.task_id, model, decision.reason, delay_s=decision.delay_s)

    @handles(ForgetTask)
    def forget(self, message: ForgetTask) -> Ok:
        self.tasks.pop(message.task_id, None)
        return Ok()

    @handles(GetRegistry)
    def registry(self, message: GetRegistry) -> Registry:
        return registry_of(self.config)
