"""Agent CLIs that speak MCP (claude, codex, gemini) reach the executor's MCP bridge.

A stand-in bridge (an ``MCPServer`` from the SDK with ``report_progress`` and ``report_blocker``,
served over streamable HTTP by uvicorn on 127.0.0.1, behind a middleware that refuses requests
without the bearer token and records every request) takes the place of the executor's; each real
CLI runs through its backend against tests/fake_llm.py, whose first answer calls the bridge tool
with the agent id from the prompt and whose second answer ends the turn.  The bearer token must
never show in an agent's argv (anyone can read argv with `ps`): it travels in the environment or
in a 0600 file that is deleted when the attempt ends.

The real-CLI tests skip, with the reason, when a CLI is not installed.
"""

from __future__ import annotations

import json
import socket
import stat
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import httpx
import msgspec
import pytest
import uvicorn
from mcp.server.mcpserver import MCPServer

from backends import agent_cli
from backends.agent_bridge import bridge_path, forget_bridge
from backends.agent_cli import AGENT_CLIS_ENV, AgentCliBackend
from backends.claude import ClaudeBackend
from backends.codex import CodexBackend
from backends.conventions import ENV_MCP_TOKEN
from backends.gemini import GeminiBackend
from backends.process_types import ProcessSpec
from backends.prompt import bridge_note
from backends.qwen import QwenBackend
from protocol.messages import BridgeEndpoint, WorkOrder
from tests.agent_env import DEFAULT_MODELS, cli_path
from tests.fake_llm import FakeLLM, McpToolCall, Text
from tests.orders import RecordingHooks, make_order

TOKEN = "worker-token-Zq8xK2mVbT4nR7sW1yD5fH9jL3pA6cE0"  # checked for in every argv
AGENT_ID = "worker-1-5f3a9c2e7b1d4086"
TASK = "IMPL-001"
BACKENDS: dict[str, type[AgentCliBackend]] = {"claude": ClaudeBackend, "codex": CodexBackend, "gemini": GeminiBackend}


# --------------------------------------------------------------------------- the stand-in bridge


@dataclass
class BridgeRequest:
    """One HTTP request the bridge received; ``rpc`` is its JSON-RPC method (None for GET/DELETE)."""

    http_method: str
    rpc: str | None
    authorized: bool
    params: dict[str, Any]


class _Recorder:
    """ASGI middleware: record each request, and refuse (401) the ones without ``Bearer <token>``."""

    def __init__(self, app: Any, token: str) -> None:
        self.app = app
        self.token = token
        self.requests: list[BridgeRequest] = []

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {name.decode("latin-1").lower(): value.decode("latin-1") for name, value in scope["headers"]}
        body = await self._body(receive)
        authorized = headers.get("authorization") == f"Bearer {self.token}"
        self._record(scope["method"], body, authorized)
        if not authorized:
            await send({"type": "http.response.start", "status": 401, "headers": [(b"content-type", b"text/plain")]})
            await send({"type": "http.response.body", "body": b"no bearer token"})
            return
        replayed = False

        async def replay() -> dict[str, Any]:  # the app reads the body this middleware consumed
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)

    @staticmethod
    async def _body(receive: Any) -> bytes:
        chunks: list[bytes] = []
        while True:
            message = await receive()
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                return b"".join(chunks)

    def _record(self, http_method: str, body: bytes, authorized: bool) -> None:
        try:
            parsed = json.loads(body) if body else None
        except ValueError:
            parsed = None
        messages = parsed if isinstance(parsed, list) else [parsed]
        for message in messages:
            rpc = message.get("method") if isinstance(message, dict) else None
            params = message.get("params") if isinstance(message, dict) else None
            self.requests.append(BridgeRequest(http_method, rpc, authorized, params or {}))


