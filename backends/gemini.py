"""Gemini CLI, headless: ``gemini -p ... -o stream-json``.

The task prompt goes on stdin (``-p`` is appended to it).  Events: ``init``
(session id, model), ``message`` (text, streamed as deltas), ``tool_use`` /
``tool_result``, ``error`` and a final ``result`` with ``stats``.  The CLI
needs an auth type in its settings and a trusted folder; with an isolated
HOME we write both.  Its exit code is meaningful (41 auth, 53 turn limit,
55 untrusted folder, an HTTP status mod 256 for API errors); it reports no
cost (estimated from the price table).  Resuming takes a per-project index,
not an id, so a retry starts a new Gemini session.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import ClassVar

from backends.agent_cli import AgentCliBackend, StreamState, classify_status
from backends.base import WorkerHooks
from backends.process import ProcessOutcome
from protocol.messages import WorkOrder
from protocol.types import ErrorKind

__all__ = ["DEFAULT_GEMINI_MODEL", "GeminiBackend"]

DEFAULT_GEMINI_MODEL = "gemini-2.5-pro"  # without -m the CLI first asks a routing model
_APPROVAL = {"read-only": "default", "workspace-write": "auto_edit", "full": "yolo"}
_EXIT_KINDS: dict[int, ErrorKind] = {41: "auth", 53: "max_turns", 54: "crash", 55: "permission_denied"}
_SETTINGS = {
    "security": {"auth": {"selectedType": "gemini-api-key"}},
    "general": {"maxAttempts": 2},  # the executor retries and reroutes with the error kind in hand
    "telemetry": {"enabled": False},
    "privacy": {"usageStatisticsEnabled": False},
}
_HTTP = re.compile(r"\b(4\d\d|5\d\d)\b")
_REFUSED_TOOL_ERRORS = frozenset({"tool_not_registered", "permission_denied", "tool_permission_denied"})


class GeminiBackend(AgentCliBackend):
    name: ClassVar[str] = "gemini"
    program: ClassVar[str] = "gemini"
    install_hint: ClassVar[str] = "npm install -g @google/gemini-cli"
    key_variables: ClassVar[tuple[str, ...]] = ("GEMINI_API_KEY", "GOOGLE_API_KEY")
    passthrough_variables: ClassVar[tuple[str, ...]] = ("GOOGLE_GEMINI_BASE_URL", "HTTPS_PROXY", "NO_PROXY")
    credential_files: ClassVar[tuple[str, ...]] = (".gemini/oauth_creds.json",)
    probe_flags: ClassVar[tuple[str, ...]] = (
        "--prompt",
        "--output-format",
        "--model",
        "--approval-mode",
        "--skip-trust",
    )

    def _argv(self, program: str, order: WorkOrder, prompt: str) -> list[str]:
        return [
            program,
            "-p",
            "Carry out the task given above.",
            "-o",
            "stream-json",
            "-m",
            order.model or DEFAULT_GEMINI_MODEL,
            "--approval-mode",
            _APPROVAL[order.permission],
            "--skip-trust",
        ]

    def _extra_env(self, order: WorkOrder) -> dict[str, str]:
        return {"GEMINI_CLI_TRUST_WORKSPACE": "true", "NO_COLOR": "1"}

    def _prepare_home(self, home: Path, order: WorkOrder) -> None:
        settings = home / ".gemini" / "settings.json"
        settings.parent.mkdir(parents=True, exist_ok=True)
        settings.write_text(json.dumps(_SETTINGS), encoding="utf-8")

    def _on_line(self, line: bytes, state: StreamState, hooks: WorkerHooks) -> None:
        event = self._json(line)
        if event is None:
            return
        kind = event.get("type")
        if kind == "init":
            state.session_id = event.get("session_id") or state.session_id
            state.model = event.get("model") or state.model
            hooks.progress(None, "gemini started")
        elif kind == "message" and event.get("role") == "assistant":
            content = event.get("content")
            if isinstance(content, str):
                state.texts.append(content)
        elif kind == "tool_use":
            state.turns += 1
            name = str(event.get("tool_name") or event.get("name") or "tool")
            state.tools[str(event.get("tool_id"))] = name
            hooks.progress(None, f"tool: {name}")
        elif kind == "tool_result" and event.get("status") == "error":
            error = event.get("error") or {}
            if isinstance(error, dict) and error.get("type") in _REFUSED_TOOL_ERRORS:
                # The approval mode left the tool out (or refused it): the work was not done.
                state.permission_denials.append(state.tools.get(str(event.get("tool_id")), "a tool"))
        elif kind == "error":
            message = str(event.get("message") or event.get("error") or "gemini reported an error")
            match = _HTTP.search(message)
            state.fail(classify_status(int(match.group(1)) if match else None, message), message)
        elif kind == "result":
            state.finished = True
            if event.get("status") not in (None, "success"):
                error = event.get("error") or {}
                message = str(error.get("message") if isinstance(error, dict) else error) or "the run failed"
                state.fail(classify_status(None, message), message)
            stats = event.get("stats") or {}
            state.add_usage(stats.get("input_tokens"), stats.get("output_tokens"), stats.get("cached"))

    def _finish(self, outcome: ProcessOutcome, state: StreamState) -> None:
        code = outcome.exit_code
        if not code or state.error_kind is not None:
            return
        stderr = outcome.stderr_tail.decode("utf-8", "replace")
        match = _HTTP.search(stderr)
        if code in _EXIT_KINDS:
            kind = _EXIT_KINDS[code]
        elif match:
            kind = classify_status(int(match.group(1)), stderr)
        else:
            kind = classify_status(None, stderr)
        lines = [line for line in stderr.strip().splitlines() if line.strip()]
        message = next((line for line in lines if "rror" in line), lines[-1] if lines else "")
        state.fail(kind, f"gemini exited with code {code}: {message.strip()[:500]}")
