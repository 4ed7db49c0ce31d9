"""Channels, rendering, the rate limit and the Telegram answer poller, against loopback servers."""

from __future__ import annotations

import html
import json
import socket
import threading
import time

import pytest

from notify.channels import (
    AppriseChannel,
    ConsoleChannel,
    DiscordChannel,
    TelegramChannel,
    WebhookChannel,
)
from notify.messages import (
    NOTICE_KINDS,
    callback_data,
    discord_text,
    parse_callback_data,
    plain_text,
    telegram_html,
    telegram_keyboard,
)
from notify.sender import TokenBucket
from notify.telegram_poll import TelegramPoller, who_pressed
from protocol.notify import Notice
from session.retry_after import parse_retry_after
from session.secret import Secret
from tests.fake_chat import Fail, FakeDiscord, FakeTelegram, FakeWebhook, wait_for

TOKEN = "123456789:AAHsecretTELEGRAMtokenVALUE-x9Zq"
DISCORD_TOKEN = "dIsCoRdWeBhOoKtOkEn-SECRET-abcdefghijklmnopqrstuvwxyz-77Ab"
CHAT = 555001
ESCALATION = Notice(
    kind="escalation_opened",
    title="Use a CRITICAL model for T-004?",
    body="The task <auth> & sessions needs more than PREMIUM.",
    action="executor answer ESC-001 approve --session /work/s",
    escalation_id="ESC-001",
    options=("approve", "reject"),
    session_id="s-1",
)


@pytest.fixture
def telegram():
    with FakeTelegram(TOKEN) as server:
        yield server


@pytest.fixture
def discord():
    with FakeDiscord("112233445566778899", DISCORD_TOKEN) as server:
        yield server


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --------------------------------------------------------------------------- rendering


def test_every_kind_of_notice_has_its_own_mark_and_renders_on_every_channel():
    marks = set()
    for kind in NOTICE_KINDS:
        notice = Notice(kind=kind, title="t", body="b")
        marks.add(plain_text(notice).split(" ")[0])
        assert telegram_html(notice).startswith("<b>")
        assert discord_text(notice).startswith("**")
    assert len(marks) == len(NOTICE_KINDS)


def test_telegram_text_is_escaped_html_and_long_bodies_are_cut_to_the_limit():
    text = telegram_html(ESCALATION)
    assert "The task &lt;auth&gt; &amp; sessions" in text
    assert "<code>executor answer ESC-001 approve --session /work/s</code>" in text
    long = telegram_html(Notice(kind="digest", title="t", body="<&>" * 3000, action="executor status"))
    assert len(long) <= 4096
    assert long.endswith("<code>executor status</code>")  # the action survives; the body was cut
    assert "…" in long


def test_discord_text_cannot_format_and_stays_under_2000_characters():
    text = discord_text(
        Notice(kind="task_failed", title="T-1 *failed*", body="- a [link](http://x)\n# big", action="x")
    )
    assert "\\*failed\\*" in text
    assert "\\[link\\]" in text
    assert "\n\\- a" in text
    assert "\n\\# big" in text
    assert len(discord_text(Notice(kind="digest", title="t", body="*" * 5000))) <= 2000


def test_escalation_buttons_carry_the_escalation_and_the_option():
    keyboard = telegram_keyboard(ESCALATION)
    assert keyboard == {
        "inline_keyboard": [
            [
                {"text": "approve", "callback_data": "esc:ESC-001:approve"},
                {"text": "reject", "callback_data": "esc:ESC-001:reject"},
            ]
        ]
    }
    assert parse_callback_data("esc:ESC-001:approve") == ("ESC-001", "approve")
    assert parse_callback_data("esc:ESC-001:a:b") == ("ESC-001", "a:b")
    for bad in (None, 5, "", "esc:", "esc:ESC-001", "other:ESC-001:x"):
        assert parse_callback_data(bad) is None
    # Telegram caps callback_data at 64 bytes: a longer option gets no button (the action line remains)
    assert callback_data("ESC-001", "x" * 60) is None
    long = Notice(kind="escalation_opened", title="t", escalation_id="ESC-2", options=("y" * 70, "no"))
    assert telegram_keyboard(long) == {"inline_keyboard": [[{"text": "no", "callback_data": "esc:ESC-2:no"}]]}
    assert telegram_keyboard(Notice(kind="stall", title="t")) is None


