"""`executor logs TASK [-f]`: a real `executor run` in one process, `executor logs -f` in another
sees the running attempt's new lines as the agent prints them, and ends when the task does."""

from __future__ import annotations

import json
import os
import pty
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

from session.lock import read_holder
from tests.conftest import EXECUTOR, run_executor
from tests.sessions import scripted_session
from tests.test_mcp_bridge import RunningBridge

# Prints one line, waits until the test lets it go on (the flag file), prints another.
TALKER = (
    "import os, sys, time\n"
    "print('first line from the agent', flush=True)\n"
    "while not os.path.exists(sys.argv[1]): time.sleep(0.05)\n"
    "print('second line from the agent', flush=True)\n"
)


def _lines(process: subprocess.Popen[str]) -> queue.Queue[str]:
    lines: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.put(line)
        lines.put("")  # end of output

    threading.Thread(target=pump, daemon=True).start()
    return lines


def _wait_for(lines: queue.Queue[str], text: str, seen: list[str], timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while not any(text in line for line in seen):
        line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
        assert line, f"output ended before {text!r}: {seen}"
        seen.append(line)


def test_logs_follow_shows_new_lines_of_a_running_attempt(tmp_path: Path) -> None:
    flag = tmp_path / "go-on"
    folder = scripted_session(
        tmp_path / "s",
        {"T-001": []},
        {"T-001": {"run": [sys.executable, "-c", TALKER, str(flag)]}},
        python=sys.executable,
    )
    run = subprocess.Popen(
        [str(EXECUTOR), "run", "--session", str(folder)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 60
    while read_holder(folder) is None:  # `logs -f` waits for a task only while a run is live
        assert run.poll() is None, "the run ended before it started"
        assert time.monotonic() < deadline, "the run did not start"
        time.sleep(0.05)
    follow = subprocess.Popen(
        [str(EXECUTOR), "logs", "T-001", "-f", "--session", str(folder)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        lines, seen = _lines(follow), []
        _wait_for(lines, "first line from the agent", seen)
        assert not any("second line" in line for line in seen)
        assert follow.poll() is None, "it follows while the attempt runs"
        flag.write_text("")
        _wait_for(lines, "second line from the agent", seen)
        _wait_for(lines, "[worker] T-001 done", seen)
        assert follow.wait(timeout=60) == 0
        assert seen[0].startswith("--- T-001 attempt 1 (command) ---")
        assert run.wait(timeout=60) == 0
    finally:
        for process in (follow, run):
            if process.poll() is None:
                process.kill()
            process.communicate()

    # Read back afterwards: the whole log, as text and as JSON.
    text = run_executor("logs", "T-001", "--session", str(folder))
    assert text.returncode == 0, text.stderr
    assert "first line from the agent\nsecond line from the agent\n" in text.stdout
    record = json.loads(run_executor("logs", "T-001", "--session", str(folder), "--json").stdout)
    assert record["attempt"] == 1
    assert record["ended"] is True
    assert "second line from the agent" in record["text"]


def test_logs_of_a_task_that_has_not_run_or_does_not_exist_say_so(tmp_path: Path) -> None:
    folder = scripted_session(tmp_path / "s", {"T-001": [], "T-002": []}, {"T-002": {"exit": 3}}, python=sys.executable)
    assert run_executor("run", "--session", str(folder), "--max-attempts", "1").returncode == 1
    missing = run_executor("logs", "T-404", "--session", str(folder))
    assert missing.returncode == 1
    assert "no task 'T-404'" in missing.stderr
    attempt = run_executor("logs", "T-002", "--attempt", "5", "--session", str(folder))
    assert attempt.returncode == 2
    assert "--attempt 5: T-002 has attempts 1" in attempt.stderr
    failed = run_executor("logs", "T-002", "--session", str(folder))
    assert "T-002: exiting with 3" in failed.stdout


def test_following_a_task_that_never_ran_with_no_run_going_on_says_so(tmp_path: Path) -> None:
    folder = scripted_session(
        tmp_path / "s", {"T-001": [], "T-002": ["T-001"]}, {"T-001": {"exit": 3}}, python=sys.executable
    )
    assert run_executor("run", "--session", str(folder), "--max-attempts", "1").returncode == 1
    waiting = run_executor("logs", "T-002", "-f", "--session", str(folder))
    assert waiting.returncode == 1
    assert "T-002 has not run and no run is going on: nothing to follow" in waiting.stderr
    done = run_executor("logs", "T-001", "-f", "--json", "--session", str(folder))
    assert done.returncode == 0, "a finished task's log is printed whole, then it ends"
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert {"task_id": "T-001", "attempt": 1, "line": "T-001: exiting with 3"} in lines


def _sse(lines: Iterator[str]) -> Iterator[tuple[str, str, dict[str, object]]]:
    """(event, id, data) of each server-sent event."""
    kind, event_id, data = "message", "", ""
    for line in lines:
        if line.startswith("event: "):
            kind = line[7:]
        elif line.startswith("id: "):
            event_id = line[4:]
        elif line.startswith("data: "):
            data = line[6:]
        elif not line and data:
            yield kind, event_id, json.loads(data)
            kind, event_id, data = "message", "", ""


def test_the_log_stream_of_the_http_api_follows_a_running_attempt_and_resumes(tmp_path: Path) -> None:
    flag = tmp_path / "go-on"
    folder = scripted_session(
        tmp_path / "s",
        {"T-001": []},
        {"T-001": {"run": [sys.executable, "-c", TALKER, str(flag)]}},
        python=sys.executable,
    )
    bridge = RunningBridge(folder)
    base = bridge.url.removesuffix("/mcp")
    headers = {"Authorization": f"Bearer {bridge.token}"}
    try:
        events: list[tuple[str, str, dict[str, object]]] = []
        with httpx.stream("GET", f"{base}/api/tasks/T-001/log", headers=headers, timeout=60) as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            for event in _sse(response.iter_lines()):
                events.append(event)
                text = "".join(str(data.get("text", "")) for kind, _, data in events if kind == "log")
                if "first line from the agent" in text and not flag.exists():
                    assert "second line" not in text
                    flag.write_text("")  # the agent goes on only now: what follows was streamed live
                if event[0] == "end":
                    break
        assert events[0][0] == "attempt"
        assert events[0][2] == {"task_id": "T-001", "attempt": 1, "backend": "command"}
        assert events[-1] == ("end", "", {"status": "completed"})
        logged = [(event_id, data) for kind, event_id, data in events if kind == "log"]
        whole = "".join(str(data["text"]) for _, data in logged)
        assert "first line from the agent\nsecond line from the agent\n" in whole

        # Reconnecting after the first piece: only the rest comes.
        first_id, first = logged[0]
        again = httpx.get(f"{base}/api/tasks/T-001/log", headers={**headers, "Last-Event-ID": first_id}, timeout=60)
        rest = "".join(str(data["text"]) for kind, _, data in _sse(again.text.splitlines()) if kind == "log")
        assert str(first["text"]) + rest == whole

        assert httpx.get(f"{base}/api/tasks/T-404/log", headers=headers, timeout=10).status_code == 404
        assert httpx.get(f"{base}/api/tasks/T-001/log", timeout=10).status_code == 401
    finally:
        bridge.stop()


def _on_a_terminal(*args: str) -> str:
    """What `executor ARGS` prints when its stdout is a terminal (a pseudo-terminal here)."""
    main, child = pty.openpty()
    process = subprocess.Popen([str(EXECUTOR), *args], stdout=child, stderr=subprocess.DEVNULL)
    os.close(child)
    out = b""
    while True:
        try:
            data = os.read(main, 65536)
        except OSError:  # EIO: the other end is closed
            break
        if not data:
            break
        out += data
    os.close(main)
    assert process.wait(timeout=60) == 0
    return out.decode("utf-8", "replace")


def test_an_agents_escape_sequences_never_reach_the_terminal(tmp_path: Path) -> None:
    hostile = "print('\\x1b]0;owned\\x07 and \\x1b[2J cleared')"
    folder = scripted_session(
        tmp_path / "s", {"T-001": []}, {"T-001": {"run": [sys.executable, "-c", hostile]}}, python=sys.executable
    )
    assert run_executor("run", "--session", str(folder)).returncode == 0
    shown = _on_a_terminal("logs", "T-001", "--session", str(folder))
    assert "^[]0;owned^G and ^[[2J cleared" in shown
    assert "\x1b]0;" not in shown
    assert "\x07" not in shown
    piped = run_executor("logs", "T-001", "--session", str(folder))
    assert "\x1b]0;owned\x07" in piped.stdout, "to a pipe (like tail): the bytes as logged"
