"""MCP bridge under load: writes (submitted tasks) and reads over streamable HTTP.

Starts `executor run --session S --backend demo --mcp-http 0` on a copy of the
demo session, connects one official SDK client (one MCP session, as a
dashboard or an IDE agent would), and fires calls open-loop at a fixed rate
for a fixed time, each started on schedule whether or not earlier ones
finished, so a slow server shows up as latency instead of a lower rate.

Every other call submits a task.  ``--writes queued`` (the default) uses
queue_submit_task, which returns a request id without waiting for the Executor,
and the reads between alternate get_task_status (of the task last seen applied)
and get_write_status (of the write just queued); a refused write counts as an
error, and after the load the last write must be applied.  ``--writes direct``
uses submit_task, which waits for the Executor, and reads get_task_status of
the task submitted just before (the measurement before issue 18).
Submitted tasks really run (the demo backend, one process each).

``--transport stdio`` runs `executor mcp` instead and speaks MCP on its stdin and
stdout (as an IDE that launches its servers does); ``--executor CMD`` times another
build of the executor (an A/B copy).

Reported: calls made, errors, p50/p90/p99/max latency per tool, the achieved
rate, the executor process's peak RSS and its bridge process's (the HTTP server
runs in a process of its own since issue 18; sampled every 0.25 s with psutil),
and the load average at the end (the machine may be shared).

Usage: python benchmarks/mcp_load.py [--rate 100] [--seconds 60] [--writes queued|direct] [--agent demo|echo]
       [--transport http|stdio] [--executor CMD]
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import anyio
import httpx2
import psutil
from mcp import Client, StdioServerParameters
from mcp.client.streamable_http import streamable_http_client

REPO = Path(__file__).resolve().parent.parent
EXECUTOR = Path(sys.executable).with_name("executor")


def prepare(folder: Path, agent: str) -> tuple[dict[str, str], list[str]]:
    """The environment and backend flags of the run; with ``echo`` the submitted tasks' role runs
    `echo`: the dispatch path without a Python agent."""
    env = {**os.environ, "TEAM_EXECUTOR_CONFIG_DIR": str(folder.parent / "config")}
    if agent == "echo":
        coder = folder / "role-specs" / "coder.md"
        spec = coder.read_text(encoding="utf-8")
        coder.write_text(spec.replace("backend: demo\n", 'backend: command\ncommand: ["echo", "{task_id} done"]\n'))
    return env, (["--backend", "demo"] if agent == "demo" else [])


def start_run(folder: Path, agent: str, executor: list[str]) -> tuple[subprocess.Popen[str], str, str]:
    env, backend = prepare(folder, agent)
    process = subprocess.Popen(
        [*executor, "run", "--session", str(folder), *backend, "--mcp-http", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    assert process.stdout is not None
    for line in process.stdout:
        # Output to a pipe names the token's file; a terminal would show the token itself.
        found = re.search(r"MCP bridge on (http://\S+/mcp) .*token in (\S+)$", line.strip())
        if found:
            # Keep draining the output so the executor never blocks on a full pipe.
            threading.Thread(target=lambda: [None for _ in process.stdout], daemon=True).start()  # type: ignore[union-attr]
            return process, found.group(1), Path(found.group(2)).read_text(encoding="utf-8").strip()
    raise SystemExit("the executor printed no bridge address")


def sample_rss(find: Callable[[], int | None], stop: threading.Event, peak: list[int]) -> None:
    """Peak RSS of the run (``peak[0]``, its pid from ``find`` once there is one) and of its bridge
    process, if it has one (``peak[1]``)."""
    pid = find()
    while pid is None and not stop.wait(0.25):
        pid = find()
    if pid is None:
        return
    process = psutil.Process(pid)
    bridge: psutil.Process | None = None
    while not stop.wait(0.25):
        try:
            peak[0] = max(peak[0], process.memory_info().rss)
            if bridge is None:
                bridge = next((c for c in process.children() if "cli.bridge_process" in " ".join(c.cmdline())), None)
            if bridge is not None:
                peak[1] = max(peak[1], bridge.memory_info().rss)
        except psutil.NoSuchProcess:
            return


def plan_call(index: int, queued: bool, last_task: str, last_request: str) -> tuple[str, dict[str, object]]:
    """Every other call is a write (a submitted task); the reads between alternate in queued mode
    between the task just applied and the write just queued."""
    if index % 2 == 0:
        tool = "queue_submit_task" if queued else "submit_task"
        return tool, {"name": f"load task {index}", "assigned_to": "coder", "priority": "low"}
    if queued and index % 4 == 3:
        return "get_write_status", {"request_id": last_request}
    return "get_task_status", {"task_id": last_task}


async def load_http(url: str, token: str, rate: float, seconds: float, queued: bool) -> dict[str, list[float]]:
    http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=60)
    async with http, Client(streamable_http_client(url, http_client=http)) as client:
        return await load(client, rate, seconds, queued)


async def load_stdio(
    params: StdioServerParameters, rate: float, seconds: float, queued: bool
) -> dict[str, list[float]]:
    async with Client(params) as client:
        return await load(client, rate, seconds, queued)


async def load(client: Client, rate: float, seconds: float, queued: bool) -> dict[str, list[float]]:
    latencies: dict[str, list[float]] = {}
    errors: list[str] = []
    interval = 1.0 / rate
    total = int(rate * seconds)
    last = {"task": "PLAN-001", "request": ""}

    async def one(index: int) -> None:
        tool, arguments = plan_call(index, queued, last["task"], last["request"])
        if tool == "get_write_status" and not last["request"]:
            tool, arguments = "get_task_status", {"task_id": last["task"]}
        started = time.perf_counter()
        try:
            result = await client.call_tool(tool, arguments)
        except Exception as error:  # noqa: BLE001 - every failure is counted, none stops the load
            errors.append(f"{tool}: {type(error).__name__}: {error}")
            return
        latencies.setdefault(tool, []).append(time.perf_counter() - started)
        data = result.structured_content or {}
        if result.is_error:
            errors.append(f"{tool}: {' '.join(getattr(p, 'text', '') for p in result.content)[:200]}")
        elif tool == "submit_task":
            last["task"] = data["id"]
        elif tool == "queue_submit_task":
            last["request"] = data["request_id"]
        elif tool == "get_write_status" and data.get("state") == "refused":
            errors.append(f"queued write {data['request_id']} refused: {data.get('error')}")
        elif tool == "get_write_status" and data.get("state") == "applied":
            last["task"] = data["result"]["task_id"]

    begin = time.perf_counter()
    async with anyio.create_task_group() as group:
        for index in range(total):
            delay = begin + index * interval - time.perf_counter()
            if delay > 0:
                await anyio.sleep(delay)
            group.start_soon(one, index)
    elapsed = time.perf_counter() - begin
    if queued:
        await settle_writes(client, last["request"], errors)
    latencies["_errors"] = errors  # type: ignore[assignment]
    latencies["_elapsed"] = [elapsed]
    return latencies


async def settle_writes(client: Client, request_id: str, errors: list[str]) -> None:
    """After the load: the last queued write must be applied (the Executor handles its inbox in order)."""
    if not request_id:
        return
    for _ in range(600):
        result = await client.call_tool("get_write_status", {"request_id": request_id})
        state = (result.structured_content or {}).get("state")
        if state == "applied":
            return
        if state != "queued":
            errors.append(f"the last queued write ended {state}: {result.structured_content}")
            return
        await anyio.sleep(0.1)
    errors.append(f"the last queued write {request_id} was still queued 60 s after the load")


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] if ordered else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=float, default=100.0, help="calls per second (both tools together)")
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument(
        "--writes",
        choices=("queued", "direct"),
        default="queued",
        help="queued: queue_submit_task (an id at once) and get_write_status; direct: submit_task (waits)",
    )
    parser.add_argument(
        "--agent",
        choices=("demo", "echo"),
        default="demo",
        help="what each submitted task runs: demo (a Python demo agent per task, as before) or echo "
        "(a `command` role: the executor's whole dispatch path, without a Python start per task)",
    )
    parser.add_argument("--transport", choices=("http", "stdio"), default="http")
    parser.add_argument("--executor", default=str(EXECUTOR), help="the executor command (an A/B run names another)")
    args = parser.parse_args()
    executor = shlex.split(args.executor)
    work = Path(tempfile.mkdtemp(prefix="mcp-load-"))
    folder = work / "session"
    shutil.copytree(REPO / "examples" / "demo", folder)
    (work / "config").mkdir()
    queued = args.writes == "queued"
    stop, peak = threading.Event(), [0, 0]
    if args.transport == "stdio":
        env, backend = prepare(folder, args.agent)
        command = [*executor, "mcp", "--session", str(folder), *backend]
        params = StdioServerParameters(command=command[0], args=command[1:], env=env, cwd=str(work))

        def find() -> int | None:
            runs = [p.pid for p in psutil.Process().children() if str(folder) in " ".join(p.cmdline())]
            return runs[0] if runs else None

        threading.Thread(target=sample_rss, args=(find, stop, peak), daemon=True).start()
        try:
            results = anyio.run(load_stdio, params, args.rate, args.seconds, queued)
        finally:
            stop.set()
    else:
        process, url, token = start_run(folder, args.agent, executor)
        threading.Thread(target=sample_rss, args=(lambda: process.pid, stop, peak), daemon=True).start()
        try:
            results = anyio.run(load_http, url, token, args.rate, args.seconds, queued)
        finally:
            stop.set()
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=120)
            except subprocess.TimeoutExpired:
                process.kill()
    errors = results.pop("_errors")
    elapsed = results.pop("_elapsed")[0]
    calls = sum(len(values) for values in results.values()) + len(errors)
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    print(f"date: {time.strftime('%Y-%m-%d')}")
    print(
        f"{args.transport}, agent {args.agent}, writes {args.writes}; "
        f"target rate {args.rate:g}/s for {args.seconds:g}s: "
        f"{calls} calls in {elapsed:.1f}s "
        f"({calls / elapsed:.1f}/s), errors: {len(errors)}"
    )
    for tool, values in results.items():
        ms = [value * 1000 for value in values]
        print(
            f"  {tool}: n={len(ms)} p50={percentile(ms, 0.5):.1f} ms p90={percentile(ms, 0.9):.1f} ms "
            f"p99={percentile(ms, 0.99):.1f} ms max={max(ms, default=float('nan')):.1f} ms "
            f"mean={statistics.fmean(ms) if ms else float('nan'):.1f} ms"
        )
    print(f"  executor peak RSS: {peak[0] / 2**20:.1f} MiB", end="")
    print(f", its bridge process: {peak[1] / 2**20:.1f} MiB" if peak[1] else "")
    print(f"  load average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    for error in errors[:10]:
        print(f"  error: {error}")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
