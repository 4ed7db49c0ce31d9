"""Loading the configuration: TOML files merged in order, seed JSON files, every problem at once.

Sources, lowest precedence first (later wins; tables merge key by key, arrays
replace as a whole):

1. the built-in defaults (:data:`~session.config_models.DEFAULT_MODELS`, the
   ``[keys.env]`` variables of :data:`~session.config_models.DEFAULT_KEY_ENV`, and
   each field's default);
2. the seed ``hydra_keys.json`` files' ``rotation_strategy`` and ``fallback``
   (user folder, then project; they become ``keys.rotation`` and
   ``router.fallback``/``router.fallback_backend``);
3. ``<user_config_dir()>/config.toml``;
4. ``<session>/executor.toml``;
5. an explicit ``--config PATH``.

Missing user and session files are simply absent; a missing explicit file is an
error.  Seed JSON files (``hydra_keys.json``, ``notification.json``,
``fleet_registry.json``) are read from the user folder and from
``<project>/config/`` (the project is the git repository that holds the session,
else the session folder); keys from both are pooled, and for everything else
the project's file wins.

:func:`inspect_config` never raises for bad input: it returns every problem, each
naming the file, the key path (``run.max_workers``, ``models[2].tier``) and the fix.
:func:`load_config` raises :class:`ConfigInvalid` instead.  Nothing here reads
files at import time.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import json
import os
import re
import stat
import tomllib
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import UnionType
from typing import TYPE_CHECKING, Annotated, Any, Literal, Union, get_args, get_origin
from urllib.parse import urlsplit

from pydantic import BaseModel, TypeAdapter, ValidationError

from session.config_fields import redact_url
from session.config_mcp import without_references
from session.config_models import (
    DEFAULT_KEY_ENV,
    DEFAULT_MODELS,
    Config,
    FleetAgent,
    FleetFile,
    HydraKeysFile,
    Settings,
)
from session.config_notify import ChatId
from session.problems import Problem, format_problems
from session.redaction import mask
from session.secret import ApiKey, Secret
from session.skills import user_config_dir

if TYPE_CHECKING:
    from session.loader import TeamSession

__all__ = [
    "BUILTIN",
    "SEED_FILES",
    "SESSION_CONFIG_FILE",
    "USER_CONFIG_FILE",
    "ConfigInvalid",
    "apply_role_defaults",
    "builtin_defaults",
    "find_project_dir",
    "inspect_config",
    "load_config",
    "redacted_dump",
]

USER_CONFIG_FILE = "config.toml"
SESSION_CONFIG_FILE = "executor.toml"
SEED_FILES = ("hydra_keys.json", "notification.json", "fleet_registry.json")
#: How the built-in defaults are named in problems and in ``Config.sources``.
BUILTIN = "<built-in defaults>"
_MAX_FILE_BYTES = 1 << 20
_MAX_DEPTH = 32

Path_ = tuple[str | int, ...]


class ConfigInvalid(Exception):
    """The configuration cannot be used; ``problems`` lists every reason (warnings included)."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        errors = [p for p in problems if p.severity == "error"]
        super().__init__(f"invalid configuration: {len(errors)} problem(s)\n{format_problems(problems)}")


def builtin_defaults() -> dict[str, Any]:
    """The built-in layer as a TOML-shaped dict (a fresh copy each call)."""
    return {
        "models": [dict(model) for model in DEFAULT_MODELS],
        "keys": {"env": {provider: list(names) for provider, names in DEFAULT_KEY_ENV.items()}},
    }


def find_project_dir(session: Path) -> Path:
    """The git repository that holds ``session`` (a ``.git`` folder or file), else ``session`` itself; resolved.

    The same rule as ``backends.sandbox.find_jail``, which this layer may not import.
    """
    folder = Path(session).expanduser().resolve()
    for candidate in (folder, *folder.parents):
        if (candidate / ".git").exists():
            return candidate
    return folder


