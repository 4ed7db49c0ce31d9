"""opencode, headless: ``opencode run --format json``.

Checked against opencode 1.18.33 (``opencode run --help`` and runs against a
local fake Anthropic server):

- The prompt goes on stdin: ``opencode run`` reads all of stdin when it is not
  a terminal and appends it to the (here empty) message, so no argument
  carries the task and the 128 KiB limit of one argv string never applies.
- ``--format json`` prints one JSON object a line, each with ``type``,
  ``timestamp``, ``sessionID`` and a ``part``: ``step_start``, ``text`` (a
  finished text part), ``tool_use`` (a tool call that completed or failed),
  ``step_finish`` (``tokens{input, output, reasoning, cache{read, write}}`` —
  input excludes the cache and output excludes reasoning — and ``cost`` in
  USD), and ``error`` (``error{name, data{message, statusCode,
  responseHeaders, ...}}``: ``APIError``, ``ProviderAuthError``,
  ``ContextOverflowError``, ``MessageAbortedError``, ``UnknownError``).  The
  process exits 1 after any session error, even one it recovered from.
- opencode retries 429/5xx itself (5 attempts, honouring ``Retry-After``),
  printing nothing meanwhile; the error comes after the last attempt.
- Permissions: ``OPENCODE_PERMISSION`` (JSON merged over the config's
  ``permission``) sets them per run.  ``deny`` removes the tool from what the
  model is offered; a rule left at ``ask`` is auto-rejected in a
  non-interactive run unless ``--auto`` is given — that ends the turn with
  exit code 0 and a ``tool_use`` error "The user rejected permission ...",
  which we report as a permission denial.
- ``-m`` takes ``provider/model``; a bare model name is given the provider
  its name implies (``claude-*`` → ``anthropic``...).  Only that provider's key
  variables are passed; base URLs (``ANTHROPIC_BASE_URL`` as Claude Code
  reads it, ``OPENAI_BASE_URL``, ``GOOGLE_GEMINI_BASE_URL``) become the
  provider's ``baseURL`` in ``OPENCODE_CONFIG_CONTENT``.
- Turns: there is no flag; the agent's ``steps`` setting (agentic
  iterations before it is told to answer in text only) is set to
  ``max_turns + 1`` and a run that used more than ``max_turns`` steps is
  reported as ``max_turns``.
- Resume: ``--session ID`` (the ``sessionID`` of the events).  Sessions live
  in opencode's database under HOME (``~/.local/share/opencode``), which an
  isolated HOME keeps across a task's attempts; an unknown id makes opencode
  exit 1 with "Session not found".
"""

from __future__ import annotations

import json
import threading
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any, ClassVar

from backends.agent_cli import AgentCliBackend
from backends.agent_stream import StreamState, classify_status, json_object
from backends.base import WorkerHooks
from backends.process_types import ProcessOutcome
from protocol.messages import AttemptResult, WorkOrder
from protocol.types import ErrorKind
from session.retry_after import parse_retry_after
from session.rolespec import RoleSpecFrontmatter

__all__ = ["OpencodeBackend", "opencode_model"]

#: Provider id (the part of ``-m`` before the slash) -> the variables opencode reads its key from.
PROVIDER_KEYS: dict[str, tuple[str, ...]] = {
    "anthropic": ("ANTHROPIC_API_KEY",),
    "openai": ("OPENAI_API_KEY",),
    "google": ("GOOGLE_GENERATIVE_AI_API_KEY", "GEMINI_API_KEY", "GOOGLE_API_KEY"),
    "openrouter": ("OPENROUTER_API_KEY",),
    "groq": ("GROQ_API_KEY",),
    "deepseek": ("DEEPSEEK_API_KEY",),
    "xai": ("XAI_API_KEY",),
    "mistral": ("MISTRAL_API_KEY",),
    "alibaba": ("DASHSCOPE_API_KEY",),
    "moonshotai": ("MOONSHOT_API_KEY",),
    "zai": ("ZHIPU_API_KEY",),
    "opencode": ("OPENCODE_API_KEY",),
}
#: Provider id -> (the variable holding its base URL, the path opencode's SDK expects after it).
_BASE_URLS: dict[str, tuple[str, str]] = {
    "anthropic": ("ANTHROPIC_BASE_URL", "/v1"),
    "openai": ("OPENAI_BASE_URL", ""),
    "google": ("GOOGLE_GEMINI_BASE_URL", "/v1beta"),
}
#: A bare model name's prefix -> the provider it implies.
_MODEL_PROVIDERS: tuple[tuple[str, str], ...] = (
    ("claude", "anthropic"),
    ("gpt-", "openai"),
    ("o1", "openai"),
    ("o3", "openai"),
    ("o4", "openai"),
    ("codex", "openai"),
    ("gemini", "google"),
    ("deepseek", "deepseek"),
    ("grok", "xai"),
    ("mistral", "mistral"),
    ("devstral", "mistral"),
    ("codestral", "mistral"),
    ("qwen", "alibaba"),
    ("kimi", "moonshotai"),
    ("glm", "zai"),
)
#: What the agent may do, as opencode permission rules (``--auto`` is added for "full").
_PERMISSIONS: dict[str, dict[str, str]] = {
    "read-only": {"edit": "deny", "bash": "deny", "webfetch": "deny", "external_directory": "deny"},
    "workspace-write": {"edit": "allow", "bash": "allow", "webfetch": "allow", "external_directory": "deny"},
    "full": {},
}
_REFUSED = ("the user rejected permission", "the user has specified a rule which prevents")


