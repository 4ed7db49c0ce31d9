"""One task moves across keys and models inside its attempt: `executor run` with the openai backend.

The model servers are tests/fake_openai.py on 127.0.0.1; the keys come from the
environment variables that [keys.env] names, and never reach any file.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from session.keypool import PoolKey
from session.store import StoreReader
from tests.conftest import _EMPTY_CONFIG, EXECUTOR
from tests.fake_openai import FakeOpenAI, RateLimited, Reply, Unavailable
from tests.sessions import write_session
from tests.test_mcp_bridge import RunningBridge

KEY_A = "sk-test-aaaaaaaaaaaaaaaa1111"
KEY_B = "sk-test-bbbbbbbbbbbbbbbb2222"


def routed_session(tmp_path: Path, fake: FakeOpenAI, models: list[tuple[str, str]], role_model: str | None) -> Path:
    extra = "backend: openai\n" + (f"model: {role_model}\n" if role_model else "")
    folder = write_session(tmp_path / "s", {"writer": "WRITE"}, {"WRITE-001": []}, role_extra={"writer": extra})
    entries = "".join(
        f'[[models]]\nname = "{name}"\nprovider = "openai-compatible"\nbackend = "openai"\ntier = "{tier}"\n'
        f'input_per_mtok = 1.0\noutput_per_mtok = 2.0\ncontext_window = 8000\nbase_url = "{fake.base_url}"\n\n'
        for name, tier in models
    )
    (folder / "executor.toml").write_text(entries + '[keys.env]\nopenai-compatible = ["KEY_A", "KEY_B"]\n')
    return folder


def env_for(fake: FakeOpenAI) -> dict[str, str]:
    return {"KEY_A": KEY_A, "KEY_B": KEY_B, "OPENAI_BASE_URL": fake.base_url, "OPENAI_API_KEY": KEY_A}


def assert_no_key_anywhere(folder: Path, *outputs: str) -> None:
    for path in folder.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert KEY_A.encode() not in data, path
            assert KEY_B.encode() not in data, path
    for text in outputs:
        assert KEY_A not in text
        assert KEY_B not in text


def test_a_429_moves_the_task_to_the_next_key_at_once(executor_cli, tmp_path):
    with FakeOpenAI(keys=(KEY_A, KEY_B), models=("model-a",)) as fake:
        folder = routed_session(tmp_path, fake, [("model-a", "STANDARD")], "model-a")
        fake.script(RateLimited(retry_after_s=30), key=KEY_A)
        fake.script(Reply("[writer] WRITE-001 done: the text."), key=KEY_B)
        result = executor_cli("run", "--session", str(folder), "--max-attempts", "1", env=env_for(fake))
        assert result.returncode == 0, result.stdout + result.stderr
        assert len(fake.chat_requests(key=KEY_A)) == 1
        assert len(fake.chat_requests(key=KEY_B)) == 1
    assert "the text" in next((folder / "artifacts").glob("WRITE-001*")).read_text()
    # The attempt's row names the key that did the work, by its id only.
    reader = StoreReader.open(folder)
    assert reader is not None
    (run,) = reader.runs()
    reader.close()
    assert run.key_id == PoolKey.new("openai-compatible", KEY_B).id
    assert_no_key_anywhere(folder, result.stdout, result.stderr)


def test_when_every_key_is_cooling_the_task_waits_for_the_first_to_recover(executor_cli, tmp_path):
    with FakeOpenAI(keys=(KEY_A, KEY_B), models=("model-a",)) as fake:
        folder = routed_session(tmp_path, fake, [("model-a", "STANDARD")], "model-a")
        fake.script(RateLimited(retry_after_s=1), Reply("[writer] WRITE-001 done after the wait."), key=KEY_A)
        fake.script(RateLimited(retry_after_s=2), key=KEY_B)
        result = executor_cli("run", "--session", str(folder), "--max-attempts", "1", env=env_for(fake))
        assert result.returncode == 0, result.stdout + result.stderr
        assert len(fake.chat_requests(key=KEY_A)) == 2, "key A was used again once its Retry-After passed"
        assert len(fake.chat_requests(key=KEY_B)) == 1
    log = (folder / ".executor" / "logs" / "WRITE-001-a1.log").read_text()
    assert "keys are cooling; waiting" in log
    assert_no_key_anywhere(folder, result.stdout, result.stderr)


def test_an_overloaded_model_falls_back_along_the_chain(executor_cli, tmp_path):
    with FakeOpenAI(keys=(KEY_A, KEY_B), models=("model-premium", "model-standard")) as fake:
        folder = routed_session(
            tmp_path, fake, [("model-premium", "PREMIUM"), ("model-standard", "STANDARD")], role_model=None
        )
        fake.script(Unavailable(status=503), model="model-premium")
        fake.script(Reply("[writer] WRITE-001 done on the standard model."), model="model-standard")
        result = executor_cli("run", "--session", str(folder), "--max-attempts", "1", env=env_for(fake))
        assert result.returncode == 0, result.stdout + result.stderr
        asked = [json.loads(json.dumps(r.body)).get("model") for r in fake.chat_requests()]
        assert asked == ["model-premium", "model-standard"]
    reader = StoreReader.open(folder)
    assert reader is not None
    (run,) = reader.runs()
    reader.close()
    assert run.model == "model-standard"
    assert_no_key_anywhere(folder, result.stdout, result.stderr)


def test_models_shows_the_key_states_of_a_run_in_another_process(executor_cli, tmp_path):
    with FakeOpenAI(keys=(KEY_A, KEY_B), models=("model-a",)) as fake:
        folder = routed_session(tmp_path, fake, [("model-a", "STANDARD")], "model-a")
        fake.script(RateLimited(retry_after_s=120), key=KEY_A)
        fake.script(Reply("[writer] WRITE-001 done."), key=KEY_B)
        # A served run stays up when its pipeline is done: the states are read while it lives.
        run = subprocess.Popen(
            [str(EXECUTOR), "run", "--session", str(folder), "--mcp-http", "0"],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, "TEAM_EXECUTOR_CONFIG_DIR": str(_EMPTY_CONFIG), **env_for(fake)},
        )
        try:
            assert run.stdout is not None
            for line in run.stdout:
                if "idle:" in line:
                    break
            time.sleep(2.5)  # the key states are recorded every 2 s when they change
            shown = executor_cli("models", "--session", str(folder), "--json")
            text = executor_cli("models", "--session", str(folder))
        finally:
            run.send_signal(signal.SIGINT)
            rest, _ = run.communicate(timeout=60)
    assert shown.returncode == 0, shown.stderr
    report = json.loads(shown.stdout)
    assert report["keys_note"].startswith("live, from the run going on")
    states = {row["key_id"]: row for row in report["keys"]}
    cooled = states[PoolKey.new("openai-compatible", KEY_A).id]
    used = states[PoolKey.new("openai-compatible", KEY_B).id]
    assert cooled["status"] == "cooling"
    assert 100 < cooled["cooling_for_s"] <= 120
    assert used["status"] == "active"
    assert used["requests"] == 1
    assert "live, from the run going on" in text.stdout
    assert_no_key_anywhere(folder, shown.stdout, text.stdout, rest)


def test_a_key_added_in_another_terminal_joins_the_running_pool(executor_cli, tmp_path):
    config_dir = tmp_path / "config"
    config_dir.mkdir()
    own_env = {"TEAM_EXECUTOR_CONFIG_DIR": str(config_dir), "TEAM_EXECUTOR_MASTER_KEY": "a passphrase for the test"}
    with FakeOpenAI(keys=(KEY_A, KEY_B), models=("model-a",)) as fake:
        folder = routed_session(tmp_path, fake, [("model-a", "STANDARD")], "model-a")
        (folder / "executor.toml").write_text(
            (folder / "executor.toml").read_text().replace('["KEY_A", "KEY_B"]', '["KEY_A"]')
        )
        fake.script(RateLimited(retry_after_s=300), key=KEY_A)
        fake.script(Reply("[writer] WRITE-001 done with the new key."), key=KEY_B)
        run = subprocess.Popen(
            [str(EXECUTOR), "run", "--session", str(folder), "--max-attempts", "1"],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, **env_for(fake), **own_env},
        )
        log = folder / ".executor" / "logs" / "WRITE-001-a1.log"
        deadline = time.monotonic() + 30
        while "keys are cooling" not in (log.read_text() if log.exists() else "") and time.monotonic() < deadline:
            time.sleep(0.1)
        assert "keys are cooling" in log.read_text(), "the only key should be cooling for 300 s"
        added = executor_cli(
            "keys", "add", "openai-compatible", "--from-env", "NEW_KEY", env={**own_env, "NEW_KEY": KEY_B}
        )
        assert added.returncode == 0, added.stderr
        try:
            output, _ = run.communicate(timeout=60)
        finally:
            run.kill()
        assert run.returncode == 0, output
        assert len(fake.chat_requests(key=KEY_B)) == 1
    assert "with the new key" in next((folder / "artifacts").glob("WRITE-001*")).read_text()
    assert_no_key_anywhere(folder, output, added.stdout, added.stderr)


def test_a_critical_task_asks_for_approval_and_uses_critical_once_approved(tmp_path):
    with FakeOpenAI(keys=(KEY_A, KEY_B), models=("model-crit", "model-std")) as fake:
        folder = routed_session(tmp_path, fake, [("model-crit", "CRITICAL"), ("model-std", "STANDARD")], None)
        spec = folder / "role-specs" / "writer.md"
        spec.write_text(spec.read_text().replace("backend: openai\n", "backend: openai\ntier: CRITICAL\n"))
        fake.script(Unavailable(status=503), model="model-std")
        fake.script(Reply("[writer] WRITE-001 done on the critical model."), model="model-crit")
        bridge = RunningBridge(
            folder, "--max-attempts", "2", "--retry-backoff", "6", "--exit-when-done", env=env_for(fake)
        )
        try:
            deadline = time.monotonic() + 30
            opened: list[dict] = []
            while not opened and time.monotonic() < deadline:
                opened = bridge.call("list_escalations", {"status": "open"}).structured_content["escalations"]
                time.sleep(0.2)
            assert len(opened) == 1, "the gate asks once"
            question = opened[0]
            assert question["task_id"] == "WRITE-001"
            assert question["options"] == ["approve", "deny"]
            answered = bridge.call("answer_escalation", {"id": question["id"], "choice": "approve"})
            assert not answered.is_error
            code = bridge.process.wait(timeout=60)
        finally:
            output = bridge.stop()
        assert code == 0, output
        asked = [r.body.get("model") for r in fake.chat_requests()]
    assert asked == ["model-std", "model-crit"], output
    assert "critical model" in next((folder / "artifacts").glob("WRITE-001*")).read_text()
    assert_no_key_anywhere(folder, output)


def _only_key_a(folder: Path) -> None:
    (folder / "executor.toml").write_text(
        (folder / "executor.toml").read_text().replace('["KEY_A", "KEY_B"]', '["KEY_A"]')
    )


def wait_for_key_question(folder: Path, run: subprocess.Popen[str]) -> list:
    """The open questions of the run once it asked for a key (read from its SQLite store)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and run.poll() is None:
        reader = StoreReader.open(folder)
        if reader is not None:
            try:
                asked = [row for row in reader.escalations("open") if row.opened_by.startswith("keys:")]
            finally:
                reader.close()
            if asked:
                return asked
        time.sleep(0.2)
    raise AssertionError("the run did not ask for a key" + (f": {run.communicate()[0]}" if run.poll() else ""))


