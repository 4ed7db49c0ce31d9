"""Qwen Code, headless: ``qwen QUERY -o stream-json``.

Checked against qwen-code 0.24.4 (``qwen --help`` and runs against a local
fake Anthropic server).  Qwen Code started as a fork of Gemini CLI, but its
headless output no longer follows Gemini's: ``-o stream-json`` prints Claude
Code's shapes — ``system``/``init`` (``session_id``, ``model``, the tools
offered, ``permission_mode``), ``assistant`` messages (text and ``tool_use``
blocks), ``user`` tool results, and a final ``result`` (``subtype``,
``is_error``, ``result``, ``num_turns``, ``usage`` whose ``input_tokens``
already include the cached ones, ``permission_denials``, and on failure
``error{message}`` such as ``[API Error: 429 {...}]``).  So this module parses
that and does not subclass :class:`~backends.gemini.GeminiBackend`; it keeps
Gemini's exit codes (53 = the turn limit, printed on stderr with no
``result`` line; 41 auth; 55 a run budget).  No cost is reported (it is
estimated from the price table).

- Prompt: stdin, with the positional query appended after it (``-p`` still
  works but is deprecated in this version).
- Auth: ``--auth-type`` picks the protocol; we choose it from the key that is
  set (and the model's name when several are): ``openai`` (an
  OpenAI-compatible endpoint: ``OPENAI_API_KEY`` + ``OPENAI_BASE_URL``; a
  ``DASHSCOPE_API_KEY`` is passed as ``OPENAI_API_KEY`` with DashScope's
  compatible-mode URL), ``anthropic`` (``ANTHROPIC_API_KEY``; this version
  refuses to start without ``ANTHROPIC_BASE_URL``, so the public one is set
  when none is given) or ``gemini`` (``GEMINI_API_KEY``).  Only that one key
  is passed.  An isolated HOME gets ``~/.qwen/settings.json`` with the auth
  type, telemetry and auto-update off; usage statistics are switched off by
  ``QWEN_USAGE_STATISTICS_ENABLED=false`` either way.  Note that Qwen Code
  (like Gemini CLI) also loads a ``.env`` file found from the working folder
  upwards.
- Permissions: ``--approval-mode default`` (headless: tools that would need
  approval — edits, shell — are not offered; a refused call is listed in
  ``permission_denials``), ``auto-edit`` plus ``--allowed-tools
  run_shell_command`` for workspace-write, ``yolo`` for full.
- While it retries an API error (429, 5xx: a few quick attempts, then up to 10
  more 60 s apart and longer) it prints ``system``/``retry`` events; they
  become progress notes.
- Turns: ``--max-session-turns``.  Resume: ``--resume ID`` (the session is
  recorded under ``~/.qwen``, which an isolated HOME keeps across a task's
  attempts).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, ClassVar

from backends.agent_cli import AgentCliBackend
from backends.agent_stream import StreamState, classify_status, json_object, read_assistant_turn, retry_after_in
from backends.base import WorkerHooks
from backends.process_types import ProcessOutcome
from protocol.messages import WorkOrder
from protocol.types import ErrorKind

__all__ = ["DASHSCOPE_BASE_URL", "QwenBackend"]

DASHSCOPE_BASE_URL = "https://dashscope.aliyuncs.com/compatible-mode/v1"
_ANTHROPIC_BASE_URL = "https://api.anthropic.com"
_APPROVAL = {"read-only": "default", "workspace-write": "auto-edit", "full": "yolo"}
_EXIT_KINDS: dict[int, ErrorKind] = {41: "auth", 53: "max_turns"}
#: Auth type -> (the key variables it accepts, in order; the base-URL and model variables that go with it).
_AUTH: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "openai": (("OPENAI_API_KEY", "DASHSCOPE_API_KEY"), ("OPENAI_BASE_URL", "OPENAI_MODEL", "QWEN_MODEL")),
    "anthropic": (("ANTHROPIC_API_KEY",), ("ANTHROPIC_BASE_URL", "ANTHROPIC_MODEL")),
    "gemini": (("GEMINI_API_KEY",), ("GOOGLE_GEMINI_BASE_URL", "GEMINI_MODEL")),
}
_HTTP = re.compile(r"\b(4\d\d|5\d\d)\b")


def _status_of(message: str) -> int | None:
    match = _HTTP.search(message)
    return int(match.group(1)) if match else None


def _kind_of(message: str, status: int | None = None) -> ErrorKind:
    status = status if status is not None else _status_of(message)
    lowered = message.lower()
    kind = classify_status(status, message)
    if kind == "crash" and ("auth type" in lowered or "api key" in lowered or "auth" in lowered.split()):
        return "auth"
    return kind


class QwenBackend(AgentCliBackend):
    name: ClassVar[str] = "qwen"
    stdout_line_prefix: ClassVar[bytes | None] = b"{"  # its events are JSON lines
    program: ClassVar[str] = "qwen"
    install_hint: ClassVar[str] = "npm install -g @qwen-code/qwen-code"
    key_variables: ClassVar[tuple[str, ...]] = (
        "OPENAI_API_KEY",
        "DASHSCOPE_API_KEY",
        "ANTHROPIC_API_KEY",
        "GEMINI_API_KEY",
    )
    passthrough_variables: ClassVar[tuple[str, ...]] = (
        *(name for _, extra in _AUTH.values() for name in extra),
        "HTTPS_PROXY",
        "NO_PROXY",
    )
    credential_files: ClassVar[tuple[str, ...]] = ()  # Qwen OAuth (its only login) ended on 2026-04-15
    probe_flags: ClassVar[tuple[str, ...]] = (
        "--output-format",
        "--model",
        "--approval-mode",
        "--allowed-tools",
        "--auth-type",
        "--max-session-turns",
        "--resume",
    )

    # --- auth -----------------------------------------------------------------------------

    def auth_for(self, model: str | None) -> tuple[str, str] | None:
        """``(auth type, key variable)`` for a run of ``model``, or None without any key."""
        lowered = (model or "").lower().rsplit("/", 1)[-1]
        preferred = "anthropic" if lowered.startswith("claude") else "gemini" if lowered.startswith("gemini") else None
        order = [preferred] if preferred else []
        order += [auth for auth in ("openai", "anthropic", "gemini") if auth != preferred]
        for auth in order:
            for variable in _AUTH[auth][0]:
                if self.environ.get(variable):
                    return auth, variable
        return None

    # --- the command ----------------------------------------------------------------------

    def _argv(self, program: str, order: WorkOrder, prompt: str) -> list[str]:
        argv = [program, "Carry out the task given above.", "--output-format", "stream-json"]
        auth = self.auth_for(order.model)
        if auth:
            argv += ["--auth-type", auth[0]]
        if order.model:
            argv += ["--model", order.model]
        argv += ["--approval-mode", _APPROVAL[order.permission]]
        if order.permission == "workspace-write":
            argv += ["--allowed-tools", "run_shell_command"]
        if order.max_turns:
            argv += ["--max-session-turns", str(order.max_turns)]
        if order.resume_session:
            argv += ["--resume", order.resume_session]
        return argv  # the task prompt goes on stdin, the query above is appended to it

    def _environment(self, order: WorkOrder) -> dict[str, str]:
        env = super()._environment(order)
        auth = self.auth_for(order.model)
        keep: set[str] = set()
        if auth:
            keep = {auth[1], *_AUTH[auth[0]][1]}
        for name in (*self.key_variables, *(n for _, extra in _AUTH.values() for n in extra)):
            if name not in keep:
                env.pop(name, None)
        if auth and auth[1] == "DASHSCOPE_API_KEY":  # DashScope is an OpenAI-compatible endpoint
            env["OPENAI_API_KEY"] = env.pop("DASHSCOPE_API_KEY")
            env.setdefault("OPENAI_BASE_URL", DASHSCOPE_BASE_URL)
        if auth and auth[0] == "anthropic":
            env.setdefault("ANTHROPIC_BASE_URL", _ANTHROPIC_BASE_URL)
        return env

    def _extra_env(self, order: WorkOrder) -> dict[str, str]:
        return {"QWEN_USAGE_STATISTICS_ENABLED": "false", "NO_COLOR": "1"}

    def _prepare_home(self, home: Path, order: WorkOrder) -> None:
        auth = self.auth_for(order.model)
        settings: dict[str, Any] = {
            "telemetry": {"enabled": False},
            "privacy": {"usageStatisticsEnabled": False},
            "general": {"enableAutoUpdate": False},
        }
        if auth:
            settings["security"] = {"auth": {"selectedType": auth[0]}}
        path = home / ".qwen" / "settings.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(settings), encoding="utf-8")

    # --- reading its output ---------------------------------------------------------------

    def _on_line(self, line: bytes, state: StreamState, hooks: WorkerHooks) -> None:
        event = self._json(line)
        if event is None:
            return
        kind = event.get("type")
        if kind == "system" and event.get("subtype") == "init":
            state.session_id = event.get("session_id") or state.session_id
            state.model = event.get("model") or state.model
            hooks.progress(None, f"qwen started ({state.model})")
        elif kind == "system" and event.get("subtype") == "retry":
            data = json_object(event.get("data"))
            if data.get("attempt") is not None:
                delay = data.get("delayMs")
                wait = f", waiting {round(delay / 1000)}s" if isinstance(delay, int | float) else ""
                hooks.progress(None, f"API error: retry {data.get('attempt')} of {data.get('maxRetries')}{wait}")
        elif kind == "assistant":
            read_assistant_turn(event, state, hooks)
        elif kind == "result":
            self._result_event(event, state)

    @staticmethod
    def _result_event(event: dict[str, Any], state: StreamState) -> None:
        state.finished = True
        state.session_id = event.get("session_id") or state.session_id
        if isinstance(event.get("result"), str):
            state.final_text = event["result"]
        usage = json_object(event.get("usage"))
        if usage.get("input_tokens") or usage.get("output_tokens"):
            state.tokens_in = usage.get("input_tokens", state.tokens_in)  # cached tokens included
            state.tokens_out = usage.get("output_tokens", state.tokens_out)
            state.tokens_cached = usage.get("cache_read_input_tokens", state.tokens_cached)
        for denial in event.get("permission_denials") or []:
            state.permission_denials.append(str(denial.get("tool_name") if isinstance(denial, dict) else denial))
        subtype = str(event.get("subtype") or "")
        if subtype == "error_max_turns":
            state.fail("max_turns", f"stopped after {event.get('num_turns')} turns (the role's max_turns)")
        elif event.get("is_error") or subtype.startswith("error"):
            error = event.get("error")
            message = str(error.get("message") if isinstance(error, dict) else error or "") or subtype
            message = message or "qwen reported an error"
            kind = _kind_of(message)
            state.fail(kind, message, retry_after_in(message) if kind == "rate_limited" else None)
            if state.final_text == message or (state.final_text or "").startswith("[API Error"):
                state.final_text = None
            state.texts = [text for text in state.texts if not text.startswith("[API Error")]

    def _finish(self, outcome: ProcessOutcome, state: StreamState) -> None:
        code = outcome.exit_code
        if not code or state.error_kind is not None:
            return
        stderr = outcome.stderr_tail.decode("utf-8", "replace")
        lines = [line.strip() for line in stderr.splitlines() if line.strip()]
        wanted = ("error", "reached", "exceeded", "missing", "invalid", "denied", "auth")
        message = next((line for line in reversed(lines) if any(w in line.lower() for w in wanted)), "")
        message = message or (lines[-1] if lines else f"qwen exited with code {code}")
        kind = _EXIT_KINDS.get(code) or _kind_of(message)
        state.fail(kind, f"qwen exited with code {code}: {message[:500]}")
