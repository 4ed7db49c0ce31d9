"""The same DAG run locally and on a 2-node local Ray cluster; then many sleeping agents.

Measures, with the real console script:
- a 1,000-task layered DAG (command agents that finish at once): wall time, per-task
  overhead, and the executor's peak RSS (its own process, agents excluded), locally and with
  ``--cluster`` on a ``ray.cluster_utils.Cluster`` of a head and one worker node;
- N concurrent sleeping agents (default 200) on the cluster: wall time against the sleep,
  and the executor's peak RSS.

Usage: python benchmarks/cluster_scale.py [--tasks 1000] [--sleepers 200] [--sleep 30] [--workers 16]
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.sessions import command_role_extra, layered_session, write_session

EXECUTOR = str(Path(sys.executable).with_name("executor"))


def dag(folder: Path, tasks: int) -> Path:
    width = 50
    layered_session(
        folder, layers=tasks // width, width=width, role_extra={"worker": command_role_extra(sys.executable)}
    )
    (folder / "behaviors.json").write_text(json.dumps({"default": {}}))
    return folder


def sleepers(folder: Path, count: int, sleep_s: float) -> Path:
    graph = {f"T-{index + 1:04d}": [] for index in range(count)}
    write_session(folder, {"worker": "T"}, graph, role_extra={"worker": command_role_extra(sys.executable)})
    (folder / "behaviors.json").write_text(json.dumps({"default": {"sleep": sleep_s}}))
    return folder


def run(folder: Path, workers: int, cluster: str | None) -> dict[str, float]:
    args = [EXECUTOR, "run", "--session", str(folder), "--max-workers", str(workers)]
    if cluster:
        args += ["--cluster", cluster]
        (folder / "executor.toml").write_text("[cluster]\nnum_cpus = 0\n")
    start = time.perf_counter()
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    watched = psutil.Process(process.pid)
    peak = 0
    while process.poll() is None:
        try:
            peak = max(peak, watched.memory_info().rss)
        except psutil.NoSuchProcess:
            break
        time.sleep(0.1)
    wall = time.perf_counter() - start
    if process.returncode != 0:
        raise SystemExit(f"the run in {folder} ended with {process.returncode}")
    return {"wall_s": round(wall, 2), "peak_rss_mib": round(peak / 2**20, 1)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tasks", type=int, default=1000)
    parser.add_argument("--sleepers", type=int, default=200)
    parser.add_argument("--sleep", type=float, default=30.0)
    parser.add_argument("--workers", type=int, default=16)
    options = parser.parse_args()
    from ray.cluster_utils import Cluster  # noqa: PLC0415

    results: dict[str, object] = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="minutes"),
        "machine": f"{platform.node()} {platform.machine()} {psutil.cpu_count()} cpus "
        f"{psutil.virtual_memory().total / 2**30:.0f} GiB, Python {platform.python_version()}",
    }
    with tempfile.TemporaryDirectory() as tmp:
        local = run(dag(Path(tmp) / "local", options.tasks), options.workers, None)
        local["per_task_ms"] = round(local["wall_s"] * 1000 / options.tasks, 1)
        results["dag_local"] = local
        print(json.dumps(results), flush=True)
        cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "object_store_memory": 100 * 2**20})
        cluster.add_node(num_cpus=1, object_store_memory=100 * 2**20)
        cluster.wait_for_nodes()
        try:
            remote = run(dag(Path(tmp) / "cluster", options.tasks), options.workers, cluster.address)
            remote["per_task_ms"] = round(remote["wall_s"] * 1000 / options.tasks, 1)
            remote["overhead_per_task_ms"] = round((remote["wall_s"] - local["wall_s"]) * 1000 / options.tasks, 1)
            results["dag_cluster_2_nodes"] = remote
            print(json.dumps(results), flush=True)
            many = run(
                sleepers(Path(tmp) / "sleepers", options.sleepers, options.sleep), options.sleepers, cluster.address
            )
            many["sleep_s"] = options.sleep
            many["agents"] = options.sleepers
            results["sleepers_cluster"] = many
        finally:
            cluster.shutdown()
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
