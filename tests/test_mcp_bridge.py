"""The MCP bridge, driven by the official SDK client: over stdio (a subprocess `executor mcp`)
and over streamable HTTP (a running `executor run --http`), with real workers that
report back through it."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import httpx2
import psutil
import pytest
from mcp import Client, StdioServerParameters
from mcp.client.streamable_http import streamable_http_client
from mcp.server.mcpserver import MCPServer

from bridge.auth import token_path
from bridge.tools import DuplicateTool, ToolTable
from tests.conftest import _EMPTY_CONFIG, EXECUTOR
from tests.sessions import copy_demo, write_session

WORKER = Path(__file__).resolve().parent / "mcp_worker.py"
TOOL_SERVER = Path(__file__).resolve().parent / "mcp_tool_server.py"
ENV = {**os.environ, "TEAM_EXECUTOR_CONFIG_DIR": str(_EMPTY_CONFIG), "COLUMNS": "200"}


def _text(result: Any) -> str:
    return " ".join(getattr(part, "text", "") for part in result.content)


def _bridge_session(folder: Path) -> Path:
    """Role worker runs tests/mcp_worker.py (W-001 reports on itself and tries W-002); role netops
    is an MCP server of the config (tests/mcp_tool_server.py), NET-001 one call of its ping tool."""
    extra = f'backend: command\ncommand: ["{sys.executable}", "{WORKER}", "{{task_id}}", "W-002"]\n'
    ping = {"id": "NET-001", "goal": "Ping db1", "mcp": {"tool": "ping", "arguments": {"host": "db1"}}}
    write_session(
        folder,
        {"worker": "W", "netops": "NET"},
        {"W-001": [], "W-002": ["W-001"], "NET-001": []},
        role_extra={"worker": extra, "netops": "backend: mcp\nmcp_server: netops\n"},
        capabilities=[
            {"name": "worker", "prefix": "W", "tasks": []},
            {"name": "netops", "prefix": "NET", "tasks": [ping]},
        ],
    )
    (folder / "executor.toml").write_text(
        f'[mcp_servers.netops]\ncommand = ["{sys.executable}", "{TOOL_SERVER}"]\nhealth_interval_s = 2\n\n'
        '[mcp_servers.gone]\nurl = "http://127.0.0.1:9/mcp"\nhealth_interval_s = 2\n'
    )
    return folder


class RunningBridge:
    """`executor run --session S --http 0` in a subprocess, and a client for it."""

    def __init__(self, folder: Path, *extra: str, env: dict[str, str] | None = None) -> None:
        self.folder = folder
        self.process = subprocess.Popen(
            [str(EXECUTOR), "run", "--session", str(folder), "--http", "0", *extra],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**ENV, **(env or {})},
        )
        self.lines: list[str] = []
        deadline = time.monotonic() + 30
        line = ""
        while time.monotonic() < deadline:
            line = self.process.stdout.readline() if self.process.stdout else ""
            self.lines.append(line)
            if "MCP bridge on" in line or not line:
                break
        # Into a pipe the run names the owner token's file, never the token itself.
        found = re.search(r"MCP bridge on (http://\S+/mcp) — owner bearer token in (\S+)$", line.strip())
        assert found, f"no bridge address in the output: {self.lines}"
        self.url, self.token_file = found.group(1), Path(found.group(2))
        self.token = self.token_file.read_text().strip()

    def call(self, tool: str, arguments: dict[str, Any], token: str | None = None) -> Any:
        async def go() -> Any:
            headers = {"Authorization": f"Bearer {token or self.token}"}
            http = httpx2.AsyncClient(headers=headers)
            async with http, Client(streamable_http_client(self.url, http_client=http)) as client:
                return await client.call_tool(tool, arguments)

        return anyio.run(go)

    def settled_write(self, request_id: str, timeout_s: float = 60) -> dict[str, Any]:
        """Poll get_write_status until a queued write leaves 'queued' (or the deadline: then it is returned as is)."""
        deadline = time.monotonic() + timeout_s
        while True:
            result = self.call("get_write_status", {"request_id": request_id})
            assert not result.is_error, _text(result)
            status: dict[str, Any] = result.structured_content
            if status["state"] != "queued" or time.monotonic() > deadline:
                return status
            time.sleep(0.1)

    def wait_status(self, task_id: str, wanted: set[str], timeout_s: float = 60) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        while True:
            result = self.call("get_task_status", {"task_id": task_id})
            assert not result.is_error, _text(result)
            status = result.structured_content
            if status["task"]["status"] in wanted or time.monotonic() > deadline:
                return status
            time.sleep(0.2)

    def stop(self) -> str:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
        try:
            rest, _ = self.process.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            rest, _ = self.process.communicate()
        return "".join(self.lines) + (rest or "")


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningBridge]:
    bridge = RunningBridge(_bridge_session(tmp_path_factory.mktemp("bridge") / "session"))
    yield bridge
    bridge.stop()


# --- HTTP -------------------------------------------------------------------------------


def test_token_is_kept_private_and_required(served: RunningBridge) -> None:
    token_file = served.token_file
    assert token_file.is_relative_to(_EMPTY_CONFIG), "the owner token lives in the user's config folder"
    assert not token_file.resolve().is_relative_to(served.folder.resolve())
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(token_file.parent.stat().st_mode) == 0o700
    assert not (served.folder / ".executor" / "mcp-token").exists()
    assert served.token not in "".join(served.lines), "a pipe never gets the token"
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}
    headers = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
    missing = httpx.post(served.url, json=body, headers=headers, timeout=10)
    wrong = httpx.post(served.url, json=body, headers={**headers, "Authorization": "Bearer nope"}, timeout=10)
    assert missing.status_code == 401
    assert wrong.status_code == 401
    assert "Bearer" in missing.headers["www-authenticate"]


def test_a_worker_reports_only_on_its_own_task(served: RunningBridge) -> None:
    status = served.wait_status("W-001", {"completed", "failed"})
    assert status["task"]["status"] == "completed", status
    answers = json.loads((served.folder / "artifacts" / "W-001.json").read_text())
    assert answers["own"]["is_error"] is False, answers
    assert answers["other"]["is_error"] is True
    assert "may report only on its own task" in answers["other"]["text"]
    assert answers["forged"]["is_error"] is True
    assert "agent_id" in answers["forged"]["text"]
    assert answers["submit"]["is_error"] is True
    assert "not open to workers" in answers["submit"]["text"]
    # The accepted report is in the store, read back through MCP.
    notes = [event for event in _events(served.folder, "task_progress") if event["task_id"] == "W-001"]
    assert any(event["note"] == "halfway there" and event["percent"] == 42 for event in notes), notes


def test_a_submitted_task_is_run_and_read_back(served: RunningBridge) -> None:
    submitted = served.call(
        "submit_task",
        {"name": "Check the greeting", "description": "Say hello twice", "assigned_to": "worker", "priority": "high"},
    )
    assert not submitted.is_error, _text(submitted)
    task = submitted.structured_content
    assert re.fullmatch(r"MCP-\d{3}", task["id"])
    assert task["priority"] == "P0"
    assert task["source"] == "mcp"
    status = served.wait_status(task["id"], {"completed", "failed"})
    assert status["task"]["status"] == "completed", status
    assert status["description"] == "Say hello twice"
    assert [run["outcome"] for run in status["runs"]] == ["completed"]
    assert status["runs"][0]["backend"] == "command"
    # Its worker was given the prompt with the description, and its own agent id.
    prompt = next((served.folder / ".executor" / "prompts").glob(f"{task['id']}-a1.md")).read_text()
    assert "Say hello twice" in prompt
    listed = served.call("list_tasks", {"status": "completed"}).structured_content
    assert task["id"] in [row["id"] for row in listed["tasks"]]


def test_fleet_status_shows_the_tree_without_secrets(served: RunningBridge) -> None:
    added = served.call("add_api_key", {"provider": "openai", "key": "sk-test-abcdefghijklmnop1234"})
    assert not added.is_error, _text(added)
    assert added.structured_content["last4"] == "1234"
    assert "sk-test" not in json.dumps(added.structured_content)
    fleet = served.call("get_fleet_status", {})
    assert not fleet.is_error, _text(fleet)
    data = fleet.structured_content
    assert data["state"] in ("running", "idle")
    assert {"session", "reconciler", "router", "keypool"} <= set(data["actors"])
    assert data["backends_in_use"] == ["command", "mcp"]
    assert data["backends_installed"]["demo"] is True
    assert any(key["provider"] == "openai" and key["last4"] == "1234" for key in data["keys"])
    assert "abcdefghijklmnop" not in json.dumps(data)


def test_an_mcp_server_of_the_config_is_a_fleet_member(served: RunningBridge) -> None:
    status = served.wait_status("NET-001", {"completed", "failed"})
    assert status["task"]["status"] == "completed", status
    assert status["runs"][0]["backend"] == "mcp"
    (artifact,) = status["artifacts"]
    assert "PING db1" in (served.folder / artifact).read_text()
    deadline = time.monotonic() + 30
    servers: dict[str, Any] = {}
    while time.monotonic() < deadline:
        fleet = served.call("get_fleet_status", {}).structured_content
        servers = {server["name"]: server for server in fleet["mcp_servers"]}
        if servers and all(server["status"] != "unknown" for server in servers.values()):
            break
        time.sleep(0.5)
    assert servers["netops"]["status"] == "online", servers
    assert "ping" in servers["netops"]["tools"]
    assert servers["gone"]["status"] == "offline"
    assert servers["gone"]["last_error"]


def test_escalations_are_recorded_and_answered(served: RunningBridge) -> None:
    opened = served.call("escalate_decision", {"issue": "Ship on Friday?", "options": ["yes", "no"]})
    assert not opened.is_error, _text(opened)
    escalation = opened.structured_content
    assert escalation["status"] == "open"
    wrong = served.call("answer_escalation", {"id": escalation["id"], "choice": "maybe"})
    assert wrong.is_error
    assert "choice" in _text(wrong)
    answered = served.call("answer_escalation", {"id": escalation["id"], "choice": "no"})
    assert not answered.is_error, _text(answered)
    assert answered.structured_content["choice"] == "no"
    again = served.call("answer_escalation", {"id": escalation["id"], "choice": "yes"})
    assert again.is_error
    assert "already answered" in _text(again)


def test_bad_arguments_name_the_argument(served: RunningBridge) -> None:
    bad_priority = served.call("submit_task", {"name": "x", "assigned_to": "worker", "priority": "urgent"})
    assert bad_priority.is_error
    assert "priority" in _text(bad_priority)
    bad_role = served.call("submit_task", {"name": "x", "assigned_to": "nobody"})
    assert bad_role.is_error
    assert "assigned_to" in _text(bad_role)
    bad_dependency = served.call("submit_task", {"name": "x", "assigned_to": "worker", "blocked_by": ["ZZ-9"]})
    assert bad_dependency.is_error
    assert "blocked_by" in _text(bad_dependency)
    unknown = served.call("get_task_status", {"task_id": "NOPE-404"})
    assert unknown.is_error
    assert "task_id" in _text(unknown)
    percent = served.call("report_progress", {"task_id": "W-001", "pct": 150, "note": "x", "agent_id": "a"})
    assert percent.is_error
    assert "pct" in _text(percent)


def test_cancel_stops_a_running_task(served: RunningBridge) -> None:
    submitted = served.call(
        "submit_task", {"name": "Long job", "description": "SLEEP until cancelled", "assigned_to": "worker"}
    )
    task_id = submitted.structured_content["id"]
    # Running: the worker has written its answers and sleeps.
    deadline = time.monotonic() + 60
    while not (served.folder / "artifacts" / f"{task_id}.json").exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    cancelled = served.call("cancel_task", {"task_id": task_id})
    assert not cancelled.is_error, _text(cancelled)
    assert cancelled.structured_content["was"] == "in_progress"
    status = served.wait_status(task_id, {"failed"}, timeout_s=30)
    assert status["task"]["status"] == "failed"
    assert status["task"]["last_error_kind"] == "cancelled"
    again = served.call("cancel_task", {"task_id": task_id})
    assert again.is_error
    assert "already failed" in _text(again)


def test_panic_refuses_mutations_and_keeps_reads(served: RunningBridge) -> None:
    on = subprocess.run(
        [str(EXECUTOR), "panic", "on", "--session", str(served.folder)],
        capture_output=True,
        text=True,
        env=ENV,
        check=False,
    )
    assert on.returncode == 0, on.stderr
    try:
        refused = served.call("submit_task", {"name": "during panic", "assigned_to": "worker"})
        assert refused.is_error
        assert "panic switch is on" in _text(refused)
        blocker = served.call("escalate_decision", {"issue": "?", "options": ["a"]})
        assert blocker.is_error
        assert not served.call("list_tasks", {}).is_error
        assert not served.call("get_task_status", {"task_id": "W-001"}).is_error
        assert served.call("get_fleet_status", {}).structured_content["panic"] is True
    finally:
        off = subprocess.run(
            [str(EXECUTOR), "panic", "off", "--session", str(served.folder)],
            capture_output=True,
            text=True,
            env=ENV,
            check=False,
        )
    assert off.returncode == 0, off.stderr
    allowed = served.call("submit_task", {"name": "after panic", "assigned_to": "worker"})
    assert not allowed.is_error, _text(allowed)


def test_no_secret_in_the_session_folder(served: RunningBridge) -> None:
    # The key added above must be nowhere in the session's files (the token file holds the token only).
    for path in served.folder.rglob("*"):
        if path.is_file():
            assert b"abcdefghijklmnop1234" not in path.read_bytes(), path


# --- stdio ---------------------------------------------------------------------------------


def test_stdio_bridge_runs_a_submitted_task(tmp_path: Path) -> None:
    folder = copy_demo(tmp_path / "demo")
    params = StdioServerParameters(
        command=str(EXECUTOR), args=["mcp", "--session", str(folder), "--backend", "demo"], env=ENV
    )

    async def go() -> tuple[list[Any], dict[str, Any], dict[str, Any]]:
        async with Client(params) as client:
            tools = (await client.list_tools()).tools
            submitted = await client.call_tool("submit_task", {"name": "Write a poem", "assigned_to": "coder"})
            assert not submitted.is_error, _text(submitted)
            task_id = submitted.structured_content["id"]
            status: dict[str, Any] = {}
            for _ in range(300):
                status = (await client.call_tool("get_task_status", {"task_id": task_id})).structured_content
                if status["task"]["status"] == "completed":
                    break
                await anyio.sleep(0.1)
            check = (await client.call_tool("check_session", {})).structured_content
            return tools, status, check

    tools, status, check = anyio.run(go)
    names = {tool.name for tool in tools}
    assert {"submit_task", "get_task_status", "get_fleet_status", "report_progress", "set_panic"} <= names
    assert all(tool.output_schema for tool in tools)
    assert status["task"]["status"] == "completed"
    assert status["artifacts"]
    assert check["total"] >= 1
    # The client left: the run stopped cleanly and said so in its log, nothing left running.
    meta = _meta(folder)
    assert meta.get("clean_stop") == "1"


def _stdio_processes(folder: Path) -> tuple[psutil.Process, psutil.Process]:
    """(the `executor mcp` run serving ``folder``, its bridge process)."""
    runs = [
        p
        for p in psutil.Process().children(recursive=True)
        if "mcp" in p.cmdline() and str(folder) in p.cmdline() and "cli.bridge_process" not in " ".join(p.cmdline())
    ]
    (run,) = runs
    (bridge,) = [p for p in run.children() if "cli.bridge_process" in " ".join(p.cmdline())]
    return run, bridge


def _open_files(pid: int) -> dict[int, str]:
    """fd -> what it points at (``pipe:[…]``, ``socket:[…]``, a path), for process ``pid``."""
    found = {}
    for name in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(OSError):
            found[int(name)] = os.readlink(f"/proc/{pid}/fd/{name}")
    return found


def test_stdio_is_served_by_the_bridge_process_and_its_end_stops_the_run(tmp_path: Path) -> None:
    # The client's stdin/stdout are handed to the bridge process, so its calls never wait on the
    # run's threads; the run keeps none of them. When that process dies, the client's connection
    # dies with it (no other process can take it over): the run stops, and says why.
    folder = copy_demo(tmp_path / "demo")
    params = StdioServerParameters(
        command=str(EXECUTOR), args=["mcp", "--session", str(folder), "--backend", "demo"], env=ENV
    )
    seen: dict[str, Any] = {}

    async def go() -> None:
        with contextlib.suppress(Exception):  # the server goes away under the client, on purpose
            async with Client(params) as client:
                listed = await client.call_tool("list_tasks", {})
                seen["listed"] = not listed.is_error
                run, bridge = _stdio_processes(folder)
                seen["run"], seen["bridge"] = run, bridge
                seen["run_fds"], seen["bridge_fds"] = _open_files(run.pid), _open_files(bridge.pid)
                bridge.kill()
                with anyio.fail_after(60):
                    while True:
                        await client.call_tool("list_tasks", {})
                        await anyio.sleep(0.1)

    anyio.run(go)
    assert seen["listed"]
    client_pipes = {target for target in seen["bridge_fds"].values() if target.startswith("pipe:")}
    assert len(client_pipes) >= 2, seen["bridge_fds"]  # the client's two pipes are the bridge's
    assert not client_pipes & set(seen["run_fds"].values()), seen["run_fds"]  # and none is the run's
    assert seen["run_fds"][0] == os.devnull
    seen["run"].wait(timeout=60)
    assert _meta(folder).get("clean_stop") == "1"
    log = (folder / ".executor" / "executor.log").read_text()
    assert "the MCP client on stdio lost its server with it" in log


# --- startup guards ------------------------------------------------------------------------


def test_two_tools_with_one_name_fail_at_startup() -> None:
    table = ToolTable(MCPServer(name="t"))

    def submit_task() -> str:
        return ""

    table.add(submit_task)
    with pytest.raises(DuplicateTool, match="two MCP tools are named 'submit_task'"):
        table.add(submit_task)


def test_non_loopback_needs_an_explicit_flag(
    tmp_path: Path, executor_cli: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = copy_demo(tmp_path / "demo")
    result = executor_cli("run", "--session", str(folder), "--backend", "demo", "--mcp-http", "0.0.0.0:0")
    assert result.returncode == 2
    assert "--allow-remote" in result.stderr + result.stdout
    assert not (folder / ".executor" / "mcp-token").exists()
    monkeypatch.setenv("TEAM_EXECUTOR_CONFIG_DIR", str(_EMPTY_CONFIG))
    assert not token_path(folder).exists(), "a refused run makes no owner token"


def test_bad_port_is_a_clear_error(tmp_path: Path, executor_cli: Any) -> None:
    folder = copy_demo(tmp_path / "demo")
    result = executor_cli("run", "--session", str(folder), "--backend", "demo", "--http", "http")
    assert result.returncode == 2
    assert "--http 'http'" in result.stderr + result.stdout


def test_exit_when_done_ends_a_served_run(tmp_path: Path) -> None:
    folder = copy_demo(tmp_path / "demo")
    run = RunningBridge(folder, "--backend", "demo", "--exit-when-done")
    try:
        assert run.process.wait(timeout=60) == 0
    finally:
        output = run.stop()
    assert "pipeline complete" in output


# --- helpers ---------------------------------------------------------------------------------


def _events(folder: Path, kind: str) -> list[dict[str, Any]]:
    import sqlite3  # noqa: PLC0415

    with sqlite3.connect(folder / ".executor" / "state.db") as conn:
        rows = conn.execute("SELECT payload_json FROM events WHERE type = ?", [kind]).fetchall()
    return [json.loads(row[0]) for row in rows]


def _meta(folder: Path) -> dict[str, str]:
    import sqlite3  # noqa: PLC0415

    with sqlite3.connect(folder / ".executor" / "state.db") as conn:
        return dict(conn.execute("SELECT key, value FROM meta").fetchall())


def test_a_task_of_an_offline_mcp_server_goes_to_one_online_with_the_tool(tmp_path: Path, executor_cli: Any) -> None:
    ping = {
        "id": "NET-001",
        "goal": "Ping db1",
        "mcp": {"server": "primary", "tool": "ping", "arguments": {"host": "db1"}},
    }
    folder = write_session(
        tmp_path / "s",
        {"netops": "NET"},
        {"NET-001": []},
        role_extra={"netops": "backend: mcp\n"},
        capabilities=[{"name": "netops", "prefix": "NET", "tasks": [ping]}],
    )
    (folder / "executor.toml").write_text(
        '[mcp_servers.primary]\nurl = "http://127.0.0.1:9/mcp"\nhealth_interval_s = 1\ntimeout_s = 2\n\n'
        f'[mcp_servers.standby]\ncommand = ["{sys.executable}", "{TOOL_SERVER}"]\nhealth_interval_s = 1\n'
    )
    result = executor_cli("run", "--session", str(folder), "--max-attempts", "5", "--retry-backoff", "2", timeout=180)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "MCP server primary is offline; calling ping on standby" in result.stdout
    assert "PING db1" in next((folder / "artifacts").glob("NET-001*")).read_text()
