"""A worker for the `command` backend that talks to the executor's MCP bridge (a real process).

It uses the bridge the way an agent would, with the environment the executor
gives every worker when the bridge is on (TEAM_EXECUTOR_MCP_URL, _MCP_TOKEN,
_AGENT_ID), and writes what the bridge answered to artifacts/<task>.json:

- report_progress on its own task (must be accepted);
- report_progress on another task, named by argv[2] (must be refused);
- report_progress with a made-up agent id (must be refused);
- submit_task, an owner's tool, with the worker token (must be refused).

When the prompt contains SLEEP, it then sleeps (to be cancelled).
"""

import json
import os
import sys
import time
from pathlib import Path

import anyio
import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

task = os.environ["TEAM_EXECUTOR_TASK_ID"]
url = os.environ["TEAM_EXECUTOR_MCP_URL"]
token = os.environ["TEAM_EXECUTOR_MCP_TOKEN"]
agent_id = os.environ["TEAM_EXECUTOR_AGENT_ID"]
other_task = sys.argv[2] if len(sys.argv) > 2 else "NOPE-001"


def text_of(result: object) -> str:
    return " ".join(getattr(part, "text", "") for part in getattr(result, "content", []))


async def main() -> dict[str, object]:
    answers: dict[str, object] = {"agent_id": agent_id}
    http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"})
    async with http, Client(streamable_http_client(url, http_client=http)) as client:
        own = await client.call_tool(
            "report_progress", {"task_id": task, "pct": 42, "note": "halfway there", "agent_id": agent_id}
        )
        answers["own"] = {"is_error": own.is_error, "text": text_of(own)}
        other = await client.call_tool(
            "report_progress", {"task_id": other_task, "pct": 1, "note": "not mine", "agent_id": agent_id}
        )
        answers["other"] = {"is_error": other.is_error, "text": text_of(other)}
        forged = await client.call_tool(
            "report_progress", {"task_id": task, "pct": 1, "note": "forged", "agent_id": "worker-1-0000"}
        )
        answers["forged"] = {"is_error": forged.is_error, "text": text_of(forged)}
        submit = await client.call_tool("submit_task", {"name": "sneaky", "assigned_to": "worker"})
        answers["submit"] = {"is_error": submit.is_error, "text": text_of(submit)}
    return answers


answers = anyio.run(main)
artifacts = Path(os.environ["TEAM_EXECUTOR_ARTIFACTS"])
artifacts.mkdir(parents=True, exist_ok=True)
(artifacts / f"{task}.json").write_text(json.dumps(answers, indent=1))
print(json.dumps({"type": "progress", "percent": 90, "note": "answers written"}), flush=True)
if "SLEEP" in Path(os.environ["TEAM_EXECUTOR_PROMPT_FILE"]).read_text():
    time.sleep(600)
