"""Git HEAD and changed files around an attempt, in a real repository."""

from __future__ import annotations

import os
import shutil
import subprocess

from backends.git_state import changed_files, snapshot
from session.git_trees import repo_root


def git(repo, *args):
    subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True)


def make_repo(path):
    path.mkdir()
    git(path, "init", "-q")
    git(path, "config", "user.email", "t@example.com")
    git(path, "config", "user.name", "t")
    (path / "a.txt").write_text("a")
    git(path, "add", ".")
    git(path, "commit", "-q", "-m", "first")
    return path


def test_outside_a_repository_there_is_no_state(tmp_path):
    assert snapshot(tmp_path) is None
    assert changed_files(tmp_path, None, None) == ()


def test_files_left_in_the_tree_and_files_committed_both_count_but_earlier_dirt_does_not(tmp_path):
    repo = make_repo(tmp_path / "repo")
    (repo / "dirty-before.txt").write_text("x")
    before = snapshot(repo)
    assert before is not None
    assert before.head
    assert len(before.head) == 40
    (repo / "new.txt").write_text("n")
    (repo / "a.txt").write_text("changed")
    git(repo, "add", "a.txt")
    git(repo, "commit", "-q", "-m", "agent work")
    (repo / "sub").mkdir()
    (repo / "sub" / "left.py").write_text("print()")
    after = snapshot(repo)
    assert after is not None
    assert after.head != before.head
    assert changed_files(repo, before, after) == ("a.txt", "new.txt", "sub/left.py")


def test_a_repository_without_commits_has_no_head_but_still_reports_files(tmp_path):
    repo = tmp_path / "empty"
    repo.mkdir()
    git(repo, "init", "-q")
    before = snapshot(repo)
    (repo / "f.txt").write_text("f")
    after = snapshot(repo)
    assert before is not None
    assert after is not None
    assert before.head is None
    assert changed_files(repo, before, after) == ("f.txt",)


def test_no_git_process_is_started_to_learn_that_a_folder_is_not_in_a_repository(tmp_path, monkeypatch):
    real_git = shutil.which("git")
    assert real_git is not None
    calls = tmp_path / "calls"
    fake = tmp_path / "bin" / "git"
    fake.parent.mkdir()
    fake.write_text(f'#!/bin/sh\necho "$@" >> {calls}\nexec {real_git} "$@"\n')
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake.parent}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.delenv("GIT_DIR", raising=False)
    monkeypatch.delenv("GIT_WORK_TREE", raising=False)

    plain = tmp_path / "plain" / "deep"
    plain.mkdir(parents=True)
    assert repo_root(plain) is None
    assert not calls.exists()  # the attempt path asks this twice per attempt: no process for a "no"

    repo = tmp_path / "repo"
    (repo / "sub").mkdir(parents=True)
    subprocess.run([real_git, "init", "-q", str(repo)], check=True)
    assert repo_root(repo / "sub") == repo.resolve()
    assert "rev-parse --show-toplevel" in calls.read_text()  # in a repository git still decides
