"""A worker that floods its output: real children printing megabytes of short lines."""

from __future__ import annotations

import json
import sqlite3
import sys
import textwrap
from pathlib import Path
from typing import Any

from backends.evidence import NETWORK_ERROR_BYTES
from backends.process import run_process
from backends.process_types import ProcessLimits, ProcessSpec
from backends.sandbox import allowlisted_env
from session.message_bus import read_messages
from tests.sessions import write_session

PY = sys.executable
KEY = "flood-env-KEY-value-0123456789"
NOTE = b"\n[team-executor: log truncated at 1048576 bytes]\n"


def spec_for(tmp_path: Path, argv: list[str], env: dict[str, str] | None = None) -> ProcessSpec:
    return ProcessSpec(
        argv=tuple(argv),
        cwd=str(tmp_path),
        env=allowlisted_env(extra=env),
        log_path=str(tmp_path / "logs" / "run.log"),
    )


def test_a_flood_of_short_lines_is_read_to_the_end_with_its_log_capped_and_its_tail_bounded(tmp_path: Path) -> None:
    lines: list[bytes] = []
    outcome = run_process(
        spec_for(tmp_path, ["sh", "-c", "yes | head -c 30000000"]),
        # A run alone reads at full speed: 30 MB of `yes` is never held back (output held back
        # beside other runs is not silence either: tests/test_shared_loop_runs.py).
        ProcessLimits(wall_timeout_s=300, hang_timeout_s=2, tail_bytes=4096, log_max_bytes=1 << 20),
        on_stdout_line=lines.append,
        stdout_line_prefix=b"{",
    )
    assert outcome.error_kind is None, outcome
    assert outcome.stdout_bytes == 30_000_000
    assert outcome.stdout_tail == b"y\n" * 2048
    log = (tmp_path / "logs" / "run.log").read_bytes()
    assert log == b"y\n" * (1 << 19) + NOTE
    assert lines == []


def test_json_lines_inside_a_flood_are_still_passed_whole_and_in_order(tmp_path: Path) -> None:
    code = textwrap.dedent(
        """
        import json, sys
        out = sys.stdout.buffer
        for n in range(3):
            out.write(b"y\\n" * 300_000)
            out.write(json.dumps({"type": "progress", "percent": n, "note": "x" * 70_000}).encode() + b"\\n")
        out.write(b"   " + json.dumps({"type": "result", "n": 3}).encode())
        """
    )
    lines: list[bytes] = []
    outcome = run_process(
        spec_for(tmp_path, [PY, "-c", code]),
        ProcessLimits(wall_timeout_s=300, tail_bytes=256 * 1024),
        on_stdout_line=lines.append,
        stdout_line_prefix=b"{",
    )
    assert outcome.error_kind is None, outcome
    assert [json.loads(line) for line in lines] == [
        *({"type": "progress", "percent": n, "note": "x" * 70_000} for n in range(3)),
        {"type": "result", "n": 3},
    ]


def test_an_agent_cli_sees_its_json_events_and_its_network_errors_but_not_the_flood_around_them(
    tmp_path: Path,
) -> None:
    code = textwrap.dedent(
        """
        import sys
        out, err = sys.stdout.buffer, sys.stderr.buffer
        out.write(b"y\\n" * 400_000 + b'{"type": "system"}\\n' + b"Reconnecting... waiting for network\\n")
        out.write(b"y\\n" * 400_000 + b'{"type": "result"}\\n')
        err.write(b"n\\n" * 400_000 + b"API Error: Connection refused (ECONNREFUSED)\\n" + b"n\\n" * 1000)
        """
    )
    lines: list[bytes] = []
    errors: list[bytes] = []
    outcome = run_process(
        spec_for(tmp_path, [PY, "-c", code]),
        ProcessLimits(wall_timeout_s=300),
        on_stdout_line=lines.append,
        on_stderr_line=errors.append,
        stdout_line_prefix=b"{",
        stdout_line_pattern=NETWORK_ERROR_BYTES,
        stderr_line_pattern=NETWORK_ERROR_BYTES,
    )
    assert outcome.error_kind is None, outcome
    assert lines == [b'{"type": "system"}', b"Reconnecting... waiting for network", b'{"type": "result"}']
    assert errors == [b"API Error: Connection refused (ECONNREFUSED)"]


