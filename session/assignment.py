"""Which role takes a task submitted without ``assigned_to``, and why.

A pure rule, so an MCP client that only knows a task's name and description
(``submit_task(name, description, priority)``) gets it done on any session:

1. The task's words are matched against what each role is for: its name
   (weight 3: "review the diff" names the reviewer), what the session
   declares of it — the ``responsibility_type`` in team-session.json, the
   task-analysis capabilities with its prefix, and for a ``manual`` role the
   capabilities that agents.yaml lists for the people and IDE agents who take
   such tasks (weight 2) — and a small vocabulary of the usual kinds of work
   (weight 1: "test", "regression" are validation work).
2. The role with the highest score takes it; a tie goes to the role earlier in
   the pipeline.
3. When no word matches, the session's intake role takes it: ``intake_role`` in
   team-session.json, by default the first role of the pipeline.

The reason says which words matched which role, or that the intake role took it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from session.loader import TeamSession

__all__ = ["Assignment", "RoleProfile", "assign_in_session", "assign_role", "intake_role", "profile_roles"]

_WORD = re.compile(r"[a-z0-9]+")

#: The usual kinds of work, by words found in role names and responsibility types.
_KINDS: dict[str, str] = {
    "plan": "plan scope requirement roadmap milestone prioritize story spec",
    "pm": "plan scope requirement roadmap milestone prioritize story",
    "design": "design architecture interface module schema diagram adr",
    "architect": "design architecture interface module schema diagram adr",
    "code": "implement code fix bug feature refactor add build function endpoint page",
    "coder": "implement code fix bug feature refactor add build function endpoint page",
    "validation": "test qa verify regression coverage reproduce check flaky",
    "qa": "test verify regression coverage reproduce flaky",
    "review": "review audit critique feedback approve diff",
    "redteam": "attack exploit security vulnerability threat abuse injection",
    "research": "research investigate explore compare survey evaluate",
    "writer": "write document docs readme guide tutorial changelog",
    "doc": "document docs readme guide tutorial changelog",
    "adjudicat": "decide adjudicate choose merge pick",
}

_SUFFIXES = ("ations", "ation", "ings", "ing", "ies", "ed", "es", "s", "e", "y")


def _stem(word: str) -> str:
    """A crude stem, enough for task titles: 'tests', 'testing', 'tested' -> 'test'."""
    for suffix in _SUFFIXES:
        if len(word) > len(suffix) + 2 and word.endswith(suffix):
            return word[: -len(suffix)]
    return word


def _stems(text: str) -> set[str]:
    return {_stem(word) for word in _WORD.findall(text.lower())}


@dataclass(frozen=True)
class RoleProfile:
    """What one role is for, as words.  ``declared`` come from the session's own files."""

    name: str
    prefix: str = ""
    declared: frozenset[str] = frozenset()
    """Words of its responsibility type, its task-analysis capabilities, agents.yaml."""
    described_as: str = ""
    """How the reason names where ``declared`` came from."""


@dataclass(frozen=True)
class Assignment:
    role: str
    reason: str


def profile_roles(
    roles: Sequence[tuple[str, str, str | None]],
    capabilities: Iterable[tuple[str | None, str, str, str | None]] = (),
    manual_roles: Iterable[str] = (),
    agent_capabilities: Mapping[str, set[str]] | None = None,
) -> list[RoleProfile]:
    """Profiles in pipeline order.

    ``roles``: (name, prefix, responsibility_type) as team-session.json lists them;
    ``capabilities``: task-analysis.json's (prefix, name, description, responsibility_type);
    ``manual_roles`` take the capabilities of every agent in agents.yaml."""
    agents_words: set[str] = set()
    for declared in (agent_capabilities or {}).values():
        for capability in declared:
            agents_words |= _stems(capability)
    capabilities = list(capabilities)
    manual = set(manual_roles)
    profiles: list[RoleProfile] = []
    for name, prefix, responsibility in roles:
        words: set[str] = _stems(responsibility or "")
        sources = [f"responsibility {responsibility}"] if responsibility else []
        for cap_prefix, cap_name, description, cap_type in capabilities:
            if cap_prefix == prefix or (cap_prefix is None and cap_name == name):
                words |= _stems(f"{cap_name} {description} {cap_type or ''}")
                sources.append(f"capability {cap_name}")
        if name in manual and agents_words:
            words |= agents_words
            sources.append("agents.yaml")
        profiles.append(
            RoleProfile(name=name, prefix=prefix, declared=frozenset(words), described_as=", ".join(sources))
        )
    return profiles


