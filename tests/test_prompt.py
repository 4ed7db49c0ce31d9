"""The worker prompt, built from real session folders on disk."""

from __future__ import annotations

import re
from pathlib import Path

from backends.prompt import build_prompt, expected_artifact, task_description
from session.loader import load_session
from tests.sessions import copy_demo, write_session

PHASED_SPEC = """---
role: architect
prefix: ARCH
inner_loop: false
message_types:
  success: design_complete
  error: error
---
# Architect

Intro text that is not a phase.

## Phase 1: Context
Load the context.

## Phase 3: Design
Write the design.

## Phase 2: Explore
Explore the code.

## Phase 4: Validate
Check the design.

## Phase 5: Report
Say what you did.

## Notes
Not a phase either.
"""


def two_task_session(tmp_path: Path, **task_extra: object) -> Path:
    """PLAN-001 (pm) -> ARCH-001 (architect), shape (b), with goals and upstream artifacts."""
    capabilities = [
        {
            "name": "pm",
            "prefix": "PLAN",
            "tasks": [{"id": "PLAN-001", "goal": "Plan the {work}", "steps": ["Write the plan"]}],
        },
        {
            "name": "architect",
            "prefix": "ARCH",
            "tasks": [
                {
                    "id": "ARCH-001",
                    "goal": "Design it",
                    "steps": ["Read the plan", "Write the design"],
                    "key_files": ["src/app.py"],
                    "upstream_artifacts": ["artifacts/PLAN-001-plan.md"],
                    "success_criteria": "design written",
                    "constraints": "no new deps",
                    **task_extra,
                }
            ],
        },
    ]
    folder = write_session(
        tmp_path / "S",
        {"pm": "PLAN", "architect": "ARCH"},
        {"PLAN-001": [], "ARCH-001": ["PLAN-001"]},
        capabilities=capabilities,
    )
    (folder / "role-specs" / "architect.md").write_text(PHASED_SPEC)
    return folder


def test_task_description_has_the_upstream_line_format(tmp_path):
    folder = copy_demo(tmp_path / "demo")
    session = load_session(folder)
    text = task_description(session, session.task("ARCH-001"))
    root = folder.resolve()
    assert text == "\n".join(
        [
            "PURPOSE: Design the slugify interface, its edge-case rules and the file plan for the two IMPL tasks."
            " | Success: artifacts/ARCH-001-design.md gives a concrete signature, traces every plan requirement,"
            " and assigns files to IMPL-001 and IMPL-002.",
            "TASK:",
            "  - Read the plan and the textkit package layout",
            '  - Fix the signature: slugify(text: str, separator: str = "-", max_length: int | None = None) -> str',
            "  - Specify edge cases: empty string, only punctuation, unicode, max_length cutting at a separator",
            "  - Write the file plan: IMPL-001 code and export, IMPL-002 tests",
            "  - Name the test command for QA",
            "CONTEXT:",
            f"  - Session: {root}",
            "  - Upstream artifacts: artifacts/PLAN-001-plan.md",
            "  - Key files: textkit/__init__.py, pyproject.toml",
            "EXPECTED: artifacts/ARCH-001-design.md",
            "CONSTRAINTS: Use unicodedata.normalize('NFKD') for transliteration; no third-party packages.",
            "---",
            "InnerLoop: false",
            f"RoleSpec: {root / 'role-specs' / 'architect.md'}",
        ]
    )


def test_task_description_of_an_inner_loop_task_without_upstream_says_none(tmp_path):
    folder = copy_demo(tmp_path / "demo")
    session = load_session(folder)
    plan = task_description(session, session.task("PLAN-001"))
    assert "  - Upstream artifacts: none" in plan.splitlines()
    assert "InnerLoop: false" in plan.splitlines()
    impl = task_description(session, session.task("IMPL-001"))
    assert "InnerLoop: true" in impl.splitlines()
    assert "EXPECTED: artifacts/IMPL-001-impl.md" in impl.splitlines()


def test_multi_line_fields_are_collapsed_so_the_description_stays_line_oriented(tmp_path):
    folder = two_task_session(tmp_path, goal="Design\nit\n\n  now", steps=["one\ntwo"], constraints="a\nb")
    session = load_session(folder)
    lines = task_description(session, session.task("ARCH-001")).splitlines()
    assert lines[0] == "PURPOSE: Design it now | Success: design written"
    assert "  - one two" in lines
    assert "CONSTRAINTS: a b" in lines


