"""`executor logs TASK [-f]`: a real `executor run` in one process, `executor logs -f` in another
sees the running attempt's new lines as the agent prints them, and ends when the task does."""

from __future__ import annotations

import json
import queue
import subprocess
import sys
import threading
import time
from pathlib import Path

from session.lock import read_holder
from tests.conftest import EXECUTOR, run_executor
from tests.sessions import scripted_session

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
