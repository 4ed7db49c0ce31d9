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

The work is done apart: :mod:`session.config_sources` reads and merges the files,
:mod:`session.config_problems` words validation errors, :mod:`session.config_refs`
checks references between parts, :mod:`session.config_seeds` reads the seed JSON files.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from session.config_fields import redact_url
from session.config_models import (
    DEFAULT_KEY_ENV,
    DEFAULT_MODELS,
    Config,
    Settings,
)
from session.config_problems import problems_from_validation
from session.config_refs import cross_check
from session.config_seeds import file_present, orphan_seed_token, read_seeds, unused_keys
from session.config_sources import (
    BUILTIN,
    SESSION_CONFIG_FILE,
    USER_CONFIG_FILE,
    KeyPath,
    deep_merge,
    file_problem,
    origin_of,
    read_toml,
)
from session.problems import Problem, format_problems
from session.redaction import mask
from session.skills import user_config_dir

if TYPE_CHECKING:
    from session.loader import TeamSession

__all__ = [
    "ConfigInvalid",
    "apply_role_defaults",
    "builtin_defaults",
    "find_project_dir",
    "inspect_config",
    "load_config",
    "redacted_dump",
]


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
    seeds = read_seeds(seed_folders, known_backends)
    problems.extend(seeds.problems)

    raw: dict[str, Any] = {}
    where: dict[KeyPath, str] = {}
    deep_merge(raw, builtin_defaults(), BUILTIN, where)
    where[()] = BUILTIN
    for origin, overlay in seeds.layers:
        deep_merge(raw, overlay, origin, where)

    toml_sources: list[str] = []
    candidates: list[tuple[Path, bool]] = [(user / USER_CONFIG_FILE, False)]
    if session is not None:
        candidates.append((Path(session) / SESSION_CONFIG_FILE, False))
    if explicit is not None:
        candidates.append((Path(explicit), True))
    for path, required in candidates:
        display = str(path)
        if not file_present(path):
            if required:
                problems.append(
                    file_problem(display, "config file not found", "check the --config path, or leave --config out")
                )
            continue
        data = read_toml(path, display)
        toml_sources.append(display)
        if isinstance(data, Problem):
            problems.append(data)
            continue
        deep_merge(raw, data, display, where)

    problems.extend(cross_check(raw, where, known_backends))
    if session is not None:
        problems.extend(_widened_from_the_session(raw, where, str(Path(session) / SESSION_CONFIG_FILE)))
    settings: Settings | None = None
    try:
        settings = Settings.model_validate(raw)
    except ValidationError as error:
        problems.extend(problems_from_validation(error, Settings, where))

    if settings is not None:
        problems.extend(unused_keys(seeds, settings))
        problems.extend(orphan_seed_token(seeds, settings))
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


def _widened_from_the_session(raw: Mapping[str, Any], where: Mapping[KeyPath, str], session_file: str) -> list[Problem]:
    """Settings that widen what a process the run starts may see, when the session's own file set
    them: that file lies within the agents' reach, and an agent could hand itself a key through
    them at the next run."""
    run = raw.get("run")
    if not isinstance(run, Mapping) or "gate_env" not in run or origin_of(where, ("run", "gate_env")) != session_file:
        return []
    return [
        file_problem(
            session_file,
            "run.gate_env names variables of your environment for the quality gates, and this file is within "
            "the agents' reach (an agent could name a key here)",
            "set run.gate_env in your config folder's config.toml or in a --config file outside the project",
            field="run.gate_env",
        )
    ]


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
