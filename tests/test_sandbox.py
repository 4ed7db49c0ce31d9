"""The sandbox rules: what a worker's environment holds and where it may work."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from backends.sandbox import DEFAULT_ENV_ALLOW, JailError, allowlisted_env, find_jail, resolve_workdir

# --------------------------------------------------------------------------- environment


def test_allowlisted_env_drops_secrets_and_keeps_allowed_names() -> None:
    source = {"PATH": "/bin", "OPENAI_API_KEY": "sk-x", "LC_TIME": "C", "HOME": "/home/u", "AWS_SECRET": "s"}
    env = allowlisted_env(source=source)
    assert env == {"PATH": "/bin", "LC_TIME": "C", "HOME": "/home/u"}


def test_allowlisted_env_puts_extra_on_top() -> None:
    env = allowlisted_env({"PATH": "/opt/bin", "ANTHROPIC_API_KEY": "k1"}, source={"PATH": "/bin", "TERM": "xterm"})
    assert env == {"PATH": "/opt/bin", "TERM": "xterm", "ANTHROPIC_API_KEY": "k1"}


def test_allowlisted_env_honours_a_custom_allowlist_and_does_not_modify_its_inputs() -> None:
    source = {"PATH": "/bin", "MY_VAR": "1", "MY_OTHER": "2", "HOME": "/h"}
    env = allowlisted_env(allow=["MY_*"], source=source)
    assert env == {"MY_VAR": "1", "MY_OTHER": "2"}
    assert source == {"PATH": "/bin", "MY_VAR": "1", "MY_OTHER": "2", "HOME": "/h"}


def test_allowlisted_env_reads_the_real_environment_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/x/bin")
    monkeypatch.setenv("SUPER_SECRET_TOKEN", "t")
    env = allowlisted_env()
    assert env["PATH"] == "/x/bin"
    assert "SUPER_SECRET_TOKEN" not in env
    assert "PATH" in DEFAULT_ENV_ALLOW


def test_allowlisted_env_follows_every_change_of_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    # The allowlisted part is remembered between calls: a change must still show at the next one,
    # and what is handed out must not be the remembered dict itself.
    monkeypatch.setenv("TZ", "UTC")
    first = allowlisted_env()
    first["TZ"] = "changed by a caller"
    assert allowlisted_env()["TZ"] == "UTC"
    monkeypatch.setenv("TZ", "Europe/Paris")
    monkeypatch.setenv("LC_PAPER", "de_DE")
    env = allowlisted_env()
    assert (env["TZ"], env["LC_PAPER"]) == ("Europe/Paris", "de_DE")
    monkeypatch.delenv("TZ")
    monkeypatch.setenv("GITHUB_TOKEN", "t")
    env = allowlisted_env()
    assert "TZ" not in env
    assert "GITHUB_TOKEN" not in env
    assert allowlisted_env(allow=["GITHUB_*"]) == {"GITHUB_TOKEN": "t"}


# --------------------------------------------------------------------------- jail


def test_resolve_workdir_accepts_the_jail_and_directories_inside_it(tmp_path: Path) -> None:
    (tmp_path / "src" / "pkg").mkdir(parents=True)
    jail = tmp_path.resolve()
    assert resolve_workdir(tmp_path, None) == jail
    assert resolve_workdir(tmp_path, "src/pkg") == jail / "src" / "pkg"
    assert resolve_workdir(tmp_path, tmp_path / "src") == jail / "src"
    assert resolve_workdir(tmp_path, "src/../src/pkg") == jail / "src" / "pkg"


def test_resolve_workdir_refuses_a_dot_dot_escape(tmp_path: Path) -> None:
    jail = tmp_path / "jail"
    jail.mkdir()
    with pytest.raises(JailError) as info:
        resolve_workdir(jail, "..")
    message = str(info.value)
    assert str(jail.resolve()) in message
    assert f"use --workdir inside {jail.resolve()}" in message


def test_resolve_workdir_refuses_a_symlink_pointing_outside(tmp_path: Path) -> None:
    jail = tmp_path / "jail"
    outside = tmp_path / "outside"
    jail.mkdir()
    outside.mkdir()
    (jail / "link").symlink_to(outside)
    with pytest.raises(JailError, match="outside the jail"):
        resolve_workdir(jail, "link")


def test_resolve_workdir_refuses_an_absolute_path_elsewhere(tmp_path: Path) -> None:
    jail = tmp_path / "jail"
    jail.mkdir()
    with pytest.raises(JailError, match="outside the jail"):
        resolve_workdir(jail, "/")


def test_resolve_workdir_refuses_a_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(JailError, match="does not exist") as info:
        resolve_workdir(tmp_path, "nope")
    assert "nope" in str(info.value)


def test_resolve_workdir_refuses_a_file(tmp_path: Path) -> None:
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(JailError, match="not a directory"):
        resolve_workdir(tmp_path, "file.txt")


def test_find_jail_finds_the_git_repository_that_holds_the_session(tmp_path: Path) -> None:
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    session = tmp_path / "sessions" / "s1"
    session.mkdir(parents=True)
    assert find_jail(session) == tmp_path.resolve()


def test_find_jail_falls_back_to_the_session_folder_outside_any_repository(tmp_path: Path) -> None:
    session = tmp_path / "s1"
    session.mkdir()
    if any((p / ".git").exists() for p in (session.resolve(), *session.resolve().parents)):
        pytest.skip("tmp_path lies inside a git repository here")
    assert find_jail(session) == session.resolve()


def test_find_jail_accepts_a_git_file_as_in_a_worktree(tmp_path: Path) -> None:
    (tmp_path / ".git").write_text("gitdir: /elsewhere\n")
    session = tmp_path / "s1"
    session.mkdir()
    assert find_jail(session) == tmp_path.resolve()
