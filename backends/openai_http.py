"""The ``openai`` backend: OpenAI-compatible Chat Completions over HTTP.

For local servers (llama.cpp, vLLM, Ollama) and hosted gateways.  Unlike the
agent CLIs there is no child process: the backend talks HTTP itself, so the
Router can switch keys and models between two calls of one task.

Two levels:

- :meth:`OpenAIHttpBackend.complete` — one streamed request (``POST
  {base_url}/chat/completions`` with ``stream: true`` and ``stream_options:
  {include_usage: true}``) turned into a :class:`ChatOutcome`: the text, usage,
  finish reason, and an error kind the Router and KeyPool act on.  Base URL, key
  and model are arguments, so a caller can rotate them per call.
- :meth:`OpenAIHttpBackend.run` — the Backend contract: the prompt file becomes
  the messages, the calls go where :func:`backends.openai_plan.plan_calls` says
  (the role-spec's ``model``/``base_url``, else ``OPENAI_MODEL`` /
  ``OPENAI_BASE_URL``, else the registry's ``openai`` models through the Router),
  the key is ``OPENAI_API_KEY`` or the key pool's, deltas become throttled
  progress notes, and the answer is written as the task's artifact.

How a call ends (``ChatOutcome.error_kind``):

- 429: ``rate_limited`` (with ``retry_after_s``);
- 500/502/503/504/529, or a body saying overloaded / no capacity: ``overloaded``;
- 401/403: ``auth``;
- 400/413/422 with context-length wording: ``context_too_long``;
- refused, reset, DNS or TLS failure, or silence before any byte: ``network``
  (and a stream cut after it began);
- silence longer than ``timeout_s`` after the headers, or longer than
  ``wall_timeout_s`` in all: ``timeout``;
- broken SSE, a non-JSON body, no choices, an empty answer: ``bad_output``;
- ``cancel`` set: ``interrupted``;
- anything else (404 model not found, other 4xx): ``crash``.

``Retry-After`` is read as seconds or as an HTTP date (and ``retry-after-ms``);
without it, from the error body ("Please try again in 2s", ``retryDelay``).

The API key is sent only in the ``Authorization`` header.  It is never put in a
result, an error message (a server that echoes it back is redacted to the last
four characters), a log line or a progress note.

The pieces live apart: one call in :mod:`backends.openai_call` (its answer read by
:mod:`backends.openai_stream`, its failures by :mod:`backends.openai_errors`), what a
run says and keeps in :mod:`backends.openai_prompt`; this module is the Backend.
"""

from __future__ import annotations

import functools
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, TextIO, cast
from urllib.parse import urlsplit

import msgspec

from backends.base import RoutingServices, WorkerHooks, failed_attempt
from backends.conventions import (
    relative_inside,
)
from backends.key_wait import lease_when_cool, wait_for_added_key
from backends.openai_call import ChatOutcome, chat_endpoint, complete
from backends.openai_errors import key_hint, redact, safe_url
from backends.openai_plan import MODEL_ENV, Direct, Routed, plan_calls
from backends.openai_prompt import Progress, expected_artifact_in, report_line, system_message
from backends.pricing import estimate_cost
from protocol.keys import KeyUnavailable, KeyWait
from protocol.messages import AttemptResult, WorkOrder
from protocol.routing import NoModel
from session.loopback import is_loopback_url
from session.redaction import RedactingWriter
from session.redaction import redact as redact_text
from session.rolespec import RoleSpecFrontmatter
from session.routing_chain import key_endpoint

if TYPE_CHECKING:
    import httpx

    from session.config_models import Config

__all__ = [
    "BASE_URL_ENV",
    "DEFAULT_BASE_URL",
    "KEY_ENV",
    "OpenAIHttpBackend",
]

BASE_URL_ENV = "OPENAI_BASE_URL"
KEY_ENV = "OPENAI_API_KEY"
DEFAULT_BASE_URL = "https://api.openai.com/v1"  # with a key and no base URL, as every OpenAI client does

