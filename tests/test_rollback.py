"""`executor rollback TASK`: real runs of real agents (the scripted `command` agent) in a real git
repository that also holds the session folder; the rollback restores the task's files, refuses
when a later task changed the same files (until --cascade names it), when a file changed since,
and while the task runs; the store records it and the next run takes it from there."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from protocol.events import TaskRolledBack
from session.lock import read_holder
from session.rollback import prepare, restore, undo_restore
from session.store import StoreReader
from tests.conftest import EXECUTOR, run_executor
from tests.sessions import scripted_session


def _git(project: Path, *args: str) -> str:
    done = subprocess.run(["git", "-C", str(project), *args], capture_output=True, text=True, timeout=60, check=True)
    return done.stdout


def _project(tmp_path: Path, graph: dict[str, list[str]], behaviors: dict[str, object]) -> tuple[Path, Path]:
    project = tmp_path / "project"
    project.mkdir()
    (project / "README.md").write_text("hello\n")
    (project / "a.txt").write_text("zero\n")
    _git(project, "init", "-q")
    _git(project, "-c", "user.name=t", "-c", "user.email=t@localhost", "add", ".")
    _git(project, "-c", "user.name=t", "-c", "user.email=t@localhost", "commit", "-qm", "start")
    # The session inside the repository, not ignored: its files must never count as a task's.
    folder = scripted_session(project / ".workflow" / "s", graph, behaviors, python=sys.executable)
    return project, folder


def _write(path: str, text: str) -> dict[str, object]:
    return {"write_file": {"path": path, "text": text}}


def _status(folder: Path, task_id: str) -> tuple[str, str | None]:
    """The task's status and error kind; ("", None) before the run has created it."""
    reader = StoreReader.open(folder)
    if reader is None:
        return "", None
    try:
        row = reader.task(task_id)
        return (row.status, row.last_error_kind) if row is not None else ("", None)
    finally:
        reader.close()


def _rollbacks(folder: Path) -> list[dict[str, object]]:
    reader = StoreReader.open(folder)
    assert reader is not None
    try:
        return [
            {"task_id": event.task_id, "to": event.to_status, "files": list(event.files), "of": event.cascade_of}
            for _, _, event in reader.events()
            if isinstance(event, TaskRolledBack)
        ]
    finally:
        reader.close()


