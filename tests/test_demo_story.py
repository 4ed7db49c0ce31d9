"""`executor demo` tells the whole story: real `executor demo` processes make a git project,
the demo agent edits it, the project's own tests (the quality gate) fail once, the review
sends the work back once, and the end shows the diff; all of it is in the store and `check --json`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from backends.demo_story import StoryError, play
from session.store import StoreReader

SESSION = Path(".workflow") / ".team" / "TC-demo-textkit-slugify"


def _git(project: Path, *args: str) -> str:
    done = subprocess.run(["git", "-C", str(project), *args], capture_output=True, text=True, timeout=60, check=True)
    return done.stdout


def _no_git_config(tmp_path: Path) -> dict[str, str]:
    """A HOME without a .gitconfig and no system config: the demo must not need a git identity."""
    home = tmp_path / "home"
    home.mkdir()
    return {"HOME": str(home), "GIT_CONFIG_NOSYSTEM": "1", "XDG_CONFIG_HOME": str(home / ".config")}


def test_the_demo_changes_code_fails_a_gate_goes_through_a_review_round_and_shows_the_diff(executor_cli, tmp_path):
    result = executor_cli("demo", cwd=tmp_path, env=_no_git_config(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr
    project = tmp_path / "demo-run" / "textkit-1"
    session = project / SESSION

    # The project: one commit from before the team, and the team's edits on top of it.
    assert _git(project, "log", "--format=%s").splitlines() == ["textkit before the team (executor demo)"]
    assert sorted(_git(project, "diff", "--name-only", "HEAD").split()) == [
        "tests/test_text.py",
        "textkit/__init__.py",
        "textkit/text.py",
    ]
    assert _git(project, "status", "--porcelain", "--untracked-files=all").count("\n") == 3, "the session is ignored"
    code = (project / "textkit" / "text.py").read_text()
    assert 'def slugify(text: str, separator: str = "-", max_length: int | None = None)' in code
    tests = subprocess.run(
        [sys.executable, "-m", "unittest", "-v"], cwd=project, capture_output=True, text=True, timeout=60, check=False
    )
    assert tests.returncode == 0, tests.stderr
    assert "test_max_length_cuts_at_a_separator" in tests.stderr, "the review's change came with its test"

    # The gate ran the project's own tests and failed on the first draft's real bug; the review asked once.
    feedback = (session / "feedback" / "IMPL-001.md").read_text()
    assert "## Gate failed" in feedback
    assert "AssertionError: 'hello--world' != 'hello-world'" in feedback
    assert f"`{Path(sys.executable).parent}/python" in feedback, "the gate uses the executor's own Python"
    assert "## Round 1 — changes requested by REVIEW-001" in feedback
    assert "textkit/text.py:12: slugify has no max_length" in feedback
    assert "## Verdict\n\npass" in (session / "artifacts" / "REVIEW-001-review.md").read_text()

    # The runs table: a gate_failed attempt then two completed ones; a review round then a pass.
    reader = StoreReader.open(session)
    assert reader is not None
    try:
        coder = [(run.attempt, run.outcome, run.error_kind, run.files_changed) for run in reader.runs("IMPL-001")]
        review = [(run.attempt, run.outcome) for run in reader.runs("REVIEW-001")]
    finally:
        reader.close()
    assert coder == [
        (1, "failed", "gate_failed", ["tests/test_text.py", "textkit/__init__.py", "textkit/text.py"]),
        (2, "completed", None, ["textkit/text.py"]),
        (3, "completed", None, ["tests/test_text.py", "textkit/text.py"]),
    ]
    assert review == [(1, "changes_requested"), (2, "completed")]

    # check --json says the same.
    check = json.loads(executor_cli("check", "--session", str(session), "--json").stdout)
    assert check["progress"] == {"completed": 3, "total": 3, "percent": 100.0}
    tasks = {task["id"]: task for task in check["tasks"]}
    assert tasks["IMPL-001"]["outcomes"] == ["gate_failed", "completed", "completed"]
    assert tasks["IMPL-001"]["review_rounds"] == 1
    assert tasks["REVIEW-001"]["outcomes"] == ["changes_requested", "completed"]
    assert tasks["PLAN-001"]["outcomes"] == ["completed"]

    # The end of the output: what the team did, the diff stat, where to look.
    out = result.stdout
    assert "IMPL-001    coder     gate_failed → completed → completed  (review rounds: 1)" in out
    assert "REVIEW-001  reviewer  changes_requested → completed" in out
    assert "changed in demo-run/textkit-1 since its first commit" in out
    assert "3 files changed, 36 insertions(+), 3 deletions(-)" in out
    assert "git -C demo-run/textkit-1 diff" in out
    assert f"executor check --session demo-run/textkit-1/{SESSION.as_posix()} --json" in out


def test_demo_refuses_a_folder_that_exists(executor_cli, tmp_path):
    (tmp_path / "taken").mkdir()
    result = executor_cli("demo", "--into", str(tmp_path / "taken"))
    assert result.returncode == 2
    assert f"{tmp_path / 'taken'} already exists; choose another --into folder" in result.stderr
    assert "Traceback" not in result.stderr


def test_without_git_the_short_demo_runs_and_says_why(executor_cli, tmp_path):
    bare = tmp_path / "bin"  # a PATH without git (the executor and the agents use absolute interpreters)
    bare.mkdir()
    result = executor_cli("demo", "--into", str(tmp_path / "d"), env={"PATH": str(bare)})
    assert result.returncode == 0, result.stdout + result.stderr
    assert "git is not installed, so this is the short demo" in result.stderr
    assert "progress: 5/5 (100%)" in result.stdout
    assert (tmp_path / "d" / "artifacts" / "QA-001-test-report.md").is_file()


def test_a_story_never_writes_outside_the_project_or_into_git(tmp_path):
    session, project = tmp_path / "session", tmp_path / "project"
    (session / "v").mkdir(parents=True)
    (session / "v" / "x.py").write_text("x = 1\n")
    (project / ".git").mkdir(parents=True)
    for target in ("../outside.py", ".git/hooks/pre-commit", "/etc/x"):
        (session / "demo-story.json").write_text(json.dumps({"T-001": {"first": {"write": {target: "v/x.py"}}}}))
        with pytest.raises(StoryError, match="is not a path inside"):
            play(session, project, "T-001")
    assert not (tmp_path / "outside.py").exists()
    assert not (project / ".git" / "hooks").exists()
    assert play(tmp_path / "no-story", project, "T-001") is None, "sessions without a story are left alone"
