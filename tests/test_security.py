"""The executor tried as an attacker would: hostile task ids, a worker hunting for credentials.

Everything here drives the real `executor` process: validate and run on a session
whose task-analysis.json an upstream LLM wrote with hostile ids; the MCP bridge and
the HTTP API given hostile ids; and a real worker (tests/cred_hunter.py) that
searches its cwd, environment and parent folders for tokens and tries them.
"""

from __future__ import annotations

import json
import os
import re
import select
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import EXECUTOR
from tests.sessions import copy_demo, write_session
from tests.test_mcp_bridge import ENV, RunningBridge, _text

HUNTER = Path(__file__).resolve().parent / "cred_hunter.py"

HOSTILE_IDS = ["ST0-001/../../../../escaped", "ST0-$(touch PWNED)", "ST0-002\nST0-003", "../ST0-004", "-rf"]


def _everything_under(root: Path) -> set[Path]:
    return {path.relative_to(root) for path in root.rglob("*")}


@pytest.mark.parametrize("hostile", HOSTILE_IDS)
def test_a_hostile_task_id_fails_validate_and_run_writes_nothing_outside(
    tmp_path: Path, executor_cli: Any, hostile: str
) -> None:
    folder = tmp_path / "deep" / "er" / "session"
    command = 'backend: command\ncommand: ["sh", "-c", "echo {task_id} > done.txt"]\n'
    write_session(
        folder,
        {"coder": "ST0"},
        {hostile: [], "ST0-010": [hostile]},
        role_extra={"coder": command},
        capabilities=[{"name": "coder", "prefix": "ST0", "tasks": [{"id": hostile, "goal": "x"}]}],
    )
    before = _everything_under(tmp_path)

    checked = executor_cli("validate", "--session", str(folder))
    assert checked.returncode == 1, checked.stdout + checked.stderr
    said = checked.stdout + checked.stderr
    assert "task-analysis.json: $.dependency_graph" in said, said
    assert "$.capabilities[0].tasks[0].id" in said
    assert "rename the task: use only letters, digits" in said
    assert "Traceback" not in said

    ran = executor_cli("run", "--session", str(folder), timeout=60)
    assert ran.returncode != 0
    assert "Traceback" not in ran.stdout + ran.stderr
    after = _everything_under(tmp_path)
    new = {path for path in after - before if not str(path).startswith("deep/er/session/.executor")}
    assert new == set(), f"run wrote outside its state folder: {sorted(map(str, new))}"
    assert not any("escaped" in str(path) or "PWNED" in str(path) for path in after)


def test_a_nul_byte_in_a_path_field_is_a_clear_problem_not_a_crash(tmp_path: Path, executor_cli: Any) -> None:
    folder = write_session(
        tmp_path / "s",
        {"coder": "IMPL"},
        {"IMPL-001": []},
        capabilities=[
            {"name": "coder", "prefix": "IMPL", "tasks": [{"id": "IMPL-001", "upstream_artifacts": ["a\u0000b"]}]}
        ],
    )
    team = json.loads((folder / "team-session.json").read_text())
    team["roles"][0]["role_spec"] = "role-specs/coder\u0000.md"
    (folder / "team-session.json").write_text(json.dumps(team))
    checked = executor_cli("validate", "--session", str(folder))
    said = checked.stdout + checked.stderr
    assert checked.returncode == 1, said
    assert "team-session.json: $.roles[0].role_spec: the path holds a NUL byte" in said
    assert "task-analysis.json: $.capabilities[0].tasks[0].upstream_artifacts[0]: the path holds a NUL byte" in said
    assert "Traceback" not in said


# --- a live run: hostile ids over MCP and HTTP, and a worker hunting for credentials ------------


@pytest.fixture(scope="module")
def hunted(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningBridge]:
    folder = tmp_path_factory.mktemp("hunt") / "session"
    write_session(
        folder,
        {"hunter": "H"},
        {"H-001": [], "H-002": ["H-001"]},
        role_extra={"hunter": f'backend: command\ncommand: ["{sys.executable}", "{HUNTER}", "H-002"]\n'},
    )
    # A token an older version left inside the session: it may have been read, so it must go.
    (folder / ".executor").mkdir()
    (folder / ".executor" / "mcp-token").write_text("stale-owner-token-left-by-an-older-version-0123\n")
    bridge = RunningBridge(folder)
    yield bridge
    bridge.stop()


