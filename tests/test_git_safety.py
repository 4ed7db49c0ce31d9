"""Git in a repository an agent wrote to: the programs a repository can name (hooks, an fsmonitor,
a clean filter) never see the executor's keys, and hooks and fsmonitors do not run at all.

An agent can write `.git/config` and `.git/hooks/` like any other file of the project; the
executor then runs git there itself — to make and commit worktrees, to record the tree before and
after each attempt, to read what an attempt changed.  Real git, real repositories."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest

from backends.git_state import snapshot
from session.attempt_trees import after_attempt, before_attempt
from session.worktrees import commit_all, ensure_worktree, settle_worktree

SECRET = "sk-proj-the-executors-own-key-0123456789abcdef"
HOOKS = ("post-checkout", "reference-transaction", "post-commit", "pre-commit", "post-index-change")


def _plant(project: Path, ran: Path) -> None:
    """What a hostile agent leaves: every hook, an fsmonitor and a clean filter, each telling on itself."""
    spy = ran.parent / "spy.sh"
    spy.write_text(f'#!/bin/sh\nenv > "{ran}/$(basename "$0")-$$"\nexit 0\n')
    spy.chmod(spy.stat().st_mode | stat.S_IXUSR)
    hooks = project / ".git" / "hooks"
    for name in HOOKS:
        (hooks / name).write_text(f'#!/bin/sh\nexec "{spy}"\n')
        (hooks / name).chmod(0o755)
    clean = ran.parent / "clean-filter.sh"
    clean.write_text(f'#!/bin/sh\nenv > "{ran}/clean-filter-$$"\nexec cat\n')
    clean.chmod(0o755)
    with (project / ".git" / "config").open("a") as config:
        config.write(f'[core]\n\tfsmonitor = "{spy}"\n[filter "spy"]\n\tclean = "{clean}"\n')
    (project / ".gitattributes").write_text("*.txt filter=spy\n")


def _git(project: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-c", "core.hooksPath=/dev/null", *args],
        cwd=project,
        check=True,
        capture_output=True,
    )


def test_what_an_agent_plants_in_the_repository_never_reads_the_executors_keys(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    project = tmp_path / "project"
    project.mkdir()
    _git(project, "init", "-q", "-b", "main")
    _git(project, "commit", "-q", "--allow-empty", "-m", "init")
    session = project / "session"
    session.mkdir()
    ran = tmp_path / "ran"
    ran.mkdir()
    _plant(project, ran)

    # Everything the executor does with git around an attempt, in the main tree and in a worktree.
    (project / "notes.txt").write_text("the agent's work\n")
    assert before_attempt(project, session, "T-001", 1)
    assert snapshot(project) is not None
    (project / "more.txt").write_text("more of it\n")
    after_attempt(project, session, "T-001", 1)
    worktree = ensure_worktree(project, session, "T-002")
    (worktree / "work.txt").write_text("isolated work\n")
    assert commit_all(worktree, "T-002: attempt 1") is not None
    settle_worktree(project, session, "T-002")

    told = {path.name.rsplit("-", 1)[0]: path.read_text() for path in ran.iterdir()}
    assert not set(told) - {"clean-filter"}, f"a repository's own program ran: {sorted(told)}"
    assert "clean-filter" in told, "the filter case was not reached: the test no longer tests it"
    assert SECRET not in told["clean-filter"]
    assert "OPENAI_API_KEY" not in told["clean-filter"]
    assert os.environ["OPENAI_API_KEY"] == SECRET  # the executor's own environment is untouched