def test_a_task_without_goal_or_steps_still_gets_a_complete_description(tmp_path):
    folder = write_session(tmp_path / "S", {"worker": "W"}, {"W-001": {"depends_on": []}}, shape="a")
    session = load_session(folder)
    lines = task_description(session, session.task("W-001")).splitlines()
    assert lines[0].startswith("PURPOSE: Do task W-001 for role worker")
    assert "Success: artifacts/W-001-output.md is written and complete" in lines[0]
    assert lines[1:3] == ["TASK:", "  - (no steps given)"]
    assert "EXPECTED: artifacts/W-001-output.md" in lines
    assert "CONSTRAINTS: none" in lines


def test_expected_artifact_follows_the_role_slug_unless_the_analysis_declares_one(tmp_path):
    roles = {"pm": "PLAN", "architect": "ARCH", "coder": "IMPL", "qa": "QA", "reviewer": "REV", "redteam": "RT"}
    roles["researcher"] = "RES"
    graph = {f"{prefix}-001": [] for prefix in roles.values()}
    folder = write_session(tmp_path / "S", roles, graph)
    session = load_session(folder)
    assert {task.id: expected_artifact(session, task) for task in session.tasks} == {
        "PLAN-001": "artifacts/PLAN-001-plan.md",
        "ARCH-001": "artifacts/ARCH-001-design.md",
        "IMPL-001": "artifacts/IMPL-001-impl.md",
        "QA-001": "artifacts/QA-001-test-report.md",
        "REV-001": "artifacts/REV-001-review.md",
        "RT-001": "artifacts/RT-001-redteam-report.md",
        "RES-001": "artifacts/RES-001-output.md",
    }

    declared = write_session(
        tmp_path / "D",
        {"coder": "IMPL", "qa": "QA"},
        {"IMPL-001": [], "QA-001": ["IMPL-001"]},
        capabilities=[
            {"name": "coder", "prefix": "IMPL", "tasks": [], "artifacts": ["IMPL-0010-x.md", "IMPL-001-changes.md"]},
            {"name": "qa", "prefix": "QA", "tasks": []},
        ],
        analysis_extra={"artifacts": [{"name": "QA-001-report.md", "path": "artifacts/QA-001-report.md"}]},
    )
    session = load_session(declared)
    assert expected_artifact(session, session.task("IMPL-001")) == "artifacts/IMPL-001-changes.md"
    assert expected_artifact(session, session.task("QA-001")) == "artifacts/QA-001-report.md"


def test_prompt_holds_every_phase_in_order_then_the_description(tmp_path):
    folder = two_task_session(tmp_path)
    session = load_session(folder)
    task = session.task("ARCH-001")
    prompt = build_prompt(session, task, 1)
    positions = [prompt.index(f"## Phase {n}:") for n in (1, 2, 3, 4, 5)]
    assert positions == sorted(positions)
    assert "Explore the code." in prompt
    assert "Intro text that is not a phase." not in prompt
    assert "Not a phase either." not in prompt
    assert prompt.index("## Phase 5:") < prompt.index("# Task description")
    assert task_description(session, task) in prompt
    assert "Depends on: PLAN-001" in prompt.splitlines()
    assert "Unblocks: none" in prompt.splitlines()


def test_prompt_inlines_declared_and_dependency_artifacts_and_lists_missing_ones(tmp_path):
    folder = two_task_session(tmp_path, upstream_artifacts=["artifacts/PLAN-001-plan.md", "artifacts/GONE-001.md"])
    artifacts = folder / "artifacts"
    (artifacts / "PLAN-001-plan.md").write_text("# The plan\n\nR1: do it\n")
    (artifacts / "PLAN-001-notes.txt").write_text("extra notes from the planner\n")
    (artifacts / "PLAN-0010-other.md").write_text("must not appear\n")
    (artifacts / "ARCH-001-design.md").write_text("our own output must not appear\n")
    session = load_session(folder)
    prompt = build_prompt(session, session.task("ARCH-001"), 1)

    assert "## artifacts/PLAN-001-plan.md\n\n```markdown\n# The plan\n\nR1: do it\n```" in prompt
    assert "## artifacts/PLAN-001-notes.txt\n\n```text\nextra notes from the planner\n```" in prompt
    assert "must not appear" not in prompt
    assert "our own output" not in prompt
    assert "## artifacts/GONE-001.md (missing)" in prompt
    # Sorted by path, whatever the declaration order.
    assert prompt.index("## artifacts/GONE-001.md") < prompt.index("## artifacts/PLAN-001-notes.txt")
    assert prompt.index("## artifacts/PLAN-001-notes.txt") < prompt.index("## artifacts/PLAN-001-plan.md")


