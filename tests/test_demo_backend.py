"""The demo backend and its built-in agent, run as real processes on copies of the demo session."""

from __future__ import annotations

import json
import subprocess
import threading
from pathlib import Path

from backends.demo import DEMO_AGENT_ARGV, DemoBackend
from backends.sandbox import allowlisted_env
from session.loader import load_session
from session.rolespec import RoleSpecFrontmatter
from tests.orders import RecordingHooks, order_for
from tests.sessions import copy_demo, write_session

BACKEND = DemoBackend()


def run_task(folder: Path, task_id: str, hooks: RecordingHooks | None = None, **kwargs: object):
    session = load_session(folder)
    order = order_for(session, task_id, backend="demo", **kwargs)
    return order, BACKEND.run(order, hooks or RecordingHooks(), threading.Event())


def test_plan_then_design_writes_real_artifacts_that_build_on_each_other(tmp_path):
    folder = copy_demo(tmp_path / "TC-demo")
    hooks = RecordingHooks()

    order, plan = run_task(folder, "PLAN-001", hooks)
    assert plan.ok, plan
    assert plan.outcome == "completed"
    assert plan.artifacts == ("artifacts/PLAN-001-plan.md",)
    assert plan.summary.startswith("PLAN-001: wrote artifacts/PLAN-001-plan.md")
    assert plan.exit_code == 0
    assert len(hooks.started_calls) == 1
    assert [percent for percent, _ in hooks.progress_calls] == [10, 50, 100]
    plan_text = (folder / "artifacts" / "PLAN-001-plan.md").read_text()
    title = plan_text.splitlines()[0].lstrip("# ")
    assert title == "PLAN-001 Plan: Define the requirements and acceptance criteria for textkit.slugify."
    assert "## Requirements and acceptance criteria" in plan_text
    assert "| R2 | List requirements R1..Rn: lowercase, ASCII transliteration" in plan_text
    log = Path(order.log_path).read_text()
    assert "[pm] PLAN-001 done: wrote artifacts/PLAN-001-plan.md" in log
    assert log.rstrip().endswith("Tasks unblocked: ARCH-001. Ready for next stage.")
    assert json.loads(Path(order.report_file).read_text())["artifacts"] == ["artifacts/PLAN-001-plan.md"]

    _, design = run_task(folder, "ARCH-001")
    assert design.ok, design
    assert design.artifacts == ("artifacts/ARCH-001-design.md",)
    design_text = (folder / "artifacts" / "ARCH-001-design.md").read_text()
    assert design_text.startswith("# ARCH-001 Design: Design the slugify interface")
    assert f"- `artifacts/PLAN-001-plan.md`: **{title}**" in design_text
    assert "```mermaid\nflowchart LR\n" in design_text
    assert '--> T\n  T --> D1["IMPL-001"]' in design_text
    assert "- `textkit/__init__.py`" in design_text


def test_the_whole_demo_chain_runs_and_qa_reads_every_earlier_artifact(tmp_path):
    folder = copy_demo(tmp_path / "TC-demo")
    for task_id in ("PLAN-001", "ARCH-001", "IMPL-001", "IMPL-002", "QA-001"):
        _, result = run_task(folder, task_id)
        assert result.ok, (task_id, result)
        assert result.duration_s < 5
    names = sorted(path.name for path in (folder / "artifacts").iterdir() if path.suffix == ".md")
    assert names == [
        "ARCH-001-design.md",
        "IMPL-001-impl.md",
        "IMPL-002-impl.md",
        "PLAN-001-plan.md",
        "QA-001-test-report.md",
    ]
    impl = (folder / "artifacts" / "IMPL-001-impl.md").read_text()
    assert "```python\ndef impl_001() -> None:\n" in impl
    qa = (folder / "artifacts" / "QA-001-test-report.md").read_text()
    assert "## Verdict\n\npassed" in qa
    for earlier in ("PLAN-001", "ARCH-001", "IMPL-001", "IMPL-002"):
        assert f"- [x] Upstream artifact read: {earlier} " in qa