def _vocabulary(profile: RoleProfile) -> set[str]:
    keys = _stems(profile.name.replace("-", " ")) | profile.declared
    found: set[str] = set()
    for kind, words in _KINDS.items():
        if any(key.startswith(kind) or (len(key) > 1 and kind.startswith(key)) for key in keys):
            found |= _stems(words)
    return found


def _matches(words: set[str], vocabulary: Iterable[str]) -> set[str]:
    """Words of the task that a vocabulary entry covers (entries are stems or stem prefixes)."""
    entries = set(vocabulary)
    return {word for word in words if word in entries or any(word.startswith(e) for e in entries if len(e) >= 4)}


def intake_role(profiles: Sequence[RoleProfile], configured: str | None) -> tuple[str, str]:
    """(the intake role, how it was chosen): ``configured`` when it is a role, else the first."""
    names = [profile.name for profile in profiles]
    if configured and configured in names:
        return configured, "the session's intake role (intake_role in team-session.json)"
    if configured:
        return names[0], (
            f"the first role of the pipeline (intake_role '{configured}' in team-session.json is not a role "
            f"of this session; use one of: {', '.join(names)})"
        )
    return names[0], "the first role of the pipeline (the default intake role; set intake_role in team-session.json)"


def assign_role(text: str, profiles: Sequence[RoleProfile], configured_intake: str | None = None) -> Assignment:
    """The role that takes a task whose name and description are ``text`` (see the module docstring).

    Raises ValueError when ``profiles`` is empty (a session always has a role)."""
    if not profiles:
        raise ValueError("a session without roles cannot take a task")
    spelled: dict[str, str] = {}
    for word in _WORD.findall(text.lower()):
        spelled.setdefault(_stem(word), word)
    words = set(spelled)

    def shown(stems: set[str]) -> str:
        return ", ".join(sorted(spelled[stem] for stem in stems))

    best: tuple[int, int, RoleProfile, list[str]] | None = None
    for order, profile in enumerate(profiles):
        by_name = _matches(words, _stems(profile.name.replace("-", " ")))
        declared = _matches(words, profile.declared) - by_name
        usual = _matches(words, _vocabulary(profile)) - by_name - declared
        score = 3 * len(by_name) + 2 * len(declared) + len(usual)
        if score == 0:
            continue
        notes = []
        if by_name:
            notes.append(f"its name ({shown(by_name)})")
        if declared:
            notes.append(f"its {profile.described_as or 'declared work'} ({shown(declared)})")
        if usual:
            notes.append(f"the usual words of its kind of work ({shown(usual)})")
        if best is None or score > best[0]:
            best = (score, order, profile, notes)
    if best is None:
        role, how = intake_role(profiles, configured_intake)
        return Assignment(role=role, reason=f"no role's capabilities match the task's words, so {how} takes it")
    score, _, profile, notes = best
    return Assignment(role=profile.name, reason=f"the task's words match {'; '.join(notes)} (score {score})")


def assign_in_session(session: TeamSession, text: str, agent_capabilities: Mapping[str, set[str]]) -> Assignment:
    """:func:`assign_role` over a loaded session: its roles in pipeline order, task-analysis
    capabilities, manual roles (``backend: manual``), and ``intake_role`` of team-session.json."""
    profiles = profile_roles(
        [(role.name, role.prefix, role.responsibility_type) for role in session.team.roles],
        [(cap.prefix, cap.name, cap.description, cap.responsibility_type) for cap in session.analysis.capabilities],
        [name for name, spec in session.role_specs.items() if spec.meta.backend == "manual"],
        agent_capabilities,
    )
    configured = session.team_raw.get("intake_role")
    return assign_role(text, profiles, configured if isinstance(configured, str) else None)
