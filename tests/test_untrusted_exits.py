"""An exit code proves nothing: `executor run` judges what an attempt really did.

- a worker that exits 0 having done nothing (no file changed, no artifact, no report, no
  model traffic) is ``no_work``, retried and then failed — never ``completed``;
- an agent CLI pointed at a model endpoint nobody listens on is stopped as ``network`` long
  before its wall timeout, with the URL and the CLI's own last error line (the real claude,
  codex and gemini CLIs; skipped when one is not installed);
- a grandchild that left the worker's session and dropped its environment (``setsid env -i``)
  does not survive the run.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest

from backends.containment import DISABLE_ENV, cgroups_available
from protocol.records import RunRow, TaskRow
from session.store import StoreReader
from tests.agent_env import cli_path
from tests.conftest import _EMPTY_CONFIG, EXECUTOR
from tests.sessions import write_session
from tests.test_agent_pipeline import cli_env, project_with_session


def _runs_and_task(folder: Path) -> tuple[list[RunRow], TaskRow]:
    reader = StoreReader.open(folder)
    assert reader is not None
    try:
        runs = reader.runs()
        (task,) = reader.tasks()
    finally:
        reader.close()
    return runs, task


def test_a_worker_that_exits_0_having_done_nothing_is_no_work(executor_cli, tmp_path):
    silent = f'backend: command\ncommand: ["{sys.executable}", "-c", "pass"]\n'
    folder = write_session(tmp_path / "s", {"writer": "WRITE"}, {"WRITE-001": []}, role_extra={"writer": silent})
    result = executor_cli("run", "--session", str(folder), "--max-attempts", "2", "--retry-backoff", "0.05")
    assert result.returncode == 1, result.stdout + result.stderr
    runs, task = _runs_and_task(folder)
    assert [run.error_kind for run in runs] == ["no_work", "no_work"]
    assert task.status == "failed"
    assert "did no work" in (runs[0].error or "")


# The event stream codex printed when it did nothing: a turn, an agent message, no usage, exit 0.
_SILENT_CODEX = """#!/bin/sh
cat >/dev/null
echo '{"type":"thread.started","thread_id":"th-silent"}'
echo '{"type":"turn.started"}'
echo '{"type":"item.completed","item":{"id":"i0","type":"agent_message","text":"Done."}}'
echo '{"type":"turn.completed","usage":{}}'
"""


def test_a_codex_turn_with_no_model_traffic_and_no_change_is_no_work(executor_cli, tmp_path):
    clis = tmp_path / "bin"
    clis.mkdir()
    (clis / "codex").write_text(_SILENT_CODEX)
    (clis / "codex").chmod(0o755)
    _, folder = project_with_session(tmp_path, "codex", {"WRITE-001": []}, {"writer": "WRITE"})
    env = {"TEAM_EXECUTOR_AGENT_CLIS": str(clis), "OPENAI_API_KEY": "sk-openai-fake"}
    result = executor_cli("run", "--session", str(folder), "--max-attempts", "1", env=env)
    assert result.returncode == 1, result.stdout + result.stderr
    (run,), task = _runs_and_task(folder)
    assert (run.outcome, run.error_kind, task.status) == ("failed", "no_work", "failed")
    assert "no model traffic" in (run.error or "")
    assert "it said: Done." in (run.error or "")


def _closed_port() -> int:
    """A loopback port nobody listens on (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.mark.slow
@pytest.mark.parametrize("cli", ["claude", "codex", "gemini"])
def test_an_unreachable_model_endpoint_is_a_network_failure_long_before_the_timeout(executor_cli, tmp_path, cli):
    if cli_path(cli) is None:
        pytest.skip(f"the {cli} CLI is not installed (CI installs it with npm; see .ci/run)")
    url = f"http://127.0.0.1:{_closed_port()}"
    env = cli_env(cli, url)
    _, folder = project_with_session(tmp_path, cli, {"WRITE-001": []}, {"writer": "WRITE"})
    spec = folder / "role-specs" / "writer.md"
    # With a 60 s wall limit, a CLI that keeps retrying would end as `timeout`, not `network`.
    spec.write_text(spec.read_text().replace("timeout: 120\n", "timeout: 60\n"))
    result = executor_cli("run", "--session", str(folder), "--max-attempts", "1", env=env, timeout=300)
    assert result.returncode == 1, result.stdout + result.stderr
    (run,), task = _runs_and_task(folder)
    assert (run.error_kind, task.last_error_kind) == ("network", "network"), run.error
    assert f"cannot reach the model at {url}" in (run.error or ""), run.error
    print(json.dumps({"cli": cli, "started": run.started_at, "ended": run.ended_at, "error": run.error}))


@pytest.mark.slow
def test_gemini_with_the_user_s_own_settings_is_stopped_as_network_too(executor_cli, tmp_path):
    """Outside an isolated HOME nothing caps Gemini's own retries: left alone it retries for minutes."""
    if cli_path("gemini") is None:
        pytest.skip("the gemini CLI is not installed (CI installs it with npm; see .ci/run)")
    url = f"http://127.0.0.1:{_closed_port()}"
    home = tmp_path / "home"
    (home / ".gemini").mkdir(parents=True)
    (home / ".gemini" / "settings.json").write_text(
        json.dumps({"security": {"auth": {"selectedType": "gemini-api-key"}}})
    )
    _, folder = project_with_session(tmp_path, "gemini", {"WRITE-001": []}, {"writer": "WRITE"})
    spec = folder / "role-specs" / "writer.md"
    spec.write_text(
        spec.read_text().replace("isolate_home: true\ntimeout: 120\n", "isolate_home: false\ntimeout: 60\n")
    )
    env = {**cli_env("gemini", url), "HOME": str(home)}
    result = executor_cli("run", "--session", str(folder), "--max-attempts", "1", env=env, timeout=300)
    assert result.returncode == 1, result.stdout + result.stderr
    (run,), _ = _runs_and_task(folder)
    assert run.error_kind == "network", run.error
    assert f"cannot reach the model at {url}" in (run.error or ""), run.error
    assert "fetch failed" in (run.error or "")
    print(json.dumps({"cli": "gemini (own HOME)", "started": run.started_at, "ended": run.ended_at}))


def _escaped(token: str) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["cmdline", "status"]):
        if proc.info["status"] != psutil.STATUS_ZOMBIE and token in " ".join(proc.info["cmdline"] or ()):
            found.append(proc)
    return found


