"""OpenAI Codex CLI, headless: ``codex exec --json``.

The prompt goes on stdin (``-``).  JSONL events: ``thread.started``
(``thread_id``: the session to resume with ``codex exec resume``),
``turn.started``, ``item.started``/``item.completed`` (agent messages,
command executions, file changes, MCP tool calls), ``turn.completed`` with
usage, and on failure ``error`` then ``turn.failed``.  Codex reports no cost
(it is estimated from the price table), ignores ``OPENAI_BASE_URL`` (a base
URL becomes a custom provider), and can end a failed turn with exit code 0.
"""

from __future__ import annotations

import json
import re
from typing import ClassVar

from backends.agent_cli import AgentCliBackend
from backends.agent_stream import StreamState, classify_status, retry_after_in
from backends.base import WorkerHooks
from backends.conventions import ENV_MCP_TOKEN, dirs_outside_workdir
from backends.process_types import ProcessOutcome
from protocol.messages import WorkOrder

__all__ = ["CodexBackend"]

_SANDBOX = {"read-only": "read-only", "workspace-write": "workspace-write", "full": "danger-full-access"}
_STATUS = re.compile(r"\b(4\d\d|5\d\d)\b")
_USAGE_LIMIT = re.compile(r"usage limit|hit your limit|quota", re.I)
# Items only a model's tool call makes.  An agent message alone is no proof: codex has ended a
# turn with a message, no usage and no request to the model server.
_MODEL_ITEMS = frozenset({"command_execution", "file_change", "mcp_tool_call"})
_DENIED = re.compile(r"read-only file system|operation not permitted|permission denied|sandbox", re.I)