class StandInBridge:
    """The SDK's MCPServer on 127.0.0.1 (a free port), in a uvicorn thread, token-guarded and recorded."""

    def __init__(self, token: str = TOKEN) -> None:
        self.calls: list[dict[str, Any]] = []
        server = MCPServer("executor")

        @server.tool()
        def report_progress(task_id: str, pct: int, note: str, agent_id: str) -> str:
            """For workers: say how far your own task is."""
            self.calls.append(
                {"tool": "report_progress", "task_id": task_id, "pct": pct, "note": note, "agent_id": agent_id}
            )
            return "recorded"

        @server.tool()
        def report_blocker(task_id: str, detail: str, severity: str, agent_id: str) -> str:
            """For workers: say what blocks your own task."""
            self.calls.append(
                {
                    "tool": "report_blocker",
                    "task_id": task_id,
                    "detail": detail,
                    "severity": severity,
                    "agent_id": agent_id,
                }
            )
            return "recorded"

        self.recorder = _Recorder(server.streamable_http_app(), token)
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._socket.bind(("127.0.0.1", 0))
        config = uvicorn.Config(
            self.recorder, log_level="warning", ws="none", lifespan="on", timeout_graceful_shutdown=2
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._socket]}, name="stand-in-bridge", daemon=True
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._socket.getsockname()[1]}/mcp"

    @property
    def requests(self) -> list[BridgeRequest]:
        return list(self.recorder.requests)

    def __enter__(self) -> StandInBridge:
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("the stand-in MCP bridge did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)
        self._socket.close()


@pytest.fixture
def bridge() -> Iterator[StandInBridge]:
    with StandInBridge() as running:
        yield running


# --------------------------------------------------------------------------- helpers


def endpoint(url: str = "http://127.0.0.1:9/mcp", server_name: str = "executor") -> BridgeEndpoint:
    return BridgeEndpoint(url=url, token=TOKEN, agent_id=AGENT_ID, server_name=server_name)


def bridged_order(
    tmp_path: Path,
    backend: str,
    bridge: BridgeEndpoint | None = None,
    permission: Literal["read-only", "workspace-write", "full"] = "read-only",
    **changes: Any,
) -> WorkOrder:
    base = make_order(tmp_path / "session", TASK, "coder", prompt="Report your progress, then finish.", backend=backend)
    return msgspec.structs.replace(base, bridge=bridge or endpoint(), permission=permission, **changes)


def spy_on_run_process(monkeypatch: pytest.MonkeyPatch) -> list[ProcessSpec]:
    """Record the ProcessSpec of every agent the backends start (argv and environment as run)."""
    specs: list[ProcessSpec] = []
    real = agent_cli.run_process

    def recording(spec: ProcessSpec, *args: Any, **kwargs: Any) -> Any:
        specs.append(spec)
        return real(spec, *args, **kwargs)

    monkeypatch.setattr(agent_cli, "run_process", recording)
    return specs


def leftover_bridge_files(order: WorkOrder) -> list[str]:
    folder = bridge_path(order, "").parent
    return sorted(path.name for path in folder.iterdir()) if folder.is_dir() else []


# --------------------------------------------------------------------------- the stand-in is strict


def test_the_stand_in_bridge_refuses_a_request_without_the_token(bridge):
    initialize = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}},
    }
    accept = {"Accept": "application/json, text/event-stream"}
    assert httpx.post(bridge.url, json=initialize, headers=accept).status_code == 401
    authorized = httpx.post(bridge.url, json=initialize, headers={**accept, "Authorization": f"Bearer {TOKEN}"})
    assert authorized.status_code == 200
    assert [request.authorized for request in bridge.requests] == [False, True]


def _sse_data(response: httpx.Response) -> list[dict[str, Any]]:
    return [json.loads(line[len("data: ") :]) for line in response.text.splitlines() if line.startswith("data: ")]


def test_the_fake_model_calls_an_mcp_tool_by_the_name_each_cli_offers_it_under():
    call = McpToolCall("executor", "report_progress", {"agent_id": AGENT_ID})
    with FakeLLM() as fake:
        fake.script(call)
        anthropic = httpx.post(
            f"{fake.url}/v1/messages",
            json={
                "model": "m",
                "stream": False,
                "tools": [{"name": "Read"}, {"name": "mcp__executor__report_progress"}],
            },
        ).json()
        assert anthropic["content"][0]["name"] == "mcp__executor__report_progress"
        assert anthropic["content"][0]["input"] == {"agent_id": AGENT_ID}

        fake.script(call)
        gemini_tools = [{"functionDeclarations": [{"name": "read_file"}, {"name": "mcp_executor_report_progress"}]}]
        [gemini] = _sse_data(
            httpx.post(f"{fake.url}/v1beta/models/m:streamGenerateContent?alt=sse", json={"tools": gemini_tools})
        )
        assert gemini["candidates"][0]["content"]["parts"][0]["functionCall"]["name"] == "mcp_executor_report_progress"

        # Codex: the tool is deferred behind tool_search, so the fake searches first and calls next time.
        fake.script(call)
        search = [{"type": "function", "name": "exec_command"}, {"type": "tool_search", "execution": "client"}]
        first = _sse_data(httpx.post(f"{fake.url}/v1/responses", json={"model": "m", "tools": search}))
        [searched] = [event["item"] for event in first if event["type"] == "response.output_item.done"]
        assert searched["type"] == "tool_search_call"
        assert fake.pending == 1, "the call is still to come"
        found = {
            "type": "tool_search_output",
            "call_id": searched["call_id"],
            "tools": [{"type": "namespace", "name": "mcp__executor", "tools": [{"name": "report_progress"}]}],
        }
        second = _sse_data(
            httpx.post(f"{fake.url}/v1/responses", json={"model": "m", "tools": search, "input": [searched, found]})
        )
        [called] = [event["item"] for event in second if event["type"] == "response.output_item.done"]
        assert (called["type"], called["namespace"], called["name"]) == (
            "function_call",
            "mcp__executor",
            "report_progress",
        )
        assert json.loads(called["arguments"]) == {"agent_id": AGENT_ID}
        assert fake.pending == 0


