"""From the validated ``[notify]`` config (plus notification.json's secrets and the environment)
to what the Notifier runs: the targets, with their secrets resolved, and the settings.

:meth:`NotifySetup.from_config` never raises: a configured channel that cannot
work (its token variable unset, its headers unreadable) is left out with a
warning that names the variable and the fix.  A setup holds no live object:
:meth:`NotifySetup.build_channels` makes fresh channels, so every incarnation of
the Notifier actor can be given the same setup.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TextIO

from notify.channels import AppriseChannel, Channel, ConsoleChannel, DiscordChannel, TelegramChannel, WebhookChannel
from notify.sender import RetryPolicy
from protocol.notify import NOTICE_KINDS
from session.config_models import Config
from session.secret import Secret

__all__ = ["AppriseTarget", "DiscordTarget", "NotifySetup", "TelegramTarget", "WebhookTarget", "parse_headers"]

log = logging.getLogger("executor.notify")


@dataclass(frozen=True)
class TelegramTarget:
    token: Secret
    chat_ids: tuple[int | str, ...]
    api_base: str = "https://api.telegram.org"
    poll_answers: bool = True
    poll_timeout_s: int = 25
    rate_per_minute: int = 20


@dataclass(frozen=True)
class DiscordTarget:
    webhook_url: Secret
    rate_per_minute: int = 30


@dataclass(frozen=True)
class WebhookTarget:
    name: str
    url: Secret
    headers: tuple[tuple[str, Secret], ...] = ()
    rate_per_minute: int = 60


@dataclass(frozen=True)
class AppriseTarget:
    name: str
    url: Secret
    rate_per_minute: int = 30


@dataclass(frozen=True)
class NotifySetup:
    """Everything the Notifier needs; secrets are :class:`Secret` (its ``repr`` shows none)."""

    telegram: TelegramTarget | None = None
    discord: DiscordTarget | None = None
    webhooks: tuple[WebhookTarget, ...] = ()
    apprise: tuple[AppriseTarget, ...] = ()
    console: bool = True
    events: frozenset[str] = frozenset(NOTICE_KINDS)
    digest_interval_s: float = 0.0
    policy: RetryPolicy = field(default_factory=RetryPolicy)
    timeout_s: float = 10.0
    warnings: tuple[str, ...] = ()

    @classmethod
    def from_config(cls, config: Config, environ: Mapping[str, str]) -> NotifySetup:
        """Resolve ``config.notify``: a variable named in the config wins over a secret of notification.json."""
        notify = config.notify
        warnings: list[str] = []

        telegram = None
        if notify.telegram is not None and notify.telegram.enabled:
            settings = notify.telegram
            token = _channel_secret("telegram", settings.bot_token_env, config, environ)
            if token is None:
                warnings.append(_unset("telegram", "bot token", "bot_token_env", settings.bot_token_env))
            else:
                telegram = TelegramTarget(
                    token=token,
                    chat_ids=tuple(settings.chat_ids),
                    api_base=settings.api_base,
                    poll_answers=settings.poll_answers,
                    poll_timeout_s=settings.poll_timeout_s,
                    rate_per_minute=settings.rate_per_minute,
                )

        discord = None
        if notify.discord is not None and notify.discord.enabled:
            settings_d = notify.discord
            url = _channel_secret("discord", settings_d.webhook_url_env, config, environ)
            if url is None:
                warnings.append(_unset("discord", "webhook URL", "webhook_url_env", settings_d.webhook_url_env))
            else:
                discord = DiscordTarget(webhook_url=url, rate_per_minute=settings_d.rate_per_minute)

        webhooks = []
        for index, hook in enumerate(notify.webhooks):
            name = f"webhook:{hook.name}" if hook.name else f"webhook[{index}]"
            hook_url = Secret("webhook", hook.url) if hook.url is not None else None
            if hook.url_env is not None:
                hook_url = _from_env(environ, hook.url_env, "webhook")
                if hook_url is None:
                    warnings.append(f"{name} is off: {hook.url_env} is not set; put the webhook's URL in it")
                    continue
            headers: tuple[tuple[str, Secret], ...] = ()
            if hook.headers_env is not None:
                parsed = parse_headers(environ.get(hook.headers_env, ""))
                if parsed is None:
                    warnings.append(
                        f"{name} is off: {hook.headers_env} does not hold headers; write a JSON object "
                        '({"Authorization": "Bearer ..."}) or "Name: value" lines'
                    )
                    continue
                headers = tuple((key, Secret("header", value)) for key, value in parsed.items())
            assert hook_url is not None  # noqa: S101 - the config requires url or url_env
            webhooks.append(WebhookTarget(name, hook_url, headers, hook.rate_per_minute))

        apprise = []
        if notify.apprise is not None and notify.apprise.enabled:
            urls = environ.get(notify.apprise.urls_env, "").split()
            if not urls:
                warnings.append(f"apprise is off: {notify.apprise.urls_env} is not set; put Apprise URLs in it")
            for index, url_text in enumerate(urls):
                apprise.append(
                    AppriseTarget(f"apprise[{index}]", Secret("apprise", url_text), notify.apprise.rate_per_minute)
                )

        return cls(
            telegram=telegram,
            discord=discord,
            webhooks=tuple(webhooks),
            apprise=tuple(apprise),
            console=notify.console,
            events=frozenset(notify.events),
            digest_interval_s=notify.digest_interval_s,
            policy=RetryPolicy(max_attempts=notify.max_attempts, backoff_s=notify.retry_backoff_s),
            timeout_s=notify.timeout_s,
            warnings=tuple(warnings),
        )

    def build_channels(self, *, buttons: bool, console_stream: TextIO | None = None) -> tuple[list[Channel], list[str]]:
        """Fresh channels, one per destination (one per Telegram chat), and a warning for each that could not be built.

        ``buttons``: put answer buttons on Telegram escalations (only when someone polls for presses).
        """
        channels: list[Channel] = []
        problems: list[str] = []
        timeout = self.timeout_s
        if self.console:
            channels.append(ConsoleChannel(console_stream))
        if self.telegram is not None:
            for chat in self.telegram.chat_ids:
                channels.append(
                    TelegramChannel(
                        self.telegram.token,
                        chat,
                        api_base=self.telegram.api_base,
                        buttons=buttons,
                        timeout_s=timeout,
                        rate_per_minute=self.telegram.rate_per_minute,
                    )
                )
        if self.discord is not None:
            rate = self.discord.rate_per_minute
            channels.append(DiscordChannel(self.discord.webhook_url, timeout_s=timeout, rate_per_minute=rate))
        for hook in self.webhooks:
            channels.append(
                WebhookChannel(
                    hook.url,
                    name=hook.name,
                    headers=dict(hook.headers),
                    timeout_s=timeout,
                    rate_per_minute=hook.rate_per_minute,
                )
            )
        for target in self.apprise:
            try:
                channels.append(AppriseChannel(target.url, name=target.name, rate_per_minute=target.rate_per_minute))
            except ValueError as error:
                problems.append(f"{target.name} is off: {error}")
            except ImportError:
                problems.append(f"{target.name} is off: Apprise is not installed (pip install apprise)")
            except Exception as error:  # noqa: BLE001 - a plugin's bug must not stop the Notifier from starting
                problems.append(f"{target.name} is off: Apprise failed ({type(error).__name__})")
        return channels, problems


def _channel_secret(channel: str, variable: str, config: Config, environ: Mapping[str, str]) -> Secret | None:
    """The variable the config names wins over the channel's secret in notification.json."""
    return _from_env(environ, variable, channel) or config.notify_secrets.get(channel)


def _unset(channel: str, what: str, key: str, variable: str) -> str:
    """The warning for a channel left off: neither the variable nor notification.json holds its secret."""
    return (
        f"{channel} is off: {variable} is not set; put the {what} in it "
        f"(or name another variable in [notify.{channel}] {key})"
    )


def _from_env(environ: Mapping[str, str], name: str, label: str) -> Secret | None:
    value = environ.get(name, "").strip()
    return Secret(label, value) if value else None


def parse_headers(text: str) -> dict[str, str] | None:
    """Headers from a variable: a JSON object of strings, or ``Name: value`` lines; ``None`` when it is neither."""
    text = text.strip()
    if not text:
        return None
    if text.startswith("{"):
        try:
            data = json.loads(text)
        except ValueError:
            return None
        if not isinstance(data, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in data.items()):
            return None
        return data
    headers = {}
    for line in text.splitlines():
        name, sep, value = line.partition(":")
        if not line.strip():
            continue
        if not sep or not name.strip() or any(char.isspace() for char in name.strip()):
            return None
        headers[name.strip()] = value.strip()
    return headers or None
