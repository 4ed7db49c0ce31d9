"""Two ready tasks that declare the same file are serialized by a real run; others still run
in parallel.  Files come from task-analysis.json's key_files (or `executor task prep --file`)."""

from __future__ import annotations

import json
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

from session.store import StoreReader
from tests.sessions import command_role_extra, write_session


def test_tasks_sharing_a_file_do_not_run_at_once(tmp_path: Path, executor_cli: Any) -> None:
    tasks = [
        {"id": "T-001", "goal": "Edit the parser", "key_files": ["src/parser.py"]},
        {"id": "T-002", "goal": "Also edit the parser", "key_files": ["src/parser.py", "docs/parser.md"]},
        {"id": "T-003", "goal": "Edit the CLI", "key_files": ["src/cli.py"]},
    ]
    folder = write_session(
        tmp_path / "s",
        {"worker": "T"},
        {"T-001": [], "T-002": [], "T-003": []},
        role_extra={"worker": command_role_extra(sys.executable)},
        capabilities=[{"name": "worker", "prefix": "T", "tasks": tasks}],
    )
    (folder / "behaviors.json").write_text(json.dumps({"default": {"sleep": 1.0}}))
    result = executor_cli("run", "--session", str(folder), "--max-workers", "3")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "T-002 waits for T-001: both change src/parser.py" in result.stdout
    mirrored = sorted(path.name for path in (folder / "tasks" / "completed").glob("*.md"))
    assert mirrored == ["T-001.md", "T-002.md", "T-003.md"], "the run keeps the Markdown mirror current"
    assert "src/parser.py" in (folder / "tasks" / "completed" / "T-002.md").read_text()
    reader = StoreReader.open(folder)
    assert reader is not None
    try:
        spans = {
            run.task_id: (datetime.fromisoformat(run.started_at), datetime.fromisoformat(run.ended_at or ""))
            for run in reader.runs()
        }
    finally:
        reader.close()
    assert spans["T-002"][0] >= spans["T-001"][1], "the second parser task started after the first ended"
    assert spans["T-003"][0] < spans["T-001"][1], "a task with other files ran alongside"