def test_retry_after_is_read_as_seconds_or_an_http_date():
    assert parse_retry_after("2.5") == 2.5
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412470.0) == 10.0
    assert parse_retry_after("-3") == 0.0
    assert parse_retry_after("soon") is None
    assert parse_retry_after(None) is None


def test_the_token_bucket_allows_a_burst_then_the_rate():
    now = [0.0]
    bucket = TokenBucket(60, burst=2, clock=lambda: now[0])  # one a second
    for _ in range(2):
        assert bucket.wait_s() == 0
        bucket.take()
    assert bucket.wait_s() == pytest.approx(1.0)
    now[0] = 0.5
    assert bucket.wait_s() == pytest.approx(0.5)
    now[0] = 10.0  # a quiet spell saves up no more than the burst
    bucket.take()
    bucket.take()
    assert bucket.wait_s() == pytest.approx(1.0)


# --------------------------------------------------------------------------- Telegram


def test_telegram_sends_html_with_buttons_to_its_chat(telegram):
    channel = TelegramChannel(Secret("telegram", TOKEN), CHAT, api_base=telegram.url)
    try:
        assert channel.send(ESCALATION).ok
    finally:
        channel.close()
    (body,) = telegram.sent()
    assert body["chat_id"] == CHAT
    assert body["parse_mode"] == "HTML"
    assert body["text"] == telegram_html(ESCALATION)
    assert body["reply_markup"] == telegram_keyboard(ESCALATION)
    assert TOKEN not in repr(channel)
    assert channel.name == f"telegram:{CHAT}"


def test_telegram_without_a_poller_sends_no_buttons(telegram):
    channel = TelegramChannel(Secret("telegram", TOKEN), CHAT, api_base=telegram.url, buttons=False)
    assert channel.send(ESCALATION).ok
    channel.close()
    assert "reply_markup" not in telegram.sent()[0]


def test_telegram_refusals_are_read_from_the_json_error(telegram):
    channel = TelegramChannel(Secret("telegram", TOKEN), CHAT, api_base=telegram.url)
    telegram.fail_send(Fail(429, retry_after_s=7, description="Too Many Requests: retry after 7"))
    limited = channel.send(ESCALATION)
    assert (limited.ok, limited.permanent, limited.retry_after_s) == (False, False, 7.0)
    assert "429" in limited.error
    telegram.fail_send(Fail(502, description="Bad Gateway"))
    assert channel.send(ESCALATION).permanent is False
    telegram.fail_send(Fail(400, description="Bad Request: chat not found"))
    refused = channel.send(ESCALATION)
    assert refused.permanent
    assert "chat not found" in refused.error
    channel.close()
    wrong = TelegramChannel(Secret("telegram", TOKEN + "x"), CHAT, api_base=telegram.url)
    result = wrong.send(ESCALATION)
    wrong.close()
    assert result.permanent
    assert "401" in result.error
    assert TOKEN not in result.error


def test_a_channel_whose_server_is_gone_says_retry(tmp_path):
    channel = TelegramChannel(Secret("telegram", TOKEN), CHAT, api_base=f"http://127.0.0.1:{free_port()}")
    result = channel.send(ESCALATION)
    channel.close()
    assert not result.ok
    assert not result.permanent
    assert "ConnectError" in result.error
    assert TOKEN not in result.error


# --------------------------------------------------------------------------- Discord, webhooks, Apprise, console


