"""`executor backup` while a real run writes, and `executor restore`: the copy opens as a valid
store holding the run's state of that moment; a restore is refused while a run holds the session
and afterwards puts that state back (keeping the replaced store)."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from session.lock import read_holder
from session.store import DB_NAME, STATE_DIR, StoreReader
from tests.conftest import EXECUTOR, run_executor
from tests.sessions import scripted_session


def _statuses(folder: Path) -> dict[str, str]:
    reader = StoreReader.open(folder)
    if reader is None:
        return {}
    try:
        return {row.id: row.status for row in reader.tasks()}
    finally:
        reader.close()


def _as_session(backup: Path, where: Path) -> Path:
    """A folder whose store is the backup, to read it with the executor's own reader."""
    (where / STATE_DIR).mkdir(parents=True)
    (where / STATE_DIR / DB_NAME).write_bytes(backup.read_bytes())
    return where


def test_a_backup_taken_during_a_live_run_is_a_valid_store_and_restore_waits_for_the_run(tmp_path: Path) -> None:
    flag = tmp_path / "go-on"
    wait = [sys.executable, "-c", f"import os,time\nwhile not os.path.exists({str(flag)!r}): time.sleep(0.05)"]
    graph = {"T-001": [], "T-002": ["T-001"], "T-003": []}
    behaviors = {"T-002": {"run": wait}, "default": {"sleep": 0}}
    folder = scripted_session(tmp_path / "s", graph, behaviors, python=sys.executable)
    run = subprocess.Popen([str(EXECUTOR), "run", "--session", str(folder)], stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while _statuses(folder).get("T-002") != "in_progress" or read_holder(folder) is None:
            assert run.poll() is None, "the run ended early"
            assert time.monotonic() < deadline, "T-002 did not start"
            time.sleep(0.1)
        made = run_executor("backup", "--session", str(folder), "--to", str(tmp_path / "copies"), "--json")
        assert made.returncode == 0, made.stderr
        backup = Path(json.loads(made.stdout)["backup"])
        assert backup.parent == tmp_path / "copies"

        refused = run_executor("restore", str(backup), "--session", str(folder))
        assert refused.returncode == 1
        assert "is already being run by" in refused.stderr
        assert "A restore needs the session to itself" in refused.stderr
        flag.write_text("")
        assert run.wait(timeout=60) == 0
    finally:
        if run.poll() is None:
            run.kill()
        run.wait()

    # The copy: sound, and the run's state at the moment it was taken.
    conn = sqlite3.connect(backup)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    finally:
        conn.close()
    copy = _as_session(backup, tmp_path / "copy")
    assert _statuses(copy) == {"T-001": "completed", "T-002": "in_progress", "T-003": "completed"}
    assert _statuses(folder)["T-002"] == "completed"

    restored = run_executor("restore", str(backup), "--session", str(folder))
    assert restored.returncode == 0, restored.stderr
    assert "next: executor resume" in restored.stdout
    assert _statuses(folder)["T-002"] == "in_progress"
    kept = list((folder / STATE_DIR / "backups").glob("*-before-restore-*.db"))
    assert len(kept) == 1
    assert _statuses(_as_session(kept[0], tmp_path / "kept"))["T-002"] == "completed"
    # The restored state resumes like any store: the interrupted T-002 runs again and completes.
    assert run_executor("resume", "--session", str(folder)).returncode == 0
    assert _statuses(folder)["T-002"] == "completed"


def test_backup_and_restore_refuse_what_they_cannot_use(tmp_path: Path) -> None:
    folder = scripted_session(tmp_path / "s", {"T-001": []}, {}, python=sys.executable)
    never = run_executor("backup", "--session", str(folder))
    assert never.returncode == 1
    assert "(it has never run): nothing to back up" in never.stderr
    assert run_executor("run", "--session", str(folder)).returncode == 0
    default = run_executor("backup", "--session", str(folder))
    assert default.returncode == 0, default.stderr
    assert list((folder / STATE_DIR / "backups").glob("s-state-*.db"))

    junk = tmp_path / "junk.db"
    junk.write_text("not a database")
    bad = run_executor("restore", str(junk), "--session", str(folder))
    assert bad.returncode == 1
    assert "is not a state store" in bad.stderr
    missing = run_executor("restore", str(tmp_path / "nope.db"), "--session", str(folder))
    assert missing.returncode == 1
    assert "no such file" in missing.stderr
    assert _statuses(folder) == {"T-001": "completed"}, "a refused restore changes nothing"