# --------------------------------------------------------------------------- argv, env and files


@pytest.mark.parametrize("permission", ["read-only", "workspace-write", "full"])
def test_claude_gets_the_bridge_from_a_config_file_and_may_use_its_tools(tmp_path, permission):
    order = bridged_order(tmp_path, "claude", permission=permission)
    argv = ClaudeBackend(environ={})._argv("claude", order, "")
    assert f"--mcp-config={bridge_path(order, '.json')}" in argv
    allowed = next((arg for arg in argv if arg.startswith("--allowedTools=")), None)
    if permission == "full":
        assert "--dangerously-skip-permissions" in argv  # every tool runs, the bridge's too
    else:
        assert allowed is not None
        assert "mcp__executor__*" in allowed.split("=", 1)[1].split(",")
    assert not any(TOKEN in arg for arg in argv)


def test_claude_s_config_file_is_private_and_names_the_server(tmp_path):
    order = bridged_order(tmp_path, "claude", bridge=endpoint(server_name="exec-bridge"))
    ClaudeBackend(environ={})._prepare_bridge(order, order.bridge, {})
    path = bridge_path(order, ".json")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert json.loads(path.read_text()) == {
        "mcpServers": {
            "exec-bridge": {
                "type": "http",
                "url": "http://127.0.0.1:9/mcp",
                "headers": {"Authorization": f"Bearer {TOKEN}"},
                "alwaysLoad": True,
            }
        }
    }
    argv = ClaudeBackend(environ={})._argv("claude", order, "")
    assert "mcp__exec-bridge__*" in next(arg for arg in argv if arg.startswith("--allowedTools="))


def test_codex_reads_the_token_from_the_environment_not_argv(tmp_path):
    backend = CodexBackend(environ={"OPENAI_API_KEY": "k"})
    order = bridged_order(tmp_path, "codex", resume_session="th-1")
    argv = backend._argv("codex", order, "")
    table = argv[argv.index("-c") + 1]
    assert table == (
        'mcp_servers.executor={url="http://127.0.0.1:9/mcp",'
        f'bearer_token_env_var="{ENV_MCP_TOKEN}",default_tools_approval_mode="approve"}}'
    )
    assert argv.index(table) < argv.index("resume"), "codex exec takes -c before its subcommand"
    assert not any(TOKEN in arg for arg in argv)
    assert backend._environment(order)[ENV_MCP_TOKEN] == TOKEN


def test_gemini_gets_its_own_home_whose_settings_add_the_bridge_to_the_user_s(tmp_path):
    home = tmp_path / "home"
    (home / ".gemini").mkdir(parents=True)
    (home / ".gemini" / "settings.json").write_text(
        '{\n  // the user\'s own\n  "security": {"auth": {"selectedType": "gemini-api-key"}},\n'
        '  "mcpServers": {"docs": {"url": "http://example.invalid/mcp"}},\n'
        '  "mcp": {"allowed": ["docs"], "excluded": ["executor"]}\n}\n'
    )
    (home / ".gemini" / "oauth_creds.json").write_text("{}")
    order = bridged_order(tmp_path, "gemini")
    backend = GeminiBackend(environ={"GEMINI_API_KEY": "k"})
    env = backend._environment(order)
    assert env["GEMINI_CLI_HOME"] == str(bridge_path(order, ".gemini-home"))
    backend._prepare_bridge(order, order.bridge, {**env, "HOME": str(home)})
    gemini = Path(env["GEMINI_CLI_HOME"]) / ".gemini"
    settings_file = gemini / "settings.json"
    assert stat.S_IMODE(settings_file.stat().st_mode) == 0o600
    settings = json.loads(settings_file.read_text())
    assert settings["security"] == {"auth": {"selectedType": "gemini-api-key"}}
    assert settings["mcpServers"]["docs"] == {"url": "http://example.invalid/mcp"}
    assert settings["mcpServers"]["executor"] == {
        "type": "http",
        "url": "http://127.0.0.1:9/mcp",
        "headers": {"Authorization": f"Bearer {TOKEN}"},
        "trust": True,
    }
    assert settings["mcp"] == {"allowed": ["docs", "executor"], "excluded": []}
    assert (gemini / "oauth_creds.json").resolve() == (home / ".gemini" / "oauth_creds.json").resolve()
    assert not any(TOKEN in arg for arg in backend._argv("gemini", order, ""))