def test_a_worker_that_hunts_for_credentials_gets_no_owner_power(hunted: RunningBridge) -> None:
    status = hunted.wait_status("H-001", {"completed", "failed"})
    assert status["task"]["status"] == "completed", status
    report = json.loads((hunted.folder / "artifacts" / "H-001.json").read_text())
    # The hunt worked: it found the worker token it was given and got into the MCP bridge with it.
    assert report["candidates"] > 0
    assert report["worker_token_found"] is True
    assert report["mcp_accepted"] >= 1
    # And got nothing more: no owner API, no owner tool, no way to the token file.
    assert report["owner_api"] == []
    assert report["owner_tool_calls"] == {}
    assert hunted.wait_status("H-002", {"completed", "failed"})["task"]["status"] == "completed"
    assert "TEAM_EXECUTOR_CONFIG_DIR" not in report["env_names"]
    assert not (hunted.folder / ".executor" / "mcp-token").exists(), "the old in-session token is removed"
    for path in hunted.folder.rglob("*"):
        if path.is_file():
            assert hunted.token.encode() not in path.read_bytes(), f"the owner token is in {path}"


@pytest.mark.parametrize(
    ("tool", "arguments"),
    [
        ("get_task_status", {"task_id": "../../../etc/passwd"}),
        ("cancel_task", {"task_id": "H-001/../../x"}),
        ("submit_task", {"name": "x", "assigned_to": "hunter", "blocked_by": ["$(touch PWNED)"]}),
        ("task_create", {"title": "x", "role": "hunter", "blocked_by": ["H-001\n"]}),
    ],
)
def test_hostile_ids_over_mcp_are_refused_by_the_grammar(
    hunted: RunningBridge, tool: str, arguments: dict[str, Any]
) -> None:
    result = hunted.call(tool, arguments)
    assert result.is_error
    assert "pattern" in _text(result) or "match" in _text(result), _text(result)


def test_hostile_ids_over_http_are_refused_by_the_grammar(hunted: RunningBridge) -> None:
    base = hunted.url.removesuffix("/mcp")
    headers = {"Authorization": f"Bearer {hunted.token}"}
    with httpx.Client(base_url=base, headers=headers, timeout=20) as http:
        for path in ("/api/tasks/$(id)", "/api/tasks/..%2F..%2Fetc", "/api/tasks/-rf"):
            assert http.get(path).status_code in (404, 422), path
        assert http.post("/api/tasks/H-001%2F..%2Fx/cancel").status_code in (404, 422)
        posted = http.post("/api/tasks", json={"name": "x", "assigned_to": "hunter", "blocked_by": ["../x"]})
        assert posted.status_code == 422, posted.text
    assert not list(hunted.folder.parent.rglob("PWNED"))


def test_the_token_file_is_outside_the_session_and_private(hunted: RunningBridge) -> None:
    assert not hunted.token_file.resolve().is_relative_to(hunted.folder.resolve())
    assert oct(hunted.token_file.stat().st_mode & 0o777) == oct(0o600)
    assert oct(hunted.token_file.parent.stat().st_mode & 0o777) == oct(0o700)
    assert hunted.token not in "".join(hunted.lines), "into a pipe the run names the file, never the token"


# --- the owner token is printed only to a terminal ---------------------------------------------


def _wait_for_line(path: Path, text: str, process: subprocess.Popen[bytes]) -> str:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and process.poll() is None:
        content = path.read_text(errors="replace")
        if text in content:
            return content
        time.sleep(0.1)
    raise AssertionError(f"no {text!r} in {path}: {path.read_text(errors='replace')}")


def _token_named_in(output: str) -> str:
    found = re.search(r"owner bearer token in (\S+)", output)
    assert found, output
    return Path(found.group(1)).read_text().strip()


