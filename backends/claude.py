"""Claude Code, headless: ``claude -p --output-format stream-json --verbose``.

The prompt goes on stdin.  Stream events: ``system/init`` (session id,
model), ``assistant`` turns (text and tool calls: progress), ``user`` tool
results, and one final ``result`` with ``is_error``, ``api_error_status``,
``subtype`` (``error_max_turns``...), usage, ``total_cost_usd`` and
``permission_denials`` — a tool the agent was refused means the work was not
done, even with exit code 0.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any, ClassVar

from backends.agent_bridge import bridge_path, write_private
from backends.agent_cli import AgentCliBackend
from backends.agent_stream import StreamState, classify_status, read_assistant_turn
from backends.base import WorkerHooks
from backends.conventions import dirs_outside_workdir
from backends.denies import claude_deny_settings
from backends.process_types import ProcessOutcome
from protocol.messages import BridgeEndpoint, WorkOrder

__all__ = ["ClaudeBackend"]

_READ_TOOLS = ("Read", "Glob", "Grep", "LS")
_WRITE_TOOLS = (*_READ_TOOLS, "Write", "Edit", "MultiEdit", "NotebookEdit", "Bash", "TodoWrite")


class ClaudeBackend(AgentCliBackend):
    name: ClassVar[str] = "claude"
    stdout_line_prefix: ClassVar[bytes | None] = b"{"  # its events are JSON lines
    program: ClassVar[str] = "claude"
    install_hint: ClassVar[str] = "npm install -g @anthropic-ai/claude-code"
    key_variables: ClassVar[tuple[str, ...]] = ("ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN")
    key_provider: ClassVar[str | None] = "anthropic"
    passthrough_variables: ClassVar[tuple[str, ...]] = (
        "ANTHROPIC_BASE_URL",
        "CLAUDE_CODE_MAX_RETRIES",
        "API_TIMEOUT_MS",
        "HTTPS_PROXY",
        "NO_PROXY",
    )
    credential_files: ClassVar[tuple[str, ...]] = (".claude/.credentials.json",)
    probe_flags: ClassVar[tuple[str, ...]] = (
        "--print",
        "--output-format",
        "--verbose",
        "--model",
        "--permission-mode",
        "--allowedTools",
        "--resume",
        "--mcp-config",
        "--settings",
    )
    speaks_mcp: ClassVar[bool] = True
    base_url_variable: ClassVar[str | None] = "ANTHROPIC_BASE_URL"
    default_base_url: ClassVar[str] = "https://api.anthropic.com"
    # One retry line more than the retries we allow (CLAUDE_CODE_MAX_RETRIES=2): Claude Code
    # then ends by itself with its own error; with more retries allowed, it is stopped here.
    network_errors_to_stop: ClassVar[int] = 3

    def pool_variable(self) -> str:
        # Pooled keys are API keys (sent as x-api-key); ANTHROPIC_AUTH_TOKEN is a bearer token for a proxy.
        return "ANTHROPIC_API_KEY"

    def _argv(self, program: str, order: WorkOrder, prompt: str) -> list[str]:
        argv = [program, "-p", "--output-format", "stream-json", "--verbose"]
        # Headless, a tool not on the allowed list is refused: the bridge's tools go on it.
        bridge_tools = (f"mcp__{order.bridge.server_name}__*",) if order.bridge else ()
        if order.permission == "full":
            argv.append("--dangerously-skip-permissions")
        elif order.permission == "read-only":
            # acceptEdits would let Write run whatever the allowed list says: read-only needs default.
            argv += ["--permission-mode", "default", f"--allowedTools={','.join((*_READ_TOOLS, *bridge_tools))}"]
        else:
            argv += ["--permission-mode", "acceptEdits", f"--allowedTools={','.join((*_WRITE_TOOLS, *bridge_tools))}"]
        # Deny rules beat every allow and every mode: the executor's private folders stay unread.
        argv.append(f"--settings={claude_deny_settings(order)}")
        # `=`: the option takes several values and would swallow the next argument.
        argv += [f"--add-dir={folder}" for folder in dirs_outside_workdir(order)]
        if order.bridge:
            # A file, not inline JSON: the token must not show in argv.  `=` because the
            # option takes several values and would swallow the next argument.
            argv.append(f"--mcp-config={bridge_path(order, '.json')}")
        if order.model:
            argv += ["--model", order.model]
        if order.max_turns:
            argv += ["--max-turns", str(order.max_turns)]
        if order.resume_session:
            argv += ["--resume", order.resume_session]
        return argv

    def _extra_env(self, order: WorkOrder) -> dict[str, str]:
        env = {"CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1", "DISABLE_AUTOUPDATER": "1"}
        if not self.environ.get("CLAUDE_CODE_MAX_RETRIES"):
            # Left alone, Claude Code retries a 429/529 up to ten times itself; the executor
            # would rather get the error kind soon and move to another key or model.
            env["CLAUDE_CODE_MAX_RETRIES"] = "2"
        if order.permission == "full" and hasattr(os, "geteuid") and os.geteuid() == 0:
            env["IS_SANDBOX"] = "1"  # Claude refuses to skip permissions as root otherwise
        return env

    def _prepare_bridge(self, order: WorkOrder, bridge: BridgeEndpoint, env: Mapping[str, str]) -> None:
        """The ``--mcp-config`` file: the bridge as a streamable-HTTP server, with the token (0600)."""
        server = {
            "type": "http",  # streamable HTTP
            "url": bridge.url,
            "headers": {"Authorization": f"Bearer {bridge.token}"},
            # Loaded up front: otherwise Claude Code hides MCP tools behind its ToolSearch tool.
            "alwaysLoad": True,
        }
        write_private(bridge_path(order, ".json"), json.dumps({"mcpServers": {bridge.server_name: server}}))

    def _on_line(self, line: bytes, state: StreamState, hooks: WorkerHooks) -> None:
        event = self._json(line)
        if event is None:
            return
        kind = event.get("type")
        subtype = event.get("subtype")
        if kind == "system" and subtype == "init":
            state.session_id = event.get("session_id") or state.session_id
            state.model = event.get("model") or state.model
            hooks.progress(None, f"claude started ({state.model})")
        elif kind == "system" and subtype == "api_retry":
            # The only place Claude Code shows how long the API asked it to wait.
            delay_ms = event.get("retry_delay_ms")
            if isinstance(delay_ms, int | float):
                state.retry_after_s = delay_ms / 1000
            if event.get("error_status") is None:  # no HTTP answer at all: the endpoint is not reachable
                state.network_error(
                    f"the API request failed without an HTTP answer (claude's retry {event.get('attempt')} "
                    f"of {event.get('max_retries')}, error {event.get('error')!r})"
                )
            hooks.progress(
                None, f"API said {event.get('error_status')}; claude retries (attempt {event.get('attempt')})"
            )
        elif kind == "assistant":
            read_assistant_turn(event, state, hooks)
        elif kind == "result":
            self._read_result(event, state)

    @staticmethod
    def _read_result(event: dict[str, Any], state: StreamState) -> None:
        state.finished = True
        state.session_id = event.get("session_id") or state.session_id
        if isinstance(event.get("result"), str):
            state.final_text = event["result"]
        usage = event.get("usage") or {}
        cached = (usage.get("cache_read_input_tokens") or 0) + (usage.get("cache_creation_input_tokens") or 0)
        fresh = usage.get("input_tokens") or 0
        state.tokens_in = fresh + cached if (fresh or cached) else state.tokens_in
        state.tokens_out = usage.get("output_tokens", state.tokens_out)
        state.tokens_cached = usage.get("cache_read_input_tokens", state.tokens_cached)
        if isinstance(event.get("total_cost_usd"), int | float):
            state.cost_usd = float(event["total_cost_usd"])
        for model in event.get("modelUsage") or {}:
            state.model = state.model or model
        for denial in event.get("permission_denials") or []:
            state.permission_denials.append(str(denial.get("tool_name") or denial))
        subtype = event.get("subtype") or ""
        if subtype == "error_max_turns":
            state.fail("max_turns", f"stopped after {event.get('num_turns')} turns (the role's max_turns)")
        elif event.get("api_error") == "connection_failed":
            message = str(event.get("result") or "the API connection failed")
            state.network_error(message)
            state.fail("network", message)
        elif event.get("is_error") or subtype.startswith("error"):
            status = event.get("api_error_status")
            message = str(event.get("result") or subtype or "claude reported an error")
            state.fail(
                classify_status(status if isinstance(status, int) else None, message),
                f"{message} (API status {status})" if status else message,
            )

    def _finish(self, outcome: ProcessOutcome, state: StreamState) -> None:
        if outcome.exit_code and state.error_kind is None:
            tail = outcome.stderr_tail.decode("utf-8", "replace").strip().splitlines()
            message = tail[-1] if tail else f"claude exited with code {outcome.exit_code}"
            state.fail(classify_status(None, message), message)
