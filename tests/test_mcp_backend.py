"""The ``mcp`` backend: a task that is one MCP tool call, its answer saved as the task's artifact;
and where the call comes from (task-analysis.json's ``"mcp"``, the role-spec's defaults)."""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest

from backends.mcp_call import McpCallBackend, mcp_call_for, mcp_task_problems, register_servers
from backends.registry import backend_names, get_backend
from protocol.messages import McpCall, WorkOrder
from session.config_mcp import McpServerConfig
from session.graph import TaskMcpCall, TaskSpec
from session.loader import inspect_session
from session.rolespec import RoleSpecFrontmatter
from tests.mcp_tool_server import HttpToolServer
from tests.orders import RecordingHooks, make_order
from tests.sessions import write_session

SERVER_SCRIPT = Path(__file__).with_name("mcp_tool_server.py")
TOKEN = "backend-token-0123456789"


@pytest.fixture(scope="module")
def http_server() -> Iterator[HttpToolServer]:
    with HttpToolServer(token=TOKEN) as running:
        yield running


@pytest.fixture
def backend(http_server) -> McpCallBackend:
    servers = {
        "netops": McpServerConfig(url=http_server.url, token_env="NETOPS_TOKEN", timeout_s=20),
        "local": McpServerConfig(command=[sys.executable, str(SERVER_SCRIPT)]),
    }
    return McpCallBackend(servers, environ={"NETOPS_TOKEN": TOKEN})


def spec(**extra: object) -> RoleSpecFrontmatter:
    return RoleSpecFrontmatter(role="netops", prefix="NET", inner_loop=False, message_types={}, **extra)


def order(tmp_path: Path, call: McpCall | None, task_id: str = "NET-001", **extra: object) -> WorkOrder:
    made = make_order(tmp_path / "session", task_id, "netops", backend="mcp", timeout_s=None)
    return msgspec.structs.replace(made, mcp_call=call, **extra)


def run(backend: McpCallBackend, work: WorkOrder, cancel: threading.Event | None = None):
    hooks = RecordingHooks()
    return backend.run(work, hooks, cancel or threading.Event()), hooks


# --------------------------------------------------------------------------- running a call


def test_the_answer_is_saved_as_the_tasks_artifacts(tmp_path, backend):
    work = order(tmp_path, McpCall(server="netops", tool="inventory", arguments={"site": "fra2", "devices": 12}))
    result, hooks = run(backend, work)
    assert result.ok, result.error
    assert result.artifacts == ("artifacts/NET-001.md", "artifacts/NET-001.json")
    session = Path(work.session_dir)
    assert json.loads((session / "artifacts/NET-001.json").read_text()) == {
        "site": "fra2",
        "devices": 12,
        "healthy": True,
    }
    assert '"site": "fra2"' in (session / "artifacts/NET-001.md").read_text()
    assert result.summary.startswith("netops.inventory: ")
    assert hooks.progress_calls == [(None, "calling netops.inventory")]
    log = Path(work.log_path).read_text()
    assert "mcp: calling netops.inventory on http server" in log
    assert TOKEN not in log


def test_a_stdio_server_answers_in_text(tmp_path, backend):
    work = order(tmp_path, McpCall(server="local", tool="ping", arguments={"host": "core-1"}))
    result, _ = run(backend, work)
    assert result.ok, result.error
    assert result.artifacts == ("artifacts/NET-001.md",)  # no .json repeating {"result": <the text>}
    text = (Path(work.session_dir) / "artifacts/NET-001.md").read_text()
    assert text == "PING core-1: 3 packets transmitted, 3 received\n"


def test_a_secret_a_tool_echoes_is_masked_in_the_artifact_and_the_result(tmp_path):
    secret = "stdio-service-secret-value-42xyz"
    servers = {"local": McpServerConfig(command=[sys.executable, str(SERVER_SCRIPT)], env={"SVC": "${SVC_TOKEN}"})}
    backend = McpCallBackend(servers, environ={"SVC_TOKEN": secret})
    work = order(tmp_path, McpCall(server="local", tool="read_env", arguments={"name": "SVC"}))
    result, _ = run(backend, work)
    assert result.ok, result.error
    assert result.artifacts == ("artifacts/NET-001.md",)
    assert (Path(work.session_dir) / "artifacts/NET-001.md").read_text() == "…2xyz\n"
    assert secret not in result.summary
    assert secret not in Path(work.log_path).read_text()