class CodexBackend(AgentCliBackend):
    name: ClassVar[str] = "codex"
    stdout_line_prefix: ClassVar[bytes | None] = b"{"  # its events are JSON lines
    program: ClassVar[str] = "codex"
    install_hint: ClassVar[str] = "npm install -g @openai/codex"
    key_variables: ClassVar[tuple[str, ...]] = ("OPENAI_API_KEY", "CODEX_API_KEY")
    key_provider: ClassVar[str | None] = "openai"
    passthrough_variables: ClassVar[tuple[str, ...]] = ("HTTPS_PROXY", "NO_PROXY")
    credential_files: ClassVar[tuple[str, ...]] = (".codex/auth.json",)
    help_commands: ClassVar[tuple[tuple[str, ...], ...]] = (("exec", "--help"),)
    probe_flags: ClassVar[tuple[str, ...]] = ("--json", "--sandbox", "--skip-git-repo-check", "--model", "--config")
    speaks_mcp: ClassVar[bool] = True
    base_url_variable: ClassVar[str | None] = "OPENAI_BASE_URL"
    default_base_url: ClassVar[str] = "https://api.openai.com/v1"

    def _argv(self, program: str, order: WorkOrder, prompt: str) -> list[str]:
        argv = [program, "exec", "--json", "--skip-git-repo-check", "--sandbox", _SANDBOX[order.permission]]
        if order.model:
            argv += ["--model", order.model]
        base_url = self.environ.get("OPENAI_BASE_URL")
        if base_url:
            key_variable = self.pool_variable()  # a pooled key goes in the same variable
            provider = (
                f'{{name="team-executor",base_url={json.dumps(base_url)},'
                f'env_key="{key_variable}",wire_api="responses",request_max_retries=1,stream_max_retries=1}}'
            )
            argv += ["-c", 'model_provider="team-executor"', "-c", f"model_providers.team-executor={provider}"]
        # Codex would retry a failing request several times on its own; the executor's
        # retry and routing decide instead, with the error kind in hand.
        if order.bridge:
            argv += ["-c", self._bridge_table(order.bridge.server_name, order.bridge.url)]
        if order.permission != "read-only":  # read-only reads everywhere; writes need a writable root
            for folder in dirs_outside_workdir(order):
                argv += ["--add-dir", folder]
        if order.resume_session:
            argv += ["resume", order.resume_session]
        argv.append("-")  # the prompt is on stdin
        return argv

    @staticmethod
    def _bridge_table(name: str, url: str) -> str:
        """``mcp_servers.<name>={...}``: a streamable-HTTP server.  Codex sends the bearer token it
        finds in the variable every worker with a bridge gets (``order_env``), so the token stays
        out of argv; the tools are approved up front (under `codex exec` a tool that would need
        an approval is refused)."""
        fields = {
            "url": json.dumps(url),
            "bearer_token_env_var": json.dumps(ENV_MCP_TOKEN),
            "default_tools_approval_mode": '"approve"',
        }
        return f"mcp_servers.{name}={{" + ",".join(f"{key}={value}" for key, value in fields.items()) + "}"

    def _on_line(self, line: bytes, state: StreamState, hooks: WorkerHooks) -> None:
        event = self._json(line)
        if event is None:
            return
        kind = event.get("type")
        if kind == "thread.started":
            state.session_id = event.get("thread_id") or state.session_id
            hooks.progress(None, "codex started")
        elif kind == "turn.started":
            state.turns += 1
        elif kind in ("item.started", "item.completed"):
            item = event.get("item") or {}
            item_type = item.get("type") or item.get("item_type")
            if item_type in _MODEL_ITEMS:
                state.traffic = True
            if kind == "item.completed" and item_type in ("agent_message", "assistant_message") and item.get("text"):
                state.texts.append(item["text"])
                state.final_text = item["text"]
            elif kind == "item.started" and item_type == "command_execution":
                hooks.progress(None, f"running: {str(item.get('command', ''))[:120]}")
            elif (
                kind == "item.completed"
                and item_type == "command_execution"
                and (
                    item.get("status") == "declined"
                    or (
                        item.get("exit_code") not in (0, None)
                        and _DENIED.search(str(item.get("aggregated_output", "")))
                    )
                )
            ):
                state.permission_denials.append(f"command {str(item.get('command', ''))[:80]!r}")
            elif kind == "item.completed" and item_type == "file_change":
                changes = ", ".join(str(c.get("path")) for c in item.get("changes") or [])
                hooks.progress(None, f"changed {changes}"[:200])
        elif kind == "turn.completed":
            state.finished = True
            usage = event.get("usage") or {}
            state.add_usage(usage.get("input_tokens"), usage.get("output_tokens"), usage.get("cached_input_tokens"))
        elif kind == "error":
            # Not final on its own ("Reconnecting... 1/5"): turn.failed or a non-zero exit decides.
            state.tools["last_error"] = str(event.get("message") or "codex reported an error")
        elif kind == "turn.failed":
            error = event.get("error") or {}
            self._failed(str(error.get("message") or state.tools.get("last_error") or "the turn failed"), state)

    @staticmethod
    def _failed(message: str, state: StreamState) -> None:
        status_match = _STATUS.search(message)
        status = int(status_match.group(1)) if status_match else None
        kind = "rate_limited" if _USAGE_LIMIT.search(message) else classify_status(status, message)
        state.fail(kind, message)

    def _finish(self, outcome: ProcessOutcome, state: StreamState) -> None:
        stderr = outcome.stderr_tail.decode("utf-8", "replace")
        for line in stderr.splitlines():
            # A write the sandbox refused shows only here, and the exit code stays 0.
            if "patch rejected" in line or ("sandbox" in line.lower() and "denied" in line.lower()):
                state.permission_denials.append(line.strip()[-160:])
        text = state.final_text or ""
        if state.error_kind is None and _USAGE_LIMIT.search(text) and len(text) < 500:
            state.fail("rate_limited", f"codex hit a usage limit: {text.strip()}", retry_after_in(text))
        if outcome.exit_code and state.error_kind is None:
            tail = [line for line in stderr.strip().splitlines() if "Reading additional input" not in line]
            message = state.tools.get("last_error") or (
                tail[-1] if tail else f"codex exited with code {outcome.exit_code}"
            )
            self._failed(message, state)
