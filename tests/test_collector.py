"""The collector paused across a command's start (session.collector), and the console script
and the run that pause and resume it.

In-process where it can be: the pause, and its net (a 0.05 s timer whose thread is joined).  The
run that resumes it is the real `run_session` on a real session (its tasks are real processes).
"""

from __future__ import annotations

import gc
import io
import subprocess
import sys
import threading
from collections.abc import Iterator
from importlib.metadata import entry_points
from pathlib import Path

import pytest

from actors.run import run_session
from actors.run_request import RunRequest
from session import collector
from tests.sessions import layered_session

_ROOT = Path(__file__).resolve().parent.parent
_OUR_PACKAGES = {"protocol", "session", "backends", "notify", "pipeline", "cluster", "actors", "bridge", "web", "cli"}


@pytest.fixture(autouse=True)
def collector_back_on() -> Iterator[None]:
    """Whatever a test does, the suite's collector is on and nothing stays frozen after it."""
    assert gc.isenabled()
    assert not collector.paused()
    try:
        yield
    finally:
        collector.resume()
        gc.enable()
        gc.unfreeze()


def test_a_pause_turns_the_collector_off_and_resume_freezes_what_lives_then_turns_it_on() -> None:
    collector.pause()
    assert not gc.isenabled()
    assert collector.paused()
    tracked = [[index] for index in range(1000)]  # alive at the resume: walked by no later collection
    frozen_before = gc.get_freeze_count()
    collector.resume()
    assert gc.isenabled()
    assert not collector.paused()
    assert gc.get_freeze_count() >= frozen_before + len(tracked)
    collector.resume()  # a second resume changes nothing
    assert gc.isenabled()


def test_a_process_that_never_paused_is_left_as_it_is() -> None:
    frozen_before = gc.get_freeze_count()
    collector.resume()  # a test calling the run in-process: nothing of its objects is frozen
    assert gc.isenabled()
    assert gc.get_freeze_count() == frozen_before
    gc.disable()  # someone else's choice: a pause neither takes it over nor turns it back on
    collector.pause()
    assert not collector.paused()
    collector.resume()
    assert not gc.isenabled()


def test_a_pause_nobody_ends_ends_by_itself() -> None:
    collector.pause(longest_s=0.05)
    assert not gc.isenabled()
    resumer = next(thread for thread in threading.enumerate() if thread.name == "collector-resume")
    assert resumer.daemon  # never what keeps a finished command alive
    resumer.join(timeout=30)
    assert gc.isenabled()
    assert not collector.paused()


def test_the_console_script_is_the_entry_that_pauses_it() -> None:
    (script,) = [entry for entry in entry_points(group="console_scripts") if entry.name == "executor"]
    assert script.value == "cli.launch:main"


def test_the_console_script_pauses_it_before_importing_anything_of_weight() -> None:
    """What cli.launch imports is imported with the collector on: only the pause itself."""
    probe = (
        "import sys; before = set(sys.modules); import cli.launch; print(' '.join(sorted(set(sys.modules) - before)))"
    )
    done = subprocess.run(
        [sys.executable, "-P", "-c", probe], capture_output=True, text=True, check=True, cwd=_ROOT, timeout=60
    )
    ours = {name for name in done.stdout.split() if name.split(".")[0] in _OUR_PACKAGES}
    assert ours == {"cli", "cli.launch", "session", "session.collector"}
    libraries = {name.split(".")[0] for name in done.stdout.split()} & {
        "typer", "click", "pydantic", "rich", "msgspec", "sqlite_utils", "yaml", "psutil", "pykka"
    }  # fmt: skip
    assert not libraries


def test_a_run_resumes_the_collector_once_it_has_started(tmp_path: Path) -> None:
    echo = 'backend: command\ncommand: ["echo", "{task_id} done"]\n'
    folder = layered_session(tmp_path / "dag", layers=2, width=3, role_extra={"worker": echo})
    collector.pause(longest_s=3600)  # only the run can have ended this pause
    frozen_before = gc.get_freeze_count()
    assert run_session(RunRequest(session_dir=folder, interactive=False), out=io.StringIO()) == 0
    assert gc.isenabled()
    assert not collector.paused()
    assert gc.get_freeze_count() > frozen_before
    assert not [thread for thread in threading.enumerate() if thread.name == "collector-resume"]
