"""The bridge's tools: each call becomes one protocol message to the right actor, or one read
of the store.

Tools are plain ``def``s: the SDK runs them on worker threads, where blocking
on a pykka ask (with a timeout) never holds up the event loop or the actor
tree.  Every tool answers at once — work that takes time returns an id to
poll.  Refusals come back as tool errors naming the argument; nothing a
client sends can crash the server or the tree.

The tools live by concern: :mod:`bridge.read_tools` (answered from the store's
read-only connection), :mod:`bridge.write_tools` (messages to the tree, and the
``queue_*`` writes of :mod:`bridge.writes` that return an id without waiting),
:mod:`bridge.context` (what they share).
"""

from __future__ import annotations

from mcp.server.mcpserver import MCPServer

from bridge.context import (
    PRIORITY_OF,
    BridgeContext,
    DuplicateTool,
    NotRunnable,
    RefusedByRun,
    ToolTable,
    Unavailable,
    fleet_out,
    server_version,
    task_out,
    task_view,
)
from bridge.read_tools import read_tools
from bridge.write_tools import write_tools
from bridge.writes import WriteQueue

__all__ = [
    "PRIORITY_OF",
    "TOOL_ORDER",
    "BridgeContext",
    "DuplicateTool",
    "NotRunnable",
    "RefusedByRun",
    "ToolTable",
    "Unavailable",
    "build_server",
    "fleet_out",
    "server_version",
    "task_out",
    "task_view",
]

#: The order clients see the tools in (tools/list).
TOOL_ORDER = (
    "submit_task",
    "get_task_status",
    "list_tasks",
    "cancel_task",
    "resume_session",
    "check_session",
    "report_progress",
    "report_blocker",
    "escalate_decision",
    "answer_escalation",
    "list_escalations",
    "get_fleet_status",
    "add_api_key",
    "select_model",
    "set_panic",
    "task_create",
    "task_prep",
    "task_claim",
    "task_review",
    "task_complete",
    "task_fail",
    "task_next",
    "queue_submit_task",
    "queue_cancel_task",
    "queue_answer_escalation",
    "get_write_status",
)


def build_server(context: BridgeContext) -> MCPServer:
    """The MCP server with every tool registered (raises :class:`DuplicateTool`)."""
    server = MCPServer(
        name="team-executor",
        version=server_version(),
        instructions=(
            "Drive a team-executor session: submit tasks, read their status, watch the fleet, answer "
            "the questions the pipeline asks. Every tool answers at once; poll get_task_status for progress. "
            "Under load, queue_submit_task (and the other queue_* tools) return a request id without waiting "
            "for the executor; get_write_status gives the outcome."
        ),
        warn_on_duplicate_tools=False,  # ToolTable refuses duplicates outright
        log_level="WARNING",  # the SDK configures the root logger with this level
    )
    writes = WriteQueue(context)
    tools = {**read_tools(context, writes), **write_tools(context, writes)}
    table = ToolTable(server)
    for name in TOOL_ORDER:
        table.add(tools.pop(name))
    for tool in tools.values():  # a tool missing from TOOL_ORDER is still served, last
        table.add(tool)
    return server
