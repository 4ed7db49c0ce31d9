"""``executor config``: validate the configuration and show the effective one, secrets redacted.

A thin layer over :mod:`session.config`: it finds the files, calls
:func:`~session.config.inspect_config`, and prints the result.
"""

from __future__ import annotations

import json as jsonlib
import re
import sys
from typing import Any

import msgspec
import typer
from rich.console import Console

from cli.options import ConfigOpt, JsonOpt, SessionOpt, command_group, load_config_args
from cli.render import render_problems

__all__ = ["config_app", "render_toml"]

config_app = command_group(
    name="config",
    help=(
        "Validate the configuration (config.toml, executor.toml, --config, seed JSON files) and show it.\n\n"
        "Example: executor config check --session work/login"
    ),
)

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def _key(name: str) -> str:
    return name if _BARE_KEY.fullmatch(name) else jsonlib.dumps(name, ensure_ascii=False)


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return jsonlib.dumps(value, ensure_ascii=False)
    if isinstance(value, list):
        return "[" + ", ".join(_value(item) for item in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{_key(k)} = {_value(v)}" for k, v in value.items() if v is not None) + " }"
    return repr(value)


def _is_table_array(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(item, dict) for item in value)


def render_toml(data: dict[str, Any], prefix: str = "") -> list[str]:
    """``data`` as TOML lines: scalars first, then ``[tables]`` and ``[[arrays of tables]]``.

    A ``None`` (TOML has no null) becomes a comment saying the key is not set.
    """
    lines: list[str] = []
    nested: list[tuple[str, Any]] = []
    for name, value in data.items():
        if isinstance(value, dict) or _is_table_array(value):
            nested.append((name, value))
        elif value is None:
            lines.append(f"# {_key(name)}: not set")
        else:
            lines.append(f"{_key(name)} = {_value(value)}")
    for name, value in nested:
        header = f"{prefix}.{_key(name)}" if prefix else _key(name)
        if isinstance(value, dict):
            only_tables = bool(value) and all(isinstance(item, dict) for item in value.values())
            lines.extend([*([] if only_tables else ["", f"[{header}]"]), *render_toml(value, header)])
        else:
            for item in value:
                lines.extend(["", f"[[{header}]]", *render_toml(item, header)])
    return lines


@config_app.command("check")
def check(session: SessionOpt = None, config: ConfigOpt = None, json: JsonOpt = False) -> None:
    """Validate the configuration and print the effective one, with every key redacted.

    Sources, later winning: built-in defaults, hydra_keys.json, <user config folder>/config.toml,
    <session>/executor.toml, --config. Keys show as provider + last 4 characters only.
    Exit code 0 when valid, 1 when not (each problem with its file, key and fix), 2 on bad arguments.
    Example: executor config check --session work/login --json
    """
    from session.config import redacted_dump  # noqa: PLC0415 - keeps `executor --help` fast

    loaded, problems = load_config_args(session, config)
    dump = redacted_dump(loaded) if loaded is not None else None
    if json:
        body = {"valid": loaded is not None, "config": dump, "problems": problems}
        sys.stdout.write(msgspec.json.encode(body).decode() + "\n")
    else:
        console = Console(highlight=False, soft_wrap=True)
        render_problems(console, "configuration", problems)
        if dump is not None:
            console.print("[green]valid[/]: the effective configuration (keys redacted)")
            sources = dump.pop("sources")
            shown = {name: value for name, value in dump.items() if value not in (None, [])}
            lines = ["# sources, later ones winning:", *(f"#   {source}" for source in sources), *render_toml(shown)]
            sys.stdout.write("\n".join(lines) + "\n")
    raise typer.Exit(0 if loaded is not None else 1)
