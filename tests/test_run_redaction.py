"""No secret an agent prints survives anywhere: a real `executor run` whose agents echo their keys.

The agents: a fake ``claude`` (a real program on $TEAM_EXECUTOR_AGENT_CLIS) that prints its
ANTHROPIC_API_KEY and the MCP bridge's worker token on stdout, on stderr, in its progress, its
report file, its final answer and its error, plus a key of a well-known shape it "found"; and
the real openai backend against tests/fake_openai.py, whose model answers with the key, so the
artifact the executor writes would hold it.  A local webhook server receives the notifications.
Then every byte of the session folder (the state database raw and dumped as SQL, the logs, the
Markdown mirror, .msg/), the run's stdout and stderr with ``--json-events``, ``check --json``
and every notification are searched: 0 hits.
"""

from __future__ import annotations

import json
import sqlite3
import sys
from pathlib import Path

from tests.fake_chat import FakeWebhook, wait_for
from tests.fake_openai import FakeOpenAI, Reply
from tests.sessions import write_session

#: Given to the agent by the executor's environment; no well-known shape, so only the
#: registry can catch it.
CLAUDE_KEY = "plainLeakCheckValue7Q2w9E4rT6y"
OPENAI_KEY = "another-Unshaped-openai-key-31337x"
#: A key the agent found on its own: the executor never saw it, only its shape gives it away.
FOUND_KEY = "sk-ant-api03-" + "Zx9Qw" * 8
SECRETS = (CLAUDE_KEY, OPENAI_KEY, FOUND_KEY)

FAKE_CLAUDE = """\
#!{python}
import json, os, sys
key = os.environ["ANTHROPIC_API_KEY"]
found = {found!r}
task = os.environ["TEAM_EXECUTOR_TASK_ID"]
sys.stdin.read()

def out(event):
    print(json.dumps(event), flush=True)

out({{"type": "system", "subtype": "init", "session_id": "fake-" + task, "model": "claude-fake"}})
bridge_token = os.environ.get("TEAM_EXECUTOR_MCP_TOKEN", "")
with open({tokens_file!r}, "a") as handle:  # outside the session folder: for the test to look for
    handle.write(bridge_token + "\\n")
print("debug: using key " + key + " and the bridge's token " + bridge_token, flush=True)
print("warning: ANTHROPIC_API_KEY=" + key + " and " + found, file=sys.stderr, flush=True)
out({{"type": "assistant", "message": {{"content": [
    {{"type": "text", "text": "I will call the API with " + key}},
    {{"type": "tool_use", "name": "Bash " + key, "input": {{}}}},
]}}}})
if task == "CODE-002":
    out({{"type": "result", "subtype": "error_during_execution", "is_error": True,
         "result": "Tool crashed while holding " + key + " (also tried " + found + ")"}})
    print("Error: the tool crashed holding " + key, file=sys.stderr, flush=True)
    sys.exit(1)
os.makedirs(os.path.dirname(os.environ["TEAM_EXECUTOR_REPORT"]), exist_ok=True)
with open(os.environ["TEAM_EXECUTOR_REPORT"], "w") as handle:  # the worker's own file, in .executor/
    json.dump({{"status": "completed", "summary": "used " + key, "detail": found}}, handle)
out({{"type": "result", "subtype": "success", "is_error": False, "session_id": "fake-" + task,
     "result": "done with key " + key + " and " + found,
     "usage": {{"input_tokens": 10, "output_tokens": 5}}}})
"""


