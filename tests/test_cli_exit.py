"""How `executor` exits: without the interpreter's teardown, but with everything exit owes.

`cli.main` leaves through ``os._exit`` once the command is done (tearing down every module
took ~0.2 s after a 1,000-task run).  What must still happen at exit is checked here on the
real console script: the ``atexit`` handlers (the cgroups kept for reuse are removed by one),
the exit status, and output written to a pipe.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from actors.run import _session_marker
from backends.containment import _base, _tag, cgroups_available
from tests.conftest import run_executor
from tests.sessions import layered_session


def _cgroups_of(session: Path) -> set[str]:
    """The cgroups of ``session``'s attempts (named after its marker: other runs on this machine
    make theirs meanwhile)."""
    base = _base()
    assert base is not None
    tag = _tag(_session_marker(session))
    return {entry.name for entry in base.iterdir() if entry.is_dir() and entry.name.startswith(f"{tag}-")}


@pytest.mark.skipif(not cgroups_available(), reason="attempts run in cgroups only where one can be made")
def test_a_run_removes_the_cgroups_it_kept_for_reuse_when_it_exits(tmp_path: Path) -> None:
    echo = 'backend: command\ncommand: ["echo", "{task_id} done"]\n'
    folder = layered_session(tmp_path / "dag", layers=3, width=10, role_extra={"worker": echo})
    result = run_executor("run", "--session", str(folder), "--max-workers", "4")
    assert result.returncode == 0, result.stdout + result.stderr
    # An attempt's emptied cgroup is kept for the next one and removed by an atexit handler:
    # an exit that skipped the handlers would leave up to 4 here.
    assert _cgroups_of(folder) == set()


def test_the_exit_status_and_the_last_words_reach_a_pipe(tmp_path: Path) -> None:
    folder = layered_session(
        tmp_path / "dag", layers=1, width=3, role_extra={"worker": 'backend: command\ncommand: ["false"]\n'}
    )
    result = run_executor("run", "--session", str(folder), "--max-attempts", "1")
    assert result.returncode == 1  # tasks failed
    # The report, the last thing a run prints, ends with what to do next.
    assert "failed: T-000001, T-000002, T-000003" in result.stdout, result.stdout
    assert result.stdout.rstrip().splitlines()[-1].startswith("next: executor resume"), result.stdout
    assert run_executor("no-such-command").returncode == 2
    missing = run_executor("check", "--session", os.fspath(tmp_path / "nowhere"))
    assert missing.returncode == 1
    assert "session folder does not exist" in missing.stdout + missing.stderr
