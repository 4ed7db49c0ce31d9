"""A real run tells its owner what matters, on loopback Telegram and Discord servers that speak
their APIs: a failed task, a stall, a question (answered with a Telegram button), a recovery after
kill -9, the end of the pipeline, and a digest. A channel answering 429 delays nothing else."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from tests.conftest import _EMPTY_CONFIG
from tests.fake_chat import Fail, FakeDiscord, FakeTelegram
from tests.sessions import scripted_session
from tests.test_mcp_bridge import ENV, EXECUTOR, RunningBridge

TOKEN = "123456:TESTtelegramBOTtokenVALUE-abcdefgh"
HOOK_TOKEN = "DISCORDwebhookSECRETtokenVALUE-xyz"
CHAT = 424242


def _config(folder: Path, telegram: FakeTelegram, extra: str = "") -> None:
    (folder / "executor.toml").write_text(
        f'[notify]\ndigest_interval_s = 0\n{extra}\n[notify.telegram]\nbot_token_env = "TG_TOKEN"\n'
        f'chat_ids = [{CHAT}]\napi_base = "{telegram.url}"\n\n'
        '[notify.discord]\nwebhook_url_env = "DISCORD_HOOK"\n'
    )


def _env(telegram: FakeTelegram, discord: FakeDiscord) -> dict[str, str]:
    return {"TG_TOKEN": TOKEN, "DISCORD_HOOK": discord.webhook_url}


def _texts(telegram: FakeTelegram) -> list[str]:
    return [body.get("text", "") for body in telegram.sent()]


def _wait(condition: Any, timeout_s: float = 30) -> bool:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def test_a_run_notifies_failures_stalls_questions_and_the_end(tmp_path: Path) -> None:
    graph = {"T-001": [], "T-002": [], "T-003": [], "T-004": ["T-003"]}
    behaviors = {"T-001": {"exit": 3}, "T-002": {"hang_attempts": 1}, "default": {"sleep": 0.1}}
    folder = scripted_session(tmp_path / "s", graph, behaviors, python=sys.executable)
    spec = folder / "role-specs" / "worker.md"
    spec.write_text(
        spec.read_text().replace("backend: command\n", "backend: command\nstall_after: 1\nstall_stop_after: 2.5\n")
    )
    with FakeTelegram(TOKEN) as telegram, FakeDiscord("55", HOOK_TOKEN) as discord:
        _config(folder, telegram)
        discord.fail(Fail(status=429, retry_after_s=3, description="You are being rate limited."), times=1)
        bridge = RunningBridge(folder, "--max-attempts", "1", "--exit-when-done", env=_env(telegram, discord))
        try:
            question = bridge.call(
                "escalate_decision", {"issue": "Ship T-004?", "options": ["ship", "hold"], "task_id": "T-004"}
            ).structured_content
            assert _wait(lambda: any(question["id"] in text for text in _texts(telegram)))
            # The question went out with one button per option; pressing one answers it.
            (asked,) = [body for body in telegram.sent() if question["id"] in body.get("text", "")]
            buttons = [b["callback_data"] for row in asked["reply_markup"]["inline_keyboard"] for b in row]
            assert buttons == [f"esc:{question['id']}:ship", f"esc:{question['id']}:hold"]
            telegram.press(f"esc:{question['id']}:ship", chat_id=CHAT)
            code = bridge.process.wait(timeout=90)
        finally:
            output = bridge.stop()
        assert _wait(lambda: any("Pipeline finished" in text for text in _texts(telegram)), 15), _texts(telegram)
        assert _wait(lambda: len(discord.sent()) >= 4, 15)
        texts = _texts(telegram)
        first_discord_try = min(r.at for r in discord.requests)
        first_telegram = min(r.at for r in telegram.calls("sendMessage"))
        retried_discord = [r.at for r in discord.requests if r.status == 204]
    assert code == 1, output  # T-001 failed
    joined = "\n".join(texts)
    assert "T-001 (worker) failed after 1 attempt(s)" in joined
    assert "T-002 looks stuck" in joined
    assert "T-002 stalled: stopped to retry" in joined
    assert f"Question {question['id']} about T-004" in joined
    assert "Pipeline finished with failures" in joined
    assert f"{question['id']} answered: ship (by telegram:@alice" in output
    # T-004 waited for the answer, then ran.
    assert "✓ T-004" in output
    # Discord's 429 was waited out without holding Telegram back.
    assert retried_discord, "discord got its messages after the Retry-After"
    assert min(retried_discord) - first_discord_try >= 2.5
    assert first_telegram < min(retried_discord)
    discord_text = "\n".join(str(body) for body in discord.sent())
    assert "T-001 (worker) failed" in discord_text
    # No token anywhere in the session folder or the output.
    for path in folder.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert TOKEN.encode() not in data, path
            assert HOOK_TOKEN.encode() not in data, path
    assert TOKEN not in output
    assert HOOK_TOKEN not in output


def test_a_recovery_after_kill_is_notified(tmp_path: Path) -> None:
    folder = scripted_session(tmp_path / "s", {"T-001": []}, {"T-001": {"sleep": 60}}, python=sys.executable)
    with FakeTelegram(TOKEN) as telegram, FakeDiscord("55", HOOK_TOKEN) as discord:
        _config(folder, telegram)
        env = {**ENV, **_env(telegram, discord), "TEAM_EXECUTOR_CONFIG_DIR": str(_EMPTY_CONFIG)}
        first = subprocess.Popen(
            [str(EXECUTOR), "run", "--session", str(folder)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
        )
        assert _wait((folder / ".executor" / "logs" / "T-001-a1.log").exists)
        os.kill(first.pid, signal.SIGKILL)
        first.communicate(timeout=30)
        (folder / "behaviors.json").write_text('{"T-001": {"sleep": 0.1}}')
        resumed = subprocess.run(
            [str(EXECUTOR), "resume", "--session", str(folder)],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
            check=False,
        )
        assert resumed.returncode == 0, resumed.stdout + resumed.stderr
        assert _wait(lambda: any("Pipeline complete" in text for text in _texts(telegram)), 15)
        texts = "\n".join(_texts(telegram))
    assert "Recovered from an unclean stop" in texts
    assert "Reset 1 task(s) that were running: T-001" in texts
    assert ".executor/recovery/" in texts


def test_a_question_whose_notice_died_with_the_run_is_asked_again_after_it(tmp_path: Path) -> None:
    # The question is recorded, its Telegram message waits out a 429, and the run is killed: the
    # notice dies with it. The resumed run must ask again, or T-002 waits for an answer its owner
    # was never asked for.
    graph = {"T-001": [], "T-002": ["T-001"]}
    folder = scripted_session(tmp_path / "s", graph, {"default": {"sleep": 0.1}}, python=sys.executable)
    with FakeTelegram(TOKEN) as telegram, FakeDiscord("55", HOOK_TOKEN) as discord:
        _config(folder, telegram)
        discord.fail(Fail(status=429, retry_after_s=60, description="slow down"), times=5)
        telegram.fail_send(Fail(status=429, retry_after_s=60, description="Too Many Requests"), times=5)
        env = _env(telegram, discord)
        first = RunningBridge(folder, env=env)
        try:
            question = first.call(
                "escalate_decision", {"issue": "Ship T-002?", "options": ["ship", "hold"], "task_id": "T-002"}
            ).structured_content
            assert _wait(lambda: len(telegram.calls("sendMessage")) >= 1)  # tried, told to wait a minute
        finally:
            first.process.kill()
            first.process.wait(timeout=30)
            if first.process.stdout is not None:
                first.process.stdout.close()
        assert not any(question["id"] in text for text in _texts(telegram)), "the question was never delivered"
        telegram.script = type(telegram.script)()  # the rate limit is over
        resumed = subprocess.Popen(
            [str(EXECUTOR), "resume", "--session", str(folder), "--exit-when-done"],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**ENV, **env, "TEAM_EXECUTOR_CONFIG_DIR": str(_EMPTY_CONFIG)},
        )
        try:
            assert _wait(lambda: any(question["id"] in text for text in _texts(telegram)), 60), _texts(telegram)
            (asked,) = [body for body in telegram.sent() if question["id"] in body.get("text", "")]
            assert "still open after a restart" in asked["text"]
            buttons = [b["callback_data"] for row in asked["reply_markup"]["inline_keyboard"] for b in row]
            assert buttons == [f"esc:{question['id']}:ship", f"esc:{question['id']}:hold"]
            telegram.press(f"esc:{question['id']}:ship", chat_id=CHAT)
            output, _ = resumed.communicate(timeout=120)
        finally:
            if resumed.poll() is None:
                resumed.kill()
                resumed.communicate(timeout=30)
    assert resumed.returncode == 0, output
    assert "✓ T-002" in output


def test_a_digest_is_sent_on_its_interval_and_not_when_nothing_changed(tmp_path: Path) -> None:
    folder = scripted_session(
        tmp_path / "s", {"T-001": [], "T-002": ["T-001"]}, {"T-001": {"sleep": 3}}, python=sys.executable
    )
    with FakeTelegram(TOKEN) as telegram, FakeDiscord("55", HOOK_TOKEN) as discord:
        _config(folder, telegram)
        (folder / "executor.toml").write_text(
            (folder / "executor.toml").read_text().replace("digest_interval_s = 0", "digest_interval_s = 1")
        )
        bridge = RunningBridge(folder, env=_env(telegram, discord))
        try:
            assert _wait(lambda: any("after" in text and "0/2" in text for text in _texts(telegram)))
            assert _wait(lambda: any("2/2" in text for text in _texts(telegram)), 30)
            time.sleep(3)  # idle: three more intervals with nothing new
            digests = [text for text in _texts(telegram) if "Progress:" in text]
        finally:
            bridge.stop()
    assert len(digests) == len(set(digests)), "an unchanged digest is not sent again"
    assert any("Running: T-001" in text for text in digests)
