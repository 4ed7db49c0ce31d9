"""The MCP client side: probing and calling real MCP servers (stdio subprocess, streamable HTTP),
and the McpClients actor that keeps their health."""

from __future__ import annotations

import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from actors.mcp_clients import McpClientsActor
from protocol.mcp_client import CheckMcpServers, GetMcpServers, McpServers, McpServerState
from session.config_mcp import McpServerConfig
from session.mcp_client import McpCallFailed, call_tool, probe
from tests.mcp_tool_server import HttpToolServer

SERVER_SCRIPT = Path(__file__).with_name("mcp_tool_server.py")
TOOLS = ("ping", "inventory", "reboot", "slow", "read_env")
TOKEN = "test-token-0123456789-abcd"


def stdio_config(**extra: object) -> McpServerConfig:
    return McpServerConfig(command=[sys.executable, str(SERVER_SCRIPT)], **extra)


def free_url() -> str:
    """The URL of a port nothing listens on (bound, then released)."""
    with socket.socket() as probe_socket:
        probe_socket.bind(("127.0.0.1", 0))
        port = probe_socket.getsockname()[1]
    return f"http://127.0.0.1:{port}/mcp"


@pytest.fixture(scope="module")
def http_server() -> Iterator[HttpToolServer]:
    with HttpToolServer(token=TOKEN) as running:
        yield running


@pytest.fixture
def http_config(http_server, monkeypatch) -> McpServerConfig:
    monkeypatch.setenv("NETOPS_MCP_TOKEN", TOKEN)
    return McpServerConfig(url=http_server.url, token_env="NETOPS_MCP_TOKEN", timeout_s=20)


# --------------------------------------------------------------------------- probe


def test_a_stdio_server_is_online_with_its_tools_and_a_latency():
    health = probe(stdio_config(), name="netops")
    assert health.ok, health.error
    assert health.tools == TOOLS
    assert health.latency_ms is not None
    assert health.latency_ms > 0
    assert health.error is None


def test_an_http_server_is_online_with_the_bearer_token_from_token_env(http_config):
    health = probe(http_config)
    assert health.ok, health.error
    assert health.tools == TOOLS


def test_a_server_that_is_not_running_is_offline_with_the_reason():
    url = free_url()
    health = probe(McpServerConfig(url=url, timeout_s=10), name="gone")
    assert not health.ok
    assert health.kind == "network"
    assert health.error is not None
    assert f"cannot reach MCP server 'gone' ({url})" in health.error
    assert health.tools == ()


def test_a_program_that_does_not_exist_is_offline_as_not_startable(tmp_path):
    health = probe(McpServerConfig(command=[str(tmp_path / "no-such-server")]), name="ghost")
    assert not health.ok
    assert health.kind == "spawn_failed"
    assert "cannot start MCP server 'ghost'" in (health.error or "")
    assert "No such file or directory" in (health.error or "")


def test_a_server_that_exits_at_once_is_offline_and_its_stderr_is_quoted():
    dying = McpServerConfig(command=[sys.executable, "-c", "import sys; sys.stderr.write('bad licence file\\n')"])
    health = probe(dying, name="dying")
    assert not health.ok
    assert health.kind == "network"
    assert "closed the connection" in (health.error or "")
    assert "bad licence file" in (health.error or "")


def test_a_wrong_token_is_an_auth_failure_and_a_missing_variable_a_config_one(http_server, monkeypatch):
    monkeypatch.setenv("NETOPS_MCP_TOKEN", "not-the-token")
    refused = probe(McpServerConfig(url=http_server.url, token_env="NETOPS_MCP_TOKEN"))
    assert (refused.ok, refused.kind) == (False, "auth")
    assert "HTTP 401" in (refused.error or "")
    assert "not-the-token" not in (refused.error or "")
    monkeypatch.delenv("NETOPS_MCP_TOKEN")
    unset = probe(McpServerConfig(url=http_server.url, token_env="NETOPS_MCP_TOKEN"), name="netops")
    assert (unset.ok, unset.kind) == (False, "config")
    assert "NETOPS_MCP_TOKEN is not set" in (unset.error or "")


def test_headers_may_carry_the_token_through_a_reference(http_server):
    config = McpServerConfig(url=http_server.url, headers={"Authorization": "Bearer ${MY_TOKEN}"})
    assert probe(config, environ={"MY_TOKEN": TOKEN}).ok
    assert probe(config, environ={}).kind == "config"


# --------------------------------------------------------------------------- call_tool


def test_a_call_returns_the_text_and_the_structured_content(http_config):
    result = call_tool(http_config, "inventory", {"site": "ams1", "devices": 7})
    assert not result.is_error
    assert result.structured == {"site": "ams1", "devices": 7, "healthy": True}
    assert '"devices": 7' in result.text
    plain = call_tool(http_config, "ping", {"host": "core-1"})
    assert plain.text == "PING core-1: 3 packets transmitted, 3 received"


def test_a_tool_that_fails_comes_back_as_is_error_with_its_message(http_config):
    result = call_tool(http_config, "reboot", {"device": "edge-2"})
    assert result.is_error
    assert "device edge-2 is locked by change freeze" in result.text
    unknown = call_tool(http_config, "no_such_tool", {})
    assert unknown.is_error
    assert "no_such_tool" in unknown.text