def test_demo_with_http_into_a_file_names_the_token_file_never_the_token(tmp_path: Path) -> None:
    out = tmp_path / "demo.log"
    with out.open("wb") as sink:
        process = subprocess.Popen(
            [str(EXECUTOR), "demo", "--http", "0", "--into", str(tmp_path / "demo")],
            stdout=sink,
            stderr=subprocess.STDOUT,
            env=ENV,
        )
        try:
            _wait_for_line(out, "idle: 3/3 task(s) done", process)
        finally:
            process.send_signal(signal.SIGINT)
            process.wait(timeout=60)
    said = out.read_text()
    token = _token_named_in(said)
    assert token not in said
    assert "?token=" not in said


def test_stdio_mcp_keeps_the_token_out_of_its_stderr(tmp_path: Path) -> None:
    folder = copy_demo(tmp_path / "demo")
    err = tmp_path / "stderr.log"
    with err.open("wb") as sink:
        process = subprocess.Popen(
            [str(EXECUTOR), "mcp", "--session", str(folder), "--backend", "demo"],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=sink,
            env=ENV,
        )
        try:
            said = _wait_for_line(err, "owner bearer token in", process)
        finally:
            assert process.stdin is not None
            process.stdin.close()  # the client leaves: the run stops
            process.wait(timeout=60)
    said = err.read_text()
    assert _token_named_in(said) not in said


def test_at_a_terminal_the_token_and_sign_in_link_are_shown(tmp_path: Path) -> None:
    primary, secondary = os.openpty()
    process = subprocess.Popen(
        [str(EXECUTOR), "demo", "--http", "0", "--into", str(tmp_path / "demo")],
        stdin=subprocess.DEVNULL,
        stdout=secondary,
        stderr=secondary,
        env=ENV,
    )
    os.close(secondary)
    seen = b""
    deadline = time.monotonic() + 60
    try:
        while b"?token=" not in seen and time.monotonic() < deadline:
            ready, _, _ = select.select([primary], [], [], 1.0)
            if ready:
                try:
                    seen += os.read(primary, 65536)
                except OSError:  # the terminal closed: the process ended
                    break
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=60)
        os.close(primary)
    said = seen.decode(errors="replace")
    found = re.search(r"owner bearer token \(kept 0600 in (\S+)\): (\S+)", said)
    assert found, said
    assert Path(found.group(1)).read_text().strip() == found.group(2)
    assert f"?token={found.group(2)}" in said
    for path in (tmp_path / "demo").rglob("*"):  # the run's own log files included
        if path.is_file():
            assert found.group(2).encode() not in path.read_bytes(), f"the owner token is in {path}"


def test_a_config_folder_inside_the_session_is_refused_before_any_token_is_made(
    tmp_path: Path, executor_cli: Any
) -> None:
    folder = copy_demo(tmp_path / "demo")
    inside = folder / "artifacts" / "config"
    result = executor_cli(
        "run",
        "--session",
        str(folder),
        "--backend",
        "demo",
        "--http",
        "0",
        env={"TEAM_EXECUTOR_CONFIG_DIR": str(inside)},
    )
    said = result.stdout + result.stderr
    assert result.returncode == 2, said
    assert "inside the session folder" in said
    assert "TEAM_EXECUTOR_CONFIG_DIR" in said
    assert not list(folder.rglob("*.token"))


def test_a_store_holding_an_id_outside_the_grammar_refuses_the_run(tmp_path: Path, executor_cli: Any) -> None:
    # What an older version left after running a hostile task-analysis.json.
    folder = copy_demo(tmp_path / "demo")
    first = executor_cli("run", "--session", str(folder), "--backend", "demo")
    assert first.returncode == 0, first.stdout + first.stderr
    with sqlite3.connect(folder / ".executor" / "state.db") as db:
        db.execute("UPDATE tasks SET id = 'QA-001/../../../../escaped' WHERE id = 'QA-001'")
    again = executor_cli("run", "--session", str(folder), "--backend", "demo")
    said = again.stdout + again.stderr
    assert again.returncode == 2, said
    assert "'QA-001/../../../../escaped'" in said
    assert "move" in said
    assert "Traceback" not in said