# --------------------------------------------------------------------------- reading files


def _problem(
    file: str, message: str, fix: str, field: str | None = None, severity: Literal["error", "warning"] = "error"
) -> Problem:
    return Problem(file=file, field=field, message=message, fix=fix, severity=severity)


def _read_text(path: Path, display: str) -> str | Problem:
    try:
        if not path.is_file():
            return _problem(display, "not a file", "point at a file, not a folder")
        size = path.stat().st_size
        if size > _MAX_FILE_BYTES:
            return _problem(display, f"file is {size // 1024} KiB, over the 1024 KiB limit", "a config file is short")
        return path.read_bytes().decode("utf-8").lstrip("\ufeff")
    except UnicodeDecodeError as error:
        return _problem(display, f"not UTF-8 text ({error.reason} at byte {error.start})", "save the file as UTF-8")
    except OSError as error:
        return _problem(display, f"cannot read: {error.strerror}", "check the file's permissions")


def _too_deep(value: Any) -> bool:
    """Whether ``value`` nests tables/arrays more than :data:`_MAX_DEPTH` deep (checked without recursion)."""
    stack = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if depth > _MAX_DEPTH:
            return True
        if isinstance(item, dict):
            stack.extend((child, depth + 1) for child in item.values())
        elif isinstance(item, list):
            stack.extend((child, depth + 1) for child in item)
    return False


def _deep_problem(display: str) -> Problem:
    return _problem(
        display,
        f"nests tables or arrays more than {_MAX_DEPTH} levels deep",
        "flatten it: a config is a few levels deep",
    )


_TOML_WHERE = re.compile(r"\s*\(at (line \d+, column \d+|end of document)\)\s*$")


def _read_toml(path: Path, display: str) -> dict[str, Any] | Problem:
    text = _read_text(path, display)
    if isinstance(text, Problem):
        return text
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        reason = str(error)
        match = _TOML_WHERE.search(reason)
        where = match.group(1) if match else "an unknown place"
        what = reason[: match.start()] if match else reason
        return _problem(
            display,
            f"not valid TOML: {what} at {where}",
            f"correct the TOML at {where} (strings need quotes, tables are written [name], one key = value per line)",
        )
    except (ValueError, RecursionError) as error:  # huge integers, absurd nesting
        return _problem(display, f"not valid TOML: {type(error).__name__}", "simplify the file; see TOML's syntax")
    return _deep_problem(display) if _too_deep(data) else data


def _read_json(path: Path, display: str) -> dict[str, Any] | Problem:
    text = _read_text(path, display)
    if isinstance(text, Problem):
        return text
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        return _problem(
            display,
            f"not valid JSON: {error.msg} at line {error.lineno}, column {error.colno}",
            f"correct the JSON at line {error.lineno}, column {error.colno}",
        )
    except (ValueError, RecursionError) as error:
        return _problem(display, f"not valid JSON: {type(error).__name__}", "simplify the file")
    if not isinstance(data, dict):
        return _problem(display, "must be a JSON object", "wrap the content in { ... }")
    return _deep_problem(display) if _too_deep(data) else data


# --------------------------------------------------------------------------- merging, with where each value came from


def _deep_merge(base: dict[str, Any], overlay: Mapping[str, Any], origin: str, where: dict[Path_, str]) -> None:
    """Merge ``overlay`` into ``base`` in place; ``where`` records which file set each key path."""

    def merge(into: dict[str, Any], layer: Mapping[str, Any], path: Path_) -> None:
        for key, value in layer.items():
            here = (*path, key)
            if isinstance(value, dict) and isinstance(into.get(key), dict):
                merge(into[key], value, here)
                continue
            for stale in [known for known in where if known[: len(here)] == here]:
                del where[stale]
            into[key] = copy.deepcopy(value)
            where[here] = origin

    merge(base, overlay, ())


