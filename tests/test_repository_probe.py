"""The ``.git`` probe that decides whether git is asked at all, before and after each attempt.

Real folders, a manual clock: the folder itself is looked at every time, the folders above it
once per ``ABOVE_RECHECK_S``.
"""

from __future__ import annotations

from session import git_trees
from session.git_trees import ABOVE_RECHECK_S, _may_be_in_a_repository


def test_a_git_init_in_the_work_folder_counts_at_once(tmp_path):
    work = tmp_path / "project"
    work.mkdir()
    assert not _may_be_in_a_repository(work, now=100.0)
    (work / ".git").mkdir()
    assert _may_be_in_a_repository(work, now=100.1)


def test_a_repository_made_above_is_seen_once_the_folders_above_are_looked_at_again(tmp_path):
    work = tmp_path / "outer" / "project"
    work.mkdir(parents=True)
    assert not _may_be_in_a_repository(work, now=200.0)
    (tmp_path / "outer" / ".git").mkdir()
    # Within the window the verdict on the folders above stands (one stat, not one per folder).
    assert not _may_be_in_a_repository(work, now=200.0 + ABOVE_RECHECK_S / 2)
    assert _may_be_in_a_repository(work, now=200.0 + ABOVE_RECHECK_S + 0.01)
    # And found, it is not remembered as "none above" any more.
    assert _may_be_in_a_repository(work, now=200.0 + ABOVE_RECHECK_S + 0.02)


def test_a_relative_path_is_never_remembered(tmp_path, monkeypatch):
    (tmp_path / "sub").mkdir()
    monkeypatch.chdir(tmp_path)
    before = dict(git_trees._none_above_until)
    assert not _may_be_in_a_repository(git_trees.Path("sub"), now=300.0)
    assert git_trees._none_above_until == before
    (tmp_path / ".git").mkdir()
    assert _may_be_in_a_repository(git_trees.Path("sub"), now=300.1)


def test_git_told_where_the_repository_is_always_asks_git(tmp_path, monkeypatch):
    monkeypatch.setenv("GIT_DIR", str(tmp_path / "elsewhere.git"))
    assert _may_be_in_a_repository(tmp_path, now=400.0)
