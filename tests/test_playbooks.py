"""Playbooks: `executor init --playbook NAME`, each one run end to end with the demo agent."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from backends.registry import backend_names
from session.playbooks import DEFAULT_PLAYBOOK, PLAYBOOKS, ROLE_FLAGS, TEMPLATE_ALIASES
from session.resources import builtin_path
from session.rolespec import parse_role_spec

GOAL = "Add a slugify helper"
ALL_PLAYBOOKS = [
    "single_worker",
    "write_review",
    "review_write",
    "review_first",
    "parallel_dual_write_review",
    "security_redteam_pass",
    "pm_architect_coder_qa",
]


def backends_of(folder: Path) -> dict[str, str | None]:
    """Role name -> the `backend:` its session role-spec names (None when it names none)."""
    found = {}
    for path in sorted((folder / "role-specs").glob("*.md")):
        spec, problems = parse_role_spec(path, path.name)
        assert spec is not None, problems
        found[spec.name] = spec.meta.backend
    return found


def test_the_playbooks_are_the_ones_documented():
    assert list(PLAYBOOKS) == ALL_PLAYBOOKS
    assert DEFAULT_PLAYBOOK == "pm_architect_coder_qa"
    assert TEMPLATE_ALIASES == {"pm-architect-coder-qa": "pm_architect_coder_qa"}


@pytest.mark.parametrize("name", ALL_PLAYBOOKS)
def test_a_playbook_is_well_formed(name):
    playbook = PLAYBOOKS[name]
    library = builtin_path("role-specs")
    seen: set[str] = set()
    done_before: dict[str, set[str]] = {}  # task id -> every task it (transitively) waits for
    for task in playbook.tasks:
        spec, problems = parse_role_spec(library / f"{task.role}.md", f"{task.role}.md")
        assert spec is not None, problems
        assert task.id.rsplit("-", 1)[0] == spec.meta.prefix, f"{task.id}: prefix of role {task.role}"
        assert task.id not in seen
        assert set(task.depends_on) <= seen, f"{task.id} depends on a later or unknown task"
        done_before[task.id] = set(task.depends_on).union(*(done_before[dep] for dep in task.depends_on))
        assert set(task.reads) <= done_before[task.id], f"{task.id} reads a task it does not wait for"
        assert task.artifact.startswith(f"artifacts/{task.id}-")
        seen.add(task.id)
    assert set(playbook.default_backends) <= set(playbook.roles)
    assert set(playbook.default_backends.values()) <= set(backend_names())


@pytest.mark.parametrize("name", ALL_PLAYBOOKS)
def test_every_playbook_inits_validates_and_runs_to_completion(executor_cli, tmp_path, name):
    folder = tmp_path / "tmp"
    result = executor_cli("init", "--session", str(folder), "--playbook", name, GOAL, "--backend", "demo")
    assert result.returncode == 0, result.stderr
    assert f"(playbook {name})" in result.stdout
    assert set(backends_of(folder).values()) == {"demo"}

    result = executor_cli("validate", "--session", str(folder))
    assert result.returncode == 0, result.stdout + result.stderr

    result = executor_cli("run", "--session", str(folder), timeout=180)
    assert result.returncode == 0, result.stdout + result.stderr

    report = json.loads(executor_cli("check", "--session", str(folder), "--json").stdout)
    expected_ids = [task.id for task in PLAYBOOKS[name].tasks]
    assert sorted(task["id"] for task in report["tasks"]) == sorted(expected_ids)
    assert {task["id"]: task["status"] for task in report["tasks"]} == dict.fromkeys(expected_ids, "completed")
    assert report["progress"]["completed"] == report["progress"]["total"] == len(expected_ids)

    analysis = json.loads((folder / "task-analysis.json").read_text())
    declared = [artifact["path"] for artifact in analysis["artifacts"]]
    assert declared == [task.artifact for task in PLAYBOOKS[name].tasks]  # one per task, named after it
    for relative in declared:
        path = folder / relative
        assert path.is_file(), f"{relative} missing after the run"
        assert GOAL in path.read_text()


def test_write_review_and_review_write_default_to_opposite_backends(executor_cli, tmp_path):
    assert executor_cli("init", "--session", str(tmp_path / "wr"), "--playbook", "write_review", GOAL).returncode == 0
    assert backends_of(tmp_path / "wr") == {"coder": "codex", "reviewer": "gemini"}
    assert executor_cli("init", "--session", str(tmp_path / "rw"), "--playbook", "review_write", GOAL).returncode == 0
    assert backends_of(tmp_path / "rw") == {"coder": "gemini", "reviewer": "codex"}
    assert executor_cli("validate", "--session", str(tmp_path / "wr")).returncode == 0


def test_the_other_playbooks_write_their_defaults(executor_cli, tmp_path):
    expected = {
        "review_first": {"coder": "codex", "reviewer": "gemini"},
        "parallel_dual_write_review": {"coder": "codex", "alt-coder": "claude", "adjudicator": "gemini"},
        "security_redteam_pass": {"coder": "codex", "redteam": "claude", "reviewer": "gemini"},
        "single_worker": {"coder": None},
        "pm_architect_coder_qa": {"pm": None, "architect": None, "coder": None, "qa": None},
    }
    for name, backends in expected.items():
        result = executor_cli("init", "--session", str(tmp_path / name), "--playbook", name, GOAL)
        assert result.returncode == 0, result.stderr
        assert backends_of(tmp_path / name) == backends, name


def test_writer_and_reviewer_flags_override_the_defaults(executor_cli, tmp_path):
    folder = tmp_path / "s"
    flags = ("--writer", "claude", "--reviewer", "codex")
    result = executor_cli("init", "--session", str(folder), "--playbook", "write_review", *flags, GOAL)
    assert result.returncode == 0, result.stderr
    assert backends_of(folder) == {"coder": "claude", "reviewer": "codex"}


def test_a_role_flag_wins_over_backend_and_role_backend_wins_over_both(executor_cli, tmp_path):
    folder = tmp_path / "s"
    result = executor_cli(
        "init",
        "--session",
        str(folder),
        "--playbook",
        "security_redteam_pass",
        "--backend",
        "demo",
        "--redteam",
        "claude",
        "--role-backend",
        "reviewer=qwen",
        "--reviewer",
        "codex",
        GOAL,
    )
    assert result.returncode == 0, result.stderr
    assert backends_of(folder) == {"coder": "demo", "redteam": "claude", "reviewer": "qwen"}


def test_writer_sets_both_writers_of_the_dual_playbook_unless_role_backend_says_otherwise(executor_cli, tmp_path):
    both = tmp_path / "both"
    args = ("init", "--playbook", "parallel_dual_write_review", "--writer", "gemini", "--adjudicator", "codex")
    assert executor_cli(*args, "--session", str(both), GOAL).returncode == 0
    assert backends_of(both) == {"coder": "gemini", "alt-coder": "gemini", "adjudicator": "codex"}
    split = tmp_path / "split"
    assert executor_cli(*args, "--role-backend", "alt-coder=claude", "--session", str(split), GOAL).returncode == 0
    assert backends_of(split) == {"coder": "gemini", "alt-coder": "claude", "adjudicator": "codex"}


def test_a_flag_for_a_role_the_playbook_lacks_fails_naming_the_roles(executor_cli, tmp_path):
    folder = tmp_path / "s"
    result = executor_cli("init", "--session", str(folder), "--playbook", "write_review", "--redteam", "demo", GOAL)
    assert result.returncode == 2
    assert "--redteam" in result.stderr
    assert "playbook write_review has roles: coder, reviewer" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not folder.exists()

    result = executor_cli(
        "init", "--session", str(folder), "--playbook", "single_worker", "--role-backend", "reviewer=demo", GOAL
    )
    assert result.returncode == 2
    assert "--role-backend reviewer=demo" in result.stderr
    assert "playbook single_worker has roles: coder" in result.stderr


def test_an_unknown_backend_fails_listing_the_backends(executor_cli, tmp_path):
    folder = tmp_path / "s"
    result = executor_cli("init", "--session", str(folder), "--playbook", "write_review", "--writer", "nosuch", GOAL)
    assert result.returncode == 2
    assert "--writer: unknown backend 'nosuch'; choose one of: " + ", ".join(backend_names()) in result.stderr
    assert "Traceback" not in result.stderr
    assert not folder.exists()
    for bad in (("--backend", "nosuch"), ("--role-backend", "coder=nosuch")):
        result = executor_cli("init", "--session", str(folder), *bad, GOAL)
        assert result.returncode == 2
        assert "unknown backend 'nosuch'" in result.stderr


def test_a_malformed_role_backend_fails(executor_cli, tmp_path):
    result = executor_cli("init", "--session", str(tmp_path / "s"), "--role-backend", "coder", GOAL)
    assert result.returncode == 2
    assert "--role-backend 'coder' is not ROLE=BACKEND" in result.stderr


def test_an_unknown_playbook_fails_listing_every_playbook_with_its_description(executor_cli, tmp_path):
    result = executor_cli("init", "--session", str(tmp_path / "s"), "--playbook", "nope", GOAL)
    assert result.returncode == 2
    assert "unknown playbook 'nope'; choose one of: " in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    for playbook in PLAYBOOKS.values():
        assert f"{playbook.name} ({playbook.description}" in result.stderr


def test_template_stays_an_alias_of_playbook(executor_cli, tmp_path):
    old = tmp_path / "old"
    result = executor_cli("init", "--session", str(old), "--template", "pm-architect-coder-qa", GOAL)
    assert result.returncode == 0, result.stderr
    assert "(playbook pm_architect_coder_qa)" in result.stdout
    assert executor_cli("init", "--session", str(tmp_path / "t"), "-t", "write_review", GOAL).returncode == 0
    assert backends_of(tmp_path / "t") == {"coder": "codex", "reviewer": "gemini"}
    same = executor_cli("init", "--session", str(tmp_path / "same"), "-p", "single_worker", "-t", "single_worker", GOAL)
    assert same.returncode == 0, same.stderr
    result = executor_cli("init", "--session", str(tmp_path / "x"), "-p", "single_worker", "-t", "write_review", GOAL)
    assert result.returncode == 2
    assert "disagree" in result.stderr


@pytest.mark.parametrize("args", [("--playbook", "list"), ("--list-playbooks",)])
def test_the_playbooks_can_be_listed_without_a_session_or_goal(executor_cli, args):
    result = executor_cli("init", *args)
    assert result.returncode == 0, result.stderr
    for playbook in PLAYBOOKS.values():
        assert playbook.name in result.stdout
        assert playbook.description in result.stdout
    assert "default backends: coder=codex, alt-coder=claude, adjudicator=gemini" in result.stdout
    assert "alias pm-architect-coder-qa" in result.stdout
    for flag in ROLE_FLAGS:
        assert f"--{flag}" in result.stdout