def test_artifacts_are_deterministic_across_runs_and_folders(tmp_path):
    first = copy_demo(tmp_path / "one" / "TC-demo")
    second = copy_demo(tmp_path / "two" / "TC-elsewhere")
    for folder in (first, second):
        for task_id in ("PLAN-001", "ARCH-001"):
            _, result = run_task(folder, task_id)
            assert result.ok, result
    for name in ("PLAN-001-plan.md", "ARCH-001-design.md"):
        assert (first / "artifacts" / name).read_bytes() == (second / "artifacts" / name).read_bytes()

    before = (first / "artifacts" / "ARCH-001-design.md").read_bytes()
    _, again = run_task(first, "ARCH-001", attempt=2, feedback="be more concrete")
    assert again.ok
    assert (first / "artifacts" / "ARCH-001-design.md").read_bytes() == before


def test_every_role_gets_its_own_flavour_of_artifact(tmp_path):
    roles = {
        "pm": "PLAN",
        "architect": "ARCH",
        "coder": "IMPL",
        "qa": "QA",
        "reviewer": "REV",
        "redteam": "RT",
        "researcher": "RES",
    }
    graph = {f"{prefix}-001": [] for prefix in roles.values()}
    capabilities = [
        {"name": role, "prefix": prefix, "tasks": [{"id": f"{prefix}-001", "goal": f"{role} | work", "steps": ["a|b"]}]}
        for role, prefix in roles.items()
    ]
    folder = write_session(tmp_path / "S", roles, graph, capabilities=capabilities)
    expected = {
        "PLAN-001-plan.md": "| R1 | a\\|b |",
        "ARCH-001-design.md": "```mermaid",
        "IMPL-001-impl.md": "```python",
        "QA-001-test-report.md": "- [x] a|b",
        "REV-001-review.md": "## Verdict\n\npass\n",
        "RT-001-redteam-report.md": "| F1 | LOW | a\\|b |",
        "RES-001-output.md": "- Done: a|b",
    }
    for prefix in roles.values():
        _, result = run_task(folder, f"{prefix}-001")
        assert result.ok, result
    for name, marker in expected.items():
        text = (folder / "artifacts" / name).read_text()
        assert marker in text, (name, text)
        assert "- none (this task starts from the task description alone)" in text


def test_the_demo_agent_writes_the_artifact_the_analysis_declares(tmp_path):
    folder = write_session(
        tmp_path / "S",
        {"coder": "IMPL"},
        {"IMPL-001": []},
        capabilities=[
            {
                "name": "coder",
                "prefix": "IMPL",
                "tasks": [{"id": "IMPL-001", "goal": "Build it"}],
                "artifacts": ["artifacts/IMPL-001-changes.md"],
            }
        ],
    )
    _, result = run_task(folder, "IMPL-001")
    assert result.ok, result
    assert result.artifacts == ("artifacts/IMPL-001-changes.md",)
    assert (folder / "artifacts" / "IMPL-001-changes.md").read_text().startswith("# IMPL-001 Implementation note")


def test_the_demo_agent_runs_from_a_workdir_holding_its_own_backends_package(tmp_path):
    folder = copy_demo(tmp_path / "TC-demo")
    project = tmp_path / "project"
    (project / "backends").mkdir(parents=True)
    (project / "backends" / "__init__.py").write_text("raise SystemExit('wrong backends package imported')\n")
    _, result = run_task(folder, "PLAN-001", workdir=project)
    assert result.ok, result


def test_the_demo_agent_refuses_to_run_outside_the_executor(tmp_path):
    done = subprocess.run(
        list(DEMO_AGENT_ARGV),
        cwd=tmp_path,
        env=allowlisted_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert "TEAM_EXECUTOR_TASK_ID is not set" in done.stderr


def test_a_missing_prompt_file_is_a_crash_with_the_reason_in_the_output_tail(tmp_path):
    folder = copy_demo(tmp_path / "TC-demo")
    session = load_session(folder)
    order = order_for(session, "PLAN-001", backend="demo")
    Path(order.prompt_file).unlink()
    result = BACKEND.run(order, RecordingHooks(), threading.Event())
    assert not result.ok
    assert result.error_kind == "crash"
    assert result.exit_code == 2
    assert "cannot read the prompt file" in result.output_tail


def test_preflight_accepts_any_role():
    spec = RoleSpecFrontmatter.model_validate(
        {"role": "anything", "prefix": "X", "inner_loop": True, "message_types": {}}
    )
    assert BACKEND.preflight("anything", spec) is None