def test_the_prompt_names_the_agent_id_and_the_reporting_tools(tmp_path):
    note = bridge_note(bridged_order(tmp_path, "claude"))
    for needle in (AGENT_ID, TASK, "`executor`", "report_progress(task_id, pct, note, agent_id)"):
        assert needle in note
    assert "report_blocker(task_id, detail, severity, agent_id)" in note
    assert TOKEN not in note
    assert bridge_note(msgspec.structs.replace(bridged_order(tmp_path, "claude"), bridge=None)) == ""


def _stand_in_cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str) -> Path:
    """A program named like the CLI that records its argv, stdin and the bridge files it can see."""
    folder = tmp_path / "bin"
    folder.mkdir()
    record = folder / "record.json"
    program = folder / name
    program.write_text(
        f"#!{sys.executable}\n"
        "import json, os, sys\n"
        "files = {}\n"
        "for arg in sys.argv:\n"
        "    if arg.startswith('--mcp-config='):\n"
        "        path = arg.split('=', 1)[1]\n"
        "        files[path] = {'mode': os.stat(path).st_mode & 0o777, 'text': open(path).read()}\n"
        f"json.dump({{'argv': sys.argv, 'stdin': sys.stdin.read(), 'files': files}}, open({str(record)!r}, 'w'))\n",
        encoding="utf-8",
    )
    program.chmod(0o755)
    monkeypatch.setenv(AGENT_CLIS_ENV, str(folder))
    return record


def test_a_run_sends_the_note_keeps_the_token_out_of_argv_and_deletes_the_file(tmp_path, monkeypatch):
    record = _stand_in_cli(tmp_path, monkeypatch, "claude")
    order = bridged_order(tmp_path, "claude")
    ClaudeBackend(environ={"ANTHROPIC_API_KEY": "k"}).run(order, RecordingHooks(), threading.Event())
    seen = json.loads(record.read_text())
    assert AGENT_ID in seen["stdin"]
    assert "report_progress" in seen["stdin"]
    assert not any(TOKEN in arg for arg in seen["argv"])
    [(path, file)] = seen["files"].items()
    assert file["mode"] == 0o600
    assert TOKEN in file["text"]
    assert not Path(path).exists(), "the token file outlived the attempt"
    assert AGENT_ID not in Path(order.prompt_file).read_text(), "the prompt file on disk stays as it was"


def test_a_cli_that_does_not_speak_mcp_is_not_told_about_the_bridge(tmp_path, monkeypatch):
    record = _stand_in_cli(tmp_path, monkeypatch, "qwen")
    order = bridged_order(tmp_path, "qwen")
    QwenBackend(environ={"DASHSCOPE_API_KEY": "k"}).run(order, RecordingHooks(), threading.Event())
    assert AGENT_ID not in json.loads(record.read_text())["stdin"]


def test_forgetting_an_attempt_s_bridge_files_leaves_other_attempts_alone(tmp_path):
    order = bridged_order(tmp_path, "gemini")
    ClaudeBackend(environ={})._prepare_bridge(order, order.bridge, {})
    GeminiBackend(environ={})._prepare_bridge(order, order.bridge, {"HOME": str(tmp_path / "no-home")})
    later = msgspec.structs.replace(order, attempt=10)
    ClaudeBackend(environ={})._prepare_bridge(later, later.bridge, {})
    assert leftover_bridge_files(order) == ["IMPL-001-a1.gemini-home", "IMPL-001-a1.json", "IMPL-001-a10.json"]
    forget_bridge(order)
    assert leftover_bridge_files(order) == ["IMPL-001-a10.json"]


def test_a_bridge_configuration_that_cannot_be_written_fails_the_attempt(tmp_path, monkeypatch):
    record = _stand_in_cli(tmp_path, monkeypatch, "claude")
    order = bridged_order(tmp_path, "claude")
    bridge_path(order, "").parent.parent.mkdir(parents=True, exist_ok=True)
    bridge_path(order, "").parent.write_text("a file where the folder should be")
    result = ClaudeBackend(environ={"ANTHROPIC_API_KEY": "k"}).run(order, RecordingHooks(), threading.Event())
    assert result.error_kind == "spawn_failed"
    assert "MCP bridge configuration" in (result.error or "")
    assert not record.exists()


