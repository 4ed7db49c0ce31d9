"""The [notify] section and notification.json: validated, mapped to channels, never showing a secret."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from backends.registry import backend_names
from notify.setup import NotifySetup, parse_headers
from protocol.notify import NOTICE_KINDS
from session.config import ConfigInvalid, inspect_config, load_config, redacted_dump

BACKENDS = backend_names()
BOT_TOKEN = "123456789:AAEsecretFROMtheENVIRONMENT-Wx7q"
SEED_TOKEN = "555666777:AAGsecretWRITTENinTHEseedFILE-Rt4p"
WEBHOOK = "https://discord.com/api/webhooks/1234567890/SEEDwebhookSECRETtokenVALUE-Mn2c"
ENV_WEBHOOK = "https://discord.com/api/webhooks/42/ENVwebhookSECRETtokenVALUE-Hh8d"


@pytest.fixture(autouse=True)
def user_dir(tmp_path, monkeypatch):
    folder = tmp_path / "user-config"
    folder.mkdir()
    monkeypatch.setenv("TEAM_EXECUTOR_CONFIG_DIR", str(folder))
    return folder


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(0o600)
    return path


def load():
    return load_config(known_backends=BACKENDS)


def rejected() -> list:
    with pytest.raises(ConfigInvalid) as caught:
        load()
    errors = [problem for problem in caught.value.problems if problem.severity == "error"]
    assert errors
    for problem in errors:
        assert problem.file
        assert problem.message
        assert problem.fix
    return errors


TG = "[notify.telegram]\nchat_ids = [1]\n"
FULL = """
[notify]
events = ["escalation_opened", "task_failed", "pipeline_complete"]
digest_interval_s = 0
max_attempts = 3

[notify.telegram]
bot_token_env = "MY_BOT_TOKEN"
chat_ids = [123456789, "-1001234567890", "@team_alerts"]
api_base = "http://127.0.0.1:8081/"
rate_per_minute = 10

[notify.discord]
webhook_url_env = "MY_DISCORD_HOOK"

[[notify.webhooks]]
name = "ops"
url = "https://hooks.example/services/T000/B000/XXXXsecretPATH"
headers_env = "OPS_HEADERS"

[[notify.webhooks]]
url_env = "OTHER_HOOK"