def test_a_key_printed_at_the_end_of_a_flood_never_reaches_the_log(tmp_path: Path) -> None:
    code = textwrap.dedent(
        """
        import os, sys, time
        key = os.environ["SOME_SERVICE_API_KEY"].encode()
        out = sys.stdout.buffer
        out.write(b"y\\n" * 131_000 + b"key " + key[:10]); out.flush(); time.sleep(0.2)
        out.write(key[10:] + b" printed\\n" + b"y\\n" * 500_000 + key)
        """
    )
    outcome = run_process(
        spec_for(tmp_path, [PY, "-c", code], env={"SOME_SERVICE_API_KEY": KEY}), ProcessLimits(wall_timeout_s=300)
    )
    assert outcome.error_kind is None, outcome
    log = (tmp_path / "logs" / "run.log").read_bytes()
    assert KEY.encode() not in log
    assert log.count("…6789".encode()) == 2
    assert b"key \xe2\x80\xa66789 printed\n" in log


def _run_one_task(executor_cli: Any, tmp_path: Path, script: str) -> Path:
    """Run a one-task session whose command runs ``script`` (dedented) to a good end; its folder."""
    folder = tmp_path / "session"
    (tmp_path / "agent.py").write_text(textwrap.dedent(script))
    extra = f'backend: command\ncommand: ["{PY}", "{tmp_path / "agent.py"}"]\n'
    write_session(folder, {"worker": "T"}, {"T-001": []}, role_extra={"worker": extra})
    result = executor_cli("run", "--session", str(folder))
    assert result.returncode == 0, result.stderr
    return folder


def test_a_flood_of_progress_lines_reaches_the_event_log_coalesced_and_ends_with_the_last(
    executor_cli, tmp_path: Path
) -> None:
    folder = _run_one_task(
        executor_cli,
        tmp_path,
        """
        import json, sys
        lines = [json.dumps({"type": "progress", "percent": n // 30, "note": f"step {n}"}) for n in range(3000)]
        sys.stdout.write("\\n".join(lines) + "\\n")
        sys.stdout.write(json.dumps({"type": "progress", "percent": 100, "note": "the last"}) + "\\n")
        print("done")
        """,
    )
    with sqlite3.connect(folder / ".executor" / "state.db") as db:
        notes = [
            json.loads(payload)
            for (payload,) in db.execute("SELECT payload_json FROM events WHERE type = 'task_progress' ORDER BY id")
        ]
    assert 1 <= len(notes) < 100, len(notes)
    assert (notes[-1]["percent"], notes[-1]["note"]) == (100, "the last")


def test_every_paced_report_is_stored_and_the_bus_gets_the_first(executor_cli, tmp_path: Path) -> None:
    # 20 reports over about a second: the store keeps up (several events); the team's message
    # bus, read by agents and people, gets the task's first report and then one per 5 s at most.
    folder = _run_one_task(
        executor_cli,
        tmp_path,
        """
        import json, time
        for n in range(20):
            print(json.dumps({"type": "progress", "percent": 5 * n, "note": f"step {n}"}), flush=True)
            time.sleep(0.05)
        print("done")
        """,
    )
    with sqlite3.connect(folder / ".executor" / "state.db") as db:
        stored = db.execute("SELECT count(*) FROM events WHERE type = 'task_progress'").fetchone()[0]
    on_bus = [m["data"]["phase"] for m in read_messages(folder) if m["type"] == "progress"]
    assert stored >= 2, stored
    assert on_bus == ["dispatched", "step 0"], on_bus  # the executor's own, then the agent's first
