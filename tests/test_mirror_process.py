"""The task mirror in a process of its own: the same files, the same masking, a last pass always.

A real child process (``python -m session.mirror_process``), a real store (SQLite file) and real files.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest

from protocol.records import TaskRow
from session.mirror_process import PROCESS_FROM_TASKS, MirrorProcess, start_mirror
from session.redaction import mask, register_secret
from session.store import Store
from session.store_changes import TaskChange
from session.task_mirror import MIRROR_DIR

ROOT = Path(__file__).resolve().parent.parent


def _files(folder: Path) -> set[str]:
    root = folder / MIRROR_DIR
    return {path.relative_to(root).as_posix() for path in root.rglob("*.md")}


def _session(folder: Path, **subjects: str) -> None:
    store = Store.open(folder)
    try:
        with store.transaction():
            store.put_tasks(
                [
                    TaskRow(id="A-001", owner="coder", subject=subjects.get("a", "first")),
                    TaskRow(id="B-001", owner="coder", blocked_by=["A-001"], subject=subjects.get("b", "second")),
                ]
            )
    finally:
        store.close()


def _complete(folder: Path, task_id: str) -> None:
    store = Store.open(folder)
    try:
        with store.transaction():
            store.update_task(task_id, TaskChange(status="completed", completed_at="2026-12-07T00:00:00.000+00:00"))
            from protocol.events import TaskProgress  # noqa: PLC0415

            store.append(TaskProgress(task_id=task_id, attempt=1, note="done"))
    finally:
        store.close()


def _mirror_children() -> list[psutil.Process]:
    found = []
    for child in psutil.Process().children():
        try:  # a child killed a moment ago may be a zombie until it is reaped: no command line any more
            if "session.mirror_process" in child.cmdline():
                found.append(child)
        except psutil.Error:
            continue
    return found


def test_the_process_mirrors_the_store_and_its_last_pass_shows_the_last_change(tmp_path):
    _session(tmp_path)
    mirror = MirrorProcess(tmp_path).start()
    (child,) = _mirror_children()
    # A session of its own: a ^C at the terminal reaches the executor, which then ends the child's stdin.
    assert os.getsid(child.pid) == child.pid != os.getsid(0)
    _complete(tmp_path, "A-001")  # just before the end: only the last pass can show it
    mirror.stop()
    assert _files(tmp_path) == {"completed/A-001.md", "ready/B-001.md"}
    assert _mirror_children() == []


def test_secrets_the_executor_registers_before_and_after_the_start_are_masked_in_the_files(tmp_path):
    before, after = "mirrorProcessBefore" + "7Qw3Er5T", "mirrorProcessAfter" + "9Zx1Cv3B"
    # Written to the store before either is registered: the rows hold them as they are.
    _session(tmp_path, a=f"uses {before}", b=f"uses {after}")
    register_secret(before)
    mirror = MirrorProcess(tmp_path).start()
    register_secret(after)  # told to the child as it is registered
    mirror.stop()
    texts = "".join(path.read_text() for path in (tmp_path / MIRROR_DIR).rglob("*.md"))
    assert before not in texts
    assert after not in texts
    assert mask(before) in texts
    assert mask(after) in texts


def test_when_the_process_dies_a_thread_of_the_executor_takes_over_at_once(tmp_path, caplog):
    _session(tmp_path)
    mirror = MirrorProcess(tmp_path).start()
    try:
        (child,) = _mirror_children()
        child.kill()
        child.wait(timeout=30)
        _complete(tmp_path, "A-001")
        # Shown during the run, not only by the last pass: wait for it (a bound, not a timing).
        deadline = time.monotonic() + 60
        while "completed/A-001.md" not in _files(tmp_path) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert "completed/A-001.md" in _files(tmp_path)
        assert "goes on on a thread" in caplog.text
        _complete(tmp_path, "B-001")
    finally:
        mirror.stop()
    assert _files(tmp_path) == {"completed/A-001.md", "completed/B-001.md"}  # the thread's last pass


def test_a_process_that_cannot_start_leaves_the_mirror_on_a_thread(tmp_path, caplog, monkeypatch):
    _session(tmp_path)
    monkeypatch.setattr(sys, "executable", str(tmp_path / "no-such-python"))
    mirror = MirrorProcess(tmp_path).start()
    try:
        assert _mirror_children() == []
        assert "could not start" in caplog.text
        _complete(tmp_path, "A-001")
    finally:
        mirror.stop()
    assert _files(tmp_path) == {"completed/A-001.md", "ready/B-001.md"}


def test_when_the_executor_is_killed_the_process_makes_its_last_pass_and_exits(tmp_path):
    _session(tmp_path)
    script = textwrap.dedent(
        f"""
        import sys, time
        sys.path.insert(0, {str(ROOT)!r})
        from pathlib import Path
        from session.mirror_process import MirrorProcess
        MirrorProcess(Path({str(tmp_path)!r})).start()
        print("started", flush=True)
        time.sleep(600)
        """
    )
    executor = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE)
    try:
        assert executor.stdout is not None
        assert executor.stdout.readline() == b"started\n"
        (child,) = [
            proc for proc in psutil.Process(executor.pid).children() if "session.mirror_process" in proc.cmdline()
        ]
        _complete(tmp_path, "A-001")
        executor.send_signal(signal.SIGKILL)
        executor.wait(timeout=30)
        child.wait(timeout=60)  # its stdin ended with the executor: a last pass, then exit
    finally:
        if executor.poll() is None:
            executor.kill()
        executor.communicate()
    assert _files(tmp_path) == {"completed/A-001.md", "ready/B-001.md"}


def test_a_session_package_in_the_working_directory_is_never_what_runs(tmp_path, monkeypatch):
    # The run's working directory is the project, where agents write: a `session/mirror_process.py`
    # left there would receive every secret on its stdin if Python put that folder on its path.
    project = tmp_path / "project"
    (project / "session").mkdir(parents=True)
    (project / "session" / "__init__.py").write_text("")
    caught = tmp_path / "caught.txt"
    (project / "session" / "mirror_process.py").write_text(
        f"import sys\nopen({str(caught)!r}, 'wb').write(sys.stdin.buffer.read())\n"
    )
    folder = tmp_path / "session-folder"
    folder.mkdir()
    _session(folder)
    register_secret("mirrorProcessPlanted" + "5Ty7Ui9O")
    monkeypatch.chdir(project)
    mirror = MirrorProcess(folder).start()
    _complete(folder, "A-001")
    mirror.stop()
    assert not caught.exists()
    assert _files(folder) == {"completed/A-001.md", "ready/B-001.md"}  # our child did the work


def test_small_sessions_keep_the_mirror_on_a_thread(tmp_path):
    _session(tmp_path)
    small = start_mirror(tmp_path, PROCESS_FROM_TASKS - 1)
    try:
        assert not isinstance(small, MirrorProcess)
        assert _mirror_children() == []
    finally:
        small.stop()
    large = start_mirror(tmp_path, PROCESS_FROM_TASKS)
    try:
        assert isinstance(large, MirrorProcess)
        assert len(_mirror_children()) == 1
    finally:
        large.stop()


def test_the_last_pass_is_waited_for_by_its_exit_not_by_polling() -> None:
    from session.mirror_process import _wait_for_exit  # noqa: PLC0415 - the one private helper tested alone

    ends = subprocess.Popen([sys.executable, "-c", "import time, sys; time.sleep(0.2); sys.exit(3)"])
    assert _wait_for_exit(ends, 30.0) == 3
    assert _wait_for_exit(ends, 30.0) == 3  # reaped already: answered from the Popen, no pidfd of a reused pid
    sleeps = subprocess.Popen(["sleep", "30"])
    try:
        with pytest.raises(subprocess.TimeoutExpired):
            _wait_for_exit(sleeps, 0.2)
        assert sleeps.poll() is None  # it gave up at its timeout, while the child still ran
    finally:
        sleeps.kill()
        sleeps.wait()