DEFAULT_NO_OUTPUT_TIMEOUT_S = 300.0  # a run() without hang_timeout_s: silence this long is a stall
_MAX_ROUTING_STEPS = 30  # keys and models tried within one attempt before it gives up
_OUTPUT_TAIL_CHARS = 4096
_SUMMARY_CHARS = 300


def _note(log: TextIO | None, line: str) -> None:
    if log is not None:
        log.write(f"openai: {line}\n")
        log.flush()


class OpenAIHttpBackend:
    """OpenAI-compatible chat completions.  See the module docstring.

    ``environ`` is read for ``OPENAI_BASE_URL`` and ``OPENAI_API_KEY`` (default:
    ``os.environ``); ``base_url`` and ``api_key`` override them.  With a key and no
    base URL, ``https://api.openai.com/v1`` is used; a base URL on a loopback
    address (a local llama.cpp, vLLM or Ollama) needs no key.

    ``run`` never calls ``hooks.started``: there is no child process, and the pid it
    would report (the executor's own) is what the Session records for reaping
    orphans after a crash — the executor must never be told to kill itself, nor a
    later process that reuses its pid.
    """

    name: ClassVar[str] = "openai"

    def __init__(
        self,
        environ: Mapping[str, str] | None = None,
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        progress_interval_s: float = 1.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self._environ = environ
        self._base_url = base_url
        self._api_key = api_key
        self.progress_interval_s = progress_interval_s
        self._transport = transport  # for tests; the default is httpx's own

    @property
    def environ(self) -> Mapping[str, str]:
        return os.environ if self._environ is None else self._environ

    def endpoint_config(self) -> tuple[str | None, str | None]:
        """``(base_url, api_key)`` from the constructor, else the environment."""
        key = self._api_key or self.environ.get(KEY_ENV) or None
        base = self._base_url or self.environ.get(BASE_URL_ENV) or None
        if base is None and key is not None:
            base = DEFAULT_BASE_URL
        return base, key

    def config_problem(self, base_url: str | None = None) -> str | None:
        """Why no request can be made with the configured base URL (or ``base_url``) and key, or None."""
        base, key = self.endpoint_config()
        base = base_url or base
        if base is None:
            return (
                f"set {BASE_URL_ENV} (e.g. http://127.0.0.1:8080/v1 for a local server) "
                f"and {KEY_ENV} in the environment"
            )
        scheme = urlsplit(base).scheme
        if scheme not in ("http", "https") or not urlsplit(base).hostname:
            return f"{BASE_URL_ENV} must be an http:// or https:// URL (got {safe_url(base)!r})"
        if key is None and not is_loopback_url(base):
            return f"no key for {safe_url(base)}: set {KEY_ENV} in the environment"
        return None

    # --- preflight ---------------------------------------------------------------------------

    def role_endpoint(self, spec_model: str | None, spec_base_url: str | None) -> tuple[str | None, str | None]:
        """(model, base URL) a role names: its role-spec's, else ``OPENAI_MODEL`` / ``OPENAI_BASE_URL``."""
        model = spec_model or self.environ.get(MODEL_ENV) or None
        base = spec_base_url or self._base_url or self.environ.get(BASE_URL_ENV) or None
        return model, base

    def preflight(self, role: str, spec: RoleSpecFrontmatter) -> str | None:
        model, base = self.role_endpoint(spec.model, spec.base_url)
        if not model:
            return (
                f"role '{role}' uses backend '{self.name}', which needs a model: set `model:` in its role-spec "
                f"(or {MODEL_ENV})"
            )
        problem = self.config_problem(base)
        if problem is not None:
            return f"role '{role}' uses backend '{self.name}', but {problem}"
        return None

    def preflight_routed(self, role: str, spec: RoleSpecFrontmatter, config: Config | None = None) -> str | None:
        """Preflight for a run with a Router and a KeyPool (``config``: its model registry).

        The role's calls are planned by :func:`backends.openai_plan.plan_calls`: a model the
        registry lacks needs a base URL, and no call goes to an endpoint nobody configured."""
        model, base = self.role_endpoint(spec.model, spec.base_url)
        if config is None:  # no registry to plan with: only a malformed base URL can be caught
            if base and (urlsplit(base).scheme not in ("http", "https") or not urlsplit(base).hostname):
                return f"role '{role}' uses backend '{self.name}', but its base URL must be an http:// or https:// URL"
            return None
        has_models = any(entry.backend == self.name for entry in config.models)
        plan = plan_calls(role, model, base, config.find_model, has_models, self.name)
        if isinstance(plan, str):
            return plan
        if isinstance(plan, Direct):
            problem = self.config_problem(plan.base_url)
            if problem is not None:
                return f"role '{role}' uses backend '{self.name}', but {problem}"
        return None

    # --- one call ---------------------------------------------------------------------------

    def complete(
        self,
        messages: Sequence[Mapping[str, Any]],
        *,
        model: str,
        base_url: str,
        api_key: str | None,
        timeout_s: float,
        cancel: threading.Event | None,
        on_delta: Callable[[str], None] | None,
        max_tokens: int | None = None,
        wall_timeout_s: float | None = None,
    ) -> ChatOutcome:
        """One streamed chat completion through this backend's transport: :func:`backends.openai_call.complete`."""
        return complete(
            messages,
            model=model,
            base_url=base_url,
            api_key=api_key,
            timeout_s=timeout_s,
            cancel=cancel,
            on_delta=on_delta,
            max_tokens=max_tokens,
            wall_timeout_s=wall_timeout_s,
            transport=self._transport,
        )

    # --- the Backend contract -------------------------------------------------------------------

    def run(self, order: WorkOrder, hooks: WorkerHooks, cancel: threading.Event) -> AttemptResult:
        started = time.monotonic()
        failed = functools.partial(failed_attempt, started)

        try:
            prompt = Path(order.prompt_file).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as error:
            return failed("spawn_failed", f"cannot read the prompt file {order.prompt_file}: {error}")
        routing: RoutingServices | None = getattr(hooks, "routing", None)  # the Router and KeyPool choose
        model, user_base = self.role_endpoint(order.model, order.base_url)
        plan: Direct | Routed
        if routing is not None:
            planned = plan_calls(order.role, model, user_base, routing.model_spec, True, self.name)
            if isinstance(planned, str):
                return failed("spawn_failed", f"the openai backend cannot start: {planned}")
            plan = planned
        else:
            if not model:
                return failed(
                    "spawn_failed", f"the openai backend needs a model: set `model:` in the role-spec (or {MODEL_ENV})"
                )
            problem = self.config_problem(user_base)
            if problem is not None:
                return failed("spawn_failed", f"the openai backend cannot start: {problem}")
            base = user_base or self.endpoint_config()[0]
            if base is None:  # config_problem() said there is one; this keeps the type checker sure
                return failed("spawn_failed", f"the openai backend cannot start: set {BASE_URL_ENV}")
            plan = Direct(model=model, base_url=base)
        api_key = self.endpoint_config()[1]
        artifact = expected_artifact_in(prompt, order)
        messages = [
            {"role": "system", "content": system_message(artifact)},
            {"role": "user", "content": prompt},
        ]
        log = self._open_log(order)
        try:
            if log is not None and isinstance(plan, Direct):
                log.write(
                    f"openai: POST {safe_url(chat_endpoint(plan.base_url))} model={plan.model} "
                    f"key={key_hint(api_key)} prompt={len(prompt)} chars; writing {artifact}\n"
                )
                log.flush()
            shown = plan.model if isinstance(plan, Direct) else plan.force_model or "the routed model"
            progress = Progress(hooks, log, shown, self.progress_interval_s)
            if isinstance(plan, Routed) and routing is not None:
                outcome = self._complete_routed(
                    order, routing, messages, cancel, progress, log, plan.force_model, user_base
                )
            else:
                assert isinstance(plan, Direct)  # noqa: S101 - a Routed plan is made only with routing
                outcome = self.complete(
                    messages,
                    model=plan.model,
                    base_url=plan.base_url,
                    api_key=api_key,
                    timeout_s=order.hang_timeout_s or DEFAULT_NO_OUTPUT_TIMEOUT_S,
                    wall_timeout_s=order.timeout_s,
                    cancel=cancel,
                    on_delta=progress,
                )
            if log is not None:
                log.write(
                    f"\nopenai: {'ok' if outcome.ok else outcome.error_kind} "
                    f"(HTTP {outcome.http_status}, finish {outcome.finish_reason}, "
                    f"tokens {outcome.tokens_in}/{outcome.tokens_out}, {outcome.duration_s:.1f}s)"
                    + (f": {outcome.error}" if outcome.error else "")
                    + "\n"
                )
        finally:
            if log is not None:
                log.close()
        return self._result(order, outcome, artifact, started)

    def _complete_routed(
        self,
        order: WorkOrder,
        routing: RoutingServices,
        messages: list[dict[str, str]],
        cancel: threading.Event,
        progress: Callable[[str], None],
        log: TextIO | None,
        force_model: str | None,
        user_base: str | None,
    ) -> ChatOutcome:
        """One attempt that may move across keys and models (the Router and the KeyPool decide).

        A 429 reports the key (it cools down) and takes the next one at once; when every
        key is cooling it waits for the first to recover.  Any other failure asks the
        Router for the next model (503 down the chain, network with backoff, a larger
        window for context_too_long); with no next model the failure is the result.
        Only models this backend runs are chosen, and a call goes only to the endpoint
        :func:`session.routing_chain.key_endpoint` allows for the model's key.
        """
        fallback_key = self.endpoint_config()[1]
        choice = routing.select_model(order.task_id, order.complexity, force_model, self.name)
        if isinstance(choice, NoModel):
            return ChatOutcome(
                text="", error_kind="crash", error=f"no model to run: {choice.reason}", model=force_model
            )
        model, provider = choice.model, choice.provider
        deadline = time.monotonic() + (order.timeout_s or 3600.0)
        outcome = ChatOutcome(text="", error_kind="crash", error="no call was made", model=model)
        for _ in range(_MAX_ROUTING_STEPS):
            if cancel.is_set() or time.monotonic() >= deadline:
                break
            note = functools.partial(_note, log)
            lease = lease_when_cool(routing, provider, cancel, deadline, note)
            if isinstance(lease, KeyWait):
                break
            entry = routing.model_spec(model)
            base_url = key_endpoint(entry, user_base) if entry is not None else None
            if base_url is None:  # the registry has no endpoint the user configured for this model's key
                return ChatOutcome(
                    text="",
                    error_kind="crash",
                    error=f"{model} has no endpoint its {provider} key may be sent to: give its [[models]] "
                    "entry a base_url",
                    model=model,
                )
            # OPENAI_API_KEY is OpenAI's key, or the key of the server the user named in OPENAI_BASE_URL:
            # it goes nowhere else.
            spare = fallback_key if provider == "openai" or base_url == user_base else None
            # Every pooled key is disabled, or the provider refused the call without one (the
            # environment's key is no stand-in): ask the user for a key and wait for it.  With no key
            # configured and no refusal the call goes out without one (a local server may need none).
            if isinstance(lease, KeyUnavailable) and (outcome.error_kind == "auth" or lease.disabled):
                found = wait_for_added_key(order.task_id, provider, lease, routing, cancel, deadline, note)
                if isinstance(found, str):  # the user answered `fail`
                    return ChatOutcome(text="", error_kind="auth", error=found)
                if found is None:
                    break
                lease = found
            secret = getattr(lease, "secret_ref", None)
            key_id = getattr(lease, "key_id", None) if secret is not None else None
            api_key = secret.reveal() if secret is not None else spare
            _note(log, f"calling {model} at {safe_url(base_url)} with key {key_hint(api_key)}")
            outcome = self.complete(
                messages,
                model=model,
                base_url=base_url,
                api_key=api_key,
                timeout_s=order.hang_timeout_s or DEFAULT_NO_OUTPUT_TIMEOUT_S,
                wall_timeout_s=max(1.0, deadline - time.monotonic()),
                cancel=cancel,
                on_delta=progress,
            )
            if key_id is not None:
                cost = estimate_cost(model, outcome.tokens_in or 0, outcome.tokens_out or 0, outcome.tokens_cached or 0)
                routing.report_key(
                    key_id,
                    outcome.error_kind,
                    outcome.retry_after_s,
                    outcome.tokens_in or 0,
                    outcome.tokens_out or 0,
                    cost or 0.0,
                    redact(outcome.error or "", api_key) or None,
                )
            _note(log, f"{model}: {'ok' if outcome.ok else outcome.error_kind}")
            if key_id is not None:
                outcome = msgspec.structs.replace(outcome, key_id=key_id)
            if outcome.ok or outcome.error_kind == "interrupted":
                return outcome
            if outcome.error_kind in ("rate_limited", "auth") and key_id is not None:
                continue  # the key cools down or is disabled; the pool hands out the next one (or says to wait)
            if outcome.error_kind == "auth" and api_key is None:
                continue  # refused for want of a key: the pool has none, so the next turn asks for one
            following = routing.next_model(order.task_id, model, outcome.error_kind or "crash")
            if isinstance(following, NoModel):
                return outcome
            if following.delay_s and cancel.wait(following.delay_s):
                break
            model, provider = following.model, following.provider
        if cancel.is_set():
            return ChatOutcome(text="", error_kind="interrupted", error="stopped by the executor", model=model)
        return outcome

    @staticmethod
    def _open_log(order: WorkOrder) -> TextIO | None:
        try:
            path = Path(order.log_path)
            path.parent.mkdir(parents=True, exist_ok=True)
            # Redacted a line at a time: the reply streams in pieces, and a key may be cut between two.
            return cast(TextIO, RedactingWriter(path.open("a", encoding="utf-8")))
        except OSError:
            return None

    def _result(self, order: WorkOrder, outcome: ChatOutcome, artifact: str, started: float) -> AttemptResult:
        cost = None
        if outcome.tokens_in is not None or outcome.tokens_out is not None:
            cost = estimate_cost(
                outcome.model or order.model or "",
                outcome.tokens_in or 0,
                outcome.tokens_out or 0,
                outcome.tokens_cached or 0,
            )
        text = redact_text(outcome.text)  # it becomes the artifact, the summary and the output tail
        fields: dict[str, Any] = {
            "tokens_in": outcome.tokens_in,
            "tokens_out": outcome.tokens_out,
            "tokens_cached": outcome.tokens_cached,
            "cost_usd": cost,
            "cost_estimated": cost is not None,
            "model": outcome.model or order.model,
            "key_id": outcome.key_id,
            "output_tail": text[-_OUTPUT_TAIL_CHARS:],
        }
        if not outcome.ok:
            return AttemptResult(
                ok=False,
                error_kind=outcome.error_kind,
                error=outcome.error,
                outcome="failed",
                retry_after_s=outcome.retry_after_s,
                summary=f"{order.model}: {outcome.error_kind}",
                duration_s=round(time.monotonic() - started, 3),
                **fields,
            )
        target = Path(order.session_dir) / artifact
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            if relative_inside(Path(order.session_dir), target) is None:  # a link planted to lead out
                raise OSError(f"{artifact} leads outside the session folder")
            target.write_text(text if text.endswith("\n") else text + "\n", encoding="utf-8")
        except OSError as error:
            return AttemptResult(
                ok=False,
                error_kind="crash",
                error=f"cannot write the artifact {artifact}: {error.strerror or error}",
                outcome="failed",
                duration_s=round(time.monotonic() - started, 3),
                **fields,
            )
        report = report_line(text, order.task_id)
        first = next((line.strip() for line in text.splitlines() if line.strip()), "")
        summary = (report[0] if report else first)[:_SUMMARY_CHARS]
        detail = ""
        if outcome.finish_reason == "length":
            detail = "the answer was cut at the model's output limit (finish_reason length)"
        duration = round(time.monotonic() - started, 3)
        if report is not None and report[1]:
            return AttemptResult(
                ok=False,
                error_kind="crash",
                error=summary,
                outcome="failed",
                summary=summary,
                artifacts=(artifact,),
                detail=detail,
                duration_s=duration,
                **fields,
            )
        return AttemptResult(
            ok=True, summary=summary, artifacts=(artifact,), detail=detail, duration_s=duration, **fields
        )
