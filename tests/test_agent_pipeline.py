"""Real agent CLIs (claude, codex, gemini) run a pipeline through `executor run`, offline.

Each CLI talks to tests/fake_llm.py on 127.0.0.1: the writer's turn really writes a
file with the CLI's own tool, the reviewer's turn really reads it (its tool result
reaches the fake model), usage and the agent's session id land in `runs`, and a
rate-limited model ends the attempt with the error kind the router acts on.
Skipped, with the reason, when a CLI is not installed (CI installs all three).
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from session.keypool import PoolKey
from session.store import StoreReader
from tests.agent_env import cli_path
from tests.conftest import EXECUTOR
from tests.fake_llm import FakeLLM, RateLimited, ReadFile, Text, WriteFile
from tests.sessions import write_session
from tests.test_routed_run import wait_for_key_question

pytestmark = pytest.mark.slow

MODELS = {"claude": "claude-sonnet-4-5", "codex": "gpt-5.5", "gemini": "gemini-2.5-flash"}
CODE = "print('hello from the writer')\n"


def cli_env(cli: str, url: str) -> dict[str, str]:
    path = cli_path(cli)
    if path is None:
        pytest.skip(f"the {cli} CLI is not installed (CI installs it with npm; see .ci/run)")
    env = {"TEAM_EXECUTOR_AGENT_CLIS": str(path.parent), "NO_PROXY": "127.0.0.1,localhost"}
    if cli == "claude":
        env |= {"ANTHROPIC_API_KEY": "sk-ant-fake", "ANTHROPIC_BASE_URL": url}
    elif cli == "codex":
        env |= {"OPENAI_API_KEY": "sk-openai-fake", "OPENAI_BASE_URL": f"{url}/v1"}
    else:
        env |= {"GEMINI_API_KEY": "gm-fake", "GOOGLE_GEMINI_BASE_URL": url}
    return env


def project_with_session(
    tmp_path: Path, cli: str, graph: dict, roles: dict[str, str], spec_extra: str = ""
) -> tuple[Path, Path]:
    project = tmp_path / "project"
    project.mkdir()
    subprocess.run(["git", "init", "-q", str(project)], check=True)
    (project / "README.md").write_text("# project\n")
    subprocess.run(["git", "-C", str(project), "add", "."], check=True)
    subprocess.run(
        ["git", "-C", str(project), "-c", "user.email=t@e", "-c", "user.name=t", "commit", "-qm", "init"], check=True
    )
    extra = f"backend: {cli}\nmodel: {MODELS[cli]}\nisolate_home: true\ntimeout: 120\n{spec_extra}"
    folder = write_session(
        project / ".workflow" / ".team" / "TC-pipeline", roles, graph, role_extra=dict.fromkeys(roles, extra)
    )
    return project, folder


def runs_by_task(folder: Path) -> dict:
    reader = StoreReader.open(folder)
    assert reader is not None
    try:
        return {run.task_id: run for run in reader.runs()}
    finally:
        reader.close()


def tasks_of(folder: Path) -> dict:
    reader = StoreReader.open(folder)
    assert reader is not None
    try:
        return {task.id: task for task in reader.tasks()}
    finally:
        reader.close()


@pytest.mark.parametrize("cli", ["claude", "codex", "gemini"])
def test_a_writer_then_reviewer_pipeline_runs_on_the_real_cli(executor_cli, tmp_path, cli):
    with FakeLLM() as fake:
        env = cli_env(cli, fake.url)
        project, folder = project_with_session(
            tmp_path, cli, {"WRITE-001": [], "REVIEW-001": ["WRITE-001"]}, {"writer": "WRITE", "reviewer": "REVIEW"}
        )
        fake.script(
            WriteFile("hello.py", CODE),
            Text("Wrote hello.py."),
            ReadFile("hello.py"),
            Text("[reviewer] verdict: pass. hello.py prints its greeting."),
        )
        result = executor_cli("run", "--session", str(folder), "--max-attempts", "1", env=env, timeout=300)
        assert result.returncode == 0, result.stdout + result.stderr
        assert (project / "hello.py").read_text() == CODE, "the writer's tool call really wrote the file"
        later_bodies = [json.dumps(request.body) for request in fake.model_requests()[2:]]
        assert any("hello from the writer" in body for body in later_bodies), "the reviewer really read it"
    runs = runs_by_task(folder)
    for task_id in ("WRITE-001", "REVIEW-001"):
        run = runs[task_id]
        assert run.outcome == "completed"
        assert run.agent_session_id, f"{cli} reported no session id for {task_id}"
        assert run.tokens_in
        assert run.tokens_out
        assert run.git_head_before
        assert run.backend == cli
    assert "hello.py" in runs["WRITE-001"].files_changed
    assert runs["WRITE-001"].model
    messages = [json.loads(line) for line in (folder / ".msg" / "messages.jsonl").read_text().splitlines()]
    report = next(m for m in messages if m["type"] == "task_complete" and m["data"]["task_id"] == "REVIEW-001")
    assert report["summary"].startswith("[reviewer]")


@pytest.mark.parametrize("cli", ["claude", "codex", "gemini"])
def test_an_agent_in_its_task_worktree_writes_its_artifact_into_the_session(executor_cli, tmp_path, cli):
    # The worktree is the agent's working directory; the session's artifacts/ lies outside it,
    # where a CLI's sandbox would refuse the write unless the executor names the folder.
    notes = "# notes\nwritten from the worktree\n"
    with FakeLLM() as fake:
        env = cli_env(cli, fake.url)
        _, folder = project_with_session(
            tmp_path, cli, {"WRITE-001": []}, {"writer": "WRITE"}, spec_extra="isolation: worktree\n"
        )
        artifact = folder / "artifacts" / "WRITE-001-notes.md"
        fake.script(WriteFile(str(artifact), notes), Text("Wrote the notes."))
        result = executor_cli("run", "--session", str(folder), "--max-attempts", "1", env=env, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert artifact.is_file(), f"{cli} could not write outside its worktree: {result.stdout}"
    assert artifact.read_text() == notes


# The key pool's provider and the variable each CLI reads its key from.
POOLED = {
    "claude": ("anthropic", "ANTHROPIC_API_KEY"),
    "codex": ("openai", "OPENAI_API_KEY"),
    "gemini": ("google", "GEMINI_API_KEY"),
}


@pytest.mark.parametrize("cli", ["claude", "codex", "gemini"])
def test_a_refused_key_is_disabled_and_the_attempt_goes_on_with_the_pools_next_key(executor_cli, tmp_path, cli):
    provider, variable = POOLED[cli]
    refused, good = f"{cli}-key-refused-1111", f"{cli}-key-good-2222"
    with FakeLLM(refused_keys=frozenset({refused})) as fake:
        env = cli_env(cli, fake.url) | {variable: refused, f"{variable}_2": good}
        project, folder = project_with_session(tmp_path, cli, {"WRITE-001": []}, {"writer": "WRITE"})
        (folder / "executor.toml").write_text(f'[keys.env]\n{provider} = ["{variable}", "{variable}_2"]\n')
        fake.script(WriteFile("hello.py", CODE), Text("Wrote hello.py."))
        result = executor_cli("run", "--session", str(folder), "--max-attempts", "1", env=env, timeout=300)
        tails = [request.key_tail for request in fake.requests if request.protocol]
    assert result.returncode == 0, result.stdout + result.stderr
    assert (project / "hello.py").read_text() == CODE
    assert tails[0] == "1111", "the first key of the pool went out first"
    assert "2222" in tails, "then the next key, in the same attempt"
    run = runs_by_task(folder)["WRITE-001"]
    assert (run.attempt, run.outcome, run.key_id) == (1, "completed", PoolKey.new(provider, good).id)
    shown = executor_cli("models", "--session", str(folder), "--json", env=env)
    states = {row["key_id"]: row["status"] for row in json.loads(shown.stdout)["keys"]}
    assert states[PoolKey.new(provider, refused).id] == "disabled"
    for text in (result.stdout, result.stderr, (folder / ".executor" / "logs" / "WRITE-001-a1.log").read_text()):
        assert refused not in text
        assert good not in text


def test_with_every_key_refused_the_cli_attempt_asks_for_one_and_goes_on_after_keys_add(executor_cli, tmp_path):
    refused, added = "claude-key-refused-1111", "claude-key-added-3333"
    config_dir = tmp_path / "config"
    config_dir.mkdir()
    own = {"TEAM_EXECUTOR_CONFIG_DIR": str(config_dir), "TEAM_EXECUTOR_MASTER_KEY": "a passphrase for the test"}
    with FakeLLM(refused_keys=frozenset({refused})) as fake:
        env = cli_env("claude", fake.url) | own | {"ANTHROPIC_API_KEY": refused}
        project, folder = project_with_session(tmp_path, "claude", {"WRITE-001": []}, {"writer": "WRITE"})
        fake.script(WriteFile("hello.py", CODE), Text("Wrote hello.py."))
        run = subprocess.Popen(
            [str(EXECUTOR), "run", "--session", str(folder), "--max-attempts", "1"],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, **env},
        )
        try:
            (question,) = wait_for_key_question(folder, run)
            assert "executor keys add anthropic" in question.issue
            given = executor_cli("keys", "add", "anthropic", "--from-env", "NEW_KEY", env={**own, "NEW_KEY": added})
            assert given.returncode == 0, given.stderr
            output, _ = run.communicate(timeout=120)
        finally:
            run.kill()
    assert run.returncode == 0, output
    assert (project / "hello.py").read_text() == CODE
    run_row = runs_by_task(folder)["WRITE-001"]
    assert (run_row.attempt, run_row.outcome, run_row.key_id) == (1, "completed", PoolKey.new("anthropic", added).id)
    assert refused not in output
    assert added not in output


@pytest.mark.parametrize("cli", ["claude", "codex", "gemini"])
def test_a_rate_limited_model_ends_the_attempt_as_rate_limited(executor_cli, tmp_path, cli):
    with FakeLLM() as fake:
        env = cli_env(cli, fake.url)
        _, folder = project_with_session(tmp_path, cli, {"WRITE-001": []}, {"writer": "WRITE"})
        fake.script(RateLimited(retry_after_s=1, repeat=20))
        result = executor_cli("run", "--session", str(folder), "--max-attempts", "1", env=env, timeout=300)
    assert result.returncode == 1, result.stdout + result.stderr
    task = tasks_of(folder)["WRITE-001"]
    assert task.status == "failed"
    assert task.last_error_kind == "rate_limited", task.last_error


def test_a_missing_key_is_a_clear_refusal_not_a_traceback(executor_cli, tmp_path):
    if cli_path("claude") is None:
        pytest.skip("the claude CLI is not installed")
    _, folder = project_with_session(tmp_path, "claude", {"WRITE-001": []}, {"writer": "WRITE"})
    env = {
        "TEAM_EXECUTOR_AGENT_CLIS": str(cli_path("claude").parent),
        "ANTHROPIC_API_KEY": "",
        "ANTHROPIC_AUTH_TOKEN": "",
        "HOME": str(tmp_path),
    }
    result = executor_cli("run", "--session", str(folder), env=env)
    assert result.returncode == 2
    assert "no key was found: set ANTHROPIC_API_KEY or ANTHROPIC_AUTH_TOKEN" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_cli_with_no_key_of_its_own_runs_on_a_key_from_the_key_store(executor_cli, tmp_path):
    stored = "claude-key-stored-4444"
    config_dir = tmp_path / "config"
    config_dir.mkdir()
    own = {"TEAM_EXECUTOR_CONFIG_DIR": str(config_dir), "TEAM_EXECUTOR_MASTER_KEY": "a passphrase for the test"}
    with FakeLLM() as fake:
        env = cli_env("claude", fake.url) | own | {"ANTHROPIC_API_KEY": "", "HOME": str(tmp_path)}
        project, folder = project_with_session(tmp_path, "claude", {"WRITE-001": []}, {"writer": "WRITE"})
        given = executor_cli("keys", "add", "anthropic", "--from-env", "NEW_KEY", env={**own, "NEW_KEY": stored})
        assert given.returncode == 0, given.stderr
        fake.script(WriteFile("hello.py", CODE), Text("Wrote hello.py."))
        result = executor_cli("run", "--session", str(folder), "--max-attempts", "1", env=env, timeout=300)
        tails = {request.key_tail for request in fake.requests if request.protocol}
    assert result.returncode == 0, result.stdout + result.stderr  # preflight no longer asks for an env key
    assert (project / "hello.py").read_text() == CODE
    assert tails == {"4444"}


def test_a_missing_cli_is_a_clear_refusal(executor_cli, tmp_path):
    _, folder = project_with_session(tmp_path, "codex", {"WRITE-001": []}, {"writer": "WRITE"})
    env = {"TEAM_EXECUTOR_AGENT_CLIS": str(tmp_path), "PATH": "/usr/bin:/bin", "OPENAI_API_KEY": "k"}
    result = executor_cli("run", "--session", str(folder), env=env)
    assert result.returncode == 2
    assert "`codex` is not installed (install it: npm install -g @openai/codex" in result.stderr


def test_a_retried_claude_attempt_resumes_the_agent_s_own_session(executor_cli, tmp_path):
    with FakeLLM() as fake:
        env = cli_env("claude", fake.url)
        _, folder = project_with_session(tmp_path, "claude", {"WRITE-001": []}, {"writer": "WRITE"})
        spec = folder / "role-specs" / "writer.md"
        spec.write_text(spec.read_text().replace("timeout: 120\n", "timeout: 120\nmax_turns: 1\n"))
        # Attempt 1 runs its one turn (a tool call) and stops at the turn limit; attempt 2 answers.
        fake.script(WriteFile("part.txt", "first half\n"), Text("Finished the rest."))
        result = executor_cli("run", "--session", str(folder), "--retry-backoff", "0.05", env=env, timeout=300)
        assert result.returncode == 0, result.stdout + result.stderr
        second_attempt = fake.model_requests()[-1].body
    reader = StoreReader.open(folder)
    assert reader is not None
    first, second = reader.runs()
    reader.close()
    assert (first.error_kind, second.outcome) == ("max_turns", "completed")
    assert first.agent_session_id
    earlier_tool_calls = [
        block
        for message in second_attempt["messages"]
        if message["role"] == "assistant" and isinstance(message["content"], list)
        for block in message["content"]
        if block.get("type") == "tool_use"
    ]
    assert earlier_tool_calls, "attempt 2 must continue attempt 1's conversation, not start blind"
    assert earlier_tool_calls[0]["input"]["content"] == "first half\n"