def test_rollback_restores_a_tasks_files_and_refuses_when_a_later_task_changed_them(tmp_path: Path) -> None:
    graph = {"T-001": [], "T-002": ["T-001"], "T-003": ["T-002"]}
    behaviors = {"T-001": _write("a.txt", "one\n"), "T-002": _write("a.txt", "two\n"), "T-003": _write("b.txt", "b\n")}
    # The agent says it changed the executor's own files too: they never reach runs.files_changed.
    own = [".workflow/s/.executor/logs/T-001-a1.log", ".workflow/s/tasks/done/T-001.md"]
    behaviors["T-001"]["report"] = {"summary": "wrote a.txt", "files_modified": ["a.txt", *own]}
    project, folder = _project(tmp_path, graph, behaviors)
    assert run_executor("run", "--session", str(folder)).returncode == 0
    assert (project / "a.txt").read_text() == "two\n"
    reader = StoreReader.open(folder)
    assert reader is not None
    try:
        assert [run.files_changed for run in reader.runs("T-001")] == [["a.txt"]]
    finally:
        reader.close()

    # Each task's diff is its own change, never the session's files.
    second = json.loads(run_executor("diff", "T-002", "--session", str(folder), "--json").stdout)
    assert [change["path"] for change in second["files"]] == ["a.txt"]
    assert "-one\n+two\n" in second["patch"]

    refused = run_executor("rollback", "T-001", "--session", str(folder))
    assert refused.returncode == 1
    assert "later tasks changed the same files: T-002 (a.txt)" in refused.stderr
    assert "--cascade T-002" in refused.stderr
    assert (project / "a.txt").read_text() == "two\n", "a refused rollback changes nothing"
    assert _status(folder, "T-001") == ("completed", None)

    done = run_executor("rollback", "T-001", "--cascade", "T-002", "--session", str(folder), "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["files"] == ["a.txt"]
    assert (project / "a.txt").read_text() == "zero\n", "back to what it was before T-001"
    assert (project / "b.txt").read_text() == "b\n", "T-003 changed another file: untouched"
    assert _status(folder, "T-001")[0] == "pending"
    assert _status(folder, "T-002")[0] == "pending"
    assert _rollbacks(folder) == [
        {"task_id": "T-001", "to": "pending", "files": ["a.txt"], "of": None},
        {"task_id": "T-002", "to": "pending", "files": ["a.txt"], "of": "T-001"},
    ]
    session_file = json.loads((folder / "team-session.json").read_text())
    assert "T-001" not in session_file["completed_tasks"]
    assert "T-003" in session_file["completed_tasks"]

    # Cancelled instead: a file the task created is removed again.
    cancel = run_executor("rollback", "T-003", "--to", "cancelled", "--session", str(folder))
    assert cancel.returncode == 0, cancel.stderr
    assert not (project / "b.txt").exists()
    assert _status(folder, "T-003") == ("failed", "cancelled")
    assert _git(project, "status", "--porcelain", "--", ".", ":!.workflow") == ""

    # The next run does the rolled-back tasks again, from where the files now are.
    assert run_executor("resume", "--session", str(folder)).returncode == 1  # T-003 stays cancelled
    assert (project / "a.txt").read_text() == "two\n"
    assert _status(folder, "T-002")[0] == "completed"


def test_rollback_refuses_when_a_file_changed_since_the_task_ended(tmp_path: Path) -> None:
    project, folder = _project(tmp_path, {"T-001": []}, {"T-001": _write("a.txt", "one\n")})
    assert run_executor("run", "--session", str(folder)).returncode == 0
    (project / "a.txt").write_text("a person's edit\n")
    refused = run_executor("rollback", "T-001", "--session", str(folder))
    assert refused.returncode == 1
    assert "a.txt changed since T-001 ended" in refused.stderr
    assert (project / "a.txt").read_text() == "a person's edit\n"


def test_a_rolled_back_task_that_had_used_its_attempts_is_retried_again(tmp_path: Path) -> None:
    # T-001 needs all 3 attempts; rolled back, its next attempt fails once more: a fresh budget
    # (counted from attempt 3) retries it, where the role's plain limit would have failed it.
    behaviors: dict[str, object] = {"T-001": {**_write("a.txt", "one\n"), "fail_times": 2}}
    project, folder = _project(tmp_path, {"T-001": []}, behaviors)
    fast = ("--retry-backoff", "0.1")
    assert run_executor("run", "--session", str(folder), *fast).returncode == 0
    assert run_executor("rollback", "T-001", "--session", str(folder)).returncode == 0
    assert (project / "a.txt").read_text() == "zero\n"
    behaviors["T-001"] = {**_write("a.txt", "one\n"), "fail_times": 4}
    (folder / "behaviors.json").write_text(json.dumps(behaviors))
    resumed = run_executor("resume", "--session", str(folder), *fast)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert (project / "a.txt").read_text() == "one\n"
    reader = StoreReader.open(folder)
    assert reader is not None
    try:
        runs = [(run.attempt, run.outcome) for run in reader.runs("T-001")]
        row = reader.task("T-001")
    finally:
        reader.close()
    assert runs == [(1, "failed"), (2, "failed"), (3, "completed"), (4, "failed"), (5, "completed")]
    assert row is not None
    assert (row.status, row.attempts, row.attempts_before) == ("completed", 5, 3)


def test_the_recorded_states_survive_git_gc(tmp_path: Path) -> None:
    project, folder = _project(tmp_path, {"T-001": []}, {"T-001": _write("a.txt", "one\n")})
    assert run_executor("run", "--session", str(folder)).returncode == 0
    _git(project, "gc", "--quiet", "--prune=now")  # what a gc two weeks later does to loose objects
    diff = run_executor("diff", "T-001", "--session", str(folder), "--json")
    assert diff.returncode == 0, diff.stderr
    assert "-zero\n+one\n" in json.loads(diff.stdout)["patch"]
    assert run_executor("rollback", "T-001", "--session", str(folder)).returncode == 0
    assert (project / "a.txt").read_text() == "zero\n"
    assert "team-executor" not in _git(project, "branch", "--all"), "kept by refs that are not branches"


def test_rollback_argument_errors_name_the_fix(tmp_path: Path) -> None:
    _, folder = _project(tmp_path, {"T-001": []}, {"T-001": _write("a.txt", "one\n")})
    assert run_executor("run", "--session", str(folder)).returncode == 0
    for args, code, says in (
        (["T-404"], 2, "no task 'T-404'"),
        (["../T-001"], 2, "is not a task id"),
        (["T-001", "--to", "gone"], 2, "--to 'gone': say pending or cancelled"),
        (["T-001", "--cascade", "x/y"], 2, "is not a task id"),
    ):
        result = run_executor("rollback", *args, "--session", str(folder))
        assert result.returncode == code, (args, result.stderr)
        assert says in result.stderr
        assert "Traceback" not in result.stderr


def test_with_a_live_run_rollback_refuses_a_running_task_and_records_through_the_run(tmp_path: Path) -> None:
    flag = tmp_path / "go-on"
    wait = [sys.executable, "-c", f"import os,time\nwhile not os.path.exists({str(flag)!r}): time.sleep(0.05)"]
    graph = {"T-001": [], "T-002": []}
    behaviors = {"T-001": _write("a.txt", "one\n"), "T-002": {"run": wait}}
    project, folder = _project(tmp_path, graph, behaviors)
    run = subprocess.Popen(
        [str(EXECUTOR), "run", "--session", str(folder)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        deadline = time.monotonic() + 60
        while read_holder(folder) is None or _status(folder, "T-001")[0] != "completed":
            assert run.poll() is None, "the run ended early"
            assert time.monotonic() < deadline, "T-001 did not complete"
            time.sleep(0.1)
        running = run_executor("rollback", "T-002", "--session", str(folder))
        assert running.returncode == 1
        assert "T-002 is running" in running.stderr

        done = run_executor("rollback", "T-001", "--session", str(folder))
        assert done.returncode == 0, done.stderr
        # The run took it through its inbox, made T-001 pending and ran it again at once.
        deadline = time.monotonic() + 60
        while len([1 for line in (folder / ".executor" / "logs").iterdir() if line.name.startswith("T-001")]) < 2:
            assert time.monotonic() < deadline, "T-001 was not run again"
            time.sleep(0.1)
        flag.write_text("")
        assert run.wait(timeout=60) == 0
    finally:
        if run.poll() is None:
            run.kill()
        run.communicate()
    assert _rollbacks(folder)[0]["task_id"] == "T-001"
    assert _status(folder, "T-001")[0] == "completed"
    assert (project / "a.txt").read_text() == "one\n"


def test_a_rollback_the_store_will_not_record_can_put_the_files_back_as_they_were(tmp_path: Path) -> None:
    behaviors = {"T-001": _write("a.txt", "one\n"), "T-002": _write("new.txt", "new\n")}
    project, folder = _project(tmp_path, {"T-001": [], "T-002": ["T-001"]}, behaviors)
    assert run_executor("run", "--session", str(folder)).returncode == 0
    plan = prepare(folder, "T-001", ("T-002",), live=False)
    assert plan.files == ("a.txt", "new.txt")
    restore(plan)
    assert (project / "a.txt").read_text() == "zero\n"
    assert not (project / "new.txt").exists()
    undo_restore(plan)  # what the CLI does when the run or the store refuses to record it
    assert (project / "a.txt").read_text() == "one\n"
    assert (project / "new.txt").read_text() == "new\n"


def _wait_then_write(flag: Path, path: str, text: str) -> list[str]:
    wait = f"import os,time\nwhile not os.path.exists({str(flag)!r}): time.sleep(0.05)\n"
    code = wait + f"open({path!r}, 'w').write({text!r})"
    return [sys.executable, "-c", code]


def test_tasks_running_side_by_side_in_one_tree_each_own_only_their_changes(tmp_path: Path) -> None:
    first, second = tmp_path / "first-go", tmp_path / "second-go"
    behaviors = {
        "T-001": {"run": _wait_then_write(first, "a.txt", "one\n")},
        "T-002": {"run": _wait_then_write(second, "b.txt", "two\n")},
    }
    project, folder = _project(tmp_path, {"T-001": [], "T-002": []}, behaviors)
    run = subprocess.Popen(
        [str(EXECUTOR), "run", "--session", str(folder), "--max-workers", "2"], stdout=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 60
        while {_status(folder, "T-001")[0], _status(folder, "T-002")[0]} != {"in_progress"}:
            assert run.poll() is None, "the run ended early"
            assert time.monotonic() < deadline, "the tasks did not both start"
            time.sleep(0.1)
        first.write_text("")  # T-001 writes and ends while T-002 still runs, in the same tree
        while _status(folder, "T-001")[0] != "completed":
            assert time.monotonic() < deadline, "T-001 did not complete"
            time.sleep(0.1)
        # T-002 is still running: its diff so far is compared with the tree now, without T-001's file.
        live = json.loads(run_executor("diff", "T-002", "--session", str(folder), "--json").stdout)
        assert live["live"] is True
        assert live["files"] == []
        second.write_text("")
        assert run.wait(timeout=60) == 0
    finally:
        if run.poll() is None:
            run.kill()
        run.wait()
    for task_id, path in (("T-001", "a.txt"), ("T-002", "b.txt")):
        diff = json.loads(run_executor("diff", task_id, "--session", str(folder), "--json").stdout)
        assert [change["path"] for change in diff["files"]] == [path], task_id
    # Neither blocks the other's rollback: each undoes only its own file.
    assert run_executor("rollback", "T-001", "--session", str(folder)).returncode == 0
    assert (project / "a.txt").read_text() == "zero\n"
    assert (project / "b.txt").read_text() == "two\n"


def test_a_record_naming_a_place_outside_the_project_is_ignored(tmp_path: Path) -> None:
    project, folder = _project(tmp_path, {"T-001": []}, {"T-001": _write("a.txt", "one\n")})
    assert run_executor("run", "--session", str(folder)).returncode == 0
    # An agent can write into the session folder: it forges an attempt of T-001 in another repository.
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "keep.txt").write_text("precious\n")
    _git(victim, "init", "-q")
    _git(victim, "add", ".")
    empty = _git(victim, "hash-object", "-t", "tree", "/dev/null").strip()
    full = _git(victim, "write-tree").strip()
    record = folder / ".executor" / "git-trees.jsonl"
    with record.open("a") as handle:
        for phase, tree in (("before", empty), ("after", full)):
            line = {"task_id": "T-001", "attempt": 9, "phase": phase, "root": str(victim), "tree": tree}
            handle.write(json.dumps(line) + "\n")
    forged = run_executor("diff", "T-001", "--attempt", "9", "--session", str(folder))
    assert forged.returncode == 2
    assert "T-001 has recorded attempts 1" in forged.stderr
    assert run_executor("rollback", "T-001", "--session", str(folder)).returncode == 0
    assert (project / "a.txt").read_text() == "zero\n"
    assert (victim / "keep.txt").read_text() == "precious\n"