def _kill_escaped(token: str) -> None:
    """A failed test must not leave the escaped shell, nor its `sleep`, behind."""
    for proc in _escaped(token):
        with contextlib.suppress(psutil.Error):
            for child in proc.children(recursive=True):
                child.kill()
            proc.kill()


@pytest.mark.parametrize("cgroups", ["cgroup", "descendants"])
def test_a_detached_grandchild_without_the_marker_is_gone_after_the_run(executor_cli, tmp_path, cgroups):
    token = f"escaped-{uuid.uuid4().hex}"
    # The worker starts a grandchild in a session of its own with an empty environment (no
    # marker variable, no process group of ours), writes its artifact and exits.  Without a
    # cgroup the worker lingers a moment, so that the descendant list can see the grandchild.
    linger = "0" if cgroups == "cgroup" else "2"
    script = (
        f"setsid env -i sh -c 'sleep 300; : {token}' >/dev/null 2>&1 < /dev/null &\n"
        f"sleep {linger}\n"
        'echo done > "$TEAM_EXECUTOR_ARTIFACTS/WRITE-001-out.md"\n'
    )
    role = f"backend: command\ncommand: {json.dumps(['sh', '-c', script])}\n"
    folder = write_session(tmp_path / "s", {"writer": "WRITE"}, {"WRITE-001": []}, role_extra={"writer": role})
    env = {DISABLE_ENV: "1"} if cgroups == "descendants" else {}
    try:
        result = executor_cli("run", "--session", str(folder), "--max-attempts", "1", env=env)
        assert result.returncode == 0, result.stdout + result.stderr
        _, task = _runs_and_task(folder)
        assert task.status == "completed"
        assert not _escaped(token), "the detached grandchild outlived its attempt"
    finally:
        _kill_escaped(token)