def test_discord_posts_escaped_content_with_mentions_off(discord):
    channel = DiscordChannel(Secret("discord", discord.webhook_url))
    assert channel.send(ESCALATION).ok
    (body,) = discord.sent()
    assert body == {"content": discord_text(ESCALATION), "allowed_mentions": {"parse": []}}
    discord.fail(Fail(429, retry_after_s=1.5))
    limited = channel.send(ESCALATION)
    assert (limited.ok, limited.permanent, limited.retry_after_s) == (False, False, 1.5)
    channel.close()
    assert DISCORD_TOKEN not in repr(channel)
    assert channel.target == f"{discord.url}/api/webhooks/…"
    gone = DiscordChannel(Secret("discord", discord.webhook_url.replace(DISCORD_TOKEN, "revoked-token-0000000")))
    result = gone.send(ESCALATION)
    gone.close()
    assert result.permanent
    assert "Unknown Webhook" in result.error


def test_a_webhook_gets_the_notice_as_json_with_its_headers():
    with FakeWebhook() as hook:
        channel = WebhookChannel(
            Secret("webhook", f"{hook.url}/hooks/abc?key=secret-query-value"),
            headers={"Authorization": Secret("header", "Bearer very-secret-header-value")},
        )
        assert channel.send(ESCALATION).ok
        hook.fail(Fail(503, retry_after_s=2))
        unavailable = channel.send(ESCALATION)
        hook.fail(Fail(410))
        gone = channel.send(ESCALATION)
        channel.close()
        (received,) = hook.sent()
    assert received.path == "/hooks/abc?key=secret-query-value"
    assert received.headers["Authorization"] == "Bearer very-secret-header-value"
    assert received.body["kind"] == "escalation_opened"
    assert received.body["options"] == ["approve", "reject"]
    assert received.body["text"] == plain_text(ESCALATION)
    assert (unavailable.permanent, unavailable.retry_after_s) == (False, 2.0)
    assert gone.permanent
    assert "secret" not in repr(channel)


def test_apprise_delivers_to_a_url_it_knows():
    with FakeWebhook() as hook:
        url = hook.url.replace("http://", "json://") + "/apprise/inbox"
        channel = AppriseChannel(Secret("apprise", url))
        assert channel.send(ESCALATION).ok
        (received,) = hook.sent()
        hook.fail(Fail(500))
        failed = channel.send(ESCALATION)
    assert received.path == "/apprise/inbox"
    assert received.body["title"] == ESCALATION.title
    assert "executor answer ESC-001 approve" in received.body["message"]
    assert not failed.ok
    assert not failed.permanent
    with pytest.raises(ValueError, match="does not understand"):
        AppriseChannel(Secret("apprise", "nosuchservice://whatever/secret-value"))


def test_the_console_prints_plain_lines(tmp_path):
    path = tmp_path / "console.txt"
    with path.open("w") as stream:
        assert ConsoleChannel(stream).send(ESCALATION).ok
    text = path.read_text()
    assert text.startswith("[notify] ❓ Use a CRITICAL model for T-004?\n")
    assert "[notify] → executor answer ESC-001 approve --session /work/s\n" in text


# --------------------------------------------------------------------------- the answer poller


class Answers:
    def __init__(self, reply: str | None = None, fail: bool = False) -> None:
        self.items: list[tuple[str, str, str]] = []
        self.reply = reply
        self.fail = fail
        self.lock = threading.Lock()

    def __call__(self, escalation_id: str, choice: str, who: str) -> str | None:
        with self.lock:
            self.items.append((escalation_id, choice, who))
        if self.fail:
            raise RuntimeError("the executor is gone")
        return self.reply


def start_poller(telegram, answers, chats=(CHAT,)) -> TelegramPoller:
    poller = TelegramPoller(
        Secret("telegram", TOKEN), chats, answers, api_base=telegram.url, poll_timeout_s=1, retry_backoff_s=0.05
    )
    poller.start()
    return poller


