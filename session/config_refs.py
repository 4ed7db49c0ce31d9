"""Checks between parts of the configuration.

A role's model must be in the registry, a backend must exist, an MCP server entry
must hold no literal secret.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Collection, Iterable, Mapping
from pathlib import Path
from typing import Any

from session.config_mcp import without_references
from session.config_sources import BUILTIN, SESSION_CONFIG_FILE, KeyPath, dotted, file_problem, origin_of
from session.problems import Problem
from session.redaction import is_secret_name

__all__ = [
    "choice_hint",
    "cross_check",
]


# --------------------------------------------------------------------------- references between parts


def choice_hint(name: str, known: Iterable[str]) -> str:
    known = sorted(known)
    close = difflib.get_close_matches(name, known, n=1)
    hint = f"did you mean '{close[0]}'? Otherwise c" if close else "C"
    return f"{hint}hoose one of: {', '.join(known) or 'none'}"


def cross_check(raw: Mapping[str, Any], where: Mapping[KeyPath, str], backends: Collection[str]) -> list[Problem]:
    """Checks that tie one part of the merged config to another.

    Works on the raw merged dict and skips values of the wrong type (the schema
    reports those), so these problems are found together with the type errors.
    """
    problems: list[Problem] = []

    def backend(value: Any, loc: KeyPath) -> None:
        if isinstance(value, str) and value and value not in backends:
            origin = origin_of(where, loc)
            if origin == BUILTIN:  # the built-in registry may name a backend this build lacks: no user mistake
                problems.append(
                    file_problem(
                        origin,
                        f"backend '{value}' is not in this build; the model will not be used",
                        "nothing to do unless you want this model: use a build that has the backend, "
                        "or list your own [[models]]",
                        dotted(loc),
                        "warning",
                    )
                )
            else:
                problems.append(
                    file_problem(origin, f"unknown backend '{value}'", choice_hint(value, backends), dotted(loc))
                )

    run = raw.get("run")
    if isinstance(run, dict):
        backend(run.get("default_backend"), ("run", "default_backend"))
    remembered = raw.get("remembered")
    if isinstance(remembered, dict):
        backend(remembered.get("backend"), ("remembered", "backend"))
        origin = origin_of(where, ("remembered", "backend"))
        if "backend" in remembered and Path(origin).name != SESSION_CONFIG_FILE:
            problems.append(
                file_problem(
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
                loc: KeyPath = ("models", index, "name")
                problems.append(
                    file_problem(
                        origin_of(where, loc),
                        f"duplicate model name '{name}' (also models[{names[name]}])",
                        "give each [[models]] entry its own name, or remove one of them",
                        dotted(loc),
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
                    file_problem(
                        origin_of(where, loc),
                        f"model '{model}' is not in the registry",
                        f"add a [[models]] entry named '{model}'. {choice_hint(model, names)}",
                        dotted(loc),
                    )
                )
            elif (
                isinstance(model, str)
                and isinstance(entry.get("backend"), str)
                and model_backend.get(model) not in (None, entry["backend"])
            ):
                loc = ("roles", role, "backend")
                problems.append(
                    file_problem(
                        origin_of(where, loc),
                        f"backend '{entry['backend']}' differs from the backend of model '{model}' "
                        f"('{model_backend[model]}')",
                        "drop one of the two, or make them agree",
                        dotted(loc),
                        "warning",
                    )
                )

    servers = raw.get("mcp_servers")
    if isinstance(servers, dict):
        for server, entry in servers.items():
            if isinstance(entry, dict):
                problems.extend(_literal_secrets(server, entry, where))
    return problems


_AUTH_SCHEME = re.compile(r"^\s*(Bearer|Basic|Token)\b", re.IGNORECASE)  # "Bearer ${TOKEN}" is fine


def _literal_secrets(server: str, entry: Mapping[str, Any], where: Mapping[KeyPath, str]) -> list[Problem]:
    """A warning for each ``env``/``headers`` value of an MCP server that holds literal text under a secret's name."""
    problems = []
    for table in ("env", "headers"):
        values = entry.get(table)
        if not isinstance(values, dict):
            continue
        for name, value in values.items():
            literal = _AUTH_SCHEME.sub("", without_references(value)).strip() if isinstance(value, str) else ""
            # A secret's value belongs in the environment (``${NAME}``), not in a file that may be shared.
            if literal and is_secret_name(name):
                loc: KeyPath = ("mcp_servers", server, table, name)
                problems.append(
                    file_problem(
                        origin_of(where, loc),
                        "looks like a secret written into the config file",
                        "put it in an environment variable and write ${NAME} here"
                        + (" (or set token_env for a bearer token)" if table == "headers" else ""),
                        dotted(loc),
                        "warning",
                    )
                )
    return problems