def test_a_stdio_call_gets_the_env_with_references_resolved():
    config = stdio_config(env={"NETOPS_SITE": "site-${REGION}", "PLAIN": "yes"})
    result = call_tool(config, "read_env", {"name": "NETOPS_SITE"}, environ={"REGION": "eu-west"})
    assert (result.is_error, result.text) == (False, "site-eu-west")


def test_a_call_past_its_timeout_fails_as_timeout(http_config):
    started = time.monotonic()
    with pytest.raises(McpCallFailed) as caught:
        call_tool(http_config, "slow", {"seconds": 5}, timeout_s=1.0, name="netops")
    assert caught.value.kind == "timeout"
    assert "took longer than 1s" in caught.value.message
    assert time.monotonic() - started < 4.5


def test_a_call_to_a_server_that_is_not_running_fails_as_network():
    with pytest.raises(McpCallFailed) as caught:
        call_tool(McpServerConfig(url=free_url()), "ping", {"host": "x"}, timeout_s=10)
    assert caught.value.kind == "network"


def test_cancel_ends_a_call_as_interrupted(http_config):
    cancel = threading.Event()
    timer = threading.Timer(0.5, cancel.set)
    timer.start()
    started = time.monotonic()
    try:
        with pytest.raises(McpCallFailed) as caught:
            call_tool(http_config, "slow", {"seconds": 10}, cancel=cancel)
    finally:
        timer.cancel()
    assert caught.value.kind == "interrupted"
    assert time.monotonic() - started < 5


def test_url_credentials_never_appear_in_a_message():
    url = free_url().replace("http://", "http://admin:hunter2-secret@") + "?key=abc123"
    health = probe(McpServerConfig(url=url, timeout_s=10))
    assert not health.ok
    assert "hunter2-secret" not in (health.error or "")
    assert "abc123" not in (health.error or "")


# --------------------------------------------------------------------------- the actor


def wait_for(
    actor, condition: Callable[[dict[str, McpServerState]], bool], timeout: float = 30
) -> dict[str, McpServerState]:
    deadline = time.monotonic() + timeout
    while True:
        answer = actor.ask(GetMcpServers(), timeout=5)
        assert isinstance(answer, McpServers)
        states = {state.name: state for state in answer.items}
        if condition(states):
            return states
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met in {timeout}s: {states}")
        time.sleep(0.05)


def test_the_actor_checks_every_server_and_marks_one_that_goes_down_offline(monkeypatch):
    monkeypatch.setenv("NETOPS_MCP_TOKEN", TOKEN)
    http = HttpToolServer(token=TOKEN).start()
    servers = {
        "netops": McpServerConfig(url=http.url, token_env="NETOPS_MCP_TOKEN", health_interval_s=0.3, timeout_s=10),
        "local": stdio_config(health_interval_s=600),
        "gone": McpServerConfig(url=free_url(), health_interval_s=600, timeout_s=10),
    }
    actor = McpClientsActor.start("mcp-clients", None, 1, servers)
    try:
        first = actor.ask(GetMcpServers(), timeout=5)
        assert [state.name for state in first.items] == ["netops", "local", "gone"]
        assert {state.transport for state in first.items} == {"http", "stdio"}
        states = wait_for(actor, lambda s: all(state.status != "unknown" for state in s.values()))
        assert states["netops"].status == "online"
        assert states["netops"].tools == TOOLS
        assert states["netops"].latency_ms is not None
        assert states["netops"].last_checked is not None
        assert states["local"].status == "online"
        assert states["gone"].status == "offline"
        assert "cannot reach MCP server 'gone'" in (states["gone"].last_error or "")
        assert states["gone"].failures == 1

        http.stop()
        states = wait_for(actor, lambda s: s["netops"].status == "offline")
        assert states["netops"].last_error is not None
        assert states["netops"].tools == TOOLS  # what it offered when last seen
        assert states["local"].status == "online"  # its interval has not come round: not checked again

        only = actor.ask(GetMcpServers(names=("gone",)), timeout=5)
        assert [state.name for state in only.items] == ["gone"]
    finally:
        actor.stop(block=True, timeout=10)
        http.stop()


def test_check_now_runs_a_check_before_the_interval_comes_round():
    servers = {"gone": McpServerConfig(url=free_url(), health_interval_s=600, timeout_s=10)}
    actor = McpClientsActor.start("mcp-clients", None, 1, servers)
    try:
        wait_for(actor, lambda s: s["gone"].failures == 1)
        actor.ask(CheckMcpServers(names=("gone",)), timeout=5)
        states = wait_for(actor, lambda s: s["gone"].failures == 2)
        assert states["gone"].status == "offline"
    finally:
        actor.stop(block=True, timeout=10)


def test_an_actor_without_servers_answers_an_empty_list():
    actor = McpClientsActor.start("mcp-clients", None, 1, {})
    try:
        assert actor.ask(GetMcpServers(), timeout=5) == McpServers(items=())
    finally:
        actor.stop(block=True, timeout=10)
