"""Skills: folders holding a ``SKILL.md`` that workers get in their prompt.

A skill is a folder ``<name>/SKILL.md``: YAML frontmatter with ``name`` (equal to
the folder name) and ``description`` (one sentence: when to use it), then
Markdown guidance.  They come from three places, searched in this order, the
first one with a given name winning:

1. the session: ``<session>/skills/<name>/SKILL.md``;
2. the user's config folder (:func:`user_config_dir`): ``<dir>/skills/<name>/SKILL.md``;
3. the built-in set shipped with the package (``skills/`` at the top of the
   repository; see ``session.resources``).

Which skills a role gets (:func:`skills_for_role`): the role-spec's ``skills:``
list, else the role's entry in the config mapping, else :data:`DEFAULT_ROLE_SKILLS`.

Nothing here raises for bad content: a malformed ``SKILL.md`` is skipped and
reported as a warning :class:`Problem` that names the file and the fix.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

import yaml

from session.frontmatter import split_frontmatter
from session.loader import TeamSession
from session.problems import Problem
from session.resources import builtin_path

__all__ = [
    "DEFAULT_ROLE_SKILLS",
    "MAX_SKILL_BYTES",
    "SKILL_FILE",
    "Skill",
    "SkillSource",
    "check_role_skills",
    "discover_skills",
    "resolve_role_skills",
    "skills_for_role",
    "user_config_dir",
]

SKILL_FILE = "SKILL.md"
MAX_SKILL_BYTES = 256 * 1024
CONFIG_DIR_ENV = "TEAM_EXECUTOR_CONFIG_DIR"

SkillSource = Literal["session", "user", "builtin"]

DEFAULT_ROLE_SKILLS: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {
        "pm": ("writing-plans",),
        "architect": ("mermaid-diagrams",),
        "coder": ("test-driven-development", "systematic-debugging"),
        "qa": ("qa-test-planner", "systematic-debugging"),
    }
)


@dataclass(frozen=True)
class Skill:
    """One loaded skill.  ``body`` is the Markdown after the frontmatter, stripped."""

    name: str
    description: str
    body: str
    path: Path  # the SKILL.md file, absolute
    source: SkillSource


def user_config_dir() -> Path:
    """The user's team-executor config folder.

    ``$TEAM_EXECUTOR_CONFIG_DIR`` if set; else ``$XDG_CONFIG_HOME/team-executor``
    (when that is an absolute path, as the XDG spec requires); else
    ``~/.config/team-executor``.  The folder need not exist.
    """
    explicit = os.environ.get(CONFIG_DIR_ENV, "").strip()
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CONFIG_HOME", "").strip()
    if xdg and Path(xdg).is_absolute():
        return Path(xdg) / "team-executor"
    return Path.home() / ".config" / "team-executor"


# --------------------------------------------------------------------------- reading one SKILL.md


def _read_skill(path: Path, folder_name: str, source: SkillSource, display: str) -> Skill | Problem:
    """Parse ``path``; the :class:`Skill`, or the warning that says why it was skipped."""

    def skipped(message: str, fix: str, field: str | None = None) -> Problem:
        return Problem(file=display, field=field, message=f"skill skipped: {message}", fix=fix, severity="warning")

    try:
        if not path.is_file():
            return skipped(f"{SKILL_FILE} is not a file", f"make {display} a Markdown file")
        size = path.stat().st_size
        if size > MAX_SKILL_BYTES:
            return skipped(
                f"file is {size // 1024} KiB, over the {MAX_SKILL_BYTES // 1024} KiB limit",
                "keep SKILL.md short; move long reference material into other files of the skill folder",
            )
        with path.open("rb") as handle:
            data = handle.read(MAX_SKILL_BYTES + 1)
    except OSError as error:
        return skipped(f"cannot read: {error.strerror or error}", "check the file's permissions")
    if len(data) > MAX_SKILL_BYTES:  # it grew since stat()
        return skipped(
            f"file is over the {MAX_SKILL_BYTES // 1024} KiB limit", "keep SKILL.md short; move long material out"
        )
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        return skipped(f"not UTF-8 text ({error.reason} at byte {error.start})", "save the file as UTF-8")

    text = text.replace("\r\n", "\n").lstrip("\ufeff")
    split = split_frontmatter(text)
    if split is None:
        return skipped(
            "no YAML frontmatter (the file must start with a '---' line and close it with another)",
            f"start the file with '---', 'name: {folder_name}', 'description: <when to use it>', '---'",
        )
    header, body = split
    try:
        meta: Any = yaml.safe_load(header)
    except (yaml.YAMLError, RecursionError) as error:
        mark = getattr(error, "problem_mark", None)
        where = f" (line {mark.line + 2})" if mark is not None else ""
        return skipped(f"frontmatter is not valid YAML{where}", "fix the YAML between the '---' lines", "frontmatter")
    if not isinstance(meta, dict):
        return skipped(
            "frontmatter must be a mapping of keys to values", "write it as 'key: value' lines", "frontmatter"
        )

    name, description = meta.get("name"), meta.get("description")
    if not isinstance(name, str) or not name.strip():
        what = "missing 'name'" if name is None else "'name' must be a non-empty string"
        return skipped(what, f"add 'name: {folder_name}' to the frontmatter", "name")
    if not isinstance(description, str) or not description.strip():
        return skipped(
            "missing 'description'" if description is None else "'description' must be a non-empty string",
            "add 'description: <one sentence: when to use this skill>' to the frontmatter",
            "description",
        )
    name = name.strip()
    if name != folder_name:
        return skipped(
            f"name '{name}' differs from its folder name '{folder_name}'",
            f"set 'name: {folder_name}' or rename the folder to '{name}'",
            "name",
        )
    return Skill(
        name=name,
        description=" ".join(description.split()),
        body=body.strip(),
        path=path,
        source=source,
    )


# --------------------------------------------------------------------------- discovery


def _scan(
    base: Path, source: SkillSource, display_root: str, contain: Path | None = None
) -> tuple[list[Skill], list[Problem]]:
    """Every ``<base>/<name>/SKILL.md``, in name order.

    ``display_root`` prefixes file names in problems.  With ``contain``, a SKILL.md
    that resolves (through symbolic links) outside that folder is not read.
    """
    skills: list[Skill] = []
    problems: list[Problem] = []
    try:
        if not base.exists():
            return [], []
        if not base.is_dir():
            return [], [
                Problem(
                    file=display_root.rstrip("/"),
                    message="is a file, not a folder of skills: no skills loaded from it",
                    fix="make it a folder holding one sub-folder per skill (<name>/SKILL.md)",
                    severity="warning",
                )
            ]
        folders = sorted(entry for entry in base.iterdir() if entry.is_dir() and not entry.name.startswith("."))
    except OSError as error:
        return [], [
            Problem(
                file=display_root.rstrip("/"),
                message=f"cannot list the skills folder: {error.strerror or error}",
                fix="check the folder's permissions",
                severity="warning",
            )
        ]
    for folder in folders:
        display = f"{display_root}{folder.name}/{SKILL_FILE}"
        path = folder / SKILL_FILE
        try:
            present = path.exists()
        except OSError:
            present = True  # unreadable, not absent: _read_skill says why
        if not present:
            problems.append(
                Problem(
                    file=display,
                    message=f"skill folder '{folder.name}' has no {SKILL_FILE}: skipped",
                    fix=f"add {SKILL_FILE} (frontmatter with name and description, then guidance) or remove the folder",
                    severity="warning",
                )
            )
            continue
        if contain is not None:
            try:
                resolved = path.resolve()
            except (OSError, RuntimeError):
                resolved = None
            if resolved is None or not resolved.is_relative_to(contain):
                problems.append(
                    Problem(
                        file=display,
                        message="skill skipped: it links to a file outside the session folder",
                        fix="copy the skill into the session instead of linking to it",
                        severity="warning",
                    )
                )
                continue
        result = _read_skill(path, folder.name, source, display)
        if isinstance(result, Problem):
            problems.append(result)
        else:
            skills.append(result)
    return skills, problems


def _user_root(user_dir: Path | None) -> Path | None:
    """``user_dir`` (or the default) made absolute; None when there is no home folder to find it in."""
    try:
        return (Path(user_dir) if user_dir is not None else user_config_dir()).expanduser().absolute()
    except RuntimeError:  # Path.home() / expanduser() without a resolvable home folder
        return None


def discover_skills(session_folder: Path, user_dir: Path | None = None) -> tuple[dict[str, Skill], list[Problem]]:
    """All skills available to a session, by name, and a warning per skipped one.

    Searched in order ``<session>/skills/``, ``<user_dir>/skills/`` (``user_dir``
    defaults to :func:`user_config_dir`), then the built-in set; a skill found
    earlier hides a later one of the same name.  Problems name session files
    relative to the session folder and the others by absolute path.  Never raises
    for bad content.
    """
    session_root = Path(session_folder).resolve()
    problems: list[Problem] = []
    found: dict[str, Skill] = {}

    sources: list[tuple[Path, SkillSource, str, Path | None]] = [
        (session_root / "skills", "session", "skills/", session_root),
    ]
    user_root = _user_root(user_dir)
    if user_root is not None:
        sources.append((user_root / "skills", "user", f"{user_root / 'skills'}{os.sep}", None))
    try:
        builtin = builtin_path("skills")
        sources.append((builtin, "builtin", f"{builtin}{os.sep}", None))
    except FileNotFoundError as error:
        problems.append(
            Problem(
                file="skills/",
                message=f"the built-in skills are missing: {error}",
                fix="reinstall team-executor",
                severity="warning",
            )
        )

    for base, source, display_root, contain in sources:
        skills, scan_problems = _scan(base, source, display_root, contain)
        problems.extend(scan_problems)
        for skill in skills:
            found.setdefault(skill.name, skill)
    return dict(sorted(found.items())), problems


# --------------------------------------------------------------------------- roles -> skills


def _unique(names: Iterable[str] | str | None) -> list[str]:
    """Stripped, non-empty names in first-seen order; a lone string is one name (a hand-written config)."""
    if names is None:
        return []
    if isinstance(names, str):
        names = [names]
    return list(dict.fromkeys(name.strip() for name in names if isinstance(name, str) and name.strip()))


def skills_for_role(
    role: str,
    role_spec_skills: list[str] | None,
    config_map: Mapping[str, list[str]] | None = None,
) -> list[str]:
    """The skill names ``role`` gets, in order, without duplicates.

    The role-spec's ``skills:`` wins when present (``skills: []`` means none);
    else the config mapping's entry for the role; else :data:`DEFAULT_ROLE_SKILLS`;
    else no skills.
    """
    if role_spec_skills is not None:
        return _unique(role_spec_skills)
    if config_map is not None and role in config_map:
        return _unique(config_map[role])
    return list(DEFAULT_ROLE_SKILLS.get(role, ()))


def resolve_role_skills(names: Iterable[str], available: Mapping[str, Skill]) -> tuple[list[Skill], list[str]]:
    """``names`` looked up in ``available``: (the skills found, the names missing), each in order."""
    found: list[Skill] = []
    missing: list[str] = []
    for name in _unique(names):
        skill = available.get(name)
        if skill is None:
            missing.append(name)
        else:
            found.append(skill)
    return found, missing


def check_role_skills(session: TeamSession, available: Mapping[str, Skill]) -> list[Problem]:
    """A warning for each skill a role-spec's ``skills:`` names that ``available`` lacks.

    For ``executor validate``: each names the role-spec file, the ``skills`` field
    and the fix.  Roles whose spec has no ``skills:`` key use the defaults, which
    are built in, and are not checked.
    """
    problems: list[Problem] = []
    known = ", ".join(sorted(available)) or "none"
    user_root = _user_root(None)
    elsewhere = f" (or in {user_root / 'skills'})" if user_root is not None else ""
    for role in sorted(session.role_specs):
        spec = session.role_specs[role]
        if spec.meta.skills is None:
            continue
        entry = session.roles.get(role)
        file = entry.role_spec if entry is not None else f"role-specs/{role}.md"
        _, missing = resolve_role_skills(spec.meta.skills, available)
        for name in missing:
            problems.append(
                Problem(
                    file=file,
                    field="skills",
                    message=f"role '{role}' names skill '{name}', which is not in the session, "
                    "the user's config folder or the built-in set",
                    fix=f"create skills/{name}/SKILL.md in the session{elsewhere}, "
                    f"or remove '{name}' from skills: (known skills: {known})",
                    severity="warning",
                )
            )
    return problems