def test_a_bare_upstream_name_is_found_in_artifacts_and_paths_outside_the_session_are_not_read(tmp_path):
    secret = tmp_path / "secret.md"
    secret.write_text("TOP SECRET\n")
    folder = two_task_session(tmp_path, upstream_artifacts=["PLAN-001-plan.md", "../secret.md", str(secret)])
    (folder / "artifacts" / "PLAN-001-plan.md").write_text("# The plan\n")
    session = load_session(folder)
    prompt = build_prompt(session, session.task("ARCH-001"), 1)
    assert "## artifacts/PLAN-001-plan.md\n\n```markdown\n# The plan\n```" in prompt
    assert "TOP SECRET" not in prompt
    assert "## ../secret.md (outside the session folder: not read)" in prompt
    assert f"## {secret} (outside the session folder: not read)" in prompt


def test_the_executors_private_folder_is_never_inlined_not_even_through_a_link(tmp_path):
    folder = two_task_session(
        tmp_path,
        upstream_artifacts=[".executor/state-secret.txt", "artifacts/PLAN-001-plan.md", "artifacts/../.executor"],
    )
    (folder / ".executor").mkdir()
    (folder / ".executor" / "state-secret.txt").write_text("PRIVATE STATE\n")
    # An upstream artifact that is a link into .executor/ (what a hostile worker could plant).
    (folder / "artifacts" / "PLAN-001-plan.md").symlink_to(folder / ".executor" / "state-secret.txt")
    session = load_session(folder)
    prompt = build_prompt(session, session.task("ARCH-001"), 1)
    assert "PRIVATE STATE" not in prompt
    assert "## .executor/state-secret.txt (the executor's private state: not read)" in prompt
    assert "## artifacts/PLAN-001-plan.md (the executor's private state: not read)" in prompt
    assert "## artifacts/../.executor (the executor's private state: not read)" in prompt


def test_files_over_the_budget_are_named_not_inlined(tmp_path):
    folder = two_task_session(tmp_path)
    artifacts = folder / "artifacts"
    (artifacts / "PLAN-001-a.md").write_text("small A\n")
    (artifacts / "PLAN-001-b.md").write_text("B" * 5000 + "\n")
    (artifacts / "PLAN-001-c.md").write_text("small C\n")
    for name in list((folder / "wisdom").iterdir()):
        name.unlink()
    (folder / "wisdom" / "learnings.md").write_text("learned " * 10)
    session = load_session(folder)
    task = session.task("ARCH-001")

    prompt = build_prompt(session, task, 1, artifact_budget_bytes=200)
    assert "small A" in prompt
    assert "small C" in prompt  # a later small file still fits after a big one was skipped
    assert "BBBB" not in prompt
    assert "## artifacts/PLAN-001-b.md (not inlined: over the size budget)" in prompt
    assert "learned learned" in prompt  # wisdom shares the budget: 8 + 8 + 80 bytes fit in 200

    tight = build_prompt(session, task, 1, artifact_budget_bytes=20)
    assert "small A" in tight
    assert "small C" in tight
    assert "## wisdom/learnings.md (not inlined: over the size budget)" in tight
    assert "learned learned" not in tight

    nothing = build_prompt(session, task, 1, artifact_budget_bytes=0)
    assert "small A" not in nothing
    assert "## artifacts/PLAN-001-a.md (not inlined: over the size budget)" in nothing


def test_inlined_bytes_never_exceed_the_budget(tmp_path):
    folder = two_task_session(tmp_path)
    for index in range(12):
        (folder / "artifacts" / f"PLAN-001-part{index:02d}.md").write_text(f"{index:02d}" + "x" * (100 * index) + "\n")
    session = load_session(folder)
    budget = 1500
    prompt = build_prompt(session, session.task("ARCH-001"), 1, artifact_budget_bytes=budget)
    inlined = re.findall(r"```markdown\n(.*?)```", prompt, re.DOTALL)
    assert inlined
    assert sum(len(body.encode()) for body in inlined) <= budget + len(inlined)  # + one closing newline each


def test_wisdom_files_are_included_in_name_order(tmp_path):
    folder = two_task_session(tmp_path)
    (folder / "wisdom" / "decisions.md").write_text("# Decisions\n- use sqlite\n")
    (folder / "wisdom" / "conventions.md").write_text("# Conventions\n- snake_case\n")
    (folder / "wisdom" / "notes.txt").write_text("not a markdown file\n")
    session = load_session(folder)
    prompt = build_prompt(session, session.task("ARCH-001"), 1)
    wisdom = prompt[prompt.index("# Wisdom") :]
    assert wisdom.index("## wisdom/conventions.md") < wisdom.index("## wisdom/decisions.md")
    assert "- use sqlite" in wisdom
    assert "- snake_case" in wisdom
    assert "not a markdown file" not in prompt


