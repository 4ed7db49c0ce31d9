"""Gemini CLI, headless: ``gemini -p ... -o stream-json``.

The task prompt goes on stdin (``-p`` is appended to it).  Events: ``init``
(session id, model), ``message`` (text, streamed as deltas), ``tool_use`` /
``tool_result``, ``error`` and a final ``result`` with ``stats``.  The CLI
needs an auth type in its settings and a trusted folder: with an isolated
HOME we write both; otherwise, when the user's settings name no auth type (a
machine where Gemini never ran interactively) and a key is set, the attempt
gets its own ``GEMINI_CLI_HOME`` whose settings add the API-key auth type and
turn telemetry off (see :meth:`GeminiBackend._own_home`).  Its exit code is meaningful (41 auth, 53 turn limit,
55 untrusted folder, an HTTP status mod 256 for API errors); it reports no
cost (estimated from the price table).  Resuming takes a per-project index,
not an id, so a retry starts a new Gemini session.
"""

from __future__ import annotations

import json
import re
import shutil
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

from backends.agent_bridge import bridge_path, forget_bridge, write_private
from backends.agent_cli import AgentCliBackend
from backends.agent_stream import StreamState, classify_status, json_object
from backends.base import WorkerHooks
from backends.conventions import dirs_outside_workdir
from backends.denies import gemini_deny_policy
from backends.process_types import ProcessOutcome
from protocol.messages import AttemptResult, BridgeEndpoint, WorkOrder
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
# A JSON string (kept) or a // or /* */ comment (dropped): Gemini's settings files may hold comments.
_STRING_OR_COMMENT = re.compile(r'"(?:\\.|[^"\\])*"|//[^\n]*|/\*.*?\*/', re.DOTALL)
_REFUSED_TOOL_ERRORS = frozenset({"tool_not_registered", "permission_denied", "tool_permission_denied"})