[notify.apprise]
urls_env = "MY_APPRISE"
"""


def test_notify_defaults_to_the_console_and_every_kind():
    notify = load().notify
    assert notify.console is True
    assert notify.events == list(NOTICE_KINDS)
    assert notify.digest_interval_s == 7200
    assert notify.max_attempts == 5
    assert (notify.telegram, notify.discord, notify.webhooks, notify.apprise) == (None, None, [], None)
    setup = NotifySetup.from_config(load(), {})
    assert (setup.console, setup.telegram, setup.warnings) == (True, None, ())


def test_a_full_notify_section_loads_and_resolves_its_secrets_from_the_environment(user_dir):
    write(user_dir / "config.toml", FULL)
    config = load()
    telegram = config.notify.telegram
    assert telegram.chat_ids == [123456789, -1001234567890, "@team_alerts"]
    assert telegram.api_base == "http://127.0.0.1:8081"
    assert (telegram.poll_answers, telegram.rate_per_minute, telegram.poll_timeout_s) == (True, 10, 25)
    environ = {
        "MY_BOT_TOKEN": BOT_TOKEN,
        "MY_DISCORD_HOOK": ENV_WEBHOOK,
        "OPS_HEADERS": '{"Authorization": "Bearer ops-secret-value"}',
        "MY_APPRISE": "json://127.0.0.1:9/a  ntfy://topic-secret",
    }
    setup = NotifySetup.from_config(config, environ)
    assert setup.telegram.token.reveal() == BOT_TOKEN
    assert setup.discord.webhook_url.reveal() == ENV_WEBHOOK
    assert [hook.name for hook in setup.webhooks] == ["webhook:ops"]  # OTHER_HOOK is not set
    assert dict(setup.webhooks[0].headers)["Authorization"].reveal() == "Bearer ops-secret-value"
    assert [target.name for target in setup.apprise] == ["apprise[0]", "apprise[1]"]
    assert setup.events == {"escalation_opened", "task_failed", "pipeline_complete"}
    assert (setup.digest_interval_s, setup.policy.max_attempts) == (0, 3)
    assert setup.warnings == ("webhook[1] is off: OTHER_HOOK is not set; put the webhook's URL in it",)
    for secret in (BOT_TOKEN, ENV_WEBHOOK, "ops-secret-value", "topic-secret", "XXXXsecretPATH"):
        assert secret not in repr(setup)
        assert secret not in repr(config)


def test_a_channel_whose_secret_is_not_set_is_off_with_a_warning_naming_the_variable(user_dir):
    write(user_dir / "config.toml", FULL)
    setup = NotifySetup.from_config(load(), {"OPS_HEADERS": "not headers"})
    assert setup.telegram is None
    assert setup.discord is None
    assert setup.apprise == ()
    assert setup.warnings == (
        "telegram is off: MY_BOT_TOKEN is not set; put the bot token in it "
        "(or name another variable in [notify.telegram] bot_token_env)",
        "discord is off: MY_DISCORD_HOOK is not set; put the webhook URL in it "
        "(or name another variable in [notify.discord] webhook_url_env)",
        "webhook:ops is off: OPS_HEADERS does not hold headers; write a JSON object "
        '({"Authorization": "Bearer ..."}) or "Name: value" lines',
        "webhook[1] is off: OTHER_HOOK is not set; put the webhook's URL in it",
        "apprise is off: MY_APPRISE is not set; put Apprise URLs in it",
    )


@pytest.mark.parametrize(
    ("text", "field", "message", "fix"),
    [
        ('[notify.telegram]\nbot_token_env = "T"\n', "notify.telegram.chat_ids", "required key", "add chat_ids"),
        ('[notify.telegram]\nchat_ids = ["me"]\n', "notify.telegram.chat_ids[0]", "numeric chat id", "chat_ids = ["),
        ("[notify.telegram]\nchat_ids = [1.5]\n", "notify.telegram.chat_ids[0]", "numeric chat id", "chat_ids = ["),
        ("[notify.telegram]\nchat_ids = []\n", "notify.telegram.chat_ids", "at least 1", "at least 1"),
        (
            '[notify.telegram]\nchat_ids = [1]\napi_base = "api.telegram.org"\n',
            "notify.telegram.api_base",
            "http:// or https://",
            "api_base =",
        ),
        (TG + "rate_per_minute = 0\n", "notify.telegram.rate_per_minute", "at least 1", "1"),
        (TG + "poll_timeout_s = 90\n", "notify.telegram.poll_timeout_s", "at most 50", "50"),
        (TG + 'poll_answers = "yes"\n', "notify.telegram.poll_answers", "true or false", "true"),
        ('[notify]\nevents = ["task_done"]\n', "notify.events[0]", "'task_done' is not one of", "'task_failed'"),
        ("[notify]\ndigest_interval_s = -1\n", "notify.digest_interval_s", "at least 0", "at least 0"),
        ("[notify]\nmax_attempts = 0\n", "notify.max_attempts", "at least 1", "at least 1"),
        ("[notify]\nconsole = 1\n", "notify.console", "expected true or false", "true or false"),
        ("[notify]\ntelgram = {}\n", "notify.telgram", "unknown key 'telgram'", "did you mean 'telegram'?"),
        ("[[notify.webhooks]]\nname = \"x\"\n", "notify.webhooks[0]", "exactly one of url and url_env", "url ="),
        ('[[notify.webhooks]]\nurl = "ftp://h/x"\n', "notify.webhooks[0].url", "http:// or https://", "url ="),
        (
            '[[notify.webhooks]]\nurl = "https://h/x"\nurl_env = "H"\n',
            "notify.webhooks[0]",
            "exactly one of url and url_env",
            "url_env",
        ),
        ('[notify.apprise]\nurls_env = "two words"\n', "notify.apprise.urls_env", "NAME of an env", "variable's name"),
    ],
)  # fmt: skip
def test_each_bad_notify_setting_is_rejected_naming_the_file_the_key_and_the_fix(user_dir, text, field, message, fix):
    path = write(user_dir / "config.toml", text)
    problems = rejected()
    assert any(p.file == str(path) and p.field == field and message in p.message and fix in p.fix for p in problems), (
        problems
    )


def test_a_token_written_where_a_variable_name_belongs_is_rejected_without_showing_it(user_dir):
    write(user_dir / "config.toml", f'[notify.telegram]\nchat_ids = [1]\nbot_token_env = "{BOT_TOKEN}"\n')
    (problem,) = rejected()
    assert problem.field == "notify.telegram.bot_token_env"
    assert "NAME of an environment variable" in problem.message
    assert BOT_TOKEN not in str(problem)
    write(user_dir / "config.toml", f'[notify.telegram]\nchat_ids = [1]\nbot_token = "{BOT_TOKEN}"\n')
    (problem,) = rejected()
    assert problem.message == "unknown key 'bot_token'"
    assert "did you mean 'bot_token_env'?" in problem.fix
    assert BOT_TOKEN not in str(problem)


# --------------------------------------------------------------------------- notification.json


def seed(user_dir: Path, data: dict) -> Path:
    return write(user_dir / "notification.json", json.dumps(data))


def test_notification_json_becomes_telegram_and_discord_channels(user_dir):
    seed(
        user_dir,
        {
            "telegram": {"enabled": True, "bot_token": SEED_TOKEN, "chat_id": "123456789"},
            "discord": {"enabled": True, "webhook_url": WEBHOOK},
            "email": {"enabled": True, "smtp": "x"},
        },
    )
    config = load()
    assert config.notify.telegram.chat_ids == [123456789]
    assert config.notify.discord is not None
    assert config.notify_secrets["telegram"].reveal() == SEED_TOKEN
    setup = NotifySetup.from_config(config, {})
    assert setup.telegram.token.reveal() == SEED_TOKEN
    assert setup.discord.webhook_url.reveal() == WEBHOOK
    # a variable named in the config wins over the seed's literal token
    assert NotifySetup.from_config(config, {"TELEGRAM_BOT_TOKEN": BOT_TOKEN}).telegram.token.reveal() == BOT_TOKEN
    assert config.notification["email"] == {"enabled": True, "smtp": "x"}  # kept as read


def test_the_config_files_override_what_notification_json_says(user_dir):
    seed(user_dir, {"telegram": {"bot_token": SEED_TOKEN, "chat_id": 1}})
    write(user_dir / "config.toml", '[notify.telegram]\nchat_ids = [2, 3]\napi_base = "http://127.0.0.1:8081"\n')
    telegram = load().notify.telegram
    assert telegram.chat_ids == [2, 3]
    assert telegram.api_base == "http://127.0.0.1:8081"


def test_a_disabled_seed_channel_is_left_out(user_dir):
    seed(
        user_dir, {"telegram": {"enabled": False, "bot_token": SEED_TOKEN, "chat_id": 1}, "discord": {"enabled": False}}
    )
    config = load()
    assert (config.notify.telegram, config.notify.discord, config.notify_secrets) == (None, None, {})


def test_a_seed_token_without_a_chat_is_a_warning(user_dir):
    path = seed(user_dir, {"telegram": {"enabled": True, "bot_token": SEED_TOKEN}})
    warnings = [(p.file, p.field, p.message) for p in load().warnings]
    assert (str(path), "telegram.chat_id", "a bot_token but no chat_id: nothing will be sent to Telegram") in warnings


@pytest.mark.parametrize(
    ("data", "field", "message"),
    [
        ({"telegram": {"bot_token": SEED_TOKEN, "chat_id": "me"}}, "telegram.chat_id", "numeric chat id"),
        ({"telegram": {"bot_token": SEED_TOKEN, "chat_ids": [1, 2.5]}}, "telegram.chat_ids[1]", "numeric chat id"),
        ({"telegram": {"bot_token": 12345, "chat_id": 1}}, "telegram.bot_token", "non-empty string"),
        (
            {"discord": {"webhook_url": "discord.com/api/webhooks/1/" + SEED_TOKEN}},
            "discord.webhook_url",
            "http(s) URL",
        ),
    ],
)
def test_each_bad_seed_value_is_rejected_naming_the_file_and_the_field(user_dir, data, field, message):
    path = seed(user_dir, data)
    problems = rejected()
    assert any(p.file == str(path) and p.field == field and message in p.message for p in problems), problems
    assert not any(SEED_TOKEN in str(p) for p in problems)


def test_a_seed_with_secrets_that_others_can_read_is_a_warning(user_dir):
    path = seed(user_dir, {"telegram": {"bot_token": SEED_TOKEN, "chat_id": 1}})
    path.chmod(0o644)
    assert (None, f"chmod 600 {path}") in [(p.field, p.fix) for p in load().warnings if p.file == str(path)]


# --------------------------------------------------------------------------- shown redacted


def test_the_redacted_dump_says_where_each_secret_comes_from_and_shows_none(user_dir):
    seed(user_dir, {"telegram": {"bot_token": SEED_TOKEN, "chat_id": 1}, "discord": {"webhook_url": WEBHOOK}})
    write(user_dir / "config.toml", FULL.replace("[notify.telegram]\n", "[notify.telegram]\n", 1))
    config = load()
    environ = {"MY_DISCORD_HOOK": ENV_WEBHOOK, "OPS_HEADERS": "Authorization: Bearer ops-secret-value"}
    dump = redacted_dump(config, environ)
    notify = dump["notify"]
    assert notify["telegram"]["bot_token"] == "from notification.json (…Rt4p)"
    assert notify["telegram"]["api_base"] == "http://127.0.0.1:8081"
    assert notify["discord"]["webhook_url"] == "set in MY_DISCORD_HOOK (…Hh8d)"
    assert notify["webhooks"][0]["url"] == "https://hooks.example/…"
    assert notify["webhooks"][0]["headers"] == "set in OPS_HEADERS (…alue)"
    assert notify["webhooks"][1]["url"] == "not set (OTHER_HOOK is empty)"
    assert notify["apprise"]["urls"] == "not set"
    assert dump["notify_secrets"] == {"telegram": "telegram…Rt4p", "discord": "discord…Mn2c"}
    text = json.dumps(dump) + repr(config) + str(config.model_dump())
    for secret in (SEED_TOKEN, WEBHOOK, ENV_WEBHOOK, "ops-secret-value", "XXXXsecretPATH", "SEEDwebhookSECRET"):
        assert secret not in text


def test_config_check_shows_the_notify_section_without_secrets(executor_cli, user_dir, tmp_path):
    seed(user_dir, {"telegram": {"bot_token": SEED_TOKEN, "chat_id": 77}, "discord": {"webhook_url": WEBHOOK}})
    write(user_dir / "config.toml", '[notify.telegram]\nbot_token_env = "MY_BOT_TOKEN"\nchat_ids = [77]\n')
    env = {"TEAM_EXECUTOR_CONFIG_DIR": str(user_dir), "MY_BOT_TOKEN": BOT_TOKEN}
    text = executor_cli("config", "check", env=env)
    assert text.returncode == 0, text.stderr
    assert "[notify.telegram]" in text.stdout
    assert 'bot_token = "set in MY_BOT_TOKEN (…Wx7q)"' in text.stdout
    assert 'webhook_url = "from notification.json (…Mn2c)"' in text.stdout
    as_json = executor_cli("config", "check", "--json", env=env)
    assert as_json.returncode == 0
    assert json.loads(as_json.stdout)["config"]["notify"]["telegram"]["chat_ids"] == [77]
    for output in (text.stdout, text.stderr, as_json.stdout, as_json.stderr):
        for secret in (BOT_TOKEN, SEED_TOKEN, WEBHOOK, "SEEDwebhookSECRET"):
            assert secret not in output


def test_headers_are_read_as_json_or_as_lines():
    assert parse_headers('{"A": "1", "B": "x y"}') == {"A": "1", "B": "x y"}
    assert parse_headers("Authorization: Bearer t\nX-Team: ops\n") == {"Authorization": "Bearer t", "X-Team": "ops"}
    for bad in ("", "   ", "{bad json", '{"A": 1}', "no colon here", "Two Words: x"):
        assert parse_headers(bad) is None


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=12),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=12,
)
channel_entries = st.dictionaries(
    st.sampled_from(["enabled", "bot_token", "chat_id", "chat_ids", "webhook_url", "x"]), json_values, max_size=4
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(telegram=channel_entries | json_values, discord=channel_entries | json_values)
def test_random_channels_in_notification_json_are_reported_not_raised(telegram, discord):
    root = Path(tempfile.mkdtemp(prefix="notify-fuzz-"))
    try:
        (root / "notification.json").write_text(json.dumps({"telegram": telegram, "discord": discord}))
        config, problems = inspect_config(known_backends=BACKENDS, user_dir=root)
        if config is None:
            assert all(p.file and p.message and p.fix for p in problems if p.severity == "error")
        else:
            NotifySetup.from_config(config, {})
    finally:
        shutil.rmtree(root, ignore_errors=True)
