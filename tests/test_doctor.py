"""`executor doctor`: each configured backend checked end to end, with the fix for each failure.

The model servers are tests/fake_llm.py and tests/fake_openai.py on 127.0.0.1; the
real agent CLIs are used where installed."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from backends import spawn
from backends.containment import cgroups_available
from backends.doctor import machine_checks
from tests.agent_env import cli_path
from tests.fake_llm import FakeLLM, Text
from tests.fake_openai import FakeOpenAI, Reply
from tests.sessions import write_session

KEY = "sk-doctor-test-key-4242"


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _session(tmp_path: Path, extras: dict[str, str]) -> Path:
    roles = {role: role.upper()[:4] for role in extras}
    graph = {f"{prefix}-001": [] for prefix in roles.values()}
    return write_session(tmp_path / "s", roles, graph, role_extra=extras)


def _checks(result) -> list[dict]:
    return json.loads(result.stdout)


def test_a_session_without_backends_gets_the_fix_for_each_role(executor_cli, tmp_path):
    folder = _session(tmp_path, {"writer": "", "checker": ""})
    result = executor_cli("doctor", "--session", str(folder))
    assert result.returncode == 1, result.stdout + result.stderr
    assert "role 'writer' names no backend" in result.stdout
    assert "fix (none) backend: add `backend: <name>` to role-specs/checker.md" in result.stdout


def test_missing_program_key_and_endpoint_are_named_with_their_fixes(executor_cli, tmp_path):
    folder = _session(
        tmp_path,
        {"writer": "backend: gemini\n", "coder": "backend: claude\n", "local": "backend: openai\nmodel: m\n"},
    )
    port = _closed_port()
    env = {
        "TEAM_EXECUTOR_AGENT_CLIS": str(tmp_path / "no-clis"),
        "PATH": "/usr/bin:/bin",
        "GEMINI_API_KEY": "",
        "GOOGLE_API_KEY": "",
        "HOME": str(tmp_path),
        "OPENAI_BASE_URL": f"http://127.0.0.1:{port}/v1",
        "OPENAI_API_KEY": KEY,
    }
    result = executor_cli("doctor", "--session", str(folder), "--json", env=env)
    assert result.returncode == 1, result.stdout + result.stderr
    checks = {(c["backend"], c["check"]): c for c in _checks(result)}
    assert not checks[("gemini", "program")]["ok"]
    assert "npm install -g @google/gemini-cli" in checks[("gemini", "program")]["fix"]
    assert not checks[("claude", "program")]["ok"]
    assert checks[("openai", "plan")]["ok"]  # model + base URL: no registry entry needed
    endpoint = checks[("openai", "endpoint")]
    assert not endpoint["ok"]
    assert f"127.0.0.1:{port}" in endpoint["detail"]
    assert "base_url" in endpoint["fix"]
    assert KEY not in result.stdout + result.stderr


def test_a_key_missing_says_where_an_mcp_client_takes_it(executor_cli, tmp_path):
    path = cli_path("gemini")
    if path is None:
        pytest.skip("the gemini CLI is not installed (CI installs it with npm; see .ci/run)")
    folder = _session(tmp_path, {"writer": "backend: gemini\n"})
    env = {
        "TEAM_EXECUTOR_AGENT_CLIS": str(path.parent),
        "GEMINI_API_KEY": "",
        "GOOGLE_API_KEY": "",
        "HOME": str(tmp_path),
    }
    result = executor_cli("doctor", "--session", str(folder), env=env)
    assert result.returncode == 1
    assert "fix gemini key: export GEMINI_API_KEY or GOOGLE_API_KEY=..." in result.stdout
    assert '"env" block' in result.stdout


def test_every_backend_passes_with_one_tiny_call_each(executor_cli, tmp_path):
    gemini = cli_path("gemini")
    if gemini is None:
        pytest.skip("the gemini CLI is not installed (CI installs it with npm; see .ci/run)")
    with FakeLLM() as llm, FakeOpenAI(keys=(KEY,), models=("qwen2.5-coder",)) as openai:
        llm.script(Text("OK"))
        openai.script(Reply("OK"))
        folder = _session(
            tmp_path,
            {
                "writer": "backend: gemini\nmodel: gemini-2.5-flash\n",
                "local": f"backend: openai\nmodel: qwen2.5-coder\nbase_url: {openai.base_url}\n",
            },
        )
        home = tmp_path / "fresh-home"
        home.mkdir()
        env = {
            "TEAM_EXECUTOR_AGENT_CLIS": str(gemini.parent),
            "HOME": str(home),
            "GEMINI_API_KEY": "gm-fake-key",
            "GOOGLE_GEMINI_BASE_URL": llm.url,
            "OPENAI_API_KEY": KEY,
            "OPENAI_BASE_URL": "",
            "NO_PROXY": "127.0.0.1,localhost",
        }
        result = executor_cli("doctor", "--session", str(folder), "--call", env=env, timeout=300)
        assert result.returncode == 0, result.stdout + result.stderr
        assert "all backends are ready" in result.stdout
        assert llm.model_requests(), "gemini really called the model server"
        assert openai.chat_requests(key=KEY), "the openai backend really called its server"
    assert KEY not in result.stdout + result.stderr


def test_the_machine_rows_say_how_attempts_start_and_are_contained(executor_cli, tmp_path):
    folder = _session(tmp_path, {"writer": "backend: demo\n"})
    result = executor_cli("doctor", "--session", str(folder), "--json", env={"TEAM_EXECUTOR_NO_CGROUP": "1"})
    assert result.returncode == 0, result.stdout + result.stderr
    rows = {(c["backend"], c["check"]): c for c in _checks(result)}
    start = rows[("(machine)", "process start")]
    assert start["ok"]
    # The executor under test is this venv's: it has the helper exactly when this process does.
    assert ("the compiled helper" in start["detail"]) == (spawn.HELPER is not None)
    contain = rows[("(machine)", "containment")]
    assert contain["ok"]
    assert "TEAM_EXECUTOR_NO_CGROUP is set" in contain["detail"]


def test_without_the_helper_the_machine_row_says_what_is_lost_and_how_to_get_it(monkeypatch):
    monkeypatch.setattr(spawn, "HELPER", None)
    (start, _contain) = machine_checks()
    assert start.ok
    assert "/bin/sh" in start.detail
    assert "agent_nice" in start.detail
    assert "C compiler" in start.detail


@pytest.mark.skipif(spawn.HELPER is None or not cgroups_available(), reason="needs the helper and a cgroup")
def test_the_containment_row_says_whether_children_are_born_in_their_cgroup():
    from backends import _spawn  # noqa: PLC0415 - only where the helper was built

    if not _spawn.HAS_CLONE3:
        pytest.skip("the helper starts children in their cgroup by clone3 on x86-64 only")
    before, _ = _spawn.clone3_state()
    try:
        (_start, contain) = machine_checks()
        tried, _ = _spawn.clone3_state()
        assert ("created in it (clone3)" in contain.detail) == tried
        assert ("refuses clone3" in contain.detail) == (not tried)
        _spawn.clone3_state(False)  # as where the kernel said no
        (_start, contain) = machine_checks()
        assert "joins it just after its start" in contain.detail
        assert "seccomp" in contain.detail
    finally:
        _spawn.clone3_state(before)
