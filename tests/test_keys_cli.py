"""`executor keys add/list/remove` through the real console script; no key in any output or in clear on disk."""

from __future__ import annotations

import json
import stat
import subprocess

import pytest

OPENAI = "sk-proj-CLItestOPENAI0123456789-q7w8"
ANTHROPIC = "sk-ant-api03-CLItestANTHROPIC-k5j6"
PASSPHRASE = "a long enough test passphrase"


@pytest.fixture
def keys_cli(executor_cli, tmp_path):
    """Run `executor keys ...` with a private config folder and no OS keyring; collect every output."""
    outputs: list[str] = []
    base = {
        "TEAM_EXECUTOR_CONFIG_DIR": str(tmp_path),
        "TEAM_EXECUTOR_MASTER_KEY": PASSPHRASE,
        # never the developer's real keyring
        "PYTHON_KEYRING_BACKEND": "keyring.backends.fail.Keyring",
    }

    def run(*args: str, env: dict[str, str] | None = None, **kwargs: object) -> subprocess.CompletedProcess[str]:
        if "input" not in kwargs:
            kwargs["stdin"] = subprocess.DEVNULL  # not a terminal: never a prompt
        result = executor_cli("keys", *args, env={**base, **(env or {})}, **kwargs)
        outputs.append(result.stdout + result.stderr)
        assert "Traceback" not in result.stderr
        assert "internal error" not in result.stderr
        return result

    yield run
    for output in outputs:
        for value in (OPENAI, ANTHROPIC):
            assert value not in output
            assert value[:-4] not in output
    for path in tmp_path.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert OPENAI.encode() not in data
            assert ANTHROPIC.encode() not in data


def test_add_from_env_and_stdin_then_list_and_remove(keys_cli, tmp_path):
    added = keys_cli("add", "openai", "--tier", "premium", "--from-env", "MY_OPENAI_KEY", env={"MY_OPENAI_KEY": OPENAI})
    assert added.returncode == 0, added.stderr
    assert "openai…" + OPENAI[-4:] in added.stdout
    assert "PREMIUM" in added.stdout

    added = keys_cli("add", "anthropic", "--stdin", input=ANTHROPIC + "\n")
    assert added.returncode == 0, added.stderr
    assert "anthropic…" + ANTHROPIC[-4:] in added.stdout

    path = tmp_path / "keys.enc"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600

    listed = keys_cli("list")
    assert listed.returncode == 0, listed.stderr
    assert "…" + OPENAI[-4:] in listed.stdout
    assert "…" + ANTHROPIC[-4:] in listed.stdout
    assert "PREMIUM" in listed.stdout

    listed = keys_cli("list", "--json")
    assert listed.returncode == 0, listed.stderr
    body = json.loads(listed.stdout)
    assert body["persistent"] is True
    assert body["master"] == "env-passphrase"
    rows = {row["provider"]: row for row in body["keys"]}
    assert rows["openai"]["last4"] == OPENAI[-4:]
    assert rows["openai"]["tier"] == "PREMIUM"
    assert rows["anthropic"]["tier"] is None
    assert set(rows["openai"]) == {"key_id", "provider", "tier", "last4"}

    removed = keys_cli("remove", rows["openai"]["key_id"])
    assert removed.returncode == 0, removed.stderr
    assert rows["openai"]["key_id"] in removed.stdout
    body = json.loads(keys_cli("list", "--json").stdout)
    assert [row["provider"] for row in body["keys"]] == ["anthropic"]

    missing = keys_cli("remove", rows["openai"]["key_id"])
    assert missing.returncode == 1
    assert "executor keys list" in missing.stderr


def test_a_key_given_as_an_argument_is_refused_without_echoing_it(keys_cli, tmp_path):
    result = keys_cli("add", "openai", OPENAI)
    assert result.returncode == 2
    assert "never pass the key as an argument" in result.stderr
    assert not (tmp_path / "keys.enc").exists()


def test_add_needs_a_source_and_checks_it(keys_cli):
    result = keys_cli("add", "openai")  # stdin is not a terminal: no prompt
    assert result.returncode == 2
    assert "--from-env" in result.stderr
    result = keys_cli("add", "openai", "--from-env", "NOT_SET_ANYWHERE", env={"NOT_SET_ANYWHERE": ""})
    assert result.returncode == 2
    assert "NOT_SET_ANYWHERE is not set" in result.stderr
    result = keys_cli("add", "openai", "--stdin", input="")
    assert result.returncode == 2
    result = keys_cli("add", "openai", "--stdin", input=f"{OPENAI}\n{ANTHROPIC}\n")
    assert result.returncode == 2
    assert "white space" in result.stderr
    result = keys_cli("add", "openai", "--stdin", "--from-env", "X", input=OPENAI)
    assert result.returncode == 2


def test_memory_only_mode_warns_and_saves_nothing(keys_cli, tmp_path):
    result = keys_cli("add", "openai", "--stdin", input=OPENAI, env={"TEAM_EXECUTOR_MASTER_KEY": ""})
    assert result.returncode == 0, result.stderr
    assert "in memory only" in result.stdout
    assert "warning:" in result.stderr
    assert "NOT saved" in result.stderr
    assert "TEAM_EXECUTOR_MASTER_KEY" in result.stderr
    assert not (tmp_path / "keys.enc").exists()
    listed = keys_cli("list", "--json", env={"TEAM_EXECUTOR_MASTER_KEY": ""})
    body = json.loads(listed.stdout)
    assert body["persistent"] is False
    assert body["keys"] == []
    assert "memory" in body["warning"]


def test_a_wrong_master_key_is_one_clear_error(keys_cli):
    assert keys_cli("add", "openai", "--stdin", input=OPENAI).returncode == 0
    for command in (["list"], ["remove", "openai-000000000000"]):
        result = keys_cli(*command, env={"TEAM_EXECUTOR_MASTER_KEY": "not the right passphrase"})
        assert result.returncode == 1
        assert "cannot decrypt" in result.stderr
        assert "fix:" in result.stderr
    result = keys_cli("list", env={"TEAM_EXECUTOR_MASTER_KEY": ""})
    assert result.returncode == 1
    assert "no master secret is available" in result.stderr