def test_a_refused_only_key_asks_for_one_and_the_user_gives_up(executor_cli, tmp_path):
    with FakeOpenAI(keys=(KEY_B,), models=("model-a",)) as fake:  # KEY_A is not a key this server knows
        folder = routed_session(tmp_path, fake, [("model-a", "STANDARD")], "model-a")
        _only_key_a(folder)
        run = subprocess.Popen(
            [str(EXECUTOR), "run", "--session", str(folder), "--max-attempts", "3"],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, **env_for(fake)},
        )
        try:
            (question,) = wait_for_key_question(folder, run)
            assert question.options == ["added", "fail"]
            assert "executor keys add openai-compatible" in question.issue
            assert "add_api_key" in question.issue
            answer = executor_cli("answer", question.id, "fail", "--session", str(folder))
            assert answer.returncode == 0, answer.stdout + answer.stderr
            output, _ = run.communicate(timeout=60)
        finally:
            run.kill()
        assert run.returncode != 0, output
        assert len(fake.chat_requests(key=KEY_A)) == 1, "an auth failure is not retried"
    reader = StoreReader.open(folder)
    assert reader is not None
    runs = reader.runs()
    (task,) = reader.tasks()
    reader.close()
    assert [run.error_kind for run in runs] == ["auth"]
    assert question.id in (runs[0].error or "")
    assert task.status == "failed"
    shown = executor_cli("models", "--session", str(folder), "--json")
    assert shown.returncode == 0, shown.stderr
    refused = PoolKey.new("openai-compatible", KEY_A).id
    states = {row["key_id"]: row for row in json.loads(shown.stdout)["keys"]}
    assert states[refused]["status"] == "disabled"
    notices = (folder / ".executor" / "notifications.log").read_text()
    assert f"API key {refused} (openai-compatible, …1111) disabled" in notices, notices
    assert_no_key_anywhere(folder, output, shown.stdout)