def test_a_bridge_the_cli_cannot_be_given_fails_the_attempt_before_it_starts(tmp_path, monkeypatch):
    record = _stand_in_cli(tmp_path, monkeypatch, "claude")
    order = bridged_order(tmp_path, "claude", bridge=endpoint(server_name="exec.bridge"))
    result = ClaudeBackend(environ={"ANTHROPIC_API_KEY": "k"}).run(order, RecordingHooks(), threading.Event())
    assert result.error_kind == "spawn_failed"
    assert "exec.bridge" in (result.error or "")
    assert not record.exists()


# --------------------------------------------------------------------------- the real CLIs


def _cli_environ(cli: str, fake_url: str) -> dict[str, str]:
    """The backend's view of the environment: a fake key and the fake model server's URL."""
    common = {"NO_PROXY": "127.0.0.1,localhost"}
    if cli == "claude":
        return {**common, "ANTHROPIC_API_KEY": "sk-ant-fake", "ANTHROPIC_BASE_URL": fake_url}
    if cli == "codex":
        return {**common, "OPENAI_API_KEY": "sk-openai-fake", "OPENAI_BASE_URL": f"{fake_url}/v1"}
    return {**common, "GEMINI_API_KEY": "gm-fake", "GOOGLE_GEMINI_BASE_URL": fake_url}


def _user_home_for_gemini(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A HOME of the agent's own (not isolated by the executor), with the settings Gemini needs offline."""
    home = tmp_path / "user-home"
    (home / ".gemini").mkdir(parents=True)
    settings = {
        "security": {"auth": {"selectedType": "gemini-api-key"}},
        "telemetry": {"enabled": False},
        "privacy": {"usageStatisticsEnabled": False},
        "general": {"enableAutoUpdate": False, "enableAutoUpdateNotification": False},
    }
    (home / ".gemini" / "settings.json").write_text("// the user's settings\n" + json.dumps(settings))
    monkeypatch.setenv("HOME", str(home))


@pytest.mark.slow
@pytest.mark.parametrize(
    ("cli", "isolate_home"),
    [("claude", True), ("codex", True), ("gemini", True), ("gemini", False)],
    ids=["claude", "codex", "gemini", "gemini-own-home"],
)
def test_a_real_cli_calls_the_bridge_tool_with_the_token_and_its_agent_id(
    tmp_path, monkeypatch, bridge, cli, isolate_home
):
    program = cli_path(cli)
    if program is None:
        pytest.skip(f"the {cli} CLI is not installed (set {AGENT_CLIS_ENV} or npm install it)")
    monkeypatch.setenv(AGENT_CLIS_ENV, str(program.parent))
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    if not isolate_home:
        _user_home_for_gemini(tmp_path, monkeypatch)
    specs = spy_on_run_process(monkeypatch)
    arguments = {"task_id": TASK, "pct": 40, "note": "halfway there", "agent_id": AGENT_ID}
    order = bridged_order(
        tmp_path,
        cli,
        bridge=endpoint(url=bridge.url),
        model=DEFAULT_MODELS[cli],
        isolate_home=isolate_home,
        timeout_s=120.0,
    )
    with FakeLLM() as fake:
        # Codex offers MCP tools only through tool_search: the fake searches first (see McpToolCall).
        fake.script(McpToolCall("executor", "report_progress", arguments), Text(f"[coder] {TASK} complete: reported"))
        result = BACKENDS[cli](environ=_cli_environ(cli, fake.url)).run(order, RecordingHooks(), threading.Event())
        first_prompt = json.dumps(fake.model_requests()[0].body)

    assert result.ok, f"{result.error_kind}: {result.error}\n{result.output_tail}"
    assert bridge.calls == [{"tool": "report_progress", **arguments}]
    tool_calls = [request for request in bridge.requests if request.rpc == "tools/call"]
    assert [(request.authorized, request.params.get("name")) for request in tool_calls] == [(True, "report_progress")]
    assert "tools/list" in {request.rpc for request in bridge.requests}
    assert all(request.authorized for request in bridge.requests), "every request carries the bearer token"
    assert AGENT_ID in first_prompt, "the model was told its agent id"
    [spec] = specs
    assert not any(TOKEN in arg for arg in spec.argv), "the token must not be visible in argv"
    assert leftover_bridge_files(order) == [], "the attempt's bridge files outlived it"