def test_a_button_press_reaches_the_answer_callback_and_is_answered(telegram):
    answers = Answers()
    poller = start_poller(telegram, answers)
    try:
        query = telegram.press("esc:ESC-001:approve", chat_id=CHAT)
        assert wait_for(telegram.answered)
        second = telegram.press("esc:ESC-002:reject", chat_id=CHAT, username=None, first_name="Bob", user_id=77)
        assert wait_for(lambda: len(telegram.answered()) == 2)
        time.sleep(0.3)  # a few more polls: each press is handed over once
    finally:
        poller.stop()
    assert answers.items == [("ESC-001", "approve", "telegram:@alice (42)"), ("ESC-002", "reject", "telegram:Bob (77)")]
    assert telegram.answered() == [
        {"callback_query_id": query, "text": "Recorded: approve"},
        {"callback_query_id": second, "text": "Recorded: reject"},
    ]
    assert poller.answers == 2
    offsets = [call.body.get("offset") or 0 for call in telegram.calls("getUpdates")]  # finished polls
    assert offsets == sorted(offsets)
    assert 1001 in offsets  # the first press was confirmed by the poll that read the second


def test_a_press_from_a_chat_not_in_chat_ids_is_ignored(telegram, caplog):
    answers = Answers()
    poller = start_poller(telegram, answers, chats=(CHAT, "@team_channel"))
    try:
        query = telegram.press("esc:ESC-001:approve", chat_id=999999)
        assert wait_for(telegram.answered)
        telegram.press("not-an-escalation", chat_id=CHAT)
        assert wait_for(lambda: len(telegram.answered()) == 2)
    finally:
        poller.stop()
    assert answers.items == []
    assert telegram.answered()[0] == {"callback_query_id": query, "text": "This chat may not answer."}
    assert telegram.answered()[1]["text"] == "Unknown button."
    assert poller.ignored == 2
    assert "ignored a button press from chat 999999" in caplog.text


def test_the_callbacks_reply_or_failure_is_what_the_presser_sees(telegram):
    for answers, expected in (
        (Answers(reply="ESC-001 is already answered"), "ESC-001 is already answered"),
        (Answers(fail=True), "Could not record the answer: use the command in the message."),
    ):
        before = len(telegram.answered())
        poller = start_poller(telegram, answers)
        try:
            telegram.press("esc:ESC-001:approve", chat_id=CHAT)
            assert wait_for(lambda before=before: len(telegram.answered()) > before)
        finally:
            poller.stop()
        assert telegram.answered()[-1]["text"] == expected


def test_stop_ends_a_long_poll_at_once(telegram):
    poller = TelegramPoller(Secret("telegram", TOKEN), (CHAT,), Answers(), api_base=telegram.url, poll_timeout_s=30)
    poller.start()
    assert wait_for(lambda: "getUpdates" in telegram.arrived)
    time.sleep(0.2)  # the poll is waiting on the server now
    started = time.monotonic()
    poller.stop(timeout_s=10)
    assert not poller.running
    assert time.monotonic() - started < 5  # far less than the 30 s the poll would have waited


def test_a_refused_token_stops_the_poller(telegram, caplog):
    poller = TelegramPoller(
        Secret("telegram", TOKEN + "x"), (CHAT,), Answers(), api_base=telegram.url, poll_timeout_s=1
    )
    poller.start()
    assert wait_for(lambda: not poller.running)
    poller.stop()
    assert "the bot token is refused" in caplog.text
    assert TOKEN not in caplog.text


def test_who_pressed_names_the_user():
    assert who_pressed({"id": 1, "username": "al"}) == "telegram:@al (1)"
    assert who_pressed({"id": 2, "first_name": "Bo"}) == "telegram:Bo (2)"
    assert who_pressed(None) == "telegram:unknown"


def test_channels_show_no_secret_in_repr(telegram, discord):
    channels = [
        TelegramChannel(Secret("telegram", TOKEN), CHAT, api_base=telegram.url),
        DiscordChannel(Secret("discord", discord.webhook_url)),
    ]
    text = json.dumps([repr(channel) for channel in channels] + [channel.target for channel in channels])
    for channel in channels:
        channel.close()
    assert TOKEN not in text
    assert DISCORD_TOKEN not in text
    assert html.escape(TOKEN) not in text
