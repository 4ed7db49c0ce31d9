"""The ``[notify]`` table: which events go to which channels (Telegram, Discord, webhooks, Apprise).

Every secret is named by an environment variable, and every URL is masked when shown.
"""

from __future__ import annotations

import re
from typing import Annotated, Any
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    Field,
    PlainValidator,
    field_serializer,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from protocol.notify import NOTICE_KINDS, NoticeKind
from session.config_fields import SecretEnvName, StrictModel, redact_url

__all__ = [
    "AppriseSettings",
    "ChatId",
    "DiscordSettings",
    "NotifySettings",
    "TelegramSettings",
    "WebhookSettings",
]


_CHAT_USERNAME = re.compile(r"@[A-Za-z][A-Za-z0-9_]{3,}")
_CHAT_NUMBER = re.compile(r"-?[0-9]+")


def _chat_id(value: Any) -> int | str:
    """A Telegram chat: its number (a string of digits is read as one) or ``@channelname``.

    One validator for both types, so a wrong value gives one problem, not one per member of a union.
    """
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and _CHAT_NUMBER.fullmatch(value):
        return int(value)
    if isinstance(value, str) and _CHAT_USERNAME.fullmatch(value):
        return value
    raise PydanticCustomError(
        "chat_id",
        "must be a numeric chat id or a public @channelname",
        {"fix": "write the number the bot sees for the chat, e.g. chat_ids = [123456789, -1001234567890]"},
    )


#: A Telegram chat id: a number (negative for groups) or ``@channelname``.
ChatId = Annotated[int | str, PlainValidator(_chat_id)]


def _http_base(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in {"http", "https"} or not parts.netloc or parts.query or parts.fragment:
        raise PydanticCustomError(
            "http_base",
            "must be an http:// or https:// URL with a host (and no query)",
            {"fix": 'write it like api_base = "https://api.telegram.org" (or your own Bot API server)'},
        )
    return value.rstrip("/")


def _masked_path(url: str) -> str:
    """``url`` with its credentials and everything after the host masked: a webhook's path is its secret."""
    parts = urlsplit(url)
    host = parts.netloc.rsplit("@", 1)[-1]
    return f"{parts.scheme}://{host}/…" if parts.path.strip("/") or parts.query else f"{parts.scheme}://{host}"


class _ShownRedacted(StrictModel):
    """A section whose ``repr`` shows what its dump shows (its serializers mask URLs)."""

    def __repr_args__(self) -> Any:
        shown = self.model_dump()
        return [(name, shown.get(name, value) if name else value) for name, value in super().__repr_args__()]


class TelegramSettings(_ShownRedacted):
    """``[notify.telegram]``: a bot that writes to chats, with buttons to answer escalations.

    The token is read from the variable ``bot_token_env`` names (or, failing that, a
    ``bot_token`` written in notification.json); it is never written in a TOML file.
    """

    enabled: bool = True
    bot_token_env: SecretEnvName = "TELEGRAM_BOT_TOKEN"  # noqa: S105 - the variable's name, not a token
    """The environment variable that holds the bot token (from @BotFather)."""
    chat_ids: list[ChatId] = Field(min_length=1)
    """Chats the bot writes to; only presses from these chats answer an escalation."""
    api_base: Annotated[str, AfterValidator(_http_base)] = "https://api.telegram.org"
    """The Bot API server: Telegram's, or a self-hosted telegram-bot-api."""
    poll_answers: bool = True
    """Poll for button presses (getUpdates).  Off when something else owns the bot's updates (a webhook)."""
    poll_timeout_s: int = Field(25, ge=1, le=50)
    """How long one getUpdates call waits for a press (long polling)."""
    rate_per_minute: int = Field(20, ge=1)
    """Messages per minute to each chat (Telegram allows about 20 a minute in a group)."""

    @field_serializer("api_base")
    def _redacted(self, value: str) -> str:
        return redact_url(value)


class DiscordSettings(StrictModel):
    """``[notify.discord]``: a channel webhook.  Its URL is a secret: it is read from ``webhook_url_env``."""

    enabled: bool = True
    webhook_url_env: SecretEnvName = "DISCORD_WEBHOOK_URL"
    """The environment variable that holds the webhook URL (https://discord.com/api/webhooks/ID/TOKEN)."""
    rate_per_minute: int = Field(30, ge=1)
    """Messages per minute (Discord allows 30 a minute per webhook)."""


class WebhookSettings(_ShownRedacted):
    """``[[notify.webhooks]]``: a URL that receives each notice as a JSON POST.

    Exactly one of ``url`` and ``url_env``.  ``headers_env`` names a variable holding
    extra headers (a JSON object, or ``Name: value`` lines), e.g. an Authorization header.
    """

    name: str | None = Field(None, min_length=1, max_length=40)
    """How the channel is named in counters and logs (default: webhook[N])."""
    url: str | None = None
    """The endpoint, e.g. https://hooks.example/notify (its path is masked wherever it is shown)."""
    url_env: SecretEnvName | None = None
    """Or: the environment variable that holds the endpoint."""
    headers_env: SecretEnvName | None = None
    """The environment variable that holds extra headers."""
    rate_per_minute: int = Field(60, ge=1)

    @field_validator("url")
    @classmethod
    def _check_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value)
        if parts.scheme not in {"http", "https"} or not parts.netloc:
            # Never echo the value: a webhook URL often carries its token.
            raise PydanticCustomError(
                "url", "must be an http:// or https:// URL with a host", {"fix": 'write url = "https://HOST/PATH"'}
            )
        return value

    @model_validator(mode="after")
    def _one_url(self) -> WebhookSettings:
        if (self.url is None) == (self.url_env is None):
            raise PydanticCustomError(
                "webhook_url",
                "a webhook needs exactly one of url and url_env",
                {"fix": 'write url = "https://HOST/PATH", or url_env = "NAME" with the URL in that variable'},
            )
        return self

    @field_serializer("url")
    def _masked(self, value: str | None) -> str | None:
        return _masked_path(value) if value is not None else None