def _read_settings(path: Path) -> dict[str, Any]:
    """A Gemini settings file as a dict; {} when it is missing or not a JSON object (then the
    attempt runs without the user's settings, where Gemini itself would refuse to start)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError:
        return {}
    text = _STRING_OR_COMMENT.sub(lambda match: match[0] if match[0].startswith('"') else "", text)
    try:
        value = json.loads(text)
    except ValueError:
        return {}
    return json_object(value)


def _has_auth_type(settings: dict[str, Any]) -> bool:
    """Whether the settings choose how Gemini signs in (``security.auth.selectedType``, or
    the older top-level ``selectedAuthType``)."""
    security = settings.get("security")
    auth = security.get("auth") if isinstance(security, dict) else None
    return bool((isinstance(auth, dict) and auth.get("selectedType")) or settings.get("selectedAuthType"))


def _with_headless_defaults(settings: dict[str, Any]) -> dict[str, Any]:
    """``settings`` plus what a headless run with an API key needs and the user left unset:
    the ``gemini-api-key`` auth type (else exit 41, "Invalid auth method selected"), and
    telemetry and usage statistics off.  What the user did set is kept."""
    merged = dict(settings)
    if not _has_auth_type(settings):
        security = dict(settings["security"]) if isinstance(settings.get("security"), dict) else {}
        auth = dict(security["auth"]) if isinstance(security.get("auth"), dict) else {}
        merged["security"] = {**security, "auth": {**auth, "selectedType": "gemini-api-key"}}
    merged.setdefault("telemetry", {"enabled": False})
    merged.setdefault("privacy", {"usageStatisticsEnabled": False})
    return merged


def _with_bridge(settings: dict[str, Any], bridge: BridgeEndpoint) -> dict[str, Any]:
    """``settings`` plus the bridge as a streamable-HTTP MCP server.

    ``trust`` lets its tools run without a confirmation, which in a headless run is the only
    way they run at all.  A user's allow-list of servers would leave it out: it joins the list.
    """
    name = bridge.server_name
    server = {"type": "http", "url": bridge.url, "headers": {"Authorization": f"Bearer {bridge.token}"}, "trust": True}
    servers = json_object(settings.get("mcpServers"))
    merged = {**settings, "mcpServers": {**servers, name: server}}
    mcp = settings.get("mcp")
    if isinstance(mcp, dict):
        mcp = dict(mcp)
        if isinstance(mcp.get("allowed"), list):
            mcp["allowed"] = [*mcp["allowed"], name]
        if isinstance(mcp.get("excluded"), list):
            mcp["excluded"] = [item for item in mcp["excluded"] if item != name]
        merged["mcp"] = mcp
    return merged


class GeminiBackend(AgentCliBackend):
    name: ClassVar[str] = "gemini"
    stdout_line_prefix: ClassVar[bytes | None] = b"{"  # its events are JSON lines
    program: ClassVar[str] = "gemini"
    install_hint: ClassVar[str] = "npm install -g @google/gemini-cli"
    key_variables: ClassVar[tuple[str, ...]] = ("GEMINI_API_KEY", "GOOGLE_API_KEY")
    key_provider: ClassVar[str | None] = "google"
    passthrough_variables: ClassVar[tuple[str, ...]] = ("GOOGLE_GEMINI_BASE_URL", "HTTPS_PROXY", "NO_PROXY")
    credential_files: ClassVar[tuple[str, ...]] = (".gemini/oauth_creds.json",)
    probe_flags: ClassVar[tuple[str, ...]] = (
        "--prompt",
        "--output-format",
        "--model",
        "--approval-mode",
        "--skip-trust",
        "--policy",
    )
    speaks_mcp: ClassVar[bool] = True
    base_url_variable: ClassVar[str | None] = "GOOGLE_GEMINI_BASE_URL"
    default_base_url: ClassVar[str] = "https://generativelanguage.googleapis.com"

    def _argv(self, program: str, order: WorkOrder, prompt: str) -> list[str]:
        # The same text for every attempt of the session: written once, kept (it holds no secret).
        policy = Path(order.session_dir) / ".executor" / "agent-policies" / "gemini-deny.toml"
        policy.parent.mkdir(parents=True, exist_ok=True)
        text = gemini_deny_policy(order)
        if not policy.is_file() or policy.read_text(encoding="utf-8") != text:
            policy.write_text(text, encoding="utf-8")
        extra = [arg for folder in dirs_outside_workdir(order) for arg in ("--include-directories", folder)]
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
            "--policy",
            str(policy),
            *extra,
        ]

    def _extra_env(self, order: WorkOrder) -> dict[str, str]:
        env = {"GEMINI_CLI_TRUST_WORKSPACE": "true", "NO_COLOR": "1"}
        if order.bridge:
            env["GEMINI_CLI_HOME"] = str(bridge_path(order, ".gemini-home"))  # see _prepare_bridge
        return env

    def _environment(self, order: WorkOrder) -> dict[str, str]:
        env = super()._environment(order)
        has_key = any(env.get(name) for name in self.key_variables)
        if not order.isolate_home and not (order.bridge and self.speaks_mcp) and has_key:
            real = Path(env.get("HOME") or "~").expanduser() / ".gemini" / "settings.json"
            if not _has_auth_type(_read_settings(real)):
                env["GEMINI_CLI_HOME"] = str(self._own_home(order, env, None))
        return env

    def run(self, order: WorkOrder, hooks: WorkerHooks, cancel: threading.Event) -> AttemptResult:
        try:
            return super().run(order, hooks, cancel)
        finally:
            forget_bridge(order)  # this attempt's own GEMINI_CLI_HOME, when it had one

    def _own_home(self, order: WorkOrder, env: Mapping[str, str], bridge: BridgeEndpoint | None) -> Path:
        """This attempt's own ``GEMINI_CLI_HOME``: the agent's ``~/.gemini`` seen through symlinks,
        except a settings.json (0600) made of the agent's own settings plus the headless defaults
        (:func:`_with_headless_defaults`) and the bridge, when there is one."""
        real_home = Path(env.get("HOME") or "~").expanduser()
        real = real_home / ".gemini"
        home = bridge_path(order, ".gemini-home")
        shutil.rmtree(home, ignore_errors=True)  # left over by an attempt that crashed
        (home / ".gemini").mkdir(mode=0o700, parents=True)
        for entry in sorted(real.iterdir()) if real.is_dir() else ():
            if entry.name != "settings.json":  # credentials, history, trusted folders: the real ones
                (home / ".gemini" / entry.name).symlink_to(entry)
        if (real_home / ".env").exists():
            (home / ".env").symlink_to(real_home / ".env")  # Gemini's last place to look for a .env
        has_key = any(env.get(name) for name in self.key_variables)
        settings = _read_settings(real / "settings.json")
        if has_key:
            settings = _with_headless_defaults(settings)
        if bridge is not None:
            settings = _with_bridge(settings, bridge)
        write_private(home / ".gemini" / "settings.json", json.dumps(settings))
        return home

    def _prepare_home(self, home: Path, order: WorkOrder) -> None:
        settings = home / ".gemini" / "settings.json"
        settings.parent.mkdir(parents=True, exist_ok=True)
        settings.write_text(json.dumps(_SETTINGS), encoding="utf-8")

    def _prepare_bridge(self, order: WorkOrder, bridge: BridgeEndpoint, env: Mapping[str, str]) -> None:
        """Give this attempt its own ``GEMINI_CLI_HOME`` whose settings add the bridge (:meth:`_own_home`).

        Gemini reads MCP servers only from settings files, and has no flag for one.  Its system
        settings file (``GEMINI_CLI_SYSTEM_SETTINGS_PATH``) is skipped unless it and every folder
        above it are owned by root; the workspace file is the user's project.  That leaves the
        user file, ``$GEMINI_CLI_HOME/.gemini/settings.json`` when that variable is set.
        """
        self._own_home(order, env, bridge)

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
            state.traffic = True
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
