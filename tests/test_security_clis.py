"""The real agent CLIs are told not to read the executor's private folder, and obey.

A prompt-injected agent asks its own file tool for ``<session>/.executor/...``: the
fake model (tests/fake_llm.py) scripts that call, the real CLI runs it under the deny
rules the executor gives it, and the file's content must never reach the model.
Codex has no read deny in the version we pin (docs/security.md says so), so it is
not listed here.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.fake_llm import FakeLLM, ReadFile, Text
from tests.test_agent_pipeline import cli_env, project_with_session

pytestmark = pytest.mark.slow

SECRET = "PRIVATE-STATE-4242-do-not-leak"


@pytest.mark.parametrize("cli", ["claude", "gemini"])
def test_an_agent_cannot_read_the_executors_private_folder(executor_cli: Any, tmp_path: Path, cli: str) -> None:
    with FakeLLM() as fake:
        env = cli_env(cli, fake.url)
        project, folder = project_with_session(tmp_path, cli, {"READ-001": []}, {"reader": "READ"})
        (project / "notes.txt").write_text("public notes\n")
        secret = folder / ".executor" / "planted-secret.txt"
        secret.parent.mkdir(parents=True, exist_ok=True)
        secret.write_text(SECRET + "\n")
        fake.script(ReadFile(str(secret)), Text("[reader] read it"), ReadFile(str(project / "notes.txt")), Text("ok"))
        result = executor_cli("run", "--session", str(folder), "--max-attempts", "1", env=env, timeout=300)
        bodies = [json.dumps(request.body) for request in fake.model_requests()]
    said = result.stdout + result.stderr
    assert len(bodies) >= 2, f"the CLI never came back after the tool call: {said}"
    assert str(secret) in " ".join(bodies), "the scripted read really was attempted"
    assert not any(SECRET in body for body in bodies), "the private file reached the model"