def _session(tmp_path: Path, fake: FakeOpenAI, hook: FakeWebhook) -> tuple[Path, dict[str, str]]:
    folder = write_session(
        tmp_path / "s",
        {"coder": "CODE", "writer": "WRITE"},
        {"CODE-001": [], "CODE-002": [], "WRITE-001": []},
        role_extra={"coder": "backend: claude\n", "writer": "backend: openai\nmodel: model-a\n"},
    )
    (folder / "executor.toml").write_text(
        '[[models]]\nname = "model-a"\nprovider = "openai-compatible"\nbackend = "openai"\ntier = "STANDARD"\n'
        f'input_per_mtok = 1.0\noutput_per_mtok = 2.0\ncontext_window = 8000\nbase_url = "{fake.base_url}"\n\n'
        '[keys.env]\nopenai-compatible = ["MY_OPENAI_KEY"]\n\n'
        f'[notify]\ndigest_interval_s = 0\n\n[[notify.webhooks]]\nurl = "{hook.url}/in"\n'
    )
    clis = tmp_path / "clis"
    clis.mkdir()
    claude = clis / "claude"
    claude.write_text(FAKE_CLAUDE.format(python=sys.executable, found=FOUND_KEY, tokens_file=str(tmp_path / "tokens")))
    claude.chmod(0o755)
    env = {
        "TEAM_EXECUTOR_AGENT_CLIS": str(clis),
        "ANTHROPIC_API_KEY": CLAUDE_KEY,
        "MY_OPENAI_KEY": OPENAI_KEY,
        "OPENAI_BASE_URL": fake.base_url,
    }
    return folder, env


def _hits(data: bytes | str, secrets: tuple[str, ...] = SECRETS) -> list[str]:
    text = data.decode("utf-8", "replace") if isinstance(data, bytes) else data
    return [secret for secret in secrets if secret in text]


def test_no_key_an_agent_prints_reaches_any_file_output_or_notification(executor_cli, tmp_path):
    with FakeOpenAI(keys=(OPENAI_KEY,), models=("model-a",)) as fake, FakeWebhook() as hook:
        folder, env = _session(tmp_path, fake, hook)
        fake.script(Reply(f"[writer] WRITE-001 done.\nThe key I was given is {OPENAI_KEY}; see {FOUND_KEY}."))
        flags = ("--max-attempts", "1", "--json-events", "--http", "0", "--exit-when-done")
        run = executor_cli("run", "--session", str(folder), *flags, env=env)
        check = executor_cli("check", "--session", str(folder), "--json", env=env)
        assert wait_for(lambda: any("CODE-002" in json.dumps(r.body) for r in hook.sent()), timeout=30)

    # The run went as scripted, and the agents did print their keys where we look.
    assert run.returncode == 1, run.stdout + run.stderr  # CODE-002 failed
    assert len(fake.chat_requests()) == 1
    events = [json.loads(line) for line in run.stdout.splitlines() if line.startswith("{")]
    assert {e["task_id"] for e in events if e["type"] == "task_completed"} == {"CODE-001", "WRITE-001"}
    assert any(e["type"] == "task_failed" and e["task_id"] == "CODE-002" for e in events)
    reports = list((folder / ".executor").rglob("CODE-001*.json"))
    assert any("used …rT6y" in path.read_text() for path in reports), reports  # written, read, redacted
    log = (folder / ".executor" / "logs" / "CODE-001-a1.log").read_text()
    assert "debug: using key …rT6y" in log  # printed, and masked
    artifact = next((folder / "artifacts").glob("WRITE-001*")).read_text()
    assert "The key I was given is …337x" in artifact

    # The worker token of the MCP bridge, which the fake printed too, is a secret like the keys.
    worker_tokens = set((tmp_path / "tokens").read_text().split())
    assert len(worker_tokens) == 1
    secrets = (*SECRETS, *worker_tokens)

    # 0 hits: every file of the session folder, the database also as SQL text ...
    files = [path for path in folder.rglob("*") if path.is_file()]
    assert any(path.name == "state.db" for path in files)
    assert any(path.suffix == ".md" and "tasks" in path.parts for path in files)  # the Markdown mirror
    assert (folder / ".msg" / "messages.jsonl").is_file()
    found = {str(path.relative_to(folder)): _hits(path.read_bytes(), secrets) for path in files}
    assert {name: hits for name, hits in found.items() if hits} == {}
    with sqlite3.connect(folder / ".executor" / "state.db") as db:
        dump = "\n".join(db.iterdump())
    assert "CODE-002" in dump
    assert _hits(dump, secrets) == []
    # ... the run's stdout (--json-events) and stderr, check --json, and each notification.
    assert _hits(run.stdout, secrets) == []
    assert _hits(run.stderr, secrets) == []
    assert json.loads(check.stdout)
    assert _hits(check.stdout, secrets) == []
    assert _hits(check.stderr, secrets) == []
    assert hook.sent()
    for request in hook.requests:
        assert _hits(json.dumps(request.body), secrets) == [], request.body
