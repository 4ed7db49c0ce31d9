"""Attempts on a real multi-node Ray cluster (ray.cluster_utils.Cluster on this machine).

One cluster serves the module (starting Ray is slow on a small machine): a head without
labels, a node labelled ``gpu-box`` and, per test, nodes added and removed.  The executor is
the real CLI in a subprocess, joined to the cluster with ``--cluster``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import _EMPTY_CONFIG, EXECUTOR, run_executor
from tests.sessions import scripted_session

ray = pytest.importorskip("ray", reason="ray is not installed (pip install -e '.[test,ray]'; .ci/run installs it)")
from ray.cluster_utils import Cluster  # noqa: E402

PY = sys.executable
STORE_MB = 100 * 1024 * 1024


@pytest.fixture(scope="module")
def cluster():
    made = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 1, "object_store_memory": STORE_MB, "resources": {"head": 1}},
    )
    gpu = made.add_node(num_cpus=1, object_store_memory=STORE_MB, resources={"gpu-box": 8})
    made.wait_for_nodes()
    made.gpu_node = gpu
    yield made
    made.shutdown()


def _config(folder: Path, resources: dict[str, dict[str, float]]) -> None:
    lines = ["[cluster]", "num_cpus = 0", "", "[cluster.resources]"]
    lines += [
        f"{role} = {{ {', '.join(f'{k!r} = {v}' for k, v in need.items())} }}" for role, need in resources.items()
    ]
    (folder / "executor.toml").write_text("\n".join(lines).replace("'", '"') + "\n")


def _session(tmp_path: Path, ids: list[str], behaviors: dict, resources: dict) -> Path:
    graph: dict[str, list[str]] = {task_id: [] for task_id in ids}
    folder = scripted_session(tmp_path / "S", graph, behaviors, python=PY)
    _config(folder, resources)
    return folder


def _rows(folder: Path, sql: str) -> list[tuple]:
    import sqlite3  # noqa: PLC0415

    conn = sqlite3.connect(folder / ".executor" / "state.db")
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def _placements(folder: Path) -> dict[str, set[str]]:
    """task id -> the node ids its attempts reported running on."""
    found: dict[str, set[str]] = {}
    for task_id, payload in _rows(
        folder, "SELECT task_id, payload_json FROM events WHERE payload_json LIKE '%on node %'"
    ):
        note = json.loads(payload).get("note", "")
        found.setdefault(task_id, set()).add(note.rsplit("(", 1)[-1].rstrip(")"))
    return found


def _completed(folder: Path) -> dict[str, int]:
    counts: dict[str, int] = {}
    for (task_id,) in _rows(folder, "SELECT task_id FROM events WHERE type = 'task_completed'"):
        counts[task_id] = counts.get(task_id, 0) + 1
    return counts


def _start(folder: Path, address: str, command: str = "run") -> subprocess.Popen:
    env = {**os.environ, "COLUMNS": "200", "TEAM_EXECUTOR_CONFIG_DIR": str(_EMPTY_CONFIG)}
    return subprocess.Popen(
        [str(EXECUTOR), command, "--session", str(folder), "--cluster", address, "--retry-backoff", "0.2"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )


def _wait_for(check, what: str, timeout: float = 90.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def test_attempts_land_on_the_node_with_the_roles_label(cluster, tmp_path):
    ids = ["T-001", "T-002", "T-003"]
    folder = _session(tmp_path, ids, {"default": {"sleep": 0.1}}, {"worker": {"gpu-box": 1}})
    done = run_executor("run", "--session", str(folder), "--cluster", cluster.address, timeout=240)
    assert done.returncode == 0, done.stdout + done.stderr
    assert _completed(folder) == dict.fromkeys(ids, 1)
    placements = _placements(folder)
    gpu_id = cluster.gpu_node.node_id[:12]
    assert placements == {task_id: {gpu_id} for task_id in ids}
    nodes = _rows(folder, "SELECT task_id, node FROM runs ORDER BY task_id")
    assert [(task_id, gpu_id in (node or "")) for task_id, node in nodes] == [(task_id, True) for task_id in ids]


def test_check_and_cluster_status_show_where_attempts_run(cluster, tmp_path):
    marks = tmp_path / "marks"
    marks.mkdir()
    folder = _session(tmp_path, ["T-001"], {"default": {"mark": str(marks), "hang": True}}, {"worker": {"gpu-box": 1}})
    run = _start(folder, cluster.address)
    gpu_id = cluster.gpu_node.node_id[:12]
    try:
        _wait_for(lambda: list(marks.glob("*-a1-*")), "the attempt to start")
        _wait_for(lambda: _rows(folder, "SELECT node FROM runs WHERE node IS NOT NULL"), "the node to be recorded")
        check = run_executor("check", "--session", str(folder))
        assert f"({gpu_id})" in check.stdout, check.stdout
        shown = run_executor("cluster", "status", "--cluster", cluster.address, "--json", timeout=120)
        assert shown.returncode == 0, shown.stderr
        rows = {row["node_id"][:12]: row for row in json.loads(shown.stdout)}
        assert rows[gpu_id]["labels"] == {"gpu-box": 8}
        assert [name.split(":")[1] for name in rows[gpu_id]["attempts"]] == ["T-001"]
        assert all(not row["attempts"] for node, row in rows.items() if node != gpu_id)
    finally:
        run.send_signal(signal.SIGTERM)
        run.send_signal(signal.SIGTERM)
        run.communicate(timeout=120)


def test_an_unschedulable_label_or_missing_cluster_is_one_clear_message(tmp_path):
    folder = _session(tmp_path, ["T-001"], {}, {})
    result = run_executor("run", "--session", str(folder), "--cluster", "127.0.0.1:1", timeout=120)
    assert result.returncode == 2
    assert "cannot reach the Ray cluster at '127.0.0.1:1'" in result.stderr + result.stdout
    assert "Traceback" not in result.stderr


def test_a_removed_node_loses_its_attempts_which_run_again_elsewhere_once(cluster, tmp_path):
    marks = tmp_path / "marks"
    marks.mkdir()
    ids = ["T-001", "T-002"]
    behaviors = {"default": {"mark": str(marks), "hang_attempts": 1}}
    folder = _session(tmp_path, ids, behaviors, {"worker": {"flaky": 1}})
    doomed = cluster.add_node(num_cpus=1, object_store_memory=STORE_MB, resources={"flaky": 4})
    cluster.wait_for_nodes()
    run = _start(folder, cluster.address)
    try:
        _wait_for(lambda: len(list(marks.glob("*-a1-*"))) == len(ids), "both first attempts to start")
        assert all(found == {doomed.node_id[:12]} for found in _placements(folder).values())
        cluster.add_node(num_cpus=1, object_store_memory=STORE_MB, resources={"flaky": 4})
        cluster.remove_node(doomed)
        output, _ = run.communicate(timeout=240)
    finally:
        if run.poll() is None:
            run.kill()
    assert run.returncode == 0, output
    assert _completed(folder) == dict.fromkeys(ids, 1)
    lost = _rows(folder, "SELECT task_id, attempt FROM runs WHERE error_kind = 'node_lost' ORDER BY task_id")
    assert lost == [(task_id, 1) for task_id in ids]
    finished = _rows(folder, "SELECT task_id, attempt FROM runs WHERE outcome = 'completed' ORDER BY task_id")
    assert finished == [(task_id, 2) for task_id in ids]


def test_resume_after_kill_9_stops_the_attempts_left_on_the_cluster(cluster, tmp_path):
    marks = tmp_path / "marks"
    marks.mkdir()
    ids = ["T-001", "T-002"]
    behaviors = {"default": {"mark": str(marks), "hang_attempts": 1}}
    folder = _session(tmp_path, ids, behaviors, {"worker": {"gpu-box": 1}})
    run = _start(folder, cluster.address)
    try:
        _wait_for(lambda: len(list(marks.glob("*-a1-*"))) == len(ids), "both first attempts to start")
        os.kill(run.pid, signal.SIGKILL)
        run.communicate(timeout=30)
    finally:
        if run.poll() is None:
            run.kill()
    hung = [int(mark.name.rsplit("-", 1)[1]) for mark in marks.glob("*-a1-*")]
    # A reset attempt keeps its number: from now on the agents finish at once.
    (folder / "behaviors.json").write_text(json.dumps({"default": {"sleep": 0.1}}))
    resumed = run_executor("resume", "--session", str(folder), "--cluster", cluster.address, timeout=240)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "attempt(s) a previous run left on the cluster" in resumed.stdout
    assert _completed(folder) == dict.fromkeys(ids, 1)
    for pid in hung:  # the first attempts' agents were stopped, not left to finish unseen
        assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text().lower()
