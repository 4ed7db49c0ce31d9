"""`executor diff TASK` and `/api/tasks/{id}/diff`: the demo's coder really edits a git project,
and its diff (every attempt, or one) comes back from the trees recorded around each attempt,
without the executor's own files; through the real CLI and the real HTTP server."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from session.store import StoreReader
from tests.conftest import EXECUTOR, run_executor

SESSION = Path(".workflow") / ".team" / "TC-demo-textkit-slugify"
CODE_FILES = ["tests/test_text.py", "textkit/__init__.py", "textkit/text.py"]


def _git(project: Path, *args: str) -> str:
    done = subprocess.run(["git", "-C", str(project), *args], capture_output=True, text=True, timeout=60, check=True)
    return done.stdout


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    project = tmp_path_factory.mktemp("diff") / "textkit"
    result = run_executor("demo", "--into", str(project))
    assert result.returncode == 0, result.stdout + result.stderr
    return project


def test_the_diff_of_a_task_is_what_its_attempts_changed_in_the_project(demo: Path) -> None:
    session = demo / SESSION
    result = run_executor("diff", "IMPL-001", "--session", str(session), "--json")
    assert result.returncode == 0, result.stderr
    diff = json.loads(result.stdout)
    assert diff["attempts"] == [1, 2, 3]  # the gate failed once, the review sent it back once
    assert [change["path"] for change in diff["files"]] == CODE_FILES
    # Nothing else changed in the project since the team started: the task's diff is git's.
    assert diff["patch"] == _git(demo, "diff", "--no-color", "HEAD")
    assert diff["added"] == sum(change["added"] for change in diff["files"]) > 0
    assert not any(".executor" in path or path.startswith(".workflow") for path in diff["patch"].split())

    stat = run_executor("diff", "IMPL-001", "--session", str(session), "--stat")
    assert stat.returncode == 0, stat.stderr
    assert stat.stdout.startswith("IMPL-001, attempts 1, 2, 3: 3 file(s)")
    assert "textkit/text.py" in stat.stdout
    assert "@@" not in stat.stdout

    # The review's change alone: attempt 3 added max_length to slugify (and its test).
    third = json.loads(run_executor("diff", "IMPL-001", "-s", str(session), "--attempt", "3", "--json").stdout)
    assert '+def slugify(text: str, separator: str = "-", max_length: int | None = None)' in third["patch"]
    assert (
        "max_length"
        not in json.loads(run_executor("diff", "IMPL-001", "-s", str(session), "--attempt", "1", "--json").stdout)[
            "patch"
        ]
    )

    # A planning task changed no code: an empty diff, not an error.
    plan = run_executor("diff", "PLAN-001", "--session", str(session))
    assert plan.returncode == 0
    assert "no change to the project's files" in plan.stdout


def test_files_changed_of_a_run_never_lists_the_executors_own_files(demo: Path) -> None:
    reader = StoreReader.open(demo / SESSION)
    assert reader is not None
    try:
        listed = {path for run in reader.runs() for path in run.files_changed}
    finally:
        reader.close()
    assert listed
    assert listed <= set(CODE_FILES)


@pytest.mark.parametrize(
    ("args", "code", "says"),
    [
        (["IMPL-001", "--attempt", "9"], 2, "--attempt 9: IMPL-001 has recorded attempts 1, 2, 3"),
        (["../../etc/passwd"], 2, "is not a task id"),
        (["NOPE-001"], 1, "no git state is recorded for NOPE-001"),
    ],
)
def test_a_diff_that_cannot_be_made_says_why(demo: Path, args: list[str], code: int, says: str) -> None:
    result = run_executor("diff", *args, "--session", str(demo / SESSION))
    assert result.returncode == code
    assert says in result.stderr
    assert "Traceback" not in result.stderr


def test_diff_refuses_a_folder_that_is_not_a_session(tmp_path: Path) -> None:
    result = run_executor("diff", "IMPL-001", "--session", str(tmp_path))
    assert result.returncode == 1  # a missing session exits 1, as for every command
    assert "is not a session folder" in result.stderr


def test_the_http_api_serves_the_same_diff(tmp_path: Path) -> None:
    project = tmp_path / "textkit"
    process = subprocess.Popen(
        [str(EXECUTOR), "demo", "--into", str(project), "--http", "0"],
        env={**os.environ, "TEAM_EXECUTOR_CONFIG_DIR": str(tmp_path / "config")},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        found = None
        deadline = time.monotonic() + 60
        while found is None and time.monotonic() < deadline:
            line = process.stdout.readline() if process.stdout else ""
            if not line:
                break
            found = re.search(r"MCP bridge on (http://\S+)/mcp .*owner bearer token in (\S+)$", line.strip())
        assert found, "no address in the demo's output"
        base, token = found.group(1), Path(found.group(2)).read_text().strip()
        with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=20) as http:
            deadline = time.monotonic() + 90
            while http.get("/api/tasks/REVIEW-001").json()["task"]["status"] != "completed":
                assert time.monotonic() < deadline, "the demo did not finish"
                time.sleep(0.3)
            served = http.get("/api/tasks/IMPL-001/diff").json()
            assert [change["path"] for change in served["files"]] == CODE_FILES
            assert served["patch"] == _git(project, "diff", "--no-color", "HEAD")
            stat = http.get("/api/tasks/IMPL-001/diff", params={"stat": "true", "attempt": 2}).json()
            assert stat["attempts"] == [2]
            assert stat["patch"] is None
            assert http.get("/api/tasks/IMPL-001/diff", params={"attempt": 7}).status_code == 400
            assert http.get("/api/tasks/NOPE-9/diff").status_code == 404
            assert http.get("/api/tasks/..%2F..%2Fx/diff").status_code in (400, 404)
            assert httpx.get(f"{base}/api/tasks/IMPL-001/diff", timeout=10).status_code == 401
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate()