class AppriseSettings(StrictModel):
    """``[notify.apprise]``: any service Apprise knows (Slack, ntfy, Matrix, e-mail, ...), by URL.

    The URLs carry credentials, so they live in the variable ``urls_env`` names:
    one or more Apprise URLs separated by spaces or new lines.
    """

    enabled: bool = True
    urls_env: SecretEnvName = "APPRISE_URLS"
    rate_per_minute: int = Field(30, ge=1)
    """Messages per minute to each URL."""


class NotifySettings(StrictModel):
    """``[notify]``: where the user hears about the run, and how hard the Notifier tries.

    Sending never blocks or fails the pipeline: each channel has its own queue, rate
    limit and retries; a notice given up on is reported, not raised.
    """

    console: bool = True
    """Print each notice on the terminal that runs the executor."""
    events: list[NoticeKind] = Field(default_factory=lambda: list(NOTICE_KINDS))
    """Kinds of notice to send (default: all)."""
    digest_interval_s: float = Field(7200.0, ge=0)
    """Seconds between two progress digests; 0 turns digests off."""
    max_attempts: int = Field(5, ge=1)
    """Attempts per notice and channel before it is dropped (and reported)."""
    retry_backoff_s: float = Field(2.0, gt=0)
    """First delay before a retry, in seconds; it doubles with each attempt (a 429's Retry-After wins)."""
    timeout_s: float = Field(10.0, gt=0)
    """Seconds one HTTP request to a channel may take."""
    telegram: TelegramSettings | None = None
    discord: DiscordSettings | None = None
    webhooks: list[WebhookSettings] = Field(default_factory=list)
    apprise: AppriseSettings | None = None

    @field_validator("events")
    @classmethod
    def _each_once(cls, kinds: list[str]) -> list[str]:
        return list(dict.fromkeys(kinds))
