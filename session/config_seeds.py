"""The seed JSON files (``hydra_keys.json``, ``notification.json``, ``fleet_registry.json``).

Read from the user folder and the project, checked, and folded into the settings.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pydantic import TypeAdapter, ValidationError

from session.config_models import (
    FleetAgent,
    FleetFile,
    HydraKeysFile,
    Settings,
)
from session.config_notify import ChatId
from session.config_problems import problem_from_error, problems_from_validation
from session.config_refs import choice_hint
from session.config_sources import SEED_FILES, KeyPath, deep_merge, dotted, file_problem, origin_of, read_json
from session.problems import Problem
from session.secret import ApiKey, Secret

__all__ = [
    "Seeds",
    "file_present",
    "orphan_seed_token",
    "read_seeds",
    "unused_keys",
]


_CHAT_IDS: TypeAdapter[list[int | str]] = TypeAdapter(list[ChatId])


# --------------------------------------------------------------------------- seed JSON files


@dataclass
class Seeds:
    keys: list[ApiKey]
    key_fields: list[str]  # where each key sits in its file, for messages
    layers: list[tuple[str, dict[str, Any]]]  # (origin, TOML-shaped overlay)
    notification: dict[str, Any] | None
    notification_where: dict[KeyPath, str]  # which notification.json set each key path
    notify_secrets: dict[str, Secret]  # literal tokens of notification.json, by channel
    fleet: dict[str, FleetAgent]  # agent id -> agent
    sources: list[str]
    problems: list[Problem]


def file_present(path: Path) -> bool:
    """Whether ``path`` exists; a path that cannot even be checked counts, so reading it reports why."""
    try:
        return path.exists()
    except OSError:
        return True


def _readable_by_others(path: Path) -> bool:
    try:
        return os.name == "posix" and bool(path.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO))
    except OSError:
        return False


def read_seeds(folders: list[Path], backends: Collection[str]) -> Seeds:
    seeds = Seeds(
        keys=[],
        key_fields=[],
        layers=[],
        notification=None,
        notification_where={},
        notify_secrets={},
        fleet={},
        sources=[],
        problems=[],
    )
    for folder in folders:
        for name in SEED_FILES:
            path = folder / name
            if not file_present(path):
                continue
            display = str(path)
            seeds.sources.append(display)
            data = read_json(path, display)
            if isinstance(data, Problem):
                seeds.problems.append(data)
                continue
            if name == "hydra_keys.json":
                _hydra(seeds, path, display, data, backends)
            elif name == "fleet_registry.json":
                try:
                    fleet = FleetFile.model_validate(data)
                except ValidationError as error:
                    seeds.problems.extend(problems_from_validation(error, FleetFile, {(): display}))
                    continue
                for agent in fleet.agents:
                    seeds.fleet[agent.id] = agent
            else:
                seeds.problems.extend(_check_notification(data, display))
                if _holds_notify_secret(data) and _readable_by_others(path):
                    seeds.problems.append(
                        file_problem(
                            display, "holds a secret and other users can read it", f"chmod 600 {path}", None, "warning"
                        )
                    )
                merged: dict[str, Any] = seeds.notification or {}
                deep_merge(merged, data, display, seeds.notification_where)
                seeds.notification = merged
    if seeds.notification is not None:
        _notify_from_seed(seeds)
    return seeds


def _hydra(seeds: Seeds, path: Path, display: str, data: dict[str, Any], backends: Collection[str]) -> None:
    try:
        hydra = HydraKeysFile.model_validate(data)
    except ValidationError as error:
        seeds.problems.extend(problems_from_validation(error, HydraKeysFile, {(): display}))
        return
    if hydra.keys and _readable_by_others(path):
        seeds.problems.append(
            file_problem(display, "holds API keys and other users can read it", f"chmod 600 {path}", severity="warning")
        )
    for index, entry in enumerate(hydra.keys):
        seeds.key_fields.append(f"keys[{index}].provider")
        seeds.keys.append(
            ApiKey(provider=entry.provider, secret=Secret(entry.provider, entry.key), tier=entry.tier, origin=display)
        )
    overlay: dict[str, Any] = {}
    if hydra.rotation_strategy is not None:
        overlay["keys"] = {"rotation": hydra.rotation_strategy}
    if isinstance(hydra.fallback, list):
        overlay["router"] = {"fallback": hydra.fallback}
    elif isinstance(hydra.fallback, str):
        if hydra.fallback in backends:
            overlay["router"] = {"fallback_backend": hydra.fallback}
        else:
            seeds.problems.append(
                file_problem(
                    display,
                    f"fallback backend '{hydra.fallback}' is unknown",
                    choice_hint(hydra.fallback, backends),
                    "fallback",
                )
            )
    if overlay:
        seeds.layers.append((display, overlay))


def _check_notification(data: Mapping[str, Any], display: str) -> list[Problem]:
    """Light checks of notification.json (its schema belongs to the Notifier): channels are objects."""
    problems = []
    for channel, settings in data.items():
        if not isinstance(settings, dict):
            problems.append(
                file_problem(display, "must be a JSON object", f'write "{channel}": {{"enabled": true, ...}}', channel)
            )
        elif "enabled" in settings and not isinstance(settings["enabled"], bool):
            problems.append(
                file_problem(
                    display, "must be true or false", "write true or false without quotes", f"{channel}.enabled"
                )
            )
    return problems


def _enabled_channel(notification: Mapping[str, Any], channel: str) -> dict[str, Any] | None:
    settings = notification.get(channel)
    if not isinstance(settings, dict) or settings.get("enabled", True) is False:
        return None
    return settings


def _holds_notify_secret(data: Mapping[str, Any]) -> bool:
    return any(
        isinstance(settings, dict) and isinstance(settings.get(name), str)
        for channel, name in (("telegram", "bot_token"), ("discord", "webhook_url"))
        if (settings := data.get(channel)) is not None
    )


def _notify_from_seed(seeds: Seeds) -> None:
    """What notification.json says that ``[notify]`` understands, as a layer under the TOML files.

    Its seed shape is ``{"telegram": {"enabled", "bot_token", "chat_id"}, "discord":
    {"enabled", "webhook_url"}}``.  Chat ids become ``notify.telegram.chat_ids``; the
    token and the webhook URL (secrets the TOML never holds) go to ``Config.notify_secrets``.
    A channel with ``"enabled": false`` is left out.  Other keys are kept in
    ``Config.notification`` only.
    """
    notification = seeds.notification or {}
    where = seeds.notification_where
    overlay: dict[str, Any] = {}
    origins: list[str] = []

    telegram = _enabled_channel(notification, "telegram")
    if telegram is not None:
        token = telegram.get("bot_token")
        if isinstance(token, str) and token.strip():
            seeds.notify_secrets["telegram"] = Secret("telegram", token.strip())
        elif token is not None:
            loc: KeyPath = ("telegram", "bot_token")
            fix = 'write the token @BotFather gave, e.g. "bot_token": "123:ABC..."'
            seeds.problems.append(file_problem(origin_of(where, loc), "must be a non-empty string", fix, dotted(loc)))
        key = "chat_ids" if "chat_ids" in telegram else "chat_id"
        chats = telegram.get(key)
        if chats is not None:
            listed = chats if isinstance(chats, list) else [chats]
            try:
                valid = _CHAT_IDS.validate_python(listed, strict=True)
            except ValidationError as error:
                origin = origin_of(where, ("telegram", key))
                for found in error.errors(include_url=False):
                    # A single chat id was checked as a one-item list: its problem sits at the key itself.
                    item = {**found, "loc": tuple(found["loc"]) if isinstance(chats, list) else ()}
                    seeds.problems.append(problem_from_error(item, Settings, origin, ("telegram", key)))
            else:
                overlay["telegram"] = {"chat_ids": valid}
                origins.append(origin_of(where, ("telegram", key)))

    discord = _enabled_channel(notification, "discord")
    if discord is not None and "webhook_url" in discord:
        url = discord["webhook_url"]
        loc = ("discord", "webhook_url")
        parts = urlsplit(url) if isinstance(url, str) else None
        if parts is None or parts.scheme not in {"http", "https"} or not parts.netloc:
            # Never echo it: the URL is the webhook's secret.
            seeds.problems.append(
                file_problem(
                    origin_of(where, loc),
                    "must be an http(s) URL",
                    'paste the webhook URL Discord shows, e.g. "https://discord.com/api/webhooks/ID/TOKEN"',
                    dotted(loc),
                )
            )
        else:
            seeds.notify_secrets["discord"] = Secret("discord", url)
            overlay["discord"] = {}
            origins.append(origin_of(where, loc))

    if overlay:
        seeds.layers.append((origins[-1], {"notify": overlay}))


def orphan_seed_token(seeds: Seeds, settings: Settings) -> list[Problem]:
    """A warning when notification.json has a bot token but no chat to send to anywhere."""
    if "telegram" not in seeds.notify_secrets or settings.notify.telegram is not None:
        return []
    loc: KeyPath = ("telegram", "chat_id")
    return [
        file_problem(
            origin_of(seeds.notification_where, ("telegram", "bot_token")),
            "a bot_token but no chat_id: nothing will be sent to Telegram",
            'add "chat_id": 123456789 here, or chat_ids = [...] under [notify.telegram] in a config file',
            dotted(loc),
            "warning",
        )
    ]


def unused_keys(seeds: Seeds, settings: Settings) -> list[Problem]:
    """A warning for each seed key whose provider no model in the registry has: it would never be used."""
    used = {model.provider for model in settings.models}
    return [
        file_problem(
            key.origin,
            f"no model in the registry has provider '{key.provider}'; this key will not be used",
            choice_hint(key.provider, used),
            field,
            "warning",
        )
        for key, field in zip(seeds.keys, seeds.key_fields, strict=True)
        if key.provider not in used
    ]