def test_wisdom_written_during_the_run_reaches_the_next_prompt_and_links_count_by_their_target(tmp_path):
    folder = two_task_session(tmp_path)
    (folder / "wisdom" / "decisions.md").write_text("- use sqlite\n")
    session = load_session(folder)
    task = session.task("ARCH-001")
    assert "## wisdom/decisions.md" in build_prompt(session, task, 1)
    # The folder's listing is kept between prompts: what an agent adds or removes still shows.
    (folder / "wisdom" / "later.md").write_text("- learned during the run\n")
    (folder / "wisdom" / "decisions.md").unlink()
    (folder / "wisdom" / "kept.md").mkdir()  # a folder named like a note is no note
    (folder / "notes.md").write_text("- linked in\n")
    (folder / "wisdom" / "linked.md").symlink_to(folder / "notes.md")
    (folder / "wisdom" / "dangling.md").symlink_to(folder / "gone.md")
    wisdom = build_prompt(session, task, 2)
    wisdom = wisdom[wisdom.index("# Wisdom") :]
    assert "- learned during the run" in wisdom
    assert "## wisdom/linked.md" in wisdom
    assert "decisions.md" not in wisdom
    assert "kept.md" not in wisdom
    assert "dangling.md" not in wisdom


def test_feedback_and_attempt_number_appear_only_when_there_is_something_to_say(tmp_path):
    folder = two_task_session(tmp_path)
    session = load_session(folder)
    task = session.task("ARCH-001")

    first = build_prompt(session, task, 1)
    assert "# Feedback from earlier attempts" not in first
    assert "This is attempt" not in first

    retry = build_prompt(session, task, 2, feedback="1. The interface lacks types.\n2. Add ```code``` examples.")
    assert "# Feedback from earlier attempts" in retry
    assert "1. The interface lacks types." in retry
    assert "````text\n1. The interface lacks types.\n2. Add ```code``` examples.\n````" in retry
    assert "This is attempt 2; earlier attempts failed: " in retry

    silent_retry = build_prompt(session, task, 3)
    assert "This is attempt 3; earlier attempts failed: the reasons were not recorded" in silent_retry
    assert "# Feedback from earlier attempts" not in silent_retry


def test_final_report_format_names_the_role_tag_and_the_three_status_lines(tmp_path):
    folder = copy_demo(tmp_path / "demo")
    session = load_session(folder)
    prompt = build_prompt(session, session.task("ARCH-001"), 1)
    report = prompt[prompt.index("# Final report") :]
    assert "    [architect] ARCH-001 complete: <one-line summary>" in report
    assert "    Artifact: artifacts/ARCH-001-design.md" in report
    assert "- `Tasks unblocked: IMPL-001. Ready for next stage.`" in report
    assert "- `All my tasks done. Other tasks still running.`" in report
    assert "- `All my tasks done. Pipeline may be complete.`" in report
    assert "$TEAM_EXECUTOR_REPORT" in report


def test_prompt_is_deterministic_and_keeps_user_text_literal(tmp_path):
    folder = two_task_session(tmp_path, goal="Handle {braces}, {0} and $(rm -rf /) literally")
    (folder / "artifacts" / "PLAN-001-plan.md").write_text("plan with ``` a fence inside\n")
    session = load_session(folder)
    task = session.task("ARCH-001")
    first = build_prompt(session, task, 1, "feedback {x}")
    assert first == build_prompt(load_session(folder), task, 1, "feedback {x}")
    assert "PURPOSE: Handle {braces}, {0} and $(rm -rf /) literally | Success: design written" in first
    assert "````markdown\nplan with ``` a fence inside\n````" in first
    assert "feedback {x}" in first


def test_the_run_s_prompt_source_names_the_same_unblocked_tasks_as_a_pass_over_every_task(tmp_path):
    # The run keeps who-waits-for-whom once (dependants_index) instead of a pass over every task
    # per prompt; a prompt must say exactly what that pass says, for every task of the demo.
    from actors.prompting import PromptSource  # noqa: PLC0415 - the run's side of the seam

    session = load_session(copy_demo(tmp_path / "demo"))
    source = PromptSource(session)
    unblocked = 0
    for task in session.tasks:
        assert source(task.id, 1) == build_prompt(session, task, 1, skills=source._skills.get(task.owner, ()))
        unblocked += "Unblocks: none" not in source(task.id, 1)
    assert unblocked > 0  # the demo has dependencies: the comparison says something