@pytest.mark.parametrize("pool", ["refused", "empty"])
def test_a_pool_that_runs_dry_asks_and_resumes_after_keys_add(executor_cli, tmp_path, pool):
    config_dir = tmp_path / "config"
    config_dir.mkdir()
    own_env = {"TEAM_EXECUTOR_CONFIG_DIR": str(config_dir), "TEAM_EXECUTOR_MASTER_KEY": "a passphrase for the test"}
    with FakeOpenAI(keys=(KEY_B,), models=("model-a",)) as fake:  # KEY_A is refused; no key is refused too
        folder = routed_session(tmp_path, fake, [("model-a", "STANDARD")], "model-a")
        _only_key_a(folder)
        if pool == "empty":  # no key at all: the call goes out without one and is refused
            own_env.update({"KEY_A": "", "OPENAI_API_KEY": ""})
        fake.script(Reply("[writer] WRITE-001 done with the added key."), key=KEY_B)
        run = subprocess.Popen(
            [str(EXECUTOR), "run", "--session", str(folder), "--max-attempts", "1"],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, **env_for(fake), **own_env},
        )
        try:
            (question,) = wait_for_key_question(folder, run)
            added = executor_cli(
                "keys", "add", "openai-compatible", "--from-env", "NEW_KEY", env={**own_env, "NEW_KEY": KEY_B}
            )
            assert added.returncode == 0, added.stderr
            output, _ = run.communicate(timeout=60)
        finally:
            run.kill()
        assert run.returncode == 0, output
        assert len(fake.chat_requests(key=KEY_A)) == (1 if pool == "refused" else 0)
        assert len([r for r in fake.chat_requests() if r.key is None]) == (0 if pool == "refused" else 1)
        assert len(fake.chat_requests(key=KEY_B)) == 1
    reader = StoreReader.open(folder)
    assert reader is not None
    runs = reader.runs()
    (task,) = reader.tasks()
    (closed,) = [row for row in reader.escalations() if row.opened_by.startswith("keys:")]
    reader.close()
    assert task.status == "completed"
    assert [run.error_kind for run in runs] == [None], "no failure is recorded for the task"
    assert (closed.id, closed.status, closed.choice) == (question.id, "answered", "added")
    assert "with the added key" in next((folder / "artifacts").glob("WRITE-001*")).read_text()
    assert_no_key_anywhere(folder, output, added.stdout, added.stderr)


def test_a_refused_key_is_disabled_and_the_attempt_goes_on_with_the_next_key(executor_cli, tmp_path):
    with FakeOpenAI(keys=(KEY_B,), models=("model-a",)) as fake:  # KEY_A is refused, KEY_B works
        folder = routed_session(tmp_path, fake, [("model-a", "STANDARD")], "model-a")
        fake.script(Reply("[writer] WRITE-001 done with the good key."), key=KEY_B)
        result = executor_cli("run", "--session", str(folder), "--max-attempts", "1", env=env_for(fake))
        assert result.returncode == 0, result.stdout + result.stderr
        assert len(fake.chat_requests(key=KEY_A)) == 1
        assert len(fake.chat_requests(key=KEY_B)) == 1
    shown = executor_cli("models", "--session", str(folder), "--json")
    states = {row["key_id"]: row for row in json.loads(shown.stdout)["keys"]}
    assert states[PoolKey.new("openai-compatible", KEY_A).id]["status"] == "disabled"
    assert states[PoolKey.new("openai-compatible", KEY_B).id]["status"] == "active"
    assert "disabled" in (folder / ".executor" / "notifications.log").read_text()
    assert_no_key_anywhere(folder, result.stdout, result.stderr, shown.stdout)
