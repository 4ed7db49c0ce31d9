"""The write_review playbook on two real agent CLIs (claude writes, codex reviews), offline against
tests/fake_llm.py: the reviewer's changes_requested reaches the writer's next turn, and the
second review passes.  Skipped, with the reason, when a CLI is not installed (CI installs both)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from session.store import StoreReader
from tests.fake_llm import FakeLLM, ReadFile, Text, WriteFile
from tests.test_agent_pipeline import MODELS, cli_env

pytestmark = pytest.mark.slow

FIRST = "print('hello')\n"
SECOND = '"""Greets the reviewer."""\nprint(\'hello, reviewer\')\n'


def _project(tmp_path: Path, executor_cli: object) -> tuple[Path, Path]:
    project = tmp_path / "project"
    project.mkdir()
    subprocess.run(["git", "init", "-q", str(project)], check=True)
    (project / "README.md").write_text("# project\n")
    subprocess.run(["git", "-C", str(project), "add", "."], check=True)
    subprocess.run(
        ["git", "-C", str(project), "-c", "user.email=t@e", "-c", "user.name=t", "commit", "-qm", "init"], check=True
    )
    folder = project / ".workflow" / ".team" / "TC-hello"
    made = executor_cli(  # type: ignore[operator]
        "init",
        "--session",
        str(folder),
        "--playbook",
        "write_review",
        "--writer",
        "claude",
        "--reviewer",
        "codex",
        "Write hello.py",
    )
    assert made.returncode == 0, made.stdout + made.stderr
    for role, cli in (("coder", "claude"), ("reviewer", "codex")):
        spec = folder / "role-specs" / f"{role}.md"
        text = spec.read_text()
        assert f"backend: {cli}" in text, "the playbook wrote the chosen backend"
        spec.write_text(
            text.replace(
                f"backend: {cli}\n", f"backend: {cli}\nmodel: {MODELS[cli]}\nisolate_home: true\ntimeout: 120\n", 1
            )
        )
    return project, folder


def test_write_review_on_claude_and_codex_sends_the_review_back_to_the_writer(executor_cli, tmp_path) -> None:
    with FakeLLM() as fake:
        env = cli_env("claude", fake.url) | cli_env("codex", fake.url)
        project, folder = _project(tmp_path, executor_cli)
        fake.script(
            WriteFile("hello.py", FIRST),
            Text("Wrote hello.py."),
            ReadFile("hello.py"),
            Text("[reviewer] verdict: changes_requested\n- greet the reviewer by name\n- add a module docstring"),
            WriteFile("hello.py", SECOND),
            Text("Greeted the reviewer and added the docstring."),
            ReadFile("hello.py"),
            Text("[reviewer] verdict: pass. Both points are addressed."),
        )
        result = executor_cli("run", "--session", str(folder), "--max-attempts", "2", env=env, timeout=600)
        assert result.returncode == 0, result.stdout + result.stderr
        assert "REVIEW-001 requested changes on IMPL-001 (round 1 of 3)" in result.stdout
        bodies = [json.dumps(request.body) for request in fake.model_requests()]
    assert (project / "hello.py").read_text() == SECOND, "the writer's second turn rewrote the file"
    assert "greet the reviewer by name" in bodies[4], "the feedback reached the writer's next prompt"
    assert "greet the reviewer by name" not in bodies[0]
    assert "Greets the reviewer" in " ".join(bodies[6:]), "the second review read the new file"
    reader = StoreReader.open(folder)
    assert reader is not None
    try:
        runs = [(run.task_id, run.backend, run.outcome) for run in reader.runs()]
    finally:
        reader.close()
    assert runs == [
        ("IMPL-001", "claude", "completed"),
        ("REVIEW-001", "codex", "changes_requested"),
        ("IMPL-001", "claude", "completed"),
        ("REVIEW-001", "codex", "completed"),
    ]
    assert "- [ ] add a module docstring" in (folder / "feedback" / "IMPL-001.md").read_text()
