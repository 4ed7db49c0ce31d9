"""The rule that picks the role of a task submitted without assigned_to (session.assignment)."""

from __future__ import annotations

from pathlib import Path

import pytest

from session.assignment import assign_in_session, assign_role, profile_roles
from session.loader import inspect_session
from tests.sessions import write_session

ROLES = [("pm", "PLAN", "planning"), ("architect", "ARCH", "design"), ("coder", "IMPL", "code-gen"),
         ("qa", "QA", "validation"), ("reviewer", "REV", "review")]  # fmt: skip
PROFILES = profile_roles(ROLES)


@pytest.mark.parametrize(
    ("text", "role"),
    [
        ("Fix the login bug: the form crashes on submit", "coder"),
        ("Write regression tests for the date parser", "qa"),
        ("Design the storage schema", "architect"),
        ("Review the diff of IMPL-002", "reviewer"),
        ("Prioritize the roadmap milestones", "pm"),
    ],
)
def test_the_task_goes_to_the_role_whose_work_its_words_name(text: str, role: str) -> None:
    chosen = assign_role(text, PROFILES)
    assert chosen.role == role
    assert "match" in chosen.reason


def test_the_reason_names_the_words_that_matched() -> None:
    chosen = assign_role("Fix the flaky tests", PROFILES)
    assert chosen.role == "qa"
    assert "flaky" in chosen.reason
    assert "tests" in chosen.reason


def test_a_task_no_role_matches_goes_to_the_first_role_of_the_pipeline() -> None:
    chosen = assign_role("Hello there", PROFILES)
    assert chosen.role == "pm"
    assert "first role of the pipeline" in chosen.reason
    assert "intake_role" in chosen.reason


def test_the_configured_intake_role_takes_unmatched_tasks() -> None:
    assert assign_role("Hello there", PROFILES, "architect").role == "architect"
    unknown = assign_role("Hello there", PROFILES, "boss")
    assert unknown.role == "pm"
    assert "'boss'" in unknown.reason
    assert "not a role" in unknown.reason


def test_a_tie_goes_to_the_role_earlier_in_the_pipeline() -> None:
    twins = profile_roles([("alpha", "A", "code-gen"), ("beta", "B", "code-gen")])
    assert assign_role("fix it", twins).role == "alpha"


def test_declared_capabilities_win_over_the_usual_words() -> None:
    profiles = profile_roles(
        [("coder", "IMPL", "code-gen"), ("dba", "DB", None)],
        capabilities=[("DB", "migrations", "postgres schema migrations and indexes", None)],
    )
    chosen = assign_role("Add an index to the postgres table", profiles)
    assert chosen.role == "dba"
    assert "capability migrations" in chosen.reason


def test_agents_yaml_capabilities_count_for_manual_roles() -> None:
    profiles = profile_roles(
        [("coder", "IMPL", "code-gen"), ("human", "HUM", None)],
        manual_roles=["human"],
        agent_capabilities={"alice": {"kubernetes", "helm"}},
    )
    chosen = assign_role("Upgrade the helm chart", profiles)
    assert chosen.role == "human"
    assert "agents.yaml" in chosen.reason


def test_no_roles_is_refused() -> None:
    with pytest.raises(ValueError, match="without roles"):
        assign_role("anything", [])


def test_a_loaded_session_uses_its_files(tmp_path: Path) -> None:
    folder = write_session(
        tmp_path / "s",
        {"writer": "W", "checker": "C"},
        {"W-001": [], "C-001": ["W-001"]},
        team_extra={"intake_role": "checker"},
        capabilities=[
            {"name": "writer", "prefix": "W", "responsibility_type": "code-gen", "tasks": []},
            {"name": "checker", "prefix": "C", "responsibility_type": "validation", "tasks": []},
        ],
    )
    session, problems = inspect_session(folder)
    assert session is not None, problems
    assert assign_in_session(session, "Implement the parser", {}).role == "writer"
    assert assign_in_session(session, "Good morning", {}).role == "checker"  # the configured intake role


def test_validate_warns_of_an_intake_role_that_is_not_a_role(tmp_path: Path) -> None:
    folder = write_session(
        tmp_path / "s", {"writer": "W", "checker": "C"}, {"W-001": []}, team_extra={"intake_role": "tester"}
    )
    session, problems = inspect_session(folder)
    assert session is not None, "a warning: the run still loads"
    (problem,) = [p for p in problems if p.field == "$.intake_role"]
    assert (problem.file, problem.severity) == ("team-session.json", "warning")
    assert "'tester' is not a role of this session" in problem.message
    assert "go to the first role (writer)" in problem.message
    assert problem.fix == "set it to one of: writer, checker"
    assert assign_in_session(session, "Good morning", {}).role == "writer"  # as the warning says
