"""Skills: discovery from the session, the user's config folder and the built-in set; roles -> skills; the prompt."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from backends.prompt import build_prompt
from session.loader import load_session
from session.resources import builtin_path
from session.skills import (
    DEFAULT_ROLE_SKILLS,
    MAX_SKILL_BYTES,
    Skill,
    check_role_skills,
    discover_skills,
    resolve_role_skills,
    skills_for_role,
    user_config_dir,
)
from tests.sessions import copy_demo, write_session

BUILTIN = ("mermaid-diagrams", "qa-test-planner", "systematic-debugging", "test-driven-development", "writing-plans")


def write_skill(root: Path, name: str, body: str = "", *, description: str | None = None, folder: str = "") -> Path:
    """``<root>/skills/<folder or name>/SKILL.md`` with a valid frontmatter."""
    path = root / "skills" / (folder or name) / "SKILL.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    description = description or f"Use when testing {name}."
    body = body or f"# {name}\n\nDo {name}."
    path.write_text(f"---\nname: {name}\ndescription: {description}\n---\n\n{body}\n")
    return path


@pytest.fixture
def no_user_dir(tmp_path: Path) -> Path:
    return tmp_path / "no-user-config"


def test_the_five_built_in_skills_load_with_names_matching_their_folders(tmp_path, no_user_dir):
    skills, problems = discover_skills(tmp_path, no_user_dir)
    assert problems == []
    assert tuple(skills) == BUILTIN
    for name, skill in skills.items():
        assert skill.source == "builtin"
        assert skill.name == name == skill.path.parent.name
        assert skill.path == builtin_path("skills") / name / "SKILL.md"
        assert skill.description.startswith("Use when")
        assert skill.description.count(". ") == 0  # one sentence
        assert 30 <= len(skill.body.splitlines()) <= 70
        assert skill.body.startswith("# ")
    assert {name for names in DEFAULT_ROLE_SKILLS.values() for name in names} <= set(skills)


def test_session_skills_hide_user_skills_which_hide_built_in_ones(tmp_path):
    session = copy_demo(tmp_path / "demo")
    user = tmp_path / "config"
    write_skill(session, "writing-plans", "# Session plans")
    write_skill(session, "house-style", "# House style")
    write_skill(user, "writing-plans", "# User plans")
    write_skill(user, "mermaid-diagrams", "# User diagrams")
    write_skill(user, "house-style", "# User house style")
    write_skill(user, "user-only", "# Mine")

    skills, problems = discover_skills(session, user)
    assert problems == []
    assert {name: skill.source for name, skill in skills.items()} == {
        "house-style": "session",
        "mermaid-diagrams": "user",
        "qa-test-planner": "builtin",
        "systematic-debugging": "builtin",
        "test-driven-development": "builtin",
        "user-only": "user",
        "writing-plans": "session",
    }
    assert list(skills) == sorted(skills)
    assert skills["writing-plans"].body == "# Session plans"
    assert skills["writing-plans"].path == (session / "skills" / "writing-plans" / "SKILL.md").resolve()
    assert skills["mermaid-diagrams"].body == "# User diagrams"
    assert skills["house-style"].body == "# House style"


def test_user_config_dir_follows_the_environment(tmp_path, monkeypatch):
    monkeypatch.delenv("TEAM_EXECUTOR_CONFIG_DIR", raising=False)
    monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert user_config_dir() == tmp_path / "home" / ".config" / "team-executor"

    monkeypatch.setenv("XDG_CONFIG_HOME", "relative/ignored")
    assert user_config_dir() == tmp_path / "home" / ".config" / "team-executor"
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    assert user_config_dir() == tmp_path / "xdg" / "team-executor"

    monkeypatch.setenv("TEAM_EXECUTOR_CONFIG_DIR", str(tmp_path / "explicit"))
    assert user_config_dir() == tmp_path / "explicit"


def test_discovery_uses_the_user_config_dir_by_default(tmp_path, monkeypatch):
    config = tmp_path / "explicit"
    write_skill(config, "from-config", "# Configured")
    monkeypatch.setenv("TEAM_EXECUTOR_CONFIG_DIR", str(config))
    skills, problems = discover_skills(tmp_path / "session")
    assert problems == []
    assert skills["from-config"].source == "user"


def test_malformed_skills_are_skipped_with_a_warning_naming_the_file_and_the_fix(tmp_path, no_user_dir):
    session = tmp_path / "S"
    folder = session / "skills"
    write_skill(session, "good", "# Good")
    write_skill(session, "other-name", folder="mismatch")
    for name, content in {
        "no-frontmatter": b"# Just Markdown\n",
        "unclosed": b"---\nname: unclosed\ndescription: x\n# body\n",
        "no-name": b"---\ndescription: Use when.\n---\nbody\n",
        "no-description": b"---\nname: no-description\n---\nbody\n",
        "blank-description": b"---\nname: blank-description\ndescription: '  '\n---\nbody\n",
        "bad-yaml": b"---\nname: [unclosed\n---\nbody\n",
        "a-list": b"---\n- name\n---\nbody\n",
        "latin1": "---\nname: latin1\ndescription: caf\u00e9\n---\n".encode("latin-1"),
        "huge": b"---\nname: huge\ndescription: Use when big.\n---\n" + b"x" * MAX_SKILL_BYTES,
    }.items():
        (folder / name).mkdir(parents=True)
        (folder / name / "SKILL.md").write_bytes(content)
    (folder / "empty-folder").mkdir()
    (folder / ".hidden").mkdir()
    (folder / "README.md").write_text("not a skill folder\n")

    skills, problems = discover_skills(session, no_user_dir)
    assert set(skills) == {"good", *BUILTIN}
    assert all(problem.severity == "warning" for problem in problems)
    by_file = {problem.file: problem for problem in problems}
    assert set(by_file) == {
        f"skills/{name}/SKILL.md"
        for name in (
            "mismatch",
            "no-frontmatter",
            "unclosed",
            "no-name",
            "no-description",
            "blank-description",
            "bad-yaml",
            "a-list",
            "latin1",
            "huge",
            "empty-folder",
        )
    }
    assert "name 'other-name' differs from its folder name 'mismatch'" in by_file["skills/mismatch/SKILL.md"].message
    assert by_file["skills/mismatch/SKILL.md"].field == "name"
    assert "'name: mismatch'" in by_file["skills/mismatch/SKILL.md"].fix
    assert "no YAML frontmatter" in by_file["skills/no-frontmatter/SKILL.md"].message
    assert "no YAML frontmatter" in by_file["skills/unclosed/SKILL.md"].message
    assert "missing 'name'" in by_file["skills/no-name/SKILL.md"].message
    assert by_file["skills/no-name/SKILL.md"].fix == "add 'name: no-name' to the frontmatter"
    assert "missing 'description'" in by_file["skills/no-description/SKILL.md"].message
    assert "'description' must be a non-empty string" in by_file["skills/blank-description/SKILL.md"].message
    assert "not valid YAML" in by_file["skills/bad-yaml/SKILL.md"].message
    assert "mapping" in by_file["skills/a-list/SKILL.md"].message
    assert "not UTF-8" in by_file["skills/latin1/SKILL.md"].message
    assert by_file["skills/latin1/SKILL.md"].fix == "save the file as UTF-8"
    assert "over the 256 KiB limit" in by_file["skills/huge/SKILL.md"].message
    assert "has no SKILL.md" in by_file["skills/empty-folder/SKILL.md"].message
    for problem in problems:
        assert problem.fix
        assert str(problem).startswith(problem.file)


def test_problems_in_the_user_folder_name_the_absolute_path(tmp_path):
    user = tmp_path / "config"
    (user / "skills" / "broken").mkdir(parents=True)
    (user / "skills" / "broken" / "SKILL.md").write_text("no frontmatter\n")
    _, problems = discover_skills(tmp_path / "S", user)
    assert [problem.file for problem in problems] == [f"{user.absolute()}/skills/broken/SKILL.md"]


def test_a_session_skill_linking_outside_the_session_is_not_read(tmp_path, no_user_dir):
    outside = write_skill(tmp_path / "elsewhere", "linked", "# SECRET")
    session = tmp_path / "S"
    (session / "skills" / "linked").mkdir(parents=True)
    try:
        os.symlink(outside, session / "skills" / "linked" / "SKILL.md")
    except OSError:
        pytest.skip("symbolic links are not available here")
    skills, problems = discover_skills(session, no_user_dir)
    assert "linked" not in skills
    assert [(problem.file, problem.severity) for problem in problems] == [("skills/linked/SKILL.md", "warning")]
    assert "outside the session folder" in problems[0].message


def test_a_skills_path_that_is_a_file_is_a_warning(tmp_path, no_user_dir):
    session = tmp_path / "S"
    session.mkdir()
    (session / "skills").write_text("oops\n")
    skills, problems = discover_skills(session, no_user_dir)
    assert set(skills) == set(BUILTIN)
    assert [(problem.file, problem.severity) for problem in problems] == [("skills", "warning")]


def test_the_default_table_gives_each_role_its_skills():
    assert skills_for_role("pm", None) == ["writing-plans"]
    assert skills_for_role("architect", None) == ["mermaid-diagrams"]
    assert skills_for_role("coder", None) == ["test-driven-development", "systematic-debugging"]
    assert skills_for_role("qa", None) == ["qa-test-planner", "systematic-debugging"]
    assert skills_for_role("reviewer", None) == []
    assert skills_for_role("researcher", None, {"pm": ["x"]}) == []


def test_role_spec_skills_win_over_the_config_map_which_wins_over_the_defaults():
    config = {"coder": ["house-style", "test-driven-development"], "reviewer": ["code-review"], "qa": []}
    assert skills_for_role("coder", None, config) == ["house-style", "test-driven-development"]
    assert skills_for_role("reviewer", None, config) == ["code-review"]
    assert skills_for_role("qa", None, config) == []  # an empty entry means no skills
    assert skills_for_role("pm", None, config) == ["writing-plans"]
    assert skills_for_role("coder", ["mine", "mine", " other "], config) == ["mine", "other"]
    assert skills_for_role("coder", [], config) == []  # `skills: []` in the role-spec means none


def test_role_spec_frontmatter_skills_override_the_defaults(tmp_path):
    folder = write_session(
        tmp_path / "S",
        {"coder": "IMPL", "qa": "QA"},
        {"IMPL-001": [], "QA-001": ["IMPL-001"]},
        role_extra={"coder": "skills: [systematic-debugging]\n"},
    )
    session = load_session(folder)
    assert skills_for_role("coder", session.role_specs["coder"].meta.skills) == ["systematic-debugging"]
    assert skills_for_role("qa", session.role_specs["qa"].meta.skills) == ["qa-test-planner", "systematic-debugging"]


def test_resolve_role_skills_splits_found_and_missing_in_order(tmp_path, no_user_dir):
    available, _ = discover_skills(tmp_path, no_user_dir)
    found, missing = resolve_role_skills(["systematic-debugging", "nope", "writing-plans", "nope"], available)
    assert [skill.name for skill in found] == ["systematic-debugging", "writing-plans"]
    assert missing == ["nope"]


def test_check_role_skills_warns_about_unknown_skills_in_role_specs(tmp_path, no_user_dir):
    folder = write_session(
        tmp_path / "S",
        {"pm": "PLAN", "coder": "IMPL", "qa": "QA"},
        {"PLAN-001": [], "IMPL-001": ["PLAN-001"], "QA-001": ["IMPL-001"]},
        role_extra={"coder": "skills: [systematic-debugging, no-such-skill]\n", "pm": "skills: []\n"},
    )
    write_skill(folder, "house-style")
    session = load_session(folder)
    available, _ = discover_skills(folder, no_user_dir)
    problems = check_role_skills(session, available)
    assert len(problems) == 1
    problem = problems[0]
    assert (problem.file, problem.field, problem.severity) == ("role-specs/coder.md", "skills", "warning")
    assert "'no-such-skill'" in problem.message
    assert "create skills/no-such-skill/SKILL.md" in problem.fix
    assert "house-style" in problem.fix  # the known skills are listed

    available_with_it = {**available, "no-such-skill": available["house-style"]}
    assert check_role_skills(session, available_with_it) == []


# --------------------------------------------------------------------------- the prompt


def coder_session(tmp_path: Path) -> Path:
    return write_session(tmp_path / "S", {"pm": "PLAN", "coder": "IMPL"}, {"PLAN-001": [], "IMPL-001": ["PLAN-001"]})


def test_the_prompt_without_skills_has_no_skills_section(tmp_path):
    session = load_session(coder_session(tmp_path))
    task = session.task("IMPL-001")
    assert build_prompt(session, task, 1, skills=()) == build_prompt(session, task, 1)
    assert "# Skills" not in build_prompt(session, task, 1)


def test_the_prompt_inlines_skills_after_the_phases_and_before_the_task(tmp_path, no_user_dir):
    folder = coder_session(tmp_path)
    write_skill(
        folder,
        "house-style",
        "# House style\n\nUse tabs.\n\n## Naming\n\n```python\n# not a heading\n```\n\n####### seven stays",
        description="Use when writing code in this project.",
    )
    session = load_session(folder)
    available, _ = discover_skills(folder, no_user_dir)
    names = skills_for_role("coder", session.role_specs["coder"].meta.skills, {"coder": ["house-style", "gone"]})
    chosen, missing = resolve_role_skills(names, available)
    assert missing == ["gone"]
    prompt = build_prompt(session, session.task("IMPL-001"), 1, skills=chosen)

    phase, skills, description = (
        prompt.index("## Phase 4"),
        prompt.index("\n# Skills\n"),
        prompt.index("# Task description"),
    )
    assert phase < skills < description
    section = prompt[skills:description]
    assert (
        "## house-style\n\nUse when writing code in this project.\n\n"
        "### House style\n\nUse tabs.\n\n#### Naming\n\n```python\n# not a heading\n```\n\n####### seven stays"
    ) in section

    both = build_prompt(session, session.task("IMPL-001"), 1, skills=[available["systematic-debugging"], *chosen])
    assert both.index("## systematic-debugging") < both.index("## house-style")
    assert "### 1. Reproduce and read" in both
    assert "Use when a test fails" in both


def test_skills_share_the_size_budget_and_come_before_artifacts(tmp_path):
    folder = coder_session(tmp_path)
    (folder / "artifacts" / "PLAN-001-plan.md").write_text("P" * 100 + "\n")
    session = load_session(folder)
    task = session.task("IMPL-001")
    path = tmp_path / "x" / "SKILL.md"
    small = Skill(name="small", description="Use when small.", body="S" * 50, path=path, source="user")
    big = Skill(name="big", description="Use when big.", body="B" * 500, path=path, source="user")

    prompt = build_prompt(session, task, 1, artifact_budget_bytes=200, skills=[big, small])
    assert "S" * 50 in prompt
    assert "B" * 500 not in prompt
    assert f"## big (not inlined: over the size budget)\n\nUse when big.\n\nRead it from {path} (500 bytes)" in prompt
    assert "P" * 100 in prompt  # 50 + 101 bytes fit in 200

    tight = build_prompt(session, task, 1, artifact_budget_bytes=120, skills=[small])
    assert "S" * 50 in tight  # skills are served first ...
    assert "## artifacts/PLAN-001-plan.md (not inlined: over the size budget)" in tight  # ... then artifacts

    nothing = build_prompt(session, task, 1, artifact_budget_bytes=0, skills=[small])
    assert "## small (not inlined: over the size budget)\n\nUse when small." in nothing
