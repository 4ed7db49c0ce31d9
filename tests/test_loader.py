"""Loading session folders in each documented shape, and rejecting broken ones."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from session.loader import inspect_session, load_session
from session.problems import SessionInvalid
from tests.sessions import DEMO, edit_json, write_session


def problems_of(folder: Path) -> list[str]:
    session, problems = inspect_session(folder)
    assert session is None, "expected the folder to be rejected"
    return [str(p) for p in problems if p.severity == "error"]


def test_the_demo_session_loads_with_its_tasks_owners_and_priorities():
    session = load_session(DEMO)
    assert session.session_id == "TC-demo-slugify-2026-11-22"
    ids = [t.id for t in session.tasks]
    assert ids == ["PLAN-001", "ARCH-001", "IMPL-001", "IMPL-002", "QA-001"]
    assert session.task("IMPL-002").owner == "coder"
    assert session.task("IMPL-002").blocked_by == ("IMPL-001",)
    assert session.task("PLAN-001").priority == "P0"
    assert session.task("ARCH-001").priority == "P1"


def test_shape_a_graph_entries_give_role_and_depends_on(tmp_path):
    folder = write_session(
        tmp_path / "s",
        {"researcher": "RESEARCH", "writer": "DRAFT"},
        {
            "RESEARCH-001": {"depends_on": [], "role": "researcher"},
            "DRAFT-001": {"depends_on": ["RESEARCH-001"], "role": "writer", "priority": "p0"},
        },
        shape="a",
    )
    session = load_session(folder)
    assert [(t.id, t.owner, t.blocked_by, t.priority) for t in session.tasks] == [
        ("RESEARCH-001", "researcher", (), "P1"),
        ("DRAFT-001", "writer", ("RESEARCH-001",), "P0"),
    ]


def test_shape_b_tasks_take_their_owner_from_the_capability(tmp_path):
    folder = write_session(
        tmp_path / "s",
        {"researcher": "RESEARCH", "writer": "DRAFT"},
        {"DRAFT-001": ["RESEARCH-001"]},
        capabilities=[
            {"name": "researcher", "prefix": "RESEARCH", "tasks": [{"id": "RESEARCH-001", "goal": "look"}]},
            {"name": "writer", "prefix": "DRAFT", "tasks": [{"id": "DRAFT-001", "goal": "write", "priority": "P2"}]},
        ],
    )
    session = load_session(folder)
    assert {t.id: (t.owner, t.blocked_by, t.priority) for t in session.tasks} == {
        "DRAFT-001": ("writer", ("RESEARCH-001",), "P2"),
        "RESEARCH-001": ("researcher", (), "P1"),
    }
    assert session.task("DRAFT-001").goal == "write"


def test_owner_falls_back_to_the_role_whose_prefix_matches_the_task_id(tmp_path):
    folder = write_session(tmp_path / "s", {"coder": "IMPL"}, {"IMPL-001": [], "IMPL-002": ["IMPL-001"]})
    assert [t.owner for t in load_session(folder).tasks] == ["coder", "coder"]


def test_additional_prefixes_of_a_role_spec_also_claim_tasks(tmp_path):
    folder = write_session(
        tmp_path / "s",
        {"coder": "IMPL"},
        {"IMPL-001": [], "FIX-001": ["IMPL-001"]},
        role_extra={"coder": "additional_prefixes: [FIX]\n"},
    )
    assert load_session(folder).task("FIX-001").owner == "coder"


def test_unknown_keys_are_kept_everywhere(tmp_path):
    folder = write_session(
        tmp_path / "s",
        {"coder": "IMPL"},
        {"IMPL-001": []},
        team_extra={"x_custom": {"a": 1}},
        analysis_extra={"needs_research": True, "complexity": {"level": "low"}},
        role_extra={"coder": "CLI tools: [gemini, codex]\nfuture_key: 7\n"},
    )
    session = load_session(folder)
    assert session.team_raw["x_custom"] == {"a": 1}
    assert session.team.model_extra["x_custom"] == {"a": 1}
    spec = session.role_specs["coder"]
    assert spec.meta.cli_tools == ["gemini", "codex"]
    assert spec.meta.model_extra["future_key"] == 7
    assert session.analysis.model_extra["needs_research"] is True


def test_completed_tasks_and_optional_fields_are_read(tmp_path):
    folder = write_session(
        tmp_path / "s",
        {"coder": "IMPL"},
        {"IMPL-001": [], "IMPL-002": ["IMPL-001"]},
        team_extra={"completed_tasks": ["IMPL-001"], "pipeline": {"tasks_total": 2, "tasks_completed": 1}},
    )
    session = load_session(folder)
    assert session.team.completed_tasks == ["IMPL-001"]
    assert session.team.pipeline is not None
    assert session.team.pipeline.tasks_total == 2


# --- broken folders: each names the file, the field and the fix ---------------------


def test_a_missing_folder_is_named(tmp_path):
    (message,) = problems_of(tmp_path / "nope")
    assert "nope" in message
    assert "does not exist" in message


def test_a_missing_team_session_file_is_named(tmp_path):
    folder = write_session(tmp_path / "s", {"coder": "IMPL"}, {"IMPL-001": []})
    (folder / "team-session.json").unlink()
    assert any(m.startswith("team-session.json: file not found") for m in problems_of(folder))


def test_unparseable_json_names_the_line(tmp_path):
    folder = write_session(tmp_path / "s", {"coder": "IMPL"}, {"IMPL-001": []})
    text = (folder / "task-analysis.json").read_text()
    (folder / "task-analysis.json").write_text(text[: len(text) // 2])
    (message,) = problems_of(folder)
    assert message.startswith("task-analysis.json: not valid JSON")
    assert "line" in message


def test_a_wrong_status_value_names_the_field_and_the_choices(tmp_path):
    folder = write_session(tmp_path / "s", {"coder": "IMPL"}, {"IMPL-001": []}, team_extra={"status": "running"})
    (message,) = problems_of(folder)
    assert message.startswith("team-session.json: $.status:")
    assert "'active', 'paused' or 'completed'" in message


def test_missing_required_fields_are_each_reported(tmp_path):
    folder = write_session(tmp_path / "s", {"coder": "IMPL"}, {"IMPL-001": []})
    edit_json(folder / "team-session.json", lambda d: (d.pop("team_name"), d.pop("task_description")))
    messages = problems_of(folder)
    assert any("$.team_name" in m and "add the required field 'team_name'" in m for m in messages)
    assert any("$.task_description" in m for m in messages)


def test_a_role_whose_role_spec_is_missing_is_named(tmp_path):
    folder = write_session(tmp_path / "s", {"coder": "IMPL", "qa": "QA"}, {"IMPL-001": [], "QA-001": ["IMPL-001"]})
    (folder / "role-specs" / "qa.md").unlink()
    (message,) = problems_of(folder)
    assert message.startswith("team-session.json: $.roles[1].role_spec: Role-spec file not found: role-specs/qa.md")


def test_a_role_spec_missing_a_phase_heading_is_named(tmp_path):
    folder = write_session(tmp_path / "s", {"coder": "IMPL"}, {"IMPL-001": []})
    path = folder / "role-specs" / "coder.md"
    path.write_text(path.read_text().replace("## Phase 3: Check", "## Checking"))
    (message,) = problems_of(folder)
    assert message.startswith("role-specs/coder.md: ## Phase 3: Invalid role-spec: missing Phase 3")


def test_a_role_spec_missing_a_required_key_is_named(tmp_path):
    folder = write_session(tmp_path / "s", {"coder": "IMPL"}, {"IMPL-001": []})
    path = folder / "role-specs" / "coder.md"
    path.write_text(path.read_text().replace("inner_loop: false\n", ""))
    (message,) = problems_of(folder)
    assert message.startswith("role-specs/coder.md: inner_loop: Invalid role-spec: missing required key 'inner_loop'")


def test_a_role_spec_without_frontmatter_is_rejected(tmp_path):
    folder = write_session(tmp_path / "s", {"coder": "IMPL"}, {"IMPL-001": []})
    (folder / "role-specs" / "coder.md").write_text("# coder\n## Phase 2\n## Phase 3\n## Phase 4\n")
    (message,) = problems_of(folder)
    assert "role-specs/coder.md" in message
    assert "frontmatter" in message


def test_a_role_spec_path_outside_the_session_is_refused(tmp_path):
    folder = write_session(tmp_path / "s", {"coder": "IMPL"}, {"IMPL-001": []})
    shutil.copy(folder / "role-specs" / "coder.md", tmp_path / "outside.md")
    edit_json(folder / "team-session.json", lambda d: d["roles"][0].update(role_spec="../outside.md"))
    (message,) = problems_of(folder)
    assert "$.roles[0].role_spec" in message
    assert "outside the session folder" in message


def test_a_task_owned_by_an_unknown_role_is_named(tmp_path):
    folder = write_session(
        tmp_path / "s", {"coder": "IMPL"}, {"IMPL-001": {"depends_on": [], "role": "designer"}}, shape="a"
    )
    (message,) = problems_of(folder)
    assert message.startswith("task-analysis.json: $.dependency_graph.IMPL-001: task IMPL-001 is owned by unknown role")
    assert "'designer'" in message


def test_a_task_no_role_can_own_is_named(tmp_path):
    folder = write_session(tmp_path / "s", {"coder": "IMPL"}, {"IMPL-001": [], "DOC-001": []})
    (message,) = problems_of(folder)
    assert "$.dependency_graph.DOC-001" in message
    assert "cannot tell which role owns task DOC-001" in message


def test_a_dependency_on_an_unknown_task_is_named(tmp_path):
    folder = write_session(tmp_path / "s", {"coder": "IMPL"}, {"IMPL-001": ["IMPL-009"]})
    (message,) = problems_of(folder)
    assert message.startswith(
        "task-analysis.json: $.dependency_graph.IMPL-001: task IMPL-001 depends on unknown task IMPL-009"
    )


def test_a_cycle_is_named_task_by_task(tmp_path):
    folder = write_session(
        tmp_path / "s",
        {"coder": "IMPL"},
        {"IMPL-001": ["IMPL-003"], "IMPL-002": ["IMPL-001"], "IMPL-003": ["IMPL-002"], "IMPL-004": []},
    )
    (message,) = problems_of(folder)
    assert "dependency cycle: IMPL-001 -> IMPL-003 -> IMPL-002 -> IMPL-001" in message


def test_a_task_depending_on_itself_is_a_cycle(tmp_path):
    folder = write_session(tmp_path / "s", {"coder": "IMPL"}, {"IMPL-001": ["IMPL-001"]})
    (message,) = problems_of(folder)
    assert "dependency cycle: IMPL-001 -> IMPL-001" in message


def test_duplicate_task_ids_are_named_in_both_places_they_occur(tmp_path):
    folder = write_session(
        tmp_path / "s",
        {"coder": "IMPL", "qa": "QA"},
        {"IMPL-001": []},
        capabilities=[
            {"name": "coder", "tasks": [{"id": "IMPL-001"}]},
            {"name": "qa", "tasks": [{"id": "IMPL-001"}]},
        ],
    )
    (message,) = problems_of(folder)
    assert "$.capabilities[1].tasks[0].id" in message
    assert "duplicate task id IMPL-001 (first defined at $.capabilities[0].tasks[0].id)" in message


def test_a_duplicate_key_in_the_dependency_graph_is_named(tmp_path):
    folder = write_session(tmp_path / "s", {"coder": "IMPL"}, {"IMPL-001": []})
    text = (folder / "task-analysis.json").read_text()
    text = text.replace('"IMPL-001": []', '"IMPL-001": [], "IMPL-001": []')
    (folder / "task-analysis.json").write_text(text)
    (message,) = problems_of(folder)
    assert "$.dependency_graph.IMPL-001: duplicate task id IMPL-001" in message


def test_a_v1_session_is_rejected_with_its_own_message(tmp_path):
    folder = write_session(tmp_path / "s", {"coder": "IMPL"}, {"IMPL-001": []})
    edit_json(
        folder / "team-session.json",
        lambda d: d.__setitem__("roles", [{"name": "coder", "prefix": "IMPL", "role_file": "roles/coder.md"}]),
    )
    (message,) = problems_of(folder)
    assert "v1 session" in message
    assert "role_spec" in message


def test_every_problem_is_reported_in_one_pass(tmp_path):
    folder = write_session(
        tmp_path / "s",
        {"coder": "IMPL", "qa": "QA"},
        {"IMPL-001": ["IMPL-404"], "QA-001": ["QA-001"]},
        team_extra={"status": "bogus"},
    )
    (folder / "role-specs" / "qa.md").unlink()
    messages = problems_of(folder)
    assert len(messages) == 4, messages
    joined = "\n".join(messages)
    for expected in ("$.status", "Role-spec file not found", "unknown task IMPL-404", "dependency cycle: QA-001"):
        assert expected in joined


def test_load_session_raises_session_invalid_carrying_every_problem(tmp_path):
    folder = write_session(tmp_path / "s", {"coder": "IMPL"}, {"IMPL-001": ["X-1"]})
    with pytest.raises(SessionInvalid) as caught:
        load_session(folder)
    assert [p.field for p in caught.value.problems] == ["$.dependency_graph.IMPL-001"]


def test_wrong_types_are_reported_not_raised(tmp_path):
    folder = write_session(tmp_path / "s", {"coder": "IMPL"}, {"IMPL-001": 5})
    edit_json(folder / "team-session.json", lambda d: d.update(roles="coder", completed_tasks={"a": 1}))
    messages = problems_of(folder)
    assert any("$.roles" in m for m in messages)
    assert any("$.completed_tasks" in m for m in messages)


def test_a_json_array_at_the_top_is_reported(tmp_path):
    folder = write_session(tmp_path / "s", {"coder": "IMPL"}, {"IMPL-001": []})
    (folder / "task-analysis.json").write_text(json.dumps([1, 2]))
    (message,) = problems_of(folder)
    assert message.startswith("task-analysis.json: $: must be a JSON object")