def test_a_tool_error_fails_the_attempt_as_a_crash_with_its_message(tmp_path, backend):
    result, _ = run(backend, order(tmp_path, McpCall(server="netops", tool="reboot", arguments={"device": "r9"})))
    assert (result.ok, result.error_kind, result.outcome) == (False, "crash", "failed")
    assert "device r9 is locked by change freeze" in (result.error or "")
    assert result.artifacts == ()


def test_a_server_that_is_down_is_a_network_failure(tmp_path):
    with HttpToolServer() as gone:
        pass  # started and stopped: its port is closed now
    backend = McpCallBackend({"netops": McpServerConfig(url=gone.url, timeout_s=10)})
    result, _ = run(backend, order(tmp_path, McpCall(server="netops", tool="ping", arguments={"host": "a"})))
    assert (result.ok, result.error_kind) == (False, "network")
    assert "cannot reach MCP server 'netops'" in (result.error or "")


def test_the_role_spec_timeout_bounds_the_call(tmp_path, backend):
    work = order(tmp_path, McpCall(server="netops", tool="slow", arguments={"seconds": 5}), timeout_s=1.0)
    result, _ = run(backend, work)
    assert (result.ok, result.error_kind) == (False, "timeout")


def test_cancel_set_before_the_call_interrupts_it(tmp_path, backend):
    cancel = threading.Event()
    cancel.set()
    result, _ = run(backend, order(tmp_path, McpCall(server="netops", tool="ping", arguments={"host": "a"})), cancel)
    assert (result.ok, result.error_kind) == (False, "interrupted")


def test_an_order_without_a_call_or_with_an_unknown_server_names_the_fix(tmp_path, backend):
    missing, _ = run(backend, order(tmp_path, None))
    assert missing.error_kind == "spawn_failed"
    assert '"mcp": {"server"' in (missing.error or "")
    assert "mcp_server: and mcp_tool:" in (missing.error or "")
    unknown, _ = run(backend, order(tmp_path, McpCall(server="netopz", tool="ping")))
    assert unknown.error_kind == "spawn_failed"
    assert "MCP server 'netopz' is not configured (configured: local, netops)" in (unknown.error or "")
    assert "add a table mcp_servers.netopz with command" in (unknown.error or "")


# --------------------------------------------------------------------------- preflight and the registry


def test_preflight_names_the_fix_for_no_server_an_unknown_server_and_an_unset_variable(http_server):
    assert "no MCP server is configured" in (McpCallBackend({}).preflight("netops", spec()) or "")
    servers = {"netops": McpServerConfig(url=http_server.url, token_env="NETOPS_TOKEN")}
    unknown = McpCallBackend(servers).preflight("netops", spec(mcp_server="netopz"))
    assert unknown is not None
    assert "mcp_server: netopz" in unknown
    assert "configured: netops" in unknown
    unset = McpCallBackend(servers, environ={}).preflight("netops", spec(mcp_server="netops"))
    assert unset is not None
    assert "NETOPS_TOKEN" in unset
    assert McpCallBackend(servers, environ={"NETOPS_TOKEN": "x"}).preflight("netops", spec(mcp_server="netops")) is None
    assert McpCallBackend(servers).preflight("netops", spec()) is None


def test_the_registry_has_the_mcp_backend_and_it_uses_the_registered_servers():
    assert "mcp" in backend_names()
    registered = get_backend("mcp")
    try:
        register_servers({})
        assert "no MCP server is configured" in (registered.preflight("netops", spec()) or "")
        register_servers({"netops": McpServerConfig(command=["netops-mcp"])})
        assert registered.preflight("netops", spec(mcp_server="netops")) is None
    finally:
        register_servers({})


# --------------------------------------------------------------------------- where the call comes from


def test_the_tasks_call_wins_and_the_role_spec_fills_what_it_leaves_out():
    task = TaskSpec(id="NET-001", owner="netops", mcp=TaskMcpCall(tool="ping", arguments={"host": "a"}))
    role = spec(mcp_server="netops", mcp_tool="inventory")
    assert mcp_call_for("mcp", role, task) == McpCall(server="netops", tool="ping", arguments={"host": "a"})
    bare = TaskSpec(id="NET-002", owner="netops")
    assert mcp_call_for("mcp", role, bare) == McpCall(server="netops", tool="inventory", arguments={})
    assert mcp_call_for("mcp", spec(), bare) is None  # nothing names a server or a tool
    assert mcp_call_for("claude", role, task) is None  # not an mcp role: no call


