"""How a session runs: which backend each role gets, where that choice came from, and
remembering the choice given on the command line.

A role's backend, strongest first:

1. ``--backend NAME`` given to this ``executor run``/``resume``/``mcp`` (every role);
   it is then remembered in the session's ``executor.toml``;
2. ``[remembered].backend`` of the session's ``executor.toml``: the last ``--backend``;
3. the role-spec's ``backend:`` (``executor init`` writes its backend flags there);
4. ``[roles.<role>].backend`` of the configuration;
5. ``[run].default_backend`` of the configuration.

Why a remembered choice outranks the role-spec: it was typed for this session after its
role-specs were written (``run --backend demo`` on a playbook whose role-specs name codex
and gemini means "on demo"), and ``resume``, ``run --http`` and ``mcp`` must carry on as
that run did.  Whenever a choice outranks another one, or a remembered one is used, the
run prints one line saying so (:func:`choice_notes`).  Nothing here imports a backend:
the names are checked by the caller.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import msgspec

if TYPE_CHECKING:
    from session.config_models import Config
    from session.loader import TeamSession

__all__ = ["SOURCE_TEXT", "RememberError", "RoleBackend", "choice_notes", "remember_backend", "role_backends"]

Source = Literal["flag", "remembered", "role-spec", "config role", "config default", "none"]

#: How each source is named to people (``check``, the run's notes).
SOURCE_TEXT: dict[str, str] = {
    "flag": "--backend",
    "remembered": "remembered from an earlier --backend",
    "role-spec": "role-spec",
    "config role": "[roles.<role>] in the config",
    "config default": "[run].default_backend in the config",
    "none": "pass --backend",
}


class RememberError(Exception):
    """The session's executor.toml could not be updated; the message names the file."""


class RoleBackend(msgspec.Struct, frozen=True, kw_only=True):
    """One role's backend and the place it came from (``None``: no backend anywhere)."""

    role: str
    backend: str | None
    source: Source
    role_spec_backend: str | None = None  # what the role-spec says, when something outranks it


def role_backends(session: TeamSession, config: Config, flag: str | None) -> list[RoleBackend]:
    """Every role's backend by the precedence above, in the session's role order.

    Call it before :func:`session.config.apply_role_defaults`, which copies
    ``[roles.<role>]`` into the role-specs and would hide where a backend came from.
    """
    remembered = config.remembered.backend
    chosen: list[RoleBackend] = []
    for role in session.roles:
        spec = session.role_specs.get(role)
        own = spec.meta.backend if spec is not None else None
        defaults = config.roles.get(role)
        if flag:
            entry = RoleBackend(role=role, backend=flag, source="flag", role_spec_backend=own)
        elif remembered:
            entry = RoleBackend(role=role, backend=remembered, source="remembered", role_spec_backend=own)
        elif own:
            entry = RoleBackend(role=role, backend=own, source="role-spec")
        elif defaults is not None and defaults.backend:
            entry = RoleBackend(role=role, backend=defaults.backend, source="config role")
        elif config.run.default_backend:
            entry = RoleBackend(role=role, backend=config.run.default_backend, source="config default")
        else:
            entry = RoleBackend(role=role, backend=None, source="none")
        chosen.append(entry)
    return chosen


def choice_notes(chosen: Sequence[RoleBackend], remembered: str | None, config_file: Path) -> list[str]:
    """One line for each choice that outranks another or comes from memory (empty when none does)."""
    notes: list[str] = []
    outranked = ", ".join(
        f"{entry.role_spec_backend} ({entry.role})"
        for entry in chosen
        if entry.role_spec_backend and entry.role_spec_backend != entry.backend
    )
    over = f"; it outranks the role-specs' {outranked}" if outranked else ""
    first = chosen[0] if chosen else None
    if first is not None and first.source == "flag":
        replaced = f", replacing the remembered {remembered}" if remembered and remembered != first.backend else ""
        notes.append(f"backend {first.backend} for every role (--backend{replaced}){over}; remembered in {config_file}")
    elif first is not None and first.source == "remembered":
        notes.append(
            f"backend {first.backend} for every role, remembered from an earlier --backend in {config_file}{over}; "
            "pass --backend NAME to change it"
        )
    return notes


def remember_backend(folder: Path, backend: str) -> bool:
    """Write ``[remembered] backend = ...`` into ``<folder>/executor.toml``, keeping everything
    else in the file (comments too); return whether it changed.  Raises :class:`RememberError`."""
    # tomlkit (~15 ms to import) only for `--backend`: `check` and most runs never write the file.
    import tomlkit  # noqa: PLC0415
    from tomlkit.exceptions import TOMLKitError  # noqa: PLC0415

    path = folder / "executor.toml"
    try:
        document = tomlkit.parse(path.read_text(encoding="utf-8")) if path.exists() else tomlkit.document()
    except (OSError, UnicodeDecodeError, TOMLKitError) as error:
        raise RememberError(f"cannot read {path} to remember --backend: {error}") from None
    table = document.get("remembered")
    if table is None:
        table = tomlkit.table()
        table.comment("written by `executor run --backend`; the next run/resume/mcp uses it")
        document["remembered"] = table
    if table.get("backend") == backend:
        return False
    table["backend"] = backend
    temporary = path.with_name(f".{path.name}.tmp")
    try:
        temporary.write_text(tomlkit.dumps(document), encoding="utf-8")
        temporary.replace(path)
    except OSError as error:
        raise RememberError(f"cannot write {path} to remember --backend: {error.strerror or error}") from None
    return True