def _origin(where: Mapping[Path_, str], loc: Iterable[str | int]) -> str:
    """The file that set the value at ``loc`` (or its nearest enclosing key)."""
    path = tuple(loc)
    while path:
        if path in where:
            return where[path]
        path = path[:-1]
    return where.get((), BUILTIN)


_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
_CHAT_IDS: TypeAdapter[list[int | str]] = TypeAdapter(list[ChatId])


def _dotted(loc: Iterable[str | int]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            name = part if _BARE_KEY.fullmatch(part) else json.dumps(part)
            out += f".{name}" if out else name
    return out


# --------------------------------------------------------------------------- pydantic errors -> problems


def _unwrap(annotation: Any) -> Any:
    while True:
        origin = get_origin(annotation)
        if origin is Annotated:
            annotation = get_args(annotation)[0]
        elif origin in (Union, UnionType):
            args = [arg for arg in get_args(annotation) if arg is not type(None)]
            if len(args) != 1:
                return annotation
            annotation = args[0]
        else:
            return annotation


def _model_at(root: type[BaseModel], loc: Iterable[str | int]) -> type[BaseModel] | None:
    """The model class that holds the value at ``loc``, or None when ``loc`` is not inside one."""
    current: Any = root
    for part in loc:
        current = _unwrap(current)
        if isinstance(current, type) and issubclass(current, BaseModel):
            field = current.model_fields.get(str(part))
            if field is None:
                return None
            current = field.annotation
        elif get_origin(current) is list:
            current = get_args(current)[0]
        elif get_origin(current) is dict:
            current = get_args(current)[1]
        else:
            return None
    current = _unwrap(current)
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a float"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "a table"
    return "a date or time" if type(value).__module__ == "datetime" else type(value).__name__


_EXPECTED = {
    "int_type": ("an integer", "write a whole number without quotes, e.g. 4"),
    "int_from_float": ("an integer", "write a whole number without a decimal point, e.g. 4"),
    "float_type": ("a number", "write a number without quotes, e.g. 2.5"),
    "bool_type": ("true or false", "write true or false, without quotes"),
    "string_type": ("a string", 'write the value in double quotes, e.g. "claude"'),
    "list_type": ("an array", 'write an array, e.g. ["a", "b"]'),
    "dict_type": ("a table", "write a table: [name] with key = value lines, or { key = value }"),
    "model_type": ("a table", "write a table: [name] with key = value lines, or { key = value }"),
    "model_attributes_type": ("a table", "write a table: [name] with key = value lines, or { key = value }"),
}


def _problem_from_error(error: Mapping[str, Any], root: type[BaseModel], file: str, prefix: Path_ = ()) -> Problem:
    """One pydantic error as a Problem.  Never includes the offending value, except a
    short word that failed a choice of words (a tier, a provider), which is no secret.
    """
    loc: Path_ = tuple(error["loc"])
    if loc and loc[-1] == "[key]":  # a dict key failed (e.g. a provider name under [keys.env])
        loc = loc[:-1]
    kind = error["type"]
    ctx = error.get("ctx") or {}
    field = _dotted((*prefix, *loc)) or None
    if kind == "extra_forbidden":
        key = str(loc[-1])
        holder = _model_at(root, loc[:-1])
        allowed = sorted(holder.model_fields) if holder is not None else []
        close = difflib.get_close_matches(key, allowed, n=1)
        start = f"did you mean '{close[0]}'?" if close else "remove it or correct its spelling;"
        listed = f" Allowed here: {', '.join(allowed)}" if allowed else ""
        return _problem(file, f"unknown key '{key}'", f"{start}{listed}", field)
    if kind == "missing":
        return _problem(file, "required key is missing", f"add {loc[-1]} = ...", field)
    if kind in _EXPECTED:
        expected, fix = _EXPECTED[kind]
        return _problem(file, f"expected {expected}, found {_kind(error.get('input'))}", fix, field)
    if kind == "literal_error":
        value = error.get("input")
        shown = f"'{value}' " if isinstance(value, str) and len(value) <= 40 and value.isprintable() else ""
        return _problem(file, f"{shown}is not one of the allowed values", f"use one of: {ctx.get('expected')}", field)
    if "fix" in ctx:
        return _problem(file, str(error["msg"]), str(ctx["fix"]), field)
    bound = {
        "greater_than": "more than {gt}",
        "greater_than_equal": "at least {ge}",
        "less_than": "less than {lt}",
        "less_than_equal": "at most {le}",
        "too_short": "at least {min_length} long",
        "string_too_short": "at least {min_length} characters long",
    }.get(kind)
    if bound is not None:
        need = bound.format(**ctx)
        return _problem(file, f"must be {need}", f"change it to a value {need}", field)
    return _problem(file, str(error["msg"]), "correct this value (see `executor config check` for the defaults)", field)


def _problems_from_validation(
    error: ValidationError, root: type[BaseModel], where: Mapping[Path_, str], prefix: Path_ = ()
) -> list[Problem]:
    problems = []
    for item in error.errors(include_url=False):
        problems.append(_problem_from_error(item, root, _origin(where, item["loc"]), prefix))
    return problems


# --------------------------------------------------------------------------- references between parts


def _choices(name: str, known: Iterable[str]) -> str:
    known = sorted(known)
    close = difflib.get_close_matches(name, known, n=1)
    hint = f"did you mean '{close[0]}'? Otherwise c" if close else "C"
    return f"{hint}hoose one of: {', '.join(known) or 'none'}"


def _cross_check(raw: Mapping[str, Any], where: Mapping[Path_, str], backends: Collection[str]) -> list[Problem]:
    """Checks that tie one part of the merged config to another.

    Works on the raw merged dict and skips values of the wrong type (the schema
    reports those), so these problems are found together with the type errors.
    """
    problems: list[Problem] = []

    def backend(value: Any, loc: Path_) -> None:
        if isinstance(value, str) and value and value not in backends:
            origin = _origin(where, loc)
            if origin == BUILTIN:  # the built-in registry may name a backend this build lacks: no user mistake
                problems.append(
                    _problem(
                        origin,
                        f"backend '{value}' is not in this build; the model will not be used",
                        "nothing to do unless you want this model: use a build that has the backend, "
                        "or list your own [[models]]",
                        _dotted(loc),
                        "warning",
                    )
                )
            else:
                problems.append(_problem(origin, f"unknown backend '{value}'", _choices(value, backends), _dotted(loc)))

    run = raw.get("run")
    if isinstance(run, dict):
        backend(run.get("default_backend"), ("run", "default_backend"))
    remembered = raw.get("remembered")
    if isinstance(remembered, dict):
        backend(remembered.get("backend"), ("remembered", "backend"))
        origin = _origin(where, ("remembered", "backend"))
        if "backend" in remembered and Path(origin).name != SESSION_CONFIG_FILE:
            problems.append(
                _problem(
                    origin,
                    "[remembered] belongs to one session: the executor writes it into that session's executor.toml",
                    "remove [remembered] from this file; use [run].default_backend for a default backend",
                    "remembered.backend",
                )
            )
    router = raw.get("router")
    if isinstance(router, dict):
        backend(router.get("fallback_backend"), ("router", "fallback_backend"))

    models = raw.get("models")
    names: dict[str, int] = {}
    model_backend: dict[str, Any] = {}
    if isinstance(models, list):
        for index, model in enumerate(models):
            if not isinstance(model, dict):
                continue
            backend(model.get("backend"), ("models", index, "backend"))
            name = model.get("name")
            if not isinstance(name, str):
                continue
            if name in names:
                loc: Path_ = ("models", index, "name")
                problems.append(
                    _problem(
                        _origin(where, loc),
                        f"duplicate model name '{name}' (also models[{names[name]}])",
                        "give each [[models]] entry its own name, or remove one of them",
                        _dotted(loc),
                    )
                )
            else:
                names[name] = index
                model_backend[name] = model.get("backend")

    roles = raw.get("roles")
    if isinstance(roles, dict):
        for role, entry in roles.items():
            if not isinstance(entry, dict):
                continue
            backend(entry.get("backend"), ("roles", role, "backend"))
            model = entry.get("model")
            if isinstance(model, str) and model and isinstance(models, list) and model not in names:
                loc = ("roles", role, "model")
                problems.append(
                    _problem(
                        _origin(where, loc),
                        f"model '{model}' is not in the registry",
                        f"add a [[models]] entry named '{model}'. {_choices(model, names)}",
                        _dotted(loc),
                    )
                )
            elif (
                isinstance(model, str)
                and isinstance(entry.get("backend"), str)
                and model_backend.get(model) not in (None, entry["backend"])
            ):
                loc = ("roles", role, "backend")
                problems.append(
                    _problem(
                        _origin(where, loc),
                        f"backend '{entry['backend']}' differs from the backend of model '{model}' "
                        f"('{model_backend[model]}')",
                        "drop one of the two, or make them agree",
                        _dotted(loc),
                        "warning",
                    )
                )

    servers = raw.get("mcp_servers")
    if isinstance(servers, dict):
        for server, entry in servers.items():
            if isinstance(entry, dict):
                problems.extend(_literal_secrets(server, entry, where))
    return problems


#: Names of env variables and headers whose values are secrets; such a value belongs
#: in the environment (``${NAME}``), not in a config file that may be shared.
_SECRETISH = re.compile(r"token|secret|key|pass|auth|credential|cookie", re.IGNORECASE)
_AUTH_SCHEME = re.compile(r"^\s*(Bearer|Basic|Token)\b", re.IGNORECASE)  # "Bearer ${TOKEN}" is fine


def _literal_secrets(server: str, entry: Mapping[str, Any], where: Mapping[Path_, str]) -> list[Problem]:
    """A warning for each ``env``/``headers`` value of an MCP server that holds literal text under a secret's name."""
    problems = []
    for table in ("env", "headers"):
        values = entry.get(table)
        if not isinstance(values, dict):
            continue
        for name, value in values.items():
            literal = _AUTH_SCHEME.sub("", without_references(value)).strip() if isinstance(value, str) else ""
            if literal and _SECRETISH.search(name):
                loc: Path_ = ("mcp_servers", server, table, name)
                problems.append(
                    _problem(
                        _origin(where, loc),
                        "looks like a secret written into the config file",
                        "put it in an environment variable and write ${NAME} here"
                        + (" (or set token_env for a bearer token)" if table == "headers" else ""),
                        _dotted(loc),
                        "warning",
                    )
                )
    return problems


# --------------------------------------------------------------------------- seed JSON files


@dataclass
class _Seeds:
    keys: list[ApiKey]
    key_fields: list[str]  # where each key sits in its file, for messages
    layers: list[tuple[str, dict[str, Any]]]  # (origin, TOML-shaped overlay)
    notification: dict[str, Any] | None
    notification_where: dict[Path_, str]  # which notification.json set each key path
    notify_secrets: dict[str, Secret]  # literal tokens of notification.json, by channel
    fleet: dict[str, FleetAgent]  # agent id -> agent
    sources: list[str]
    problems: list[Problem]


def _present(path: Path) -> bool:
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


def _read_seeds(folders: list[Path], backends: Collection[str]) -> _Seeds:
    seeds = _Seeds(
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
            if not _present(path):
                continue
            display = str(path)
            seeds.sources.append(display)
            data = _read_json(path, display)
            if isinstance(data, Problem):
                seeds.problems.append(data)
                continue
            if name == "hydra_keys.json":
                _hydra(seeds, path, display, data, backends)
            elif name == "fleet_registry.json":
                try:
                    fleet = FleetFile.model_validate(data)
                except ValidationError as error:
                    seeds.problems.extend(_problems_from_validation(error, FleetFile, {(): display}))
                    continue
                for agent in fleet.agents:
                    seeds.fleet[agent.id] = agent
            else:
                seeds.problems.extend(_check_notification(data, display))
                if _holds_notify_secret(data) and _readable_by_others(path):
                    seeds.problems.append(
                        _problem(
                            display, "holds a secret and other users can read it", f"chmod 600 {path}", None, "warning"
                        )
                    )
                merged: dict[str, Any] = seeds.notification or {}
                _deep_merge(merged, data, display, seeds.notification_where)
                seeds.notification = merged
    if seeds.notification is not None:
        _notify_from_seed(seeds)
    return seeds


def _hydra(seeds: _Seeds, path: Path, display: str, data: dict[str, Any], backends: Collection[str]) -> None:
    try:
        hydra = HydraKeysFile.model_validate(data)
    except ValidationError as error:
        seeds.problems.extend(_problems_from_validation(error, HydraKeysFile, {(): display}))
        return
    if hydra.keys and _readable_by_others(path):
        seeds.problems.append(
            _problem(display, "holds API keys and other users can read it", f"chmod 600 {path}", severity="warning")
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
                _problem(
                    display,
                    f"fallback backend '{hydra.fallback}' is unknown",
                    _choices(hydra.fallback, backends),
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
                _problem(display, "must be a JSON object", f'write "{channel}": {{"enabled": true, ...}}', channel)
            )
        elif "enabled" in settings and not isinstance(settings["enabled"], bool):
            problems.append(
                _problem(display, "must be true or false", "write true or false without quotes", f"{channel}.enabled")
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


def _notify_from_seed(seeds: _Seeds) -> None:
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
            loc: Path_ = ("telegram", "bot_token")
            fix = 'write the token @BotFather gave, e.g. "bot_token": "123:ABC..."'
            seeds.problems.append(_problem(_origin(where, loc), "must be a non-empty string", fix, _dotted(loc)))
        key = "chat_ids" if "chat_ids" in telegram else "chat_id"
        chats = telegram.get(key)
        if chats is not None:
            listed = chats if isinstance(chats, list) else [chats]
            try:
                valid = _CHAT_IDS.validate_python(listed, strict=True)
            except ValidationError as error:
                origin = _origin(where, ("telegram", key))
                for found in error.errors(include_url=False):
                    # A single chat id was checked as a one-item list: its problem sits at the key itself.
                    item = {**found, "loc": tuple(found["loc"]) if isinstance(chats, list) else ()}
                    seeds.problems.append(_problem_from_error(item, Settings, origin, ("telegram", key)))
            else:
                overlay["telegram"] = {"chat_ids": valid}
                origins.append(_origin(where, ("telegram", key)))

    discord = _enabled_channel(notification, "discord")
    if discord is not None and "webhook_url" in discord:
        url = discord["webhook_url"]
        loc = ("discord", "webhook_url")
        parts = urlsplit(url) if isinstance(url, str) else None
        if parts is None or parts.scheme not in {"http", "https"} or not parts.netloc:
            # Never echo it: the URL is the webhook's secret.
            seeds.problems.append(
                _problem(
                    _origin(where, loc),
                    "must be an http(s) URL",
                    'paste the webhook URL Discord shows, e.g. "https://discord.com/api/webhooks/ID/TOKEN"',
                    _dotted(loc),
                )
            )
        else:
            seeds.notify_secrets["discord"] = Secret("discord", url)
            overlay["discord"] = {}
            origins.append(_origin(where, loc))

    if overlay:
        seeds.layers.append((origins[-1], {"notify": overlay}))


def _orphan_seed_token(seeds: _Seeds, settings: Settings) -> list[Problem]:
    """A warning when notification.json has a bot token but no chat to send to anywhere."""
    if "telegram" not in seeds.notify_secrets or settings.notify.telegram is not None:
        return []
    loc: Path_ = ("telegram", "chat_id")
    return [
        _problem(
            _origin(seeds.notification_where, ("telegram", "bot_token")),
            "a bot_token but no chat_id: nothing will be sent to Telegram",
            'add "chat_id": 123456789 here, or chat_ids = [...] under [notify.telegram] in a config file',
            _dotted(loc),
            "warning",
        )
    ]


def _unused_keys(seeds: _Seeds, settings: Settings) -> list[Problem]:
    """A warning for each seed key whose provider no model in the registry has: it would never be used."""
    used = {model.provider for model in settings.models}
    return [
        _problem(
            key.origin,
            f"no model in the registry has provider '{key.provider}'; this key will not be used",
            _choices(key.provider, used),
            field,
            "warning",
        )
        for key, field in zip(seeds.keys, seeds.key_fields, strict=True)
        if key.provider not in used
    ]


# --------------------------------------------------------------------------- the entry points


def inspect_config(
    session: Path | None = None,
    explicit: Path | None = None,
    *,
    known_backends: Collection[str],
    project_dir: Path | None = None,
    user_dir: Path | None = None,
) -> tuple[Config | None, list[Problem]]:
    """The effective configuration and every problem found (warnings too); ``None`` when any is an error.

    ``session``: the session folder (its ``executor.toml`` is read when present);
    ``explicit``: a ``--config`` file, which must exist; ``known_backends``: the
    backend names a config may use (``backends.registry.backend_names()``; passed in
    because ``session`` sits below ``backends``); ``project_dir``: where
    ``config/*.json`` seeds are read (default: :func:`find_project_dir` of the
    session; none without a session); ``user_dir``: default :func:`user_config_dir`.
    Never raises for bad file content.
    """
    user = Path(user_dir) if user_dir is not None else user_config_dir()
    if project_dir is None and session is not None:
        project_dir = find_project_dir(session)
    problems: list[Problem] = []

    seed_folders = [user] + ([Path(project_dir) / "config"] if project_dir is not None else [])
    seeds = _read_seeds(seed_folders, known_backends)
    problems.extend(seeds.problems)

    raw: dict[str, Any] = {}
    where: dict[Path_, str] = {}
    _deep_merge(raw, builtin_defaults(), BUILTIN, where)
    where[()] = BUILTIN
    for origin, overlay in seeds.layers:
        _deep_merge(raw, overlay, origin, where)

    toml_sources: list[str] = []
    candidates: list[tuple[Path, bool]] = [(user / USER_CONFIG_FILE, False)]
    if session is not None:
        candidates.append((Path(session) / SESSION_CONFIG_FILE, False))
    if explicit is not None:
        candidates.append((Path(explicit), True))
    for path, required in candidates:
        display = str(path)
        if not _present(path):
            if required:
                problems.append(
                    _problem(display, "config file not found", "check the --config path, or leave --config out")
                )
            continue
        data = _read_toml(path, display)
        toml_sources.append(display)
        if isinstance(data, Problem):
            problems.append(data)
            continue
        _deep_merge(raw, data, display, where)

    problems.extend(_cross_check(raw, where, known_backends))
    settings: Settings | None = None
    try:
        settings = Settings.model_validate(raw)
    except ValidationError as error:
        problems.extend(_problems_from_validation(error, Settings, where))

    if settings is not None:
        problems.extend(_unused_keys(seeds, settings))
        problems.extend(_orphan_seed_token(seeds, settings))
    if settings is None or any(problem.severity == "error" for problem in problems):
        return None, problems
    config = Config(
        **{name: getattr(settings, name) for name in Settings.model_fields},
        key_files=seeds.keys,
        notification=seeds.notification,
        notify_secrets=seeds.notify_secrets,
        fleet=list(seeds.fleet.values()),
        sources=[BUILTIN, *seeds.sources, *toml_sources],
        warnings=problems,
    )
    return config, problems


def load_config(
    session: Path | None = None,
    explicit: Path | None = None,
    *,
    known_backends: Collection[str],
    project_dir: Path | None = None,
    user_dir: Path | None = None,
) -> Config:
    """The effective configuration (see :func:`inspect_config` for the arguments).

    Raises :class:`ConfigInvalid` with every problem when any is an error;
    warnings are kept in ``Config.warnings``.
    """
    config, problems = inspect_config(
        session, explicit, known_backends=known_backends, project_dir=project_dir, user_dir=user_dir
    )
    if config is None:
        raise ConfigInvalid(problems)
    return config


def redacted_dump(config: Config, environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The effective configuration as JSON-ready data, safe to print or send anywhere.

    Keys from files show as ``provider…last4``; ``[keys.env]`` maps each provider to
    ``{VARIABLE: "set (…3f9a)" | "not set"}`` (read from ``environ``, default
    ``os.environ``); notification secrets and URL credentials are masked (an MCP
    server's ``env`` and ``headers`` show only their ``${NAME}`` references: see
    ``McpServerConfig``).  No key value ever appears.
    """
    environ = os.environ if environ is None else environ
    dump = config.model_dump(mode="json")
    for model in dump["models"]:
        if model.get("base_url"):
            model["base_url"] = redact_url(model["base_url"])

    def status(name: str) -> str:
        value = environ.get(name, "").strip()
        return f"set ({mask(value)})" if value else "not set"

    dump["keys"] = {
        "rotation": config.keys.rotation,
        "cooldown_s": config.keys.cooldown_s,
        "env": {provider: {name: status(name) for name in names} for provider, names in config.keys.env.items()},
    }
    _notify_status(config, dump["notify"], environ)
    return dump


def _notify_status(config: Config, shown: dict[str, Any], environ: Mapping[str, str]) -> None:
    """Add to ``[notify]``'s dump where each channel's secret comes from, masked: ``set in NAME (…abcd)``."""

    def secret(name: str | None, seed: str | None = None) -> str:
        value = environ.get(name, "").strip() if name else ""
        if value:
            return f"set in {name} ({mask(value)})"
        fallback = config.notify_secrets.get(seed) if seed else None
        if fallback is not None:
            return f"from notification.json (…{fallback.last4})"
        return f"not set ({name} is empty)" if name else "not set"

    notify = config.notify
    if notify.telegram is not None:
        shown["telegram"]["bot_token"] = secret(notify.telegram.bot_token_env, "telegram")
    if notify.discord is not None:
        shown["discord"]["webhook_url"] = secret(notify.discord.webhook_url_env, "discord")
    for entry, hook in zip(shown["webhooks"], notify.webhooks, strict=True):
        if hook.url_env is not None:
            entry["url"] = secret(hook.url_env)
        if hook.headers_env is not None:
            entry["headers"] = secret(hook.headers_env)
    if notify.apprise is not None:
        urls = environ.get(notify.apprise.urls_env, "").split()
        shown["apprise"]["urls"] = f"{len(urls)} set in {notify.apprise.urls_env}" if urls else "not set"


def apply_role_defaults(session: TeamSession, config: Config) -> None:
    """Fill what each role-spec leaves unsaid from ``[roles.<role>]`` of the config.

    The role-spec always wins; the result replaces ``session.role_specs`` so the
    rest of the run (backend choice, work orders, skills) reads one place.
    """
    for role, spec in list(session.role_specs.items()):
        defaults = config.roles.get(role)
        if defaults is None:
            continue
        filled = {
            name: value
            for name, value in defaults.model_dump(exclude_none=True).items()
            if getattr(spec.meta, name, None) is None
        }
        if filled:
            session.role_specs[role] = dataclasses.replace(spec, meta=spec.meta.model_copy(update=filled))