def _wait_for(predicate: Callable[[], bool], timeout_s: float = 60) -> bool:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def test_after_a_kill_9_the_next_run_stops_what_escaped_into_the_crashed_attempt_s_cgroup(executor_cli, tmp_path):
    if not cgroups_available():
        pytest.skip("no writable cgroup hierarchy on this machine (the descendant list cannot outlive a kill -9)")
    token = f"escaped-{uuid.uuid4().hex}"
    # First attempt: start the escaping grandchild, then hang.  After the crash: do the work.
    script = (
        'if [ ! -e "$TEAM_EXECUTOR_SESSION/first" ]; then\n'
        '  touch "$TEAM_EXECUTOR_SESSION/first"\n'
        # In a subshell that exits at once: the grandchild is nobody's descendant any more.
        f"  ( setsid env -i sh -c 'sleep 300; : {token}' >/dev/null 2>&1 < /dev/null & )\n"
        "  sleep 300\n"
        "fi\n"
        'echo done > "$TEAM_EXECUTOR_ARTIFACTS/WRITE-001-out.md"\n'
    )
    role = f"backend: command\ncommand: {json.dumps(['sh', '-c', script])}\n"
    folder = write_session(tmp_path / "s", {"writer": "WRITE"}, {"WRITE-001": []}, role_extra={"writer": role})
    crashed = subprocess.Popen(
        [str(EXECUTOR), "run", "--session", str(folder)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "TEAM_EXECUTOR_CONFIG_DIR": str(_EMPTY_CONFIG)},
    )
    try:
        assert _wait_for(lambda: bool(_escaped(token))), "the grandchild never started"
        crashed.kill()
        crashed.wait(timeout=30)
        assert _escaped(token), "a kill -9 leaves the escaped grandchild running"
        result = executor_cli("resume", "--session", str(folder))
        assert result.returncode == 0, result.stdout + result.stderr
        assert not _escaped(token), "the next run did not stop what the crashed attempt left"
    finally:
        if crashed.poll() is None:
            crashed.kill()
        _kill_escaped(token)


_ATTEMPTS_IN_A_ROW = """
import json, os, sys
from backends.containment import _base
from backends.process import run_process
from backends.process_types import ProcessLimits, ProcessSpec
from backends.sandbox import allowlisted_env

folder = sys.argv[1]
env = allowlisted_env(extra={"TEAM_EXECUTOR_MARKER": "reuse-test-" + folder})
def attempt(n, script):
    spec = ProcessSpec(argv=("/bin/sh", "-c", script), cwd=folder, env=env, log_path=f"{folder}/{n}.log")
    outcome = run_process(spec, ProcessLimits(wall_timeout_s=30, grace_s=1))
    return outcome.stdout_tail.decode().split()[0]
where = "grep team-executor /proc/self/cgroup | cut -d: -f3"
seen = [attempt(1, where), attempt(2, where)]
# Escapes its group, and the attempt waits until it has: one still on its way out is stopped
# with the group (and its cgroup, then empty, kept).
escape = "setsid sh -c 'touch escaped; exec sleep 30' </dev/null >/dev/null 2>&1 & "
escape += "while [ ! -e escaped ]; do sleep 0.01; done"
seen.append(attempt(3, where + "; " + escape))
seen.append(attempt(4, where))
print(json.dumps({"seen": seen, "base": str(_base()), "owner": f"{os.getpid()}-"}))
"""


def test_an_emptied_cgroup_is_used_again_by_the_next_attempt_and_removed_when_the_executor_ends(tmp_path):
    # Making and removing a cgroup per attempt were two costly system calls on every attempt:
    # an emptied one is kept for the next.  One that held an escaped process is not kept, and
    # none outlives the process that made them.
    if not cgroups_available():
        pytest.skip("no writable cgroup hierarchy on this machine")
    done = subprocess.run(
        [sys.executable, "-c", _ATTEMPTS_IN_A_ROW, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
        cwd=Path(__file__).resolve().parent.parent,
    )
    report = json.loads(done.stdout)
    first, second, escaped, fourth = report["seen"]
    assert "team-executor/" in first
    assert second == first  # the same cgroup, used again
    assert escaped == first
    assert fourth != escaped  # the cgroup an escaped process was stopped in is removed, not kept
    left = [entry.name for entry in Path(report["base"]).iterdir() if report["owner"] in entry.name]
    assert left == []
