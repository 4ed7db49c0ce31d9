"""Every `next:` hint the CLI prints is a command that works as printed.

Each test puts a session in the state that prints a hint (with relative paths, from its
own working folder, as a person would type them), takes the hint from the real output,
and runs it exactly as printed (after doing what its `# first ...` note asks).  The last
test guards the list: a new place that prints `next:` must get a state here.
"""

from __future__ import annotations

import json
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.conftest import EXECUTOR, run_executor
from tests.sessions import scripted_session

ROOT = Path(__file__).resolve().parents[1]
HINT = re.compile(r"^next: (executor [^#\n]+?)\s*(?:#.*)?$", re.MULTILINE)


def hints(text: str) -> list[str]:
    return HINT.findall(text)


def run_hint(hint: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    argv = shlex.split(hint)
    assert argv[0] == "executor", hint
    return run_executor(*argv[1:], cwd=cwd)


def cli(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run_executor(*args, cwd=cwd)


def only_hint(*outputs: str) -> str:
    found = {hint for output in outputs for hint in hints(output)}
    assert len(found) == 1, f"one hint expected, got {found} in {outputs}"
    return found.pop()


def test_a_fresh_session_without_backends_hints_a_run_that_works(tmp_path):
    init = cli(tmp_path, "init", "--session", "work/login", "Add a login page")
    check = cli(tmp_path, "check", "--session", "work/login")
    watch = cli(tmp_path, "watch", "--session", "work/login", "--once")
    hint = only_hint(init.stdout, check.stdout, watch.stdout)
    assert hint == "executor run --session work/login --backend demo"
    result = run_hint(hint, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    done = cli(tmp_path, "check", "--session", "work/login")
    assert hints(done.stdout) == []
    assert "done: every task is complete" in done.stdout


def test_a_fresh_session_with_backends_hints_a_plain_run(tmp_path):
    init = cli(tmp_path, "init", "--session", "s", "--backend", "demo", "Goal")
    hint = only_hint(init.stdout, cli(tmp_path, "check", "--session", "s").stdout)
    assert hint == "executor run --session s"
    result = run_hint(hint, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_stopped_run_and_a_running_one_hint_commands_that_work(tmp_path):
    graph = {f"A-{i:03d}": ([f"A-{i - 1:03d}"] if i > 1 else []) for i in range(1, 7)}
    scripted_session(tmp_path / "s", graph, {"default": {"sleep": 1.5}}, python=sys.executable)
    process = subprocess.Popen(
        [str(EXECUTOR), "run", "--session", "s"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        running = cli(tmp_path, "check", "--session", "s")
        while "executor: running" not in running.stdout and time.monotonic() < deadline:
            time.sleep(0.05)
            running = cli(tmp_path, "check", "--session", "s")
        assert "executor: running" in running.stdout
        hint = only_hint(running.stdout)
        assert hint == "executor check --session s"
        assert run_hint(hint, tmp_path).returncode == 0
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, out + err
    hint = only_hint(out, cli(tmp_path, "check", "--session", "s").stdout)
    assert hint == "executor resume --session s"
    result = run_hint(hint, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_failed_run_hints_a_retry_that_works_once_the_cause_is_fixed(tmp_path):
    folder = scripted_session(
        tmp_path / "s", {"A-001": [], "A-002": ["A-001"]}, {"A-001": {"exit": 3}}, python=sys.executable
    )
    failed = cli(tmp_path, "run", "--session", "s", "--max-attempts", "1")
    assert failed.returncode == 1
    check = cli(tmp_path, "check", "--session", "s")
    assert "# first fix what made the failed tasks fail" in check.stdout
    hint = only_hint(failed.stdout, check.stdout)
    assert hint == "executor resume --session s --retry-failed"
    (folder / "behaviors.json").write_text("{}")  # the fix
    result = run_hint(hint, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "retrying 1 failed task(s): A-001" in result.stdout
    # The retry is attempt 2: attempt 1's log (why it failed) is still there to read.
    logs = folder / ".executor" / "logs"
    assert "exiting with 3" in (logs / "A-001-a1.log").read_text()
    assert (logs / "A-001-a2.log").is_file()


def test_a_spent_budget_hints_a_resume_that_works_once_the_budget_is_raised(tmp_path):
    report = {"status": "completed", "cost_usd": 0.6, "tokens_in": 1000, "tokens_out": 100}
    graph = {f"A-{i:03d}": [] for i in range(1, 4)}
    folder = scripted_session(tmp_path / "s", graph, {"default": {"report": report}}, python=sys.executable)
    (folder / "executor.toml").write_text("[budget]\nsession_usd = 1.0\n")
    stopped = cli(tmp_path, "run", "--session", "s", "--max-workers", "1")
    assert stopped.returncode == 1
    check = cli(tmp_path, "check", "--session", "s")
    assert "# the budget is spent: first raise [budget].session_usd in the config" in check.stdout
    hint = only_hint(stopped.stdout, check.stdout)
    assert hint == "executor resume --session s"
    (folder / "executor.toml").write_text("[budget]\nsession_usd = 5.0\n")  # what the note asks
    result = run_hint(hint, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_an_invalid_session_hints_validate_which_passes_once_fixed(tmp_path):
    assert cli(tmp_path, "init", "--session", "s", "--backend", "demo", "Goal").returncode == 0
    team = tmp_path / "s" / "team-session.json"
    good = team.read_text()
    team.write_text(json.dumps({**json.loads(good), "status": "nonsense"}))
    check = cli(tmp_path, "check", "--session", "s")
    assert check.returncode == 1
    hint = only_hint(check.stdout)
    assert hint == "executor validate --session s"
    team.write_text(good)  # the fix
    assert run_hint(hint, tmp_path).returncode == 0


def test_every_place_that_prints_a_next_hint_is_covered_here():
    """The places that print `next:`; a new one needs a state in this file first."""
    found = {}
    for path in [*ROOT.glob("cli/*.py"), *ROOT.glob("actors/run*.py"), ROOT / "session" / "report.py"]:
        count = path.read_text().count('"next: ')
        if count:
            found[str(path.relative_to(ROOT))] = count
    expected = {"cli/render.py": 1, "actors/run_console.py": 2, "cli/backup_cmd.py": 1, "cli/rollback_cmd.py": 1}
    assert found == expected, found


def test_a_restored_backup_hints_a_resume_that_works(tmp_path):
    assert cli(tmp_path, "init", "--session", "s", "--backend", "demo", "Goal").returncode == 0
    assert cli(tmp_path, "run", "--session", "s", "--backend", "demo").returncode == 0
    backup = cli(tmp_path, "backup", "--session", "s", "--to", "saved")
    assert backup.returncode == 0, backup.stdout + backup.stderr
    (copy,) = (tmp_path / "saved").iterdir()  # one self-contained file, no -wal/-shm beside it
    restore = cli(tmp_path, "restore", str(copy.relative_to(tmp_path)), "--session", "s")
    assert restore.returncode == 0, restore.stdout + restore.stderr
    hint = only_hint(restore.stdout)
    assert hint == "executor resume --session s"
    result = run_hint(hint, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_rolled_back_task_hints_a_resume_that_runs_it_again(tmp_path):
    project = tmp_path / "p"
    project.mkdir()
    (project / "a.txt").write_text("zero\n")
    git = ["git", "-C", str(project), "-c", "user.name=t", "-c", "user.email=t@localhost"]
    subprocess.run([*git, "init", "-q"], check=True, timeout=60)
    subprocess.run([*git, "add", "."], check=True, timeout=60)
    subprocess.run([*git, "commit", "-qm", "start"], check=True, timeout=60)
    behaviour = {"write_file": {"path": "a.txt", "text": "one\n"}}
    scripted_session(project / "s", {"T-001": []}, {"T-001": behaviour}, python=sys.executable)
    assert cli(tmp_path, "run", "--session", "p/s").returncode == 0
    rollback = cli(tmp_path, "rollback", "T-001", "--session", "p/s")
    assert rollback.returncode == 0, rollback.stdout + rollback.stderr
    assert (project / "a.txt").read_text() == "zero\n"
    hint = only_hint(rollback.stdout)
    assert hint == "executor resume --session p/s"
    result = run_hint(hint, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert (project / "a.txt").read_text() == "one\n"