def opencode_model(model: str | None) -> tuple[str | None, str | None]:
    """``(provider, value for -m)`` for a model name; a bare name gets the provider it implies."""
    if not model:
        return None, None
    if "/" in model:
        return model.split("/", 1)[0], model
    lowered = model.lower()
    for prefix, provider in _MODEL_PROVIDERS:
        if lowered.startswith(prefix):
            return provider, f"{provider}/{model}"
    return None, model


def retry_after_header(headers: Any) -> float | None:
    """Seconds to wait from ``retry-after-ms`` / ``retry-after`` (seconds or an HTTP date)."""
    if not isinstance(headers, dict):
        return None
    lowered = {str(name).lower(): str(value) for name, value in headers.items()}
    try:
        if "retry-after-ms" in lowered:
            return max(0.0, float(lowered["retry-after-ms"]) / 1000)
        if "retry-after" in lowered:
            return parse_retry_after(lowered["retry-after"])
    except (TypeError, ValueError, OverflowError):
        return None
    return None


def _error_kind(name: str, status: int | None, message: str) -> ErrorKind:
    if name == "ContextOverflowError":
        return "context_too_long"
    if name == "ProviderAuthError":
        return "auth"
    return classify_status(status, message)


class OpencodeBackend(AgentCliBackend):
    name: ClassVar[str] = "opencode"
    stdout_line_prefix: ClassVar[bytes | None] = b"{"  # its events are JSON lines
    program: ClassVar[str] = "opencode"
    install_hint: ClassVar[str] = "npm install -g opencode-ai"
    key_variables: ClassVar[tuple[str, ...]] = tuple(dict.fromkeys(k for keys in PROVIDER_KEYS.values() for k in keys))
    passthrough_variables: ClassVar[tuple[str, ...]] = (
        "HTTPS_PROXY",
        "NO_PROXY",
        "OPENCODE_DISABLE_MODELS_FETCH",
        "OPENCODE_MODELS_PATH",
    )
    credential_files: ClassVar[tuple[str, ...]] = (".local/share/opencode/auth.json",)
    help_commands: ClassVar[tuple[tuple[str, ...], ...]] = (("run", "--help"),)
    probe_flags: ClassVar[tuple[str, ...]] = ("--format", "--model", "--agent", "--title", "--session", "--auto")

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        super().__init__(environ)
        self._attempt = threading.local()  # the order being run on this worker thread (run() is synchronous)

    # --- preflight ----------------------------------------------------------------------

    def preflight(self, role: str, spec: RoleSpecFrontmatter, pooled_providers: Collection[str] = ()) -> str | None:
        problem = super().preflight(role, spec, pooled_providers)
        if problem is not None:
            return problem
        provider, _ = opencode_model(spec.model)
        keys = PROVIDER_KEYS.get(provider or "")
        if keys and not any(self.environ.get(name) for name in keys) and not self._logged_in():
            return (
                f"role '{role}' uses backend 'opencode' with model '{spec.model}', but no {provider} key "
                f"was found: set {' or '.join(keys)} (or log in with `opencode auth login` once)"
            )
        return None

    def _logged_in(self) -> bool:
        home = Path(self.environ.get("HOME", "~")).expanduser()
        return any((home / relative).exists() for relative in self.credential_files)

    # --- the command ------------------------------------------------------------------

    def _argv(self, program: str, order: WorkOrder, prompt: str) -> list[str]:
        argv = [program, "run", "--format", "json", "--agent", "build"]
        argv += ["--title", f"team-executor {order.task_id} attempt {order.attempt}"]
        _, model = opencode_model(order.model)
        if model:
            argv += ["--model", model]
        if order.resume_session:
            argv += ["--session", order.resume_session]
        if order.permission == "full":
            argv.append("--auto")
        return argv  # the prompt goes on stdin

    def _environment(self, order: WorkOrder) -> dict[str, str]:
        env = super()._environment(order)
        provider, _ = opencode_model(order.model)
        keep = PROVIDER_KEYS.get(provider or "")
        if keep:  # a known provider: its key only
            for name in self.key_variables:
                if name not in keep:
                    env.pop(name, None)
        return env

    def _extra_env(self, order: WorkOrder) -> dict[str, str]:
        config: dict[str, Any] = {"share": "disabled", "autoupdate": False}
        provider, _ = opencode_model(order.model)
        providers: dict[str, Any] = {}
        for name, (variable, suffix) in _BASE_URLS.items():
            url = self.environ.get(variable)
            if url and provider in (None, name):
                url = url.rstrip("/")
                if suffix and not url.endswith(suffix):
                    url += suffix
                providers[name] = {"options": {"baseURL": url}}
        if providers:
            config["provider"] = providers
        if order.max_turns:
            config["agent"] = {"build": {"steps": order.max_turns + 1}}
        env = {
            "OPENCODE_CONFIG_CONTENT": json.dumps(config, separators=(",", ":")),
            "OPENCODE_DISABLE_AUTOUPDATE": "1",
            "NO_COLOR": "1",
        }
        rules = _PERMISSIONS[order.permission]
        if rules:
            env["OPENCODE_PERMISSION"] = json.dumps(rules, separators=(",", ":"))
        return env

    # --- running -------------------------------------------------------------------------

    def run(self, order: WorkOrder, hooks: WorkerHooks, cancel: threading.Event) -> AttemptResult:
        self._attempt.max_turns = order.max_turns
        try:
            return super().run(order, hooks, cancel)
        finally:
            self._attempt.max_turns = None

    def _on_line(self, line: bytes, state: StreamState, hooks: WorkerHooks) -> None:
        event = self._json(line)
        if event is None:
            return
        kind = event.get("type")
        if isinstance(event.get("sessionID"), str):
            state.session_id = state.session_id or event["sessionID"]
        part = json_object(event.get("part"))
        if kind == "step_start":
            state.turns += 1
            if state.turns == 1:
                hooks.progress(None, "opencode started")
        elif kind == "text":
            text = part.get("text")
            if isinstance(text, str) and text.strip() and not part.get("synthetic"):
                state.texts.append(text)
                state.final_text = text
        elif kind == "tool_use":
            self._tool(part, state, hooks)
        elif kind == "step_finish":
            state.finished = True
            self._usage(part, state)
        elif kind == "error":
            self._error(event.get("error"), state)

    @staticmethod
    def _tool(part: dict[str, Any], state: StreamState, hooks: WorkerHooks) -> None:
        tool = str(part.get("tool") or "tool")
        status = json_object(part.get("state"))
        if status.get("status") == "error":
            error = str(status.get("error") or "")
            if error.lower().startswith(_REFUSED):
                state.permission_denials.append(tool)
            hooks.progress(None, f"step {state.turns}: {tool} failed")
        else:
            note = f"step {state.turns}: {tool}"
            title = status.get("title")
            hooks.progress(None, (f"{note} {title}" if title else note)[:200])

    @staticmethod
    def _usage(part: dict[str, Any], state: StreamState) -> None:
        tokens = json_object(part.get("tokens"))
        cache = json_object(tokens.get("cache"))

        def count(value: Any) -> int:
            return value if isinstance(value, int) and not isinstance(value, bool) else 0

        read, write = count(cache.get("read")), count(cache.get("write"))
        if tokens:
            sent = count(tokens.get("input")) + read + write  # opencode's input leaves the cache out
            state.add_usage(sent, count(tokens.get("output")) + count(tokens.get("reasoning")), read)
        cost = part.get("cost")
        if isinstance(cost, int | float) and not isinstance(cost, bool):
            state.cost_usd = (state.cost_usd or 0.0) + float(cost)

    @staticmethod
    def _error(error: Any, state: StreamState) -> None:
        if not isinstance(error, dict):
            state.fail("crash", str(error or "opencode reported an error"))
            return
        name = str(error.get("name") or "")
        data = json_object(error.get("data"))
        message = str(data.get("message") or name or "opencode reported an error")
        status = data.get("statusCode")
        status = status if isinstance(status, int) and not isinstance(status, bool) else None
        kind = _error_kind(name, status, message)
        detail = f"{name}: {message}" if name and name not in message else message
        if status is not None:
            detail += f" (API status {status})"
        retry = retry_after_header(data.get("responseHeaders")) if kind == "rate_limited" else None
        state.fail(kind, detail, retry)

    def _finish(self, outcome: ProcessOutcome, state: StreamState) -> None:
        limit = getattr(self._attempt, "max_turns", None)
        if limit and state.turns > limit and state.error_kind is None:
            state.fail("max_turns", f"stopped after {state.turns} steps (the role's max_turns is {limit})")
        if outcome.exit_code and state.error_kind is None:
            tail = [line for line in outcome.stderr_tail.decode("utf-8", "replace").splitlines() if line.strip()]
            message = tail[-1].strip() if tail else f"opencode exited with code {outcome.exit_code}"
            state.fail(classify_status(None, message), message)