def mcp_session(tmp_path: Path, tasks: list[dict], role_extra: str = "backend: mcp\n") -> Path:
    return write_session(
        tmp_path / "session",
        {"netops": "NET"},
        {task["id"]: [] for task in tasks},
        capabilities=[{"name": "netops", "prefix": "NET", "tasks": tasks}],
        role_extra={"netops": role_extra},
    )


def test_task_analysis_carries_the_call_of_each_task(tmp_path):
    folder = mcp_session(
        tmp_path,
        [
            {"id": "NET-001", "goal": "ping", "mcp": {"server": "netops", "tool": "ping", "arguments": {"host": "a"}}},
            {"id": "NET-002", "goal": "inventory", "mcp": {"arguments": {"site": "ams"}}},
            {"id": "NET-003", "goal": "no call"},
        ],
        role_extra="backend: mcp\nmcp_server: netops\nmcp_tool: inventory\n",
    )
    session, problems = inspect_session(folder)
    assert session is not None, problems
    assert session.task("NET-001").mcp == TaskMcpCall(server="netops", tool="ping", arguments={"host": "a"})
    assert session.task("NET-002").mcp == TaskMcpCall(arguments={"site": "ams"})
    assert session.task("NET-003").mcp is None
    meta = session.role_specs["netops"].meta
    assert (meta.mcp_server, meta.mcp_tool) == ("netops", "inventory")
    assert mcp_call_for("mcp", meta, session.task("NET-002")) == McpCall(
        server="netops", tool="inventory", arguments={"site": "ams"}
    )


def test_a_call_in_a_shape_a_graph_entry_is_read_too(tmp_path):
    folder = write_session(
        tmp_path / "session",
        {"netops": "NET"},
        {"NET-001": {"depends_on": [], "role": "netops", "mcp": {"server": "netops", "tool": "ping"}}},
        shape="a",
    )
    session, problems = inspect_session(folder)
    assert session is not None, problems
    assert session.task("NET-001").mcp == TaskMcpCall(server="netops", tool="ping")


@pytest.mark.parametrize(
    ("mcp", "field", "message", "fix"),
    [
        (["ping"], "$.capabilities[0].tasks[0].mcp", "must be an object, got list", '{"server": '),
        ({"tol": "ping"}, "$.capabilities[0].tasks[0].mcp.tol", "unknown key 'tol'", "did you mean 'tool'?"),
        ({"server": ""}, "$.capabilities[0].tasks[0].mcp.server", "non-empty string", "mcp_server"),
        ({"tool": 3}, "$.capabilities[0].tasks[0].mcp.tool", "non-empty string, got int", '"tool": "ping"'),
        ({"arguments": [1]}, "$.capabilities[0].tasks[0].mcp.arguments", "must be an object", '{"name": value'),
    ],
)
def test_a_bad_call_entry_is_named_with_its_json_path_and_fix(tmp_path, mcp, field, message, fix):
    folder = mcp_session(tmp_path, [{"id": "NET-001", "goal": "x", "mcp": mcp}])
    session, problems = inspect_session(folder)
    assert session is None
    assert any(
        p.file == "task-analysis.json" and p.field == field and message in p.message and fix in p.fix for p in problems
    ), problems


def test_a_run_is_told_which_mcp_tasks_name_no_call_or_an_unknown_server(tmp_path):
    folder = mcp_session(
        tmp_path,
        [
            {"id": "NET-001", "goal": "fine", "mcp": {"server": "netops", "tool": "ping"}},
            {"id": "NET-002", "goal": "no tool", "mcp": {"server": "netops"}},
            {"id": "NET-003", "goal": "elsewhere", "mcp": {"server": "dns", "tool": "lookup"}},
        ],
    )
    session, problems = inspect_session(folder)
    assert session is not None, problems
    servers = {"netops": McpServerConfig(command=["netops-mcp"])}
    backend = McpCallBackend(servers)
    found = mcp_task_problems(session.tasks, session.role_specs, {"netops": backend}, servers)
    assert len(found) == 2
    assert found[0].startswith("task NET-002 (role 'netops', backend mcp) names no MCP tool call")
    assert found[1].startswith("task NET-003: MCP server 'dns' is not configured (configured: netops)")
    assert mcp_task_problems(session.tasks, session.role_specs, {"netops": backend}, servers, done={"NET-002"}) == [
        found[1]
    ]
    assert mcp_task_problems(session.tasks, session.role_specs, {"netops": get_backend("demo")}, servers) == []
